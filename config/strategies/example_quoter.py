"""Example user strategy: quote both sides around the microprice, a fixed width away, up to a position limit.

Load it with [strategy] kind = "module" and module = "strategies/example_quoter.py" (see config/appliance.toml);
override any of PARAMS under [strategy.params]. Prices are in 1e-4 dollars (100 = one cent).
"""

import math

# Parameter names and defaults, in the order `params` holds them.
PARAMS = {
    "half_width": 200.0,  # distance of each quote from the microprice
    "quote_size": 100,  # shares per quote
    "max_position": 500,  # stop adding on a side at this many shares long or short
    "tick": 100,  # price increment quotes are rounded to
}
HALF_WIDTH, QUOTE_SIZE, MAX_POSITION, TICK = range(4)

# Words of the per-symbol state this strategy keeps.
FILLS, LAST_FILL_PX = 0, 1


def microprice(bid, bid_qty, ask, ask_qty):
    """The touch weighted by the opposite side's size: leans towards the side more likely to trade next."""
    if bid_qty + ask_qty <= 0:
        return 0.5 * (bid + ask)
    return (bid * ask_qty + ask * bid_qty) / (bid_qty + ask_qty)


def quote(params, state, sym, bid, bid_qty, ask, ask_qty, position, now_ns, target):
    fair = microprice(bid, bid_qty, ask, ask_qty)
    tick = params[TICK]
    size = int(params[QUOTE_SIZE])
    buy = int(math.floor((fair - params[HALF_WIDTH]) / tick) * tick)
    sell = int(math.ceil((fair + params[HALF_WIDTH]) / tick) * tick)
    # Rest, never cross: at worst one tick inside the other side.
    buy = min(buy, ask - int(tick))
    sell = max(sell, bid + int(tick))
    target[0] = buy
    target[1] = size if position + size <= params[MAX_POSITION] else 0
    target[2] = sell
    target[3] = size if position - size >= -params[MAX_POSITION] else 0
    target[4] = 0  # day orders
    return 1


def on_fill(params, state, sym, side, price, qty, position):
    state[FILLS] += 1
    state[LAST_FILL_PX] = price
