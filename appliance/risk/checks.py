"""Pre-trade risk: every order and replace is checked here, on the gateway hot thread, before it is encoded.

Limits live in one int64 array (`L_*` words) that the control plane writes at start and on reload and
the gateway reads each time; positions and open orders come from the gateway's own book-keeping
(gateway/orders.py), so the checks see every order the moment it is sent and every fill the moment it
arrives. A check that fails returns its reason (R_*), the order never reaches the wire, the reason is
counted for /metrics and the strategy is told.
"""

from numba import njit

from ..gateway import orders as go

# limits[] words (written by the control plane from [risk]; prices 1e-4 dollars)
L_MAX_QTY = 0
L_MAX_NOTIONAL = 1  # 1e-4 dollars
L_MAX_POSITION = 2
L_MAX_GROSS = 3
L_COLLAR_BPS = 4
L_RATE = 5  # orders per second
L_BURST = 6
L_MAX_OPEN = 7
L_SELF_CROSS = 8
L_WORDS = 16

R_OK = 0
R_KILL_SWITCH = 1
R_SESSION = 2  # no session, or not yet reconciled after a (re)login
R_QUANTITY = 3
R_NOTIONAL = 4
R_POSITION = 5
R_GROSS = 6
R_COLLAR = 7
R_NO_REFERENCE = 8  # no best bid or offer to collar against
R_RATE = 9
R_OPEN_ORDERS = 10
R_SELF_CROSS = 11
R_TABLE = 12  # the order table slot for this UserRefNum is still in use, or the symbol's list is full
R_UNKNOWN_ORDER = 13  # replace or cancel of an order that is not open
R_PRICE = 14  # not a valid limit price
R_SEQUENCE = 15  # UserRefNum not above the last one used
REASONS = {
    R_KILL_SWITCH: "kill_switch", R_SESSION: "session_down", R_QUANTITY: "max_order_qty",
    R_NOTIONAL: "max_notional", R_POSITION: "max_position", R_GROSS: "max_gross_position",
    R_COLLAR: "price_collar", R_NO_REFERENCE: "no_reference_price", R_RATE: "order_rate",
    R_OPEN_ORDERS: "max_open_orders", R_SELF_CROSS: "self_cross", R_TABLE: "order_table_full",
    R_UNKNOWN_ORDER: "unknown_order", R_PRICE: "bad_price", R_SEQUENCE: "user_ref_not_increasing",
}
PRICE_MAX = 1_999_999_900  # OUCH's largest limit price


def limits_from_config(risk, out) -> None:
    """Write [risk] into the limits array the gateway reads."""
    out[L_MAX_QTY] = risk.max_order_qty
    out[L_MAX_NOTIONAL] = int(round(risk.max_notional * 10_000))
    out[L_MAX_POSITION] = risk.max_position
    out[L_MAX_GROSS] = risk.max_gross_position
    out[L_COLLAR_BPS] = risk.price_collar_bps
    out[L_RATE] = risk.order_rate
    out[L_BURST] = risk.order_burst
    out[L_MAX_OPEN] = risk.max_open_orders
    out[L_SELF_CROSS] = int(risk.self_cross_prevention)


@njit(nogil=True, cache=True, inline="always", _nrt=False)
def take_token(gw, lim, now, hz):
    """Order-rate token bucket (thousandths of an order, refilled from the TSC); True if one was taken."""
    burst = lim[L_BURST] * 1000
    last = gw.w[go.W_TOKENS_TSC]
    tokens = gw.w[go.W_TOKENS]
    if last == 0:
        tokens = burst
    elif now > last:
        tokens += (now - last) * lim[L_RATE] * 1000 // hz
        if tokens > burst:
            tokens = burst
    gw.w[go.W_TOKENS_TSC] = now
    if tokens < 1000:
        gw.w[go.W_TOKENS] = tokens
        return False
    gw.w[go.W_TOKENS] = tokens - 1000
    return True


@njit(nogil=True, cache=True, _nrt=False)
def check_order(gw, lim, sym, side, px, qty, ref_bid, ref_ask, replacing, now, hz):
    """All limits for a new order (replacing = 0) or a replace of open order table index `replacing - 1`;
    R_OK or the first reason it breaches. Takes a rate token only when everything else passed."""
    if qty <= 0 or qty > lim[L_MAX_QTY]:
        return R_QUANTITY
    if px <= 0 or px > PRICE_MAX:
        return R_PRICE
    if px * qty > lim[L_MAX_NOTIONAL]:
        return R_NOTIONAL
    old = replacing - 1
    added = qty  # shares this adds to the worst case
    if old >= 0:
        added = qty - gw.o_leaves[old]
    elif gw.w[go.W_OPEN] >= lim[L_MAX_OPEN]:
        return R_OPEN_ORDERS
    if old < 0 and gw.sym_nopen[sym] >= gw.sym_orders.shape[1]:
        return R_TABLE
    if added > 0:
        pos = gw.pos[sym]
        if side == go.SIDE_BUY:
            if pos + gw.open_buy[sym] + added > lim[L_MAX_POSITION]:
                return R_POSITION
        elif pos - gw.open_sell[sym] - added < -lim[L_MAX_POSITION]:
            return R_POSITION
        if gw.w[go.W_GROSS] + gw.w[go.W_OPEN_QTY] + added > lim[L_MAX_GROSS]:
            return R_GROSS
    # Price collar: a buy no higher than the offer (a sell no lower than the bid) plus the collar; with that
    # side empty, the other side is the reference.
    if ref_bid <= 0 and ref_ask <= 0:
        return R_NO_REFERENCE
    bps = lim[L_COLLAR_BPS]
    if side == go.SIDE_BUY:
        ref = ref_ask if ref_ask > 0 else ref_bid
        if px * 10_000 > ref * (10_000 + bps):
            return R_COLLAR
    else:
        ref = ref_bid if ref_bid > 0 else ref_ask
        if px * 10_000 < ref * (10_000 - bps):
            return R_COLLAR
    if lim[L_SELF_CROSS] != 0 and crosses_own(gw, sym, side, px, -1 if old < 0 else gw.o_urn[old]):
        return R_SELF_CROSS
    if not take_token(gw, lim, now, hz):
        return R_RATE
    return R_OK


@njit(nogil=True, cache=True, _nrt=False)
def crosses_own(gw, sym, side, px, skip_urn):
    """True if a buy at px would meet one of our own open sells (or a sell one of our buys)."""
    cap = gw.o_urn.shape[0]
    for j in range(gw.sym_nopen[sym]):
        urn = gw.sym_orders[sym, j]
        if urn == skip_urn:
            continue
        i = urn & (cap - 1)
        if gw.o_side[i] == side:
            continue
        if side == go.SIDE_BUY and px >= gw.o_px[i]:
            return True
        if side == go.SIDE_SELL and px <= gw.o_px[i]:
            return True
    return False
