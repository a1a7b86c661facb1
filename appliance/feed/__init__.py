"""Market data: the feed agent (a synthetic source until ITCH over MoldUDP64 lands)."""
