"""Low-latency trading appliance: feed, strategy and gateway on pinned GIL-free threads."""

__version__ = "0.1.0"
