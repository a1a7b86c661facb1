"""The venue's matching engine: price-time priority per symbol, every book change published as ITCH 5.0.

Orders from the appliances' OUCH and FIX sessions (owner > 0) and from the venue's synthetic
participants (owner 0) go through the same entry points and trade against each other in one book.
Each operation writes two outputs into caller-provided arrays (an `Out`):

- ITCH 5.0 messages in day-file framing (2-byte big-endian length, then the message) for the feed:
  A (or F with an MPID) when a displayed order rests, E per fill against a displayed resting order,
  P per fill against a non-displayed one, X for a partial cancel, D for a full cancel, U for a replace.
  The incoming side of a match and an IOC remainder are never shown, as on NASDAQ.
- Report records (`REPORT_DTYPE`) for the order-entry side: one per accepted, executed, canceled,
  replaced or rejected client order, which the sessions turn into OUCH messages and ExecutionReports.

State lives in preallocated numpy arrays (an `Engine` namedtuple), nothing is allocated per order:

- orders: a pool of `ORDER_DTYPE` records with a free list. Each resting order sits in a FIFO queue of
  its price level, an intrusive doubly linked list (`next`/`prev` are pool slots), displayed orders in
  one queue and non-displayed ones in another: displayed interest at a price trades first.
- levels: a pool of `LEVEL_DTYPE` records (queue heads and tails, shares), and per symbol side a sorted
  array of (key, level) with the best level last; the key is the price for bids and minus the price for
  asks, so "better" is "greater" on both sides. Activity clusters at the touch, so searches and
  inserts walk a few entries from the end.
- order reference -> pool slot: a direct-mapped table indexed by `ref & mask`. The engine assigns
  references itself, increasing, and skips any whose cell is taken, so a lookup is one load and one
  compare, with no probing.
- (owner, token) -> pool slot for client orders (owner > 0): open addressing, linear probing, deletion
  by backward shift. Tokens are the session's own order ids (OUCH UserRefNum, a FIX ClOrdID index).

Every operation returns a status: `OK`, an OUCH 5.0 reject reason where one fits (`REJECT_*`, the
values of appliance.gateway.ouch_descriptor), or one of the engine's own codes (`ST_*`, >= 0x100).
`ST_NO_ROOM` means the output arrays lacked room for the worst case of the operation's first step and
nothing was done: drain them and retry. Prices are in 1e-4 dollars; timestamps are ns since midnight.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from ..feed import itch_descriptor as d
from ..gateway.ouch_descriptor import (
    PRICE_MAX_LIMIT,
    REJECT_HALTED,
    REJECT_INVALID_PRICE,
    REJECT_INVALID_QUANTITY,
    REJECT_INVALID_SIDE,
    REJECT_INVALID_SYMBOL,
    REJECT_OTHER,
)
from ..runtime.wire import alpha_to_int, int_to_alpha, put_u8, put_u16, put_u32, put_u48, put_u64

# ---- status codes -------------------------------------------------------------------------------
OK = 0
# OUCH 5.0 reject reasons (ouch_descriptor.REJECT_REASONS) the engine gives
REJECT_INVALID_DISPLAY = 0x03
REJECT_PROCESSING_ERROR = 0x0A  # the order pool is full
# (REJECT_HALTED 0x07, REJECT_INVALID_SIDE 0x09, REJECT_OTHER 0x0F (bad time in force or owner),
#  REJECT_INVALID_QUANTITY 0x13, REJECT_INVALID_SYMBOL 0x17, REJECT_INVALID_PRICE 0x1D: imported above)
# The engine's own codes, outside OUCH's u16 reason range in use
ST_UNKNOWN_ORDER = 0x100  # cancel/replace of an order that is not resting (never was, filled, canceled)
ST_DUPLICATE_TOKEN = 0x101  # enter/replace naming an (owner, token) that is already resting
ST_NO_ROOM = 0x102  # the output arrays cannot take the operation's worst case: nothing was done

STATUS_NAMES = {
    OK: "ok", REJECT_INVALID_DISPLAY: "invalid display", REJECT_HALTED: "halted",
    REJECT_INVALID_SIDE: "invalid side", REJECT_PROCESSING_ERROR: "processing error (order pool full)",
    REJECT_OTHER: "other (bad time in force or owner)", REJECT_INVALID_QUANTITY: "invalid quantity",
    REJECT_INVALID_SYMBOL: "invalid symbol", REJECT_INVALID_PRICE: "invalid price",
    ST_UNKNOWN_ORDER: "unknown order", ST_DUPLICATE_TOKEN: "duplicate token", ST_NO_ROOM: "output full",
}

# ---- order attributes (the wire bytes OUCH and FIX use) -------------------------------------------
SIDE_BUY = ord("B")
SIDE_SELL = ord("S")
SIDE_SHORT = ord("T")  # sell short: a sell to the book
SIDE_SHORT_EXEMPT = ord("E")
TIF_DAY = ord("0")
TIF_IOC = ord("3")  # OUCH and FIX (tag 59) both spell IOC '3'; '5', '6' and 'E' rest like day orders
DISPLAY_VISIBLE = ord("Y")
DISPLAY_HIDDEN = ord("N")  # rests and trades but never appears on the feed (fills print as P)
DISPLAY_ATTRIBUTABLE = ord("A")
MARKET = 0x7FFFFFFF  # price of a market order: matches at any price, any remainder is canceled (as IOC)

# ---- report records -----------------------------------------------------------------------------
REPORT_DTYPE = np.dtype([
    ("kind", np.uint8),       # R_* below
    ("request", np.uint8),    # for R_REJECTED: what was refused, 'O' enter, 'U' replace, 'X' cancel
    ("side", np.uint8),       # side as entered: 'B', 'S', 'T', 'E'
    ("liquidity", np.uint8),  # executions: 'A' added, 'J' non-displayed added, 'R' removed
    ("reason", np.uint8),     # cancels: OUCH cancel reason 'U' user, 'I' IOC, 'Z' system, or the caller's
    ("tif", np.uint8),
    ("display", np.uint8),
    ("state", np.uint8),      # 'L' the order is still live after this record, 'D' it is done
    ("reject", np.uint16),    # R_REJECTED: the status code (OUCH reject reason or ST_*)
    ("locate", np.uint16),    # stock locate (Engine.syms[locate].stock is the symbol)
    ("owner", np.int32),      # 0 synthetic participants (only with report_all), > 0 a client session
    ("qty", np.int32),        # accepted/replaced: order quantity; executed: fill; canceled: shares canceled
    ("leaves", np.int32),     # open shares after this record
    ("cum", np.int32),        # shares executed so far over the order's life (across replaces)
    ("mpid", np.int32),       # attribution (alpha4 packed big-endian), 0 none
    ("token", np.int64),      # the owner's order id (for replaces and replace rejects, the new one)
    ("prev_token", np.int64), # replaced / replace rejected: the token of the order being replaced
    ("ref", np.int64),        # ITCH order reference number (replaced: the new one)
    ("prev_ref", np.int64),   # replaced: the order reference number it replaced
    ("match", np.int64),      # executed: ITCH match number, shared by both sides of the fill
    ("price", np.int64),      # accepted/replaced: limit (or MARKET); executed: the fill price
    ("ts", np.int64),         # ns since midnight, as passed to the operation
], align=True)
assert REPORT_DTYPE.itemsize == 88

R_ACCEPTED = 1
R_EXECUTED = 2
R_CANCELED = 3
R_REPLACED = 4
R_REJECTED = 5
REPORT_KINDS = {R_ACCEPTED: "accepted", R_EXECUTED: "executed", R_CANCELED: "canceled",
                R_REPLACED: "replaced", R_REJECTED: "rejected"}
REASON_USER = ord("U")
REASON_IOC = ord("I")
REASON_SYSTEM = ord("Z")  # remainder that could not rest (book side full) or could not be matched (no room)
REASON_SUPERVISORY = ord("S")
LIQ_ADDED = ord("A")
LIQ_HIDDEN_ADDED = ord("J")
LIQ_REMOVED = ord("R")
STATE_LIVE = ord("L")
STATE_DEAD = ord("D")
REQ_ENTER = ord("O")  # R_REJECTED.request: the OUCH inbound type of what was refused
REQ_REPLACE = ord("U")
REQ_CANCEL = ord("X")

# ---- state --------------------------------------------------------------------------------------
ORDER_DTYPE = np.dtype([
    ("ref", np.int64), ("token", np.int64), ("price", np.int64),
    ("owner", np.int32), ("leaves", np.int32), ("orig", np.int32), ("cum", np.int32),
    ("next", np.int32), ("prev", np.int32),  # queue links; `next` also chains the free list
    ("level", np.int32), ("locate", np.int32), ("mpid", np.int32),
    ("side", np.uint8),  # 0 buy, 1 sell
    ("sidech", np.uint8), ("tif", np.uint8), ("display", np.uint8),
], align=True)
LEVEL_DTYPE = np.dtype([
    ("price", np.int64), ("shares", np.int64), ("hshares", np.int64),  # displayed / non-displayed shares
    ("head", np.int32), ("tail", np.int32),  # displayed FIFO; `head` also chains the free list
    ("hhead", np.int32), ("htail", np.int32),  # non-displayed FIFO
    ("count", np.int32), ("hcount", np.int32),
], align=True)

BOOK_DTYPE = np.dtype([("key", np.int64), ("level", np.int32), ("_pad", np.int32)], align=True)
SYM_DTYPE = np.dtype([
    ("stock", np.int64),  # alpha8 packed big-endian (appliance.runtime.wire.alpha_to_int)
    ("nbid", np.int32), ("nask", np.int32),  # price levels in use per side
    ("tracking", np.int32),  # ITCH tracking number of this symbol's messages
    ("state", np.int32),  # 0 trading, 1 halted
], align=True)
assert ORDER_DTYPE.itemsize == 64 and LEVEL_DTYPE.itemsize == 48 and BOOK_DTYPE.itemsize == 16

NIL = -1

# words[]: settings and state (M_*), counters (S_*), ITCH messages written by type (W_COUNTS + type byte).
# One array rather than three: every array in the Engine is 7 machine words pushed on each call.
M_MAX_ORDERS = 0
M_LEVELS = 1  # sorted-level capacity per symbol side
M_NSYM = 2  # symbols have locates 1..M_NSYM
M_TICK = 3
M_MAX_QTY = 4
M_RMASK = 5
M_TMASK = 6
M_NEXT_REF = 7
M_NEXT_MATCH = 8
M_FREE_ORDER = 9
M_FREE_LEVEL = 10
M_LIVE = 11  # resting orders
M_REPORT_ALL = 12  # 1 = reports for owner-0 orders too
M_MAX_PRICE = 13
S_ENTERED = 16  # enter calls accepted
S_CANCELED = 17  # cancel calls done
S_REPLACED = 18
S_REJECTED = 19  # any operation refused with a status other than ST_NO_ROOM
S_FILLS = 20
S_SHARES = 21  # shares executed
S_MESSAGES = 22  # ITCH messages written
S_NO_ROOM = 23
S_SYSTEM_CANCELS = 24  # remainders canceled with reason 'Z'
W_COUNTS = 32
WORDS = W_COUNTS + 256

# Out.cur words
C_BUF = 0  # bytes of framed ITCH in Out.buf
C_REP = 1  # records in Out.reports
C_REF = 2  # the last operation's order: its ITCH order reference (0 when refused)
C_FILLED = 3  # ... shares it executed in this operation
C_LEAVES = 4  # ... shares left resting after it (0: not in the book)
C_MSGS = 5  # ITCH messages in Out.buf
CUR_WORDS = 8

MSG_ROOM = 2 + 44  # the largest frame the engine writes (P); room checks count frames of this size

# Every kernel is compiled without numba's reference counting (as appliance.feed.mold_session's): they
# never allocate, and NRT's incref/decref of each array in the Engine and Out tuples on every call cost
# hundreds of ns per operation (measured: a reference lookup took 300 ns with it, 1-2 ns without).
# Callers on the hot path should be compiled the same way. Numba passes each array as 7 machine words,
# pushed on the stack at every call, so the Engine has few arrays and the helpers on the common path
# are inlined (`inline="always"`); those used only for client orders or crossing orders (`_match`,
# reports, the token table) stay real calls, which halves the cold compile time.
_HOT = dict(nogil=True, cache=True, _nrt=False)

Engine = namedtuple("Engine", "orders levels book syms ref_slot tok_slot words")
Out = namedtuple("Out", "buf reports cur")


def _pow2(n: int) -> int:
    return 1 << max(4, int(n - 1).bit_length())


def make_engine(symbols, max_orders: int = 1 << 20, levels: int = 256, tick: int = 100,
                max_qty: int = 1_000_000, tracking=1, report_all: bool = False,
                first_ref: int = 1, first_match: int = 1) -> Engine:
    """An empty engine for `symbols` (stock locate i + 1 for symbols[i]), room for `max_orders` live orders.

    `levels` bounds the price levels per symbol side; `tracking` is the ITCH tracking number per symbol (an
    int for all, or a sequence); `report_all` also writes report records for synthetic (owner 0) orders.
    """
    names = [s.upper() for s in symbols]
    n = len(names)
    if n == 0 or n > 65535:
        raise ValueError(f"the engine needs 1..65535 symbols, got {n}")
    if len(set(names)) != n:
        raise ValueError("duplicate symbols")
    if max_orders < 1 or levels < 1 or tick < 1 or max_qty < 1:
        raise ValueError("max_orders, levels, tick and max_qty must be positive")
    eng = Engine(
        orders=np.zeros(max_orders, dtype=ORDER_DTYPE),
        levels=np.zeros(max_orders, dtype=LEVEL_DTYPE),  # every level holds at least one order
        book=np.zeros((n + 1) * 2 * levels, dtype=BOOK_DTYPE),
        syms=np.zeros(n + 1, dtype=SYM_DTYPE),
        ref_slot=np.full(_pow2(2 * max_orders), NIL, dtype=np.int32),
        tok_slot=np.full(_pow2(2 * max_orders), NIL, dtype=np.int32),
        words=np.zeros(WORDS, dtype=np.int64),
    )
    eng.syms["stock"][1:] = [alpha_to_int(s) for s in names]
    eng.syms["tracking"][1:] = tracking
    eng.orders["next"] = np.arange(1, max_orders + 1)
    eng.orders["next"][-1] = NIL
    eng.orders["level"] = NIL  # not resting
    eng.levels["head"] = np.arange(1, max_orders + 1)
    eng.levels["head"][-1] = NIL
    m = eng.words
    m[M_MAX_ORDERS] = max_orders
    m[M_LEVELS] = levels
    m[M_NSYM] = n
    m[M_TICK] = tick
    m[M_MAX_QTY] = max_qty
    m[M_RMASK] = len(eng.ref_slot) - 1
    m[M_TMASK] = len(eng.tok_slot) - 1
    m[M_NEXT_REF] = first_ref
    m[M_NEXT_MATCH] = first_match
    m[M_FREE_ORDER] = 0
    m[M_FREE_LEVEL] = 0
    m[M_REPORT_ALL] = 1 if report_all else 0
    m[M_MAX_PRICE] = PRICE_MAX_LIMIT
    return eng


def make_out(buf_bytes: int = 1 << 20, reports: int = 1 << 14) -> Out:
    """Output arrays for the engine: framed ITCH bytes, report records and the cursor words."""
    return Out(buf=np.zeros(buf_bytes, dtype=np.uint8), reports=np.zeros(reports, dtype=REPORT_DTYPE),
               cur=np.zeros(CUR_WORDS, dtype=np.int64))


# ---- small helpers ------------------------------------------------------------------------------
@njit(**_HOT, inline="always")
def _room(out, msgs, reps):
    return (out.buf.shape[0] - out.cur[C_BUF] >= msgs * MSG_ROOM
            and out.reports.shape[0] - out.cur[C_REP] >= reps)


@njit(**_HOT, inline="always")
def _begin(eng, out, msgs, reps):
    """Start an operation: clear the last one's results; False (counted) when the outputs lack room for
    `msgs` ITCH frames and `reps` reports, and the operation must not start."""
    out.cur[C_REF] = 0
    out.cur[C_FILLED] = 0
    out.cur[C_LEAVES] = 0
    if not _room(out, msgs, reps):
        eng.words[S_NO_ROOM] += 1
        return False
    return True


@njit(**_HOT, inline="always")
def _wants(eng, owner):
    return owner > 0 or eng.words[M_REPORT_ALL] != 0


@njit(**_HOT, inline="always")
def _side_key(side, price):
    return price if side == 0 else -price


@njit(**_HOT, inline="always")
def _nlev(eng, bs):
    """Price levels in use on book side bs = 2 * locate + side."""
    sym = eng.syms[bs >> 1]
    return np.int64(sym.nbid) if (bs & 1) == 0 else np.int64(sym.nask)


@njit(**_HOT, inline="always")
def _set_nlev(eng, bs, n):
    if (bs & 1) == 0:
        eng.syms[bs >> 1].nbid = n
    else:
        eng.syms[bs >> 1].nask = n


@njit(**_HOT, inline="always")
def _thash(owner, token, tmask):
    # multiplicative mixing; int64 products wrap, which is all a hash needs
    h = token * np.int64(-7046029254386353131) + owner * np.int64(0x9E3779B1)
    return (h ^ (h >> 29)) & tmask


# ---- ITCH output --------------------------------------------------------------------------------
@njit(**_HOT, inline="always")
def _frame(eng, out, mtype, length, locate, ts):
    """Write a frame's length prefix and the ITCH header; returns where the message body starts."""
    buf = out.buf
    p = out.cur[C_BUF]
    put_u16(buf, p, length)
    m = p + 2
    put_u8(buf, m + d.OFF_TYPE, mtype)
    put_u16(buf, m + d.OFF_LOCATE, locate)
    put_u16(buf, m + d.OFF_TRACKING, eng.syms[locate].tracking)
    put_u48(buf, m + d.OFF_TIMESTAMP, ts)
    out.cur[C_BUF] = m + length
    out.cur[C_MSGS] += 1
    eng.words[W_COUNTS + mtype] += 1
    eng.words[S_MESSAGES] += 1
    return m


