"""Order gateway: the agent that puts intents on the wire (a checking sink until OUCH/FIX land)."""
