"""Order books built from market data: the full-depth (L3) book the feed thread keeps per symbol."""