@njit(**_HOT, inline="always")
def _put_add(eng, out, ts, o):
    if o.mpid != 0:
        m = _frame(eng, out, d.MSG_ADD_MPID, 40, o.locate, ts)
        put_u32(out.buf, m + d.ADD_MPID, o.mpid)
    else:
        m = _frame(eng, out, d.MSG_ADD, 36, o.locate, ts)
    buf = out.buf
    put_u64(buf, m + d.ADD_REF, o.ref)
    buf[m + d.ADD_SIDE] = SIDE_BUY if o.side == 0 else SIDE_SELL
    put_u32(buf, m + d.ADD_SHARES, o.leaves)
    put_u64(buf, m + d.ADD_STOCK, eng.syms[o.locate].stock)
    put_u32(buf, m + d.ADD_PRICE, o.price)


@njit(**_HOT, inline="always")
def _put_executed(eng, out, ts, locate, ref, shares, match):
    m = _frame(eng, out, d.MSG_EXECUTED, 31, locate, ts)
    put_u64(out.buf, m + d.EXE_REF, ref)
    put_u32(out.buf, m + d.EXE_SHARES, shares)
    put_u64(out.buf, m + d.EXE_MATCH, match)


@njit(**_HOT, inline="always")
def _put_trade(eng, out, ts, locate, side, shares, price, match):
    """P for a fill against a non-displayed order; NASDAQ zeroes its order reference."""
    m = _frame(eng, out, d.MSG_TRADE, 44, locate, ts)
    buf = out.buf
    put_u64(buf, m + d.TRD_REF, 0)
    buf[m + d.TRD_SIDE] = SIDE_BUY if side == 0 else SIDE_SELL
    put_u32(buf, m + d.TRD_SHARES, shares)
    put_u64(buf, m + d.TRD_STOCK, eng.syms[locate].stock)
    put_u32(buf, m + d.TRD_PRICE, price)
    put_u64(buf, m + d.TRD_MATCH, match)


