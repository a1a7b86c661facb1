"""The built-in venue: synthetic ITCH 5.0 order flow (and, later, the exchange side of the protocols)."""
