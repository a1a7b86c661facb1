"""The one 64-byte event record every ring carries, read alike by replay, the live feed and the strategy.

```
 0       1       2               4                               8
 +-------+-------+---------------+-------------------------------+
 | kind  | side  |     flags     |      symbol (stock locate)    |
 +-------+-------+---------------+-------------------------------+
 |                 seq: source sequence number                   |  8
 +---------------------------------------------------------------+
 |           t_in: TSC when the input reached user space         | 16
 +---------------------------------------------------------------+
 |           t_hop: TSC when the last hop published it           | 24
 +---------------------------------------------------------------+
 |           ref: order reference / client order id              | 32
 +-------------------------------+-------------------------------+
 |    px: price (1e-4 dollars)   |        qty: shares            | 40
 +-------------------------------+-------------------------------+
 |    px2: second price (ask)    |        qty2: second qty       | 48
 +-------------------------------+-------------------------------+
 |                 aux: kind-specific word                       | 56
 +---------------------------------------------------------------+ 64
```
"""

import numpy as np

EVENT_SIZE = 64

EVENT_DTYPE = np.dtype(
    [
        ("kind", np.uint8),
        ("side", np.uint8),
        ("flags", np.uint16),
        ("symbol", np.uint32),
        ("seq", np.int64),
        ("t_in", np.int64),
        ("t_hop", np.int64),
        ("ref", np.int64),
        ("px", np.int32),
        ("qty", np.uint32),
        ("px2", np.int32),
        ("qty2", np.uint32),
        ("aux", np.int64),
    ],
    align=True,
)
assert EVENT_DTYPE.itemsize == EVENT_SIZE

# Event kinds. 0 is never written, so a zeroed slot is recognisably empty.
KIND_NONE = 0
KIND_SYNTHETIC = 1  # runtime self-test traffic (source -> pass-through -> sink)
# Book events from the feed (symbol = book slot, seq = ITCH sequence, aux = ITCH timestamp ns):
KIND_BBO = 2  # best bid/offer changed: px/qty = bid, px2/qty2 = ask (0/0 when that side is empty)
KIND_TRADE = 3  # a print: px/qty, side of the resting order, ref = match number, flags = TRADE_* below
KIND_STATE = 4  # trading state: flags = ITCH state char (H, P, Q, T) or halt action, ref = reason alpha4
KIND_SYSTEM = 5  # system event: flags = ITCH event code (O, S, Q, M, E, C)

TRADE_EXECUTION = 1  # E: an order executed at its own price
TRADE_EXECUTION_PRICE = 2  # C: executed at another price; TRADE_NON_PRINTABLE also set when not printable
TRADE_HIDDEN = 3  # P: against a non-displayed order
TRADE_CROSS = 4  # Q: opening/closing/IPO/halt cross
TRADE_NON_PRINTABLE = 0x100

SIDE_BID = 0
SIDE_ASK = 1

# Order intents, strategy -> gateway ring (symbol = the strategy's traded-symbol index, t_in = the TSC at
# which the tick that caused it reached user space, 0 when no tick did):
#   ref = UserRefNum of the order (NEW, REPLACE: the new one; CANCEL: the one to cancel), side, px, qty;
#   px2 / qty2 = best bid / best offer the strategy saw (the price collar's reference; 0 = none);
#   aux = the UserRefNum being replaced (REPLACE); flags = time in force (OUCH byte, 0 = day).
KIND_NEW = 10
KIND_REPLACE = 11
KIND_CANCEL = 12
# Order updates, gateway -> strategy ring (symbol = traded-symbol index):
#   ORDER: ref = UserRefNum, flags = order state (OS_* in gateway/orders.py), side, px, qty = leaves,
#          qty2 = shares filled so far, aux = reject reason (risk R_* or venue reason) or replaced UserRefNum;
#   FILL: ref = UserRefNum, side, px/qty = execution price and shares, qty2 = leaves, aux = match number;
#   POSITION: aux = signed position in shares (sent when the gateway resynchronises the strategy).
KIND_ORDER = 20
KIND_FILL = 21
KIND_POSITION = 22