@njit(**_HOT, inline="always")
def _put_cancel(eng, out, ts, locate, ref, shares):
    m = _frame(eng, out, d.MSG_CANCEL, 23, locate, ts)
    put_u64(out.buf, m + d.CXL_REF, ref)
    put_u32(out.buf, m + d.CXL_SHARES, shares)


@njit(**_HOT, inline="always")
def _put_delete(eng, out, ts, locate, ref):
    m = _frame(eng, out, d.MSG_DELETE, 19, locate, ts)
    put_u64(out.buf, m + d.DEL_REF, ref)


@njit(**_HOT, inline="always")
def _put_replace(eng, out, ts, locate, old_ref, new_ref, shares, price):
    m = _frame(eng, out, d.MSG_REPLACE, 35, locate, ts)
    buf = out.buf
    put_u64(buf, m + d.REP_OLD_REF, old_ref)
    put_u64(buf, m + d.REP_NEW_REF, new_ref)
    put_u32(buf, m + d.REP_SHARES, shares)
    put_u32(buf, m + d.REP_PRICE, price)


# ---- report output ------------------------------------------------------------------------------
@njit(**_HOT)
def _report(out, kind, o, liq, reason, state, qty, match, price, ts, prev_token, prev_ref):
    """One record about pool order `o`; returns its index."""
    i = out.cur[C_REP]
    out.cur[C_REP] = i + 1
    r = out.reports[i]
    r.kind = kind
    r.request = 0
    r.side = o.sidech
    r.liquidity = liq
    r.reason = reason
    r.tif = o.tif
    r.display = o.display
    r.state = state
    r.reject = 0
    r.locate = o.locate
    r.owner = o.owner
    r.qty = qty
    r.leaves = o.leaves
    r.cum = o.cum
    r.mpid = o.mpid
    r.token = o.token
    r.prev_token = prev_token
    r.ref = o.ref
    r.prev_ref = prev_ref
    r.match = match
    r.price = price
    r.ts = ts
    return i


