"""Strategy: the agent between book events and order intents (a pass-through until the strategy API lands)."""
