"""The gateway's order book-keeping: order table, state machine, per-symbol positions and open orders.

Everything the gateway knows about its orders lives in one `Gw` namedtuple of preallocated arrays, owned
by the gateway hot thread (the control plane only reads it, racily, for metrics and /status). Orders are
keyed by OUCH UserRefNum, which the strategy allocates strictly increasing; the table slot is
`urn & mask`, so a slot is reused only once its previous order is finished.

Order states (OS_*), as the FIX-style state machine a trader expects:
```
 PENDING_NEW --Accepted--> NEW --Executed--> PARTIALLY_FILLED --Executed--> FILLED
      |                     |  \\--Cancel sent--> PENDING_CANCEL --Canceled--> CANCELED
      |                     \\--Replace sent--> PENDING_REPLACE --Replaced--> REPLACED (the new order: NEW)
      \\--Rejected (venue or lost in a disconnect)--> REJECTED
```
The same `apply_venue_message` serves the live session, the journal replay after a restart and the
venue's SoupBinTCP replay after a reconnect, so all three rebuild exactly the same state.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from ..runtime.event import KIND_FILL, KIND_ORDER, KIND_POSITION
from ..runtime.wire import alpha_to_int, get_u32, get_u64, put_u64
from . import ouch_descriptor as oc

OS_FREE = 0
OS_PENDING_NEW = 1
OS_NEW = 2
OS_PARTIAL = 3
OS_FILLED = 4
OS_PENDING_CANCEL = 5
OS_CANCELED = 6
OS_PENDING_REPLACE = 7
OS_REPLACED = 8
OS_REJECTED = 9
STATE_NAMES = ("free", "pending_new", "new", "partially_filled", "filled", "pending_cancel", "canceled",
               "pending_replace", "replaced", "rejected")

SIDE_BUY = 0
SIDE_SELL = 1

# Reasons carried by REJECTED updates besides the risk reasons (risk/checks.py R_*, below 32) and the
# venue's own OUCH reject codes (stored as 1000 + code).
REASON_LOST = 32  # sent, but the venue never received it (a disconnect; found at reconciliation)
REASON_VENUE = 1000

# w[] words: session link, sequence numbers and totals. L = control plane writes, G = gateway writes.
W_LINK = 0  # L/G: LINK_* below
W_FD = 1  # L: the connected socket while LINK_UP
W_RX_SEQ = 2  # L/G: sequence number the next Sequenced Data packet carries
W_NEXT_EXPECTED = 3  # G: next venue sequence number not yet applied (persists through the journal)
W_RECONCILED = 4  # G: 1 once the Account Query answer came back after the last login
W_Q_FENCE = 5  # L: highest UserRefNum sent before the Account Query of the last login
W_URN_FLOOR = 6  # G: the strategy must number new orders from here on (after a restart or reconnect)
W_MAX_URN = 7  # G: highest UserRefNum sent or seen
W_LAST_SEND = 8  # G: TSC of the last send()
W_LAST_RECV = 9  # G: TSC of the last bytes received
W_OUT_HEAD = 10  # G: unsent bytes are obuf[head:tail] (a send() that would block)
W_OUT_TAIL = 11
W_IN_LEN = 12  # G: bytes in ibuf not yet framed
W_OPEN = 13  # G: open orders
W_OPEN_QTY = 14  # G: shares in open orders
W_GROSS = 15  # G: sum of |position| over symbols
W_KILL_DONE = 16  # G: the kill-switch trigger (CTL_KILL value) already acted on
W_KILL_CANCELS = 17  # G: cancels the kill switch sent
W_KILL_LAST_TSC = 18  # G: TSC when the kill switch's last cancel went out
W_BREACH = 19  # G: a fill took a position past its limit (the control plane trips the kill switch)
W_END_OF_SESSION = 20  # G: the venue sent End of Session
W_SENT_NEW = 21
W_SENT_REPLACE = 22
W_SENT_CANCEL = 23
W_ACCEPTED = 24
W_FILLS = 25
W_FILLED_SHARES = 26
W_CANCELED = 27
W_VENUE_REJECTS = 28
W_LOST = 29
W_UNKNOWN_MSGS = 30  # venue messages about orders this gateway never knew (adopted when they are Accepted)
W_BAD_MSGS = 31  # undecodable or unexpected venue messages (counted and skipped)
W_HEARTBEATS_SENT = 32
W_SEND_ERRORS = 33
W_RECV_ERRORS = 34
W_LINKS_LOST = 35
W_Q_NEXT = 36  # G: NextUserRefNum from the last Account Query Response
W_TOKENS = 37  # G: order-rate bucket, in thousandths of an order
W_TOKENS_TSC = 38
W_JOURNAL_FULL = 39  # G: intents held back because the journal ring was full
W_RESYNC = 40  # G: 1 when the strategy must be told positions and open orders (after recovery)
W_VOLUME = 41  # G: shares traded
W_NEED_QUERY = 42  # L: set at login; the gateway sends the Account Query (journaled) and clears it
W_Q_SENT = 43  # G: Account Queries sent, ever (rebuilt from the journal)
W_Q_ANSWERED = 44  # G: Account Query Responses applied, ever: only the answer to the latest query reconciles
W_Q_NOT_BEFORE = 45  # L: venue timestamp (ns since midnight) the answer to this login's query cannot predate
W_HB_CYCLES = 48  # L: send a client heartbeat after this many TSC cycles without sending
W_IDLE_CYCLES = 49  # L: the session is lost after this many cycles without hearing from the venue
W_HZ = 50  # L: TSC frequency (the order-rate bucket refills by it)
W_WORDS = 64

LINK_DOWN = 0  # no session: the gateway touches no socket
LINK_UP = 1  # logged in: the gateway owns the socket
LINK_LOST = 2  # the gateway saw it die; the control plane closes it and reconnects

Gw = namedtuple("Gw", "w rej sym_stock pos cash open_buy open_sell sym_orders sym_nopen "
                      "o_urn o_state o_sym o_side o_px o_qty o_leaves o_cum o_sent o_other o_reason o_acked "
                      "obuf ibuf msg dec fo fl ft fc")
Gw.__doc__ = """Gateway state: words, risk rejects by reason, per traded symbol (stock alpha, position, cash
in 1e-4 dollars x shares, open buy/sell shares, open orders' UserRefNums), the order table and I/O buffers."""

OUT_BUF = 1 << 16
IN_BUF = 1 << 16
FRAME_BATCH = 64


def make_gateway_state(symbols, max_orders: int = 65536, max_open_per_symbol: int = 16) -> Gw:
    """Allocate the gateway's arrays for these traded symbols (the strategy's traded-symbol indices)."""
    n = len(symbols)
    cap = max_orders
    gw = Gw(
        w=np.zeros(W_WORDS, dtype=np.int64), rej=np.zeros(64, dtype=np.int64),
        sym_stock=np.array([alpha_to_int(s) for s in symbols], dtype=np.int64),
        pos=np.zeros(n, dtype=np.int64), cash=np.zeros(n, dtype=np.int64),
        open_buy=np.zeros(n, dtype=np.int64), open_sell=np.zeros(n, dtype=np.int64),
        sym_orders=np.zeros((n, max_open_per_symbol), dtype=np.int64), sym_nopen=np.zeros(n, dtype=np.int64),
        o_urn=np.zeros(cap, dtype=np.int64), o_state=np.zeros(cap, dtype=np.int64),
        o_sym=np.zeros(cap, dtype=np.int64), o_side=np.zeros(cap, dtype=np.int64),
        o_px=np.zeros(cap, dtype=np.int64), o_qty=np.zeros(cap, dtype=np.int64),
        o_leaves=np.zeros(cap, dtype=np.int64), o_cum=np.zeros(cap, dtype=np.int64),
        o_sent=np.zeros(cap, dtype=np.int64), o_other=np.zeros(cap, dtype=np.int64),
        o_reason=np.zeros(cap, dtype=np.int64), o_acked=np.zeros(cap, dtype=np.int64),
        obuf=np.zeros(OUT_BUF, dtype=np.uint8), ibuf=np.zeros(IN_BUF, dtype=np.uint8),
        msg=np.zeros(256, dtype=np.uint8), dec=np.zeros(oc.V_WORDS, dtype=np.int64),
        fo=np.zeros(FRAME_BATCH, dtype=np.int64), fl=np.zeros(FRAME_BATCH, dtype=np.int64),
        ft=np.zeros(FRAME_BATCH, dtype=np.int64), fc=np.zeros(8, dtype=np.int64),
    )
    gw.w[W_NEXT_EXPECTED] = 1
    gw.w[W_URN_FLOOR] = 1
    return gw


# ---- the order table ----------------------------------------------------------------------------

@njit(nogil=True, cache=True, inline="always", _nrt=False)
def slot_of(gw, urn):
    """Table index of an order, or -1 when the table does not hold it."""
    i = urn & (gw.o_urn.shape[0] - 1)
    if gw.o_urn[i] == urn and gw.o_state[i] != OS_FREE:
        return i
    return -1


@njit(nogil=True, cache=True, inline="always", _nrt=False)
def is_open(state):
    return state == OS_PENDING_NEW or state == OS_NEW or state == OS_PARTIAL or state == OS_PENDING_CANCEL \
        or state == OS_PENDING_REPLACE


@njit(nogil=True, cache=True, inline="always", _nrt=False)
def slot_free(gw, urn):
    """True when the table slot for urn may take a new order (its previous order, if any, is finished)."""
    i = urn & (gw.o_urn.shape[0] - 1)
    return not is_open(gw.o_state[i])


@njit(nogil=True, cache=True, _nrt=False)
def _open_add(gw, i):
    s = gw.o_sym[i]
    k = gw.sym_nopen[s]
    gw.sym_orders[s, k] = gw.o_urn[i]
    gw.sym_nopen[s] = k + 1
    gw.w[W_OPEN] += 1
    _exposure(gw, i, gw.o_leaves[i])


@njit(nogil=True, cache=True, _nrt=False)
def _open_remove(gw, i):
    s = gw.o_sym[i]
    urn = gw.o_urn[i]
    k = gw.sym_nopen[s]
    for j in range(k):
        if gw.sym_orders[s, j] == urn:
            gw.sym_orders[s, j] = gw.sym_orders[s, k - 1]
            gw.sym_orders[s, k - 1] = 0
            gw.sym_nopen[s] = k - 1
            gw.w[W_OPEN] -= 1
            break
    _exposure(gw, i, -gw.o_leaves[i])


@njit(nogil=True, cache=True, inline="always", _nrt=False)
def _exposure(gw, i, shares):
    if gw.o_side[i] == SIDE_BUY:
        gw.open_buy[gw.o_sym[i]] += shares
    else:
        gw.open_sell[gw.o_sym[i]] += shares
    gw.w[W_OPEN_QTY] += shares


@njit(nogil=True, cache=True, _nrt=False)
def open_order(gw, urn, sym, side, px, qty, other, now):
    """Enter a new order (PENDING_NEW) in the table and the open-order lists; its table index."""
    i = urn & (gw.o_urn.shape[0] - 1)
    gw.o_urn[i] = urn
    gw.o_state[i] = OS_PENDING_NEW
    gw.o_sym[i] = sym
    gw.o_side[i] = side
    gw.o_px[i] = px
    gw.o_qty[i] = qty
    gw.o_leaves[i] = qty
    gw.o_cum[i] = 0
    gw.o_sent[i] = now
    gw.o_other[i] = other
    gw.o_reason[i] = 0
    gw.o_acked[i] = 0
    _open_add(gw, i)
    if urn > gw.w[W_MAX_URN]:
        gw.w[W_MAX_URN] = urn
    return i


@njit(nogil=True, cache=True, _nrt=False)
def close_order(gw, i, state, reason):
    """Finish an open order: leaves go to zero, it leaves the open lists."""
    if is_open(gw.o_state[i]):
        _open_remove(gw, i)
    gw.o_leaves[i] = 0
    gw.o_state[i] = state
    gw.o_reason[i] = reason


@njit(nogil=True, cache=True, _nrt=False)
def set_leaves(gw, i, leaves):
    if is_open(gw.o_state[i]):
        _exposure(gw, i, leaves - gw.o_leaves[i])
    gw.o_leaves[i] = leaves


@njit(nogil=True, cache=True, _nrt=False)
def symbol_index(gw, stock):
    """Traded-symbol index of an alpha8 stock, or -1."""
    for s in range(gw.sym_stock.shape[0]):
        if gw.sym_stock[s] == stock:
            return s
    return -1


# ---- updates to the strategy ---------------------------------------------------------------------

@njit(nogil=True, cache=True, _nrt=False)
def emit(gw, out, pos, mask, kind, i, px, qty, qty2, aux):
    """Write one ORDER / FILL update about order table index i at out[pos & mask]."""
    ev = out[pos & mask]
    ev.kind = kind
    ev.side = gw.o_side[i]
    ev.flags = gw.o_state[i]
    ev.symbol = gw.o_sym[i]
    ev.seq = 0
    ev.t_in = 0
    ev.ref = gw.o_urn[i]
    ev.px = px
    ev.qty = qty
    ev.px2 = 0
    ev.qty2 = qty2
    ev.aux = aux


@njit(nogil=True, cache=True, _nrt=False)
def emit_order(gw, out, pos, mask, i):
    emit(gw, out, pos, mask, KIND_ORDER, i, gw.o_px[i], gw.o_leaves[i], gw.o_cum[i],
         gw.o_reason[i] if gw.o_state[i] == OS_REJECTED else gw.o_other[i])


# ---- what the venue says -------------------------------------------------------------------------

@njit(nogil=True, cache=True, _nrt=False)
def _fill(gw, i, qty, px):
    s = gw.o_sym[i]
    old = gw.pos[s]
    if gw.o_side[i] == SIDE_BUY:
        gw.pos[s] = old + qty
        gw.cash[s] -= px * qty
    else:
        gw.pos[s] = old - qty
        gw.cash[s] += px * qty
    gw.w[W_GROSS] += abs(gw.pos[s]) - abs(old)
    gw.w[W_FILLS] += 1
    gw.w[W_FILLED_SHARES] += qty
    gw.w[W_VOLUME] += qty


@njit(nogil=True, cache=True, _nrt=False)
def _adopt(gw, d, now):
    """An Accepted / Replaced for an order this gateway has no record of (sent but not journaled before a
    crash): take the venue's word for it. Table index, or -1 for a symbol this gateway does not trade."""
    s = symbol_index(gw, d[oc.V_SYMBOL])
    if s < 0:
        return -1
    side = SIDE_BUY if d[oc.V_SIDE] == 66 else SIDE_SELL  # 'B'
    gw.w[W_UNKNOWN_MSGS] += 1
    return open_order(gw, d[oc.V_USER_REF], s, side, d[oc.V_PRICE], d[oc.V_QUANTITY], 0, now)


@njit(nogil=True, cache=True, _nrt=False)
def _accept(gw, i, d):
    """Accepted, or the new order of a Replaced: the venue's price and size stand."""
    gw.w[W_ACCEPTED] += 1
    gw.o_acked[i] = 1
    if gw.o_state[i] == OS_PENDING_NEW:
        gw.o_state[i] = OS_NEW
    gw.o_px[i] = d[oc.V_PRICE]
    set_leaves(gw, i, d[oc.V_QUANTITY])
    if d[oc.V_STATE] == 68:  # 'D' dead on arrival (e.g. an IOC with nothing to meet)
        close_order(gw, i, OS_CANCELED, 0)


# A venue event in decoded form: what a FIX ExecutionReport says, in the words an OUCH message decodes to.
# The FIX gateway journals and applies this form, so both protocols share one state machine and one replay.
#   [0] EV_MARK  [1..80] type, UserRefNum, orig UserRefNum, side, quantity, symbol, price, state, reason, match:
#   the `dec` words of those names (oc.V_*), big-endian u64 each
EV_MARK = 0xFE
EV_SIZE = 81


@njit(nogil=True, cache=True, _nrt=False)
def put_event(buf, off, d):
    """Write the decoded venue event `d` (type in d[V_TYPE]) at buf[off:off + EV_SIZE]; the offset after it."""
    buf[off] = EV_MARK
    put_u64(buf, off + 1, d[oc.V_TYPE])
    put_u64(buf, off + 9, d[oc.V_USER_REF])
    put_u64(buf, off + 17, d[oc.V_ORIG_USER_REF])
    put_u64(buf, off + 25, d[oc.V_SIDE])
    put_u64(buf, off + 33, d[oc.V_QUANTITY])
    put_u64(buf, off + 41, d[oc.V_SYMBOL])
    put_u64(buf, off + 49, d[oc.V_PRICE])
    put_u64(buf, off + 57, d[oc.V_STATE])
    put_u64(buf, off + 65, d[oc.V_REASON])
    put_u64(buf, off + 73, d[oc.V_MATCH])
    return off + EV_SIZE


@njit(nogil=True, cache=True, _nrt=False)
def _get_event(buf, off, n, d):
    """Load a decoded venue event into d; its message type, or -1 when it is short."""
    if n < EV_SIZE:
        return -1
    for k in range(d.shape[0]):
        d[k] = 0
    d[oc.V_TYPE] = np.int64(get_u64(buf, off + 1))
    d[oc.V_USER_REF] = np.int64(get_u64(buf, off + 9))
    d[oc.V_ORIG_USER_REF] = np.int64(get_u64(buf, off + 17))
    d[oc.V_SIDE] = np.int64(get_u64(buf, off + 25))
    d[oc.V_QUANTITY] = np.int64(get_u64(buf, off + 33))
    d[oc.V_SYMBOL] = np.int64(get_u64(buf, off + 41))
    d[oc.V_PRICE] = np.int64(get_u64(buf, off + 49))
    d[oc.V_STATE] = np.int64(get_u64(buf, off + 57))
    d[oc.V_REASON] = np.int64(get_u64(buf, off + 65))
    d[oc.V_MATCH] = np.int64(get_u64(buf, off + 73))
    return d[oc.V_TYPE]


@njit(nogil=True, cache=True, _nrt=False)
def apply_venue_message(gw, buf, off, n, out, pos, mask, publish, now):
    """Apply one sequenced venue message (an OUCH message, or a decoded event from FIX) to the order table;
    returns the updates written at out[pos..] (only when publish, else 0). Unknown or undecodable messages
    are counted and skipped."""
    d = gw.dec
    t = buf[off] if n > 0 else 0
    if t == EV_MARK:
        r = _get_event(buf, off, n, d)
        if r < 0:
            gw.w[W_BAD_MSGS] += 1
            return 0
        return _apply_decoded(gw, d, r, out, pos, mask, publish, now)
    if t == 81:  # 'Q' Account Query Response: everything sent before the query has been answered
        if n >= 13:
            gw.w[W_Q_ANSWERED] += 1
            # A replay also brings the answers to earlier logins' queries; only the latest one reconciles.
            # Counting is exact while the journal is whole; the timestamp also catches the stale answer when
            # the journal was lost (then the counts start again at zero).
            if gw.w[W_Q_ANSWERED] >= gw.w[W_Q_SENT] and np.int64(get_u64(buf, off + 1)) >= gw.w[W_Q_NOT_BEFORE]:
                _reconcile(gw, get_u32(buf, off + 9))
            return 0
        gw.w[W_BAD_MSGS] += 1
        return 0
    if t == 83:  # 'S' System Event
        return 0
    r = oc.dec_outbound(buf, off, n, d)
    if r < 0:
        gw.w[W_BAD_MSGS] += 1
        return 0
    return _apply_decoded(gw, d, r, out, pos, mask, publish, now)


@njit(nogil=True, cache=True, _nrt=False)
def _apply_decoded(gw, d, r, out, pos, mask, publish, now):
    """The state machine's step for one decoded venue message of type r."""
    urn = d[oc.V_USER_REF]
    if urn > gw.w[W_MAX_URN]:
        gw.w[W_MAX_URN] = urn
    i = slot_of(gw, urn)
    w = 0
    if r == oc.MSG_ACCEPTED:
        if i < 0:
            i = _adopt(gw, d, now)
            if i < 0:
                gw.w[W_BAD_MSGS] += 1
                return 0
        elif gw.o_state[i] == OS_REJECTED and gw.o_reason[i] == REASON_LOST:
            _revive(gw, i, d[oc.V_QUANTITY])
        _accept(gw, i, d)
        if publish:
            emit_order(gw, out, pos, mask, i)
            w = 1
    elif r == oc.MSG_REPLACED:
        old = slot_of(gw, d[oc.V_ORIG_USER_REF])
        if old >= 0:
            close_order(gw, old, OS_REPLACED, 0)
            gw.o_other[old] = urn
            if publish:
                emit_order(gw, out, pos, mask, old)
                w = 1
        if i < 0:
            i = _adopt(gw, d, now)
            if i < 0:
                gw.w[W_BAD_MSGS] += 1
                return w
        gw.o_other[i] = d[oc.V_ORIG_USER_REF]
        _accept(gw, i, d)
        if publish:
            emit_order(gw, out, pos + w, mask, i)
            w += 1
    elif i < 0:
        gw.w[W_UNKNOWN_MSGS] += 1
    elif r == oc.MSG_EXECUTED:
        qty = d[oc.V_QUANTITY]
        px = d[oc.V_PRICE]
        _fill(gw, i, qty, px)
        gw.o_cum[i] += qty
        left = gw.o_leaves[i] - qty
        if left <= 0:
            close_order(gw, i, OS_FILLED, 0)
        else:
            set_leaves(gw, i, left)
            if gw.o_state[i] == OS_NEW:
                gw.o_state[i] = OS_PARTIAL
        if publish:
            emit(gw, out, pos, mask, KIND_FILL, i, px, qty, gw.o_leaves[i], d[oc.V_MATCH])
            w = 1
    elif r == oc.MSG_CANCELED:
        left = gw.o_leaves[i] - d[oc.V_QUANTITY]
        gw.w[W_CANCELED] += 1
        if left <= 0:
            close_order(gw, i, OS_CANCELED, 0)
        else:
            set_leaves(gw, i, left)
            if gw.o_state[i] == OS_PENDING_CANCEL:
                gw.o_state[i] = OS_PARTIAL if gw.o_cum[i] > 0 else OS_NEW
        if publish:
            emit_order(gw, out, pos, mask, i)
            w = 1
    elif r == oc.MSG_REJECTED:
        gw.w[W_VENUE_REJECTS] += 1
        if gw.o_acked[i] == 0 and is_open(gw.o_state[i]):  # a cancel may already be on its way
            close_order(gw, i, OS_REJECTED, REASON_VENUE + d[oc.V_REASON])
            other = gw.o_other[i]
            if other != 0:  # a refused replace: the original order stands
                j = slot_of(gw, other)
                if j >= 0 and gw.o_state[j] == OS_PENDING_REPLACE:
                    gw.o_state[j] = OS_PARTIAL if gw.o_cum[j] > 0 else OS_NEW
            if publish:
                emit_order(gw, out, pos, mask, i)
                w = 1
    return w


@njit(nogil=True, cache=True, _nrt=False)
def _revive(gw, i, qty):
    """An order written off as lost turned out to have arrived (a reconciliation that ran early because a query
    went unjournaled in a crash): take it back."""
    gw.o_state[i] = OS_PENDING_NEW
    gw.o_reason[i] = 0
    gw.o_leaves[i] = qty
    _open_add(gw, i)
    gw.w[W_LOST] -= 1


@njit(nogil=True, cache=True, _nrt=False)
def _reconcile(gw, next_urn):
    """Account Query answered after a login: orders sent before the query and still unanswered never reached
    the venue (lost with the connection), and cancels or replaces still pending were lost the same way."""
    gw.w[W_Q_NEXT] = next_urn
    fence = gw.w[W_Q_FENCE]
    cap = gw.o_urn.shape[0]
    for s in range(gw.sym_nopen.shape[0]):
        k = gw.sym_nopen[s]
        j = 0
        while j < k:
            i = gw.sym_orders[s, j] & (cap - 1)
            st = gw.o_state[i]
            if gw.o_urn[i] <= fence and gw.o_acked[i] == 0:
                close_order(gw, i, OS_REJECTED, REASON_LOST)
                gw.w[W_LOST] += 1
                k -= 1  # the list shrank: the last entry moved into place j
                continue
            if st == OS_PENDING_CANCEL or st == OS_PENDING_REPLACE:
                gw.o_state[i] = OS_PARTIAL if gw.o_cum[i] > 0 else OS_NEW
            j += 1
    floor = gw.w[W_MAX_URN] + 1
    if next_urn > floor:
        floor = next_urn
    gw.w[W_URN_FLOOR] = floor
    gw.w[W_RECONCILED] = 1
    gw.w[W_RESYNC] = 1


@njit(nogil=True, cache=True, _nrt=False)
def register_sent(gw, buf, off, n, now):
    """Record an order message this gateway sent (live, or read back from the journal); False if not one."""
    d = gw.dec
    if n >= 1 and buf[off] == 81:  # 'Q' Account Query Request
        gw.w[W_Q_SENT] += 1
        return True
    r = oc.dec_inbound(buf, off, n, d)
    if r == oc.MSG_ENTER_ORDER:
        s = symbol_index(gw, d[oc.V_SYMBOL])
        if s < 0:
            return False
        side = SIDE_BUY if d[oc.V_SIDE] == 66 else SIDE_SELL
        open_order(gw, d[oc.V_USER_REF], s, side, d[oc.V_PRICE], d[oc.V_QUANTITY], 0, now)
        gw.w[W_SENT_NEW] += 1
        return True
    if r == oc.MSG_REPLACE_ORDER:
        j = slot_of(gw, d[oc.V_ORIG_USER_REF])
        if j < 0:
            return False
        open_order(gw, d[oc.V_USER_REF], gw.o_sym[j], gw.o_side[j], d[oc.V_PRICE], d[oc.V_QUANTITY],
                   d[oc.V_ORIG_USER_REF], now)
        if is_open(gw.o_state[j]):
            gw.o_state[j] = OS_PENDING_REPLACE
        gw.w[W_SENT_REPLACE] += 1
        return True
    if r == oc.MSG_CANCEL_ORDER:
        j = slot_of(gw, d[oc.V_USER_REF])
        if j >= 0 and is_open(gw.o_state[j]):
            gw.o_state[j] = OS_PENDING_CANCEL
        gw.w[W_SENT_CANCEL] += 1
        return True
    return False


@njit(nogil=True, cache=True, _nrt=False)
def resync(gw, out, pos, mask, room):
    """Tell the strategy every position and open order (after a restart or reconnect); updates written, or
    -1 when `room` was too small (try again later)."""
    need = gw.sym_nopen.shape[0] + gw.w[W_OPEN]
    if need > room:
        return -1
    w = 0
    cap = gw.o_urn.shape[0]
    for s in range(gw.sym_nopen.shape[0]):
        ev = out[(pos + w) & mask]
        ev.kind = KIND_POSITION
        ev.symbol = s
        ev.side = 0
        ev.flags = 0
        ev.ref = 0
        ev.px = 0
        ev.qty = 0
        ev.qty2 = 0
        ev.t_in = 0
        ev.aux = gw.pos[s]
        w += 1
        for j in range(gw.sym_nopen[s]):
            emit_order(gw, out, pos + w, mask, gw.sym_orders[s, j] & (cap - 1))
            w += 1
    gw.w[W_RESYNC] = 0
    return w


def snapshot(gw: Gw, symbols) -> dict:
    """Positions, P&L inputs and open orders as the control plane reports them (racy reads: monitoring)."""
    cap = gw.o_urn.shape[0]
    orders = {}
    for s, sym in enumerate(symbols):
        for j in range(int(gw.sym_nopen[s])):
            i = int(gw.sym_orders[s, j]) & (cap - 1)
            orders[int(gw.o_urn[i])] = {"symbol": sym, "side": "B" if gw.o_side[i] == SIDE_BUY else "S",
                                        "price": int(gw.o_px[i]), "leaves": int(gw.o_leaves[i]),
                                        "state": STATE_NAMES[int(gw.o_state[i])]}
    return {
        "positions": {sym: int(gw.pos[s]) for s, sym in enumerate(symbols)},
        "cash": {sym: int(gw.cash[s]) for s, sym in enumerate(symbols)},
        "open_orders": orders,
    }