@njit(**_HOT)
def _report_reject(out, request, status, owner, token, prev_token, ref, sidech, locate, qty, price, tif,
                   display, mpid, ts):
    i = out.cur[C_REP]
    out.cur[C_REP] = i + 1
    r = out.reports[i]
    r.kind = R_REJECTED
    r.request = request
    r.side = sidech
    r.liquidity = 0
    r.reason = 0
    r.tif = tif
    r.display = display
    r.state = STATE_DEAD
    r.reject = status
    r.locate = locate
    r.owner = owner
    r.qty = qty
    r.leaves = 0
    r.cum = 0
    r.mpid = mpid
    r.token = token
    r.prev_token = prev_token
    r.ref = ref
    r.prev_ref = 0
    r.match = 0
    r.price = price
    r.ts = ts


# ---- order pool, reference and token tables -----------------------------------------------------
@njit(**_HOT, inline="always")
def _alloc_order(eng):
    i = eng.words[M_FREE_ORDER]
    eng.words[M_FREE_ORDER] = eng.orders[i].next
    return i


@njit(**_HOT, inline="always")
def _next_ref(eng):
    """The next order reference whose table cell is free (references only ever increase)."""
    mask = eng.words[M_RMASK]
    r = eng.words[M_NEXT_REF]
    # the table is at most half full, so this ends within a few steps
    while eng.ref_slot[r & mask] != NIL:
        r += 1
    eng.words[M_NEXT_REF] = r + 1
    return r


@njit(**_HOT, inline="always")
def _by_ref(eng, ref):
    """Pool slot of the resting order `ref`, or -1."""
    if ref <= 0:
        return NIL
    s = eng.ref_slot[ref & eng.words[M_RMASK]]
    if s != NIL and eng.orders[s].ref == ref:
        return s
    return NIL


@njit(**_HOT)
def _by_token(eng, owner, token):
    """Pool slot of the resting order (owner, token), or -1; only client orders (owner > 0) are indexed."""
    mask = eng.words[M_TMASK]
    tab = eng.tok_slot
    j = _thash(owner, token, mask)
    while True:
        s = tab[j]
        if s == NIL:
            return NIL
        o = eng.orders[s]
        if o.token == token and o.owner == owner:
            return s
        j = (j + 1) & mask


@njit(**_HOT)
def _tok_insert(eng, oi):
    mask = eng.words[M_TMASK]
    o = eng.orders[oi]
    j = _thash(o.owner, o.token, mask)
    while eng.tok_slot[j] != NIL:
        j = (j + 1) & mask
    eng.tok_slot[j] = oi


@njit(**_HOT)
def _tok_erase(eng, oi):
    """Drop pool slot `oi` from the token table, shifting later entries of its probe run back."""
    mask = eng.words[M_TMASK]
    tab = eng.tok_slot
    o = eng.orders[oi]
    i = _thash(o.owner, o.token, mask)
    while tab[i] != oi:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        s = tab[j]
        if s == NIL:
            break
        home = _thash(eng.orders[s].owner, eng.orders[s].token, mask)
        # entry j may move to the hole at i only if its home is not cyclically within (i, j]
        if i <= j:
            if i < home <= j:
                continue
        elif home > i or home <= j:
            continue
        tab[i] = s
        i = j
    tab[i] = NIL


@njit(**_HOT, inline="always")
def _free_order(eng, oi):
    """Return a pool slot whose order has left the book (or never entered it)."""
    o = eng.orders[oi]
    eng.ref_slot[o.ref & eng.words[M_RMASK]] = NIL
    if o.owner > 0:
        _tok_erase(eng, oi)
    o.ref = 0
    o.level = NIL
    o.next = eng.words[M_FREE_ORDER]
    eng.words[M_FREE_ORDER] = oi


# ---- price levels -------------------------------------------------------------------------------
@njit(**_HOT, inline="always")
def _level_for(eng, bs, key, price):
    """The level at `key` on book side `bs`, made if new; -1 when the side already has its maximum."""
    L = eng.words[M_LEVELS]
    base = bs * L
    n = _nlev(eng, bs)
    book = eng.book
    i = n - 1
    while i >= 0 and book[base + i].key > key:
        i -= 1
    if i >= 0 and book[base + i].key == key:
        return book[base + i].level
    li = eng.words[M_FREE_LEVEL]
    if n == L or li == NIL:
        return NIL
    lv = eng.levels[li]
    eng.words[M_FREE_LEVEL] = lv.head
    lv.price = price
    lv.shares = 0
    lv.hshares = 0
    lv.head = NIL
    lv.tail = NIL
    lv.hhead = NIL
    lv.htail = NIL
    lv.count = 0
    lv.hcount = 0
    j = n
    while j > i + 1:
        book[base + j] = book[base + j - 1]
        j -= 1
    book[base + i + 1].key = key
    book[base + i + 1].level = li
    _set_nlev(eng, bs, n + 1)
    return li


@njit(**_HOT, inline="always")
def _drop_level(eng, bs, key, li):
    """Take the empty level `li` (at `key`) out of its side and back to the free list."""
    L = eng.words[M_LEVELS]
    base = bs * L
    n = _nlev(eng, bs)
    i = n - 1
    book = eng.book
    while i > 0 and book[base + i].key != key:
        i -= 1
    for j in range(i, n - 1):
        book[base + j] = book[base + j + 1]
    _set_nlev(eng, bs, n - 1)
    eng.levels[li].head = eng.words[M_FREE_LEVEL]
    eng.words[M_FREE_LEVEL] = li


@njit(**_HOT, inline="always")
def _link(eng, oi, li):
    """Queue order `oi` at the back of its level's displayed or non-displayed FIFO."""
    o = eng.orders[oi]
    lv = eng.levels[li]
    o.level = li
    o.next = NIL
    if o.display == DISPLAY_HIDDEN:
        o.prev = lv.htail
        if lv.htail == NIL:
            lv.hhead = oi
        else:
            eng.orders[lv.htail].next = oi
        lv.htail = oi
        lv.hcount += 1
        lv.hshares += o.leaves
    else:
        o.prev = lv.tail
        if lv.tail == NIL:
            lv.head = oi
        else:
            eng.orders[lv.tail].next = oi
        lv.tail = oi
        lv.count += 1
        lv.shares += o.leaves
    eng.words[M_LIVE] += 1


@njit(**_HOT, inline="always")
def _unlink(eng, oi):
    """Take order `oi` (and its open shares) out of its level, dropping the level when it empties."""
    o = eng.orders[oi]
    li = o.level
    lv = eng.levels[li]
    if o.prev != NIL:
        eng.orders[o.prev].next = o.next
    if o.next != NIL:
        eng.orders[o.next].prev = o.prev
    if o.display == DISPLAY_HIDDEN:
        if lv.hhead == oi:
            lv.hhead = o.next
        if lv.htail == oi:
            lv.htail = o.prev
        lv.hcount -= 1
        lv.hshares -= o.leaves
    else:
        if lv.head == oi:
            lv.head = o.next
        if lv.tail == oi:
            lv.tail = o.prev
        lv.count -= 1
        lv.shares -= o.leaves
    o.level = NIL
    eng.words[M_LIVE] -= 1
    if lv.count == 0 and lv.hcount == 0:
        _drop_level(eng, 2 * o.locate + o.side, _side_key(o.side, lv.price), li)


@njit(**_HOT, inline="always")
def _crosses(eng, locate, side, price):
    """True when an order at `price` on `side` would trade against the opposite side now."""
    bs = 2 * locate + 1 - side
    n = _nlev(eng, bs)
    if n == 0:
        return False
    if price == MARKET:
        return True
    best = eng.levels[eng.book[bs * eng.words[M_LEVELS] + n - 1].level].price
    return best <= price if side == 0 else best >= price


# ---- validation ---------------------------------------------------------------------------------
@njit(**_HOT, inline="always")
def _check_price(eng, price):
    if price <= 0 or price > eng.words[M_MAX_PRICE] or price % eng.words[M_TICK] != 0:
        return REJECT_INVALID_PRICE
    return OK


@njit(**_HOT, inline="always")
def _check_qty(eng, qty):
    if qty <= 0 or qty > eng.words[M_MAX_QTY]:
        return REJECT_INVALID_QUANTITY
    return OK


@njit(**_HOT, inline="always")
def _check_enter(eng, locate, owner, token, side, qty, price, tif, display):
    if locate < 1 or locate > eng.words[M_NSYM]:
        return REJECT_INVALID_SYMBOL
    if side != SIDE_BUY and side != SIDE_SELL and side != SIDE_SHORT and side != SIDE_SHORT_EXEMPT:
        return REJECT_INVALID_SIDE
    st = _check_qty(eng, qty)
    if st != OK:
        return st
    if price != MARKET:
        st = _check_price(eng, price)
        if st != OK:
            return st
    if display != DISPLAY_VISIBLE and display != DISPLAY_HIDDEN and display != DISPLAY_ATTRIBUTABLE:
        return REJECT_INVALID_DISPLAY
    if tif != TIF_DAY and tif != TIF_IOC and tif != 53 and tif != 54 and tif != 69:  # '5' '6' 'E'
        return REJECT_OTHER
    if owner < 0:
        return REJECT_OTHER
    if eng.syms[locate].state != 0:
        return REJECT_HALTED
    if owner > 0 and _by_token(eng, owner, token) != NIL:
        return ST_DUPLICATE_TOKEN
    if eng.words[M_FREE_ORDER] == NIL:
        return REJECT_PROCESSING_ERROR
    return OK


# ---- matching -----------------------------------------------------------------------------------
@njit(**_HOT)
def _match(eng, out, ts, oi):
    """Trade order `oi` against the opposite side, best price first, oldest first, at the resting prices.

    Returns True when it stopped for lack of output room with shares still marketable.
    """
    o = eng.orders[oi]
    side = np.int64(o.side)
    limit = np.int64(o.price)
    locate = np.int64(o.locate)
    bs = 2 * locate + 1 - side
    top = bs * eng.words[M_LEVELS]
    report_in = _wants(eng, o.owner)
    while o.leaves > 0:
        n = _nlev(eng, bs)
        if n == 0:
            return False
        li = eng.book[top + n - 1].level
        lv = eng.levels[li]
        px = lv.price
        if limit != MARKET and (px > limit if side == 0 else px < limit):
            return False
        if not _room(out, 2, 3):  # this fill, the remainder's add, and its records
            return True
        ri = lv.head if lv.head != NIL else lv.hhead
        r = eng.orders[ri]
        fill = min(o.leaves, r.leaves)
        match = eng.words[M_NEXT_MATCH]
        eng.words[M_NEXT_MATCH] = match + 1
        if r.display == DISPLAY_HIDDEN:
            _put_trade(eng, out, ts, locate, r.side, fill, px, match)
            lv.hshares -= fill
            liq = LIQ_HIDDEN_ADDED
        else:
            _put_executed(eng, out, ts, locate, r.ref, fill, match)
            lv.shares -= fill
            liq = LIQ_ADDED
        r.leaves -= fill
        r.cum += fill
        o.leaves -= fill
        o.cum += fill
        out.cur[C_FILLED] += fill
        eng.words[S_FILLS] += 1
        eng.words[S_SHARES] += fill
        if _wants(eng, r.owner):
            _report(out, R_EXECUTED, r, liq, 0, STATE_LIVE if r.leaves > 0 else STATE_DEAD, fill, match, px,
                    ts, 0, 0)
        if report_in:
            _report(out, R_EXECUTED, o, LIQ_REMOVED, 0, STATE_LIVE if o.leaves > 0 else STATE_DEAD, fill,
                    match, px, ts, 0, 0)
        if r.leaves == 0:
            _unlink(eng, ri)
            _free_order(eng, ri)
    return False


@njit(**_HOT, inline="always")
def _finish(eng, out, ts, oi, first, truncated):
    """After matching: rest the remainder (announced with A/F), or cancel it; fix the first record's state."""
    o = eng.orders[oi]
    rested = False
    if o.leaves > 0:
        if o.tif == TIF_IOC or o.price == MARKET:
            reason = REASON_IOC
        elif truncated:
            reason = REASON_SYSTEM
        else:
            li = _level_for(eng, 2 * o.locate + o.side, _side_key(o.side, o.price), o.price)
            if li != NIL:
                _link(eng, oi, li)
                if o.display != DISPLAY_HIDDEN:
                    _put_add(eng, out, ts, o)
                rested = True
            reason = REASON_SYSTEM
        if not rested:
            if reason == REASON_SYSTEM:
                eng.words[S_SYSTEM_CANCELS] += 1
            n = o.leaves
            o.leaves = 0
            if _wants(eng, o.owner):
                _report(out, R_CANCELED, o, 0, reason, STATE_DEAD, n, 0, 0, ts, 0, 0)
    if first >= 0:
        out.reports[first].state = STATE_LIVE if rested else STATE_DEAD
    out.cur[C_LEAVES] = o.leaves
    if not rested:
        _free_order(eng, oi)


# ---- operations ---------------------------------------------------------------------------------
@njit(**_HOT)
def enter(eng, out, ts, locate, owner, token, side, qty, price, tif, display, mpid):
    """Enter a new order: match it against the opposite side, then rest the remainder (day) or cancel it (IOC).

    side 'B'/'S'/'T'/'E'; price in 1e-4 dollars on the tick, or MARKET; tif TIF_DAY/TIF_IOC ('5', '6', 'E'
    rest like day); display 'Y'/'A' (shown) or 'N' (hidden); mpid alpha4 packed (0 none: A, else F).
    Returns OK or a reject status; out.cur[C_REF] is the order's reference number.
    """
    cur = out.cur
    if not _begin(eng, out, 2, 3):
        return ST_NO_ROOM
    st = _check_enter(eng, locate, owner, token, side, qty, price, tif, display)
    if st != OK:
        eng.words[S_REJECTED] += 1
        if _wants(eng, owner):
            _report_reject(out, REQ_ENTER, st, owner, token, 0, 0, side, locate, qty, price, tif, display, mpid, ts)
        return st
    oi = _alloc_order(eng)
    ref = _next_ref(eng)
    eng.ref_slot[ref & eng.words[M_RMASK]] = oi
    o = eng.orders[oi]
    o.ref = ref
    o.token = token
    o.price = price
    o.owner = owner
    o.leaves = qty
    o.orig = qty
    o.cum = 0
    o.next = NIL
    o.prev = NIL
    o.level = NIL
    o.locate = locate
    o.mpid = mpid
    o.side = 0 if side == SIDE_BUY else 1
    o.sidech = side
    o.tif = tif
    o.display = display
    if owner > 0:
        _tok_insert(eng, oi)
    cur[C_REF] = ref
    eng.words[S_ENTERED] += 1
    first = -1
    if _wants(eng, owner):
        first = _report(out, R_ACCEPTED, o, 0, 0, STATE_LIVE, qty, 0, price, ts, 0, 0)
    # _match is a real call (one compiled copy for enter and replace), made only when the order crosses
    truncated = _match(eng, out, ts, oi) if _crosses(eng, locate, o.side, price) else False
    _finish(eng, out, ts, oi, first, truncated)
    return OK


@njit(**_HOT, inline="always")
def _cancel(eng, out, ts, oi, qty, reason):
    o = eng.orders[oi]
    out.cur[C_REF] = o.ref
    eng.words[S_CANCELED] += 1
    if qty <= 0 or qty >= o.leaves:
        n = o.leaves
        if o.display != DISPLAY_HIDDEN:
            _put_delete(eng, out, ts, o.locate, o.ref)
        _unlink(eng, oi)
        o.leaves = 0
        if _wants(eng, o.owner):
            _report(out, R_CANCELED, o, 0, reason, STATE_DEAD, n, 0, 0, ts, 0, 0)
        _free_order(eng, oi)
        out.cur[C_LEAVES] = 0
    else:
        lv = eng.levels[o.level]
        if o.display != DISPLAY_HIDDEN:
            _put_cancel(eng, out, ts, o.locate, o.ref, qty)
            lv.shares -= qty
        else:
            lv.hshares -= qty
        o.leaves -= qty
        if _wants(eng, o.owner):
            _report(out, R_CANCELED, o, 0, reason, STATE_LIVE, qty, 0, 0, ts, 0, 0)
        out.cur[C_LEAVES] = o.leaves
    return OK


@njit(**_HOT)
def cancel(eng, out, ts, ref, qty, reason):
    """Cancel `qty` shares (0 or at least the open shares: all of them) of the resting order `ref`.

    `reason` is the OUCH cancel reason for the report (REASON_USER, REASON_SUPERVISORY, ...).
    Returns OK, ST_UNKNOWN_ORDER or ST_NO_ROOM. ITCH: X for part, D for all (nothing for hidden orders).
    """
    if not _begin(eng, out, 1, 1):
        return ST_NO_ROOM
    oi = _by_ref(eng, ref)
    if oi == NIL:
        eng.words[S_REJECTED] += 1
        return ST_UNKNOWN_ORDER
    return _cancel(eng, out, ts, oi, qty, reason)


@njit(**_HOT)
def cancel_token(eng, out, ts, owner, token, qty, reason):
    """`cancel` naming the order by its owner's token; an unknown one gets a rejected record (request 'X')."""
    if not _begin(eng, out, 1, 1):
        return ST_NO_ROOM
    oi = _by_token(eng, owner, token) if owner > 0 else NIL
    if oi == NIL:
        eng.words[S_REJECTED] += 1
        if owner > 0:
            _report_reject(out, REQ_CANCEL, ST_UNKNOWN_ORDER, owner, token, 0, 0, 0, 0, qty, 0, 0, 0, 0, ts)
        return ST_UNKNOWN_ORDER
    # through the public entry, not a second inlined copy of the cancel (compile time)
    return cancel(eng, out, ts, eng.orders[oi].ref, qty, reason)


@njit(**_HOT, inline="always")
def _replace(eng, out, ts, oi, new_token, new_qty, new_price):
    o = eng.orders[oi]
    owner = np.int64(o.owner)
    old_token = np.int64(o.token)
    old_ref = np.int64(o.ref)
    st = _check_qty(eng, new_qty)
    if st == OK:
        st = _check_price(eng, new_price)
    if st == OK and eng.syms[o.locate].state != 0:
        st = REJECT_HALTED
    if st == OK and owner > 0 and new_token != old_token and _by_token(eng, owner, new_token) != NIL:
        st = ST_DUPLICATE_TOKEN
    if st != OK:
        eng.words[S_REJECTED] += 1
        if _wants(eng, owner):
            _report_reject(out, REQ_REPLACE, st, owner, new_token, old_token, old_ref, o.sidech, o.locate, new_qty,
                           new_price, o.tif, o.display, o.mpid, ts)
        return st
    eng.words[S_REPLACED] += 1
    shown = o.display != DISPLAY_HIDDEN
    _unlink(eng, oi)
    eng.ref_slot[old_ref & eng.words[M_RMASK]] = NIL
    if owner > 0:
        _tok_erase(eng, oi)
    new_ref = _next_ref(eng)
    eng.ref_slot[new_ref & eng.words[M_RMASK]] = oi
    o.ref = new_ref
    o.token = new_token
    o.price = new_price
    o.leaves = new_qty
    o.orig = new_qty + o.cum
    if owner > 0:
        _tok_insert(eng, oi)
    out.cur[C_REF] = new_ref
    crossing = _crosses(eng, o.locate, o.side, new_price)
    li = NIL if crossing else _level_for(eng, 2 * o.locate + o.side, _side_key(o.side, new_price), new_price)
    if li != NIL:  # rests at once: one U on the feed
        _link(eng, oi, li)
        if shown:
            _put_replace(eng, out, ts, o.locate, old_ref, new_ref, new_qty, new_price)
        if _wants(eng, owner):
            _report(out, R_REPLACED, o, 0, 0, STATE_LIVE, new_qty, 0, new_price, ts, old_token, old_ref)
        out.cur[C_LEAVES] = new_qty
        return OK
    # The replacement trades on arrival (or its new price needs a level the side has no room for): the
    # old order leaves the feed, and the new one is added only if some of it rests.
    if shown:
        _put_delete(eng, out, ts, o.locate, old_ref)
    first = -1
    if _wants(eng, owner):
        first = _report(out, R_REPLACED, o, 0, 0, STATE_LIVE, new_qty, 0, new_price, ts, old_token, old_ref)
    truncated = _match(eng, out, ts, oi) if crossing else True
    _finish(eng, out, ts, oi, first, truncated)
    return OK


@njit(**_HOT)
def replace(eng, out, ts, ref, new_token, new_qty, new_price):
    """Replace the resting order `ref`: new open quantity and price, a new reference, the back of the queue.

    ITCH U when the replacement rests at once; when it is marketable, D for the old order, fills, then A
    for any remainder. Returns OK, a reject status (the old order stays as it was), ST_UNKNOWN_ORDER or
    ST_NO_ROOM; out.cur[C_REF] is the new reference.
    """
    if not _begin(eng, out, 2, 3):
        return ST_NO_ROOM
    oi = _by_ref(eng, ref)
    if oi == NIL:
        eng.words[S_REJECTED] += 1
        return ST_UNKNOWN_ORDER
    return _replace(eng, out, ts, oi, new_token, new_qty, new_price)


@njit(**_HOT)
def replace_token(eng, out, ts, owner, token, new_token, new_qty, new_price):
    """`replace` naming the order by its owner's token; an unknown one gets a rejected record (request 'U')."""
    if not _begin(eng, out, 2, 3):
        return ST_NO_ROOM
    oi = _by_token(eng, owner, token) if owner > 0 else NIL
    if oi == NIL:
        eng.words[S_REJECTED] += 1
        if owner > 0:
            _report_reject(out, REQ_REPLACE, ST_UNKNOWN_ORDER, owner, new_token, token, 0, 0, 0, new_qty, new_price,
                           0, 0, 0, ts)
        return ST_UNKNOWN_ORDER
    # through the public entry, not a second inlined copy of the replace (compile time)
    return replace(eng, out, ts, eng.orders[oi].ref, new_token, new_qty, new_price)


@njit(**_HOT)
def cancel_owner(eng, out, ts, owner, reason):
    """Cancel every resting order of `owner` (a session that logged out or was lost); returns how many.

    Walks the whole pool (a cold path). Stops early when the outputs are full: drain and call again
    until it returns 0.
    """
    n = 0
    orders = eng.orders
    for i in range(orders.shape[0]):
        o = orders[i]
        if o.level != NIL and o.ref != 0 and o.owner == owner:
            if not _room(out, 1, 1):
                break
            cancel(eng, out, ts, o.ref, 0, reason)
            n += 1
    return n


# ---- lookups and snapshots ----------------------------------------------------------------------
# The synthetic flow (venue/flow.py) makes one of these calls per operation: inlined there, since a real
# call pushes the Engine's and Out's arrays (about 70 words) on the stack, which cost a quarter of an
# operation (measured 279 -> 209 ns per operation; the flow's cold compile grows by about 40 s).
enter_inline = njit(**_HOT, inline="always")(enter.py_func)
cancel_inline = njit(**_HOT, inline="always")(cancel.py_func)
replace_inline = njit(**_HOT, inline="always")(replace.py_func)


@njit(**_HOT)
def find_token(eng, owner, token):
    """The order reference of the resting client order (owner, token), 0 when there is none."""
    oi = _by_token(eng, owner, token) if owner > 0 else NIL
    return 0 if oi == NIL else eng.orders[oi].ref


@njit(**_HOT)
def order_leaves(eng, ref):
    """Open shares of the resting order `ref`, 0 when it is not in the book."""
    oi = _by_ref(eng, ref)
    return 0 if oi == NIL else np.int64(eng.orders[oi].leaves)


@njit(**_HOT)
def best(eng, locate, side):
    """(price, displayed shares) of the best displayed level of a side (0 buy, 1 sell); (0, 0) when none."""
    bs = 2 * locate + side
    base = bs * eng.words[M_LEVELS]
    i = _nlev(eng, bs) - 1
    while i >= 0:
        lv = eng.levels[eng.book[base + i].level]
        if lv.shares > 0:
            return np.int64(lv.price), np.int64(lv.shares)
        i -= 1
    return np.int64(0), np.int64(0)


def locate_of(eng: Engine, stock: str) -> int:
    """The stock locate of a symbol (KeyError when the engine does not list it)."""
    target = alpha_to_int(stock.upper())
    hits = np.nonzero(eng.syms["stock"] == target)[0]
    if len(hits) == 0:
        raise KeyError(f"{stock} is not a symbol of this engine")
    return int(hits[0])


def book_levels(eng: Engine, locate: int, side: int, depth: int = 10, hidden: bool = False):
    """The top `depth` levels of one side (0 buy, 1 sell), best first: [(price, shares, orders), ...].

    Displayed interest only, as the feed shows it (levels holding only hidden orders are left out);
    `hidden=True` counts non-displayed orders too.
    """
    bs = 2 * locate + side
    L = int(eng.words[M_LEVELS])
    rows = []
    n = int(eng.syms[locate]["nbid" if side == 0 else "nask"])
    for i in range(n - 1, -1, -1):
        lv = eng.levels[int(eng.book[bs * L + i]["level"])]
        shares, count = int(lv["shares"]), int(lv["count"])
        if hidden:
            shares += int(lv["hshares"])
            count += int(lv["hcount"])
        if count:
            rows.append((int(lv["price"]), shares, count))
            if len(rows) == depth:
                break
    return rows


def bbo(eng: Engine, locate: int) -> tuple[int, int, int, int]:
    """(bid_px, bid_shares, ask_px, ask_shares) of the displayed book; 0, 0 for an empty side."""
    bp, bq = best(eng, locate, 0)
    ap, aq = best(eng, locate, 1)
    return int(bp), int(bq), int(ap), int(aq)


def set_halted(eng: Engine, locate: int, halted: bool) -> None:
    """Halt (new orders and replaces rejected with REJECT_HALTED; cancels still work) or resume a symbol."""
    eng.syms[locate]["state"] = 1 if halted else 0


def live_orders(eng: Engine) -> int:
    return int(eng.words[M_LIVE])


def messages(out: Out) -> list[dict]:
    """The ITCH messages in `out`, decoded (tests and tools)."""
    buf = out.buf
    end = int(out.cur[C_BUF])
    res, p = [], 0
    while p < end:
        n = (int(buf[p]) << 8) | int(buf[p + 1])
        res.append(d.decode(buf[p + 2:p + 2 + n]))
        p += 2 + n
    return res


def reports(out: Out) -> np.ndarray:
    """A copy of the report records in `out`."""
    return out.reports[:int(out.cur[C_REP])].copy()


def reset(out: Out) -> None:
    """Mark the outputs drained."""
    out.cur[C_BUF] = 0
    out.cur[C_REP] = 0
    out.cur[C_MSGS] = 0


def stats(eng: Engine) -> dict:
    """Counters as a dict (operations, fills, messages by type)."""
    return {
        "entered": int(eng.words[S_ENTERED]), "canceled": int(eng.words[S_CANCELED]),
        "replaced": int(eng.words[S_REPLACED]), "rejected": int(eng.words[S_REJECTED]),
        "fills": int(eng.words[S_FILLS]), "shares": int(eng.words[S_SHARES]),
        "messages": int(eng.words[S_MESSAGES]), "no_room": int(eng.words[S_NO_ROOM]),
        "system_cancels": int(eng.words[S_SYSTEM_CANCELS]), "live_orders": int(eng.words[M_LIVE]),
        "by_type": {chr(t): int(eng.words[W_COUNTS + t]) for t in range(256) if eng.words[W_COUNTS + t]},
        "symbols": [int_to_alpha(int(s)) for s in eng.syms["stock"][1:]],
    }
