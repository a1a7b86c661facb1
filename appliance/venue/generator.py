"""Seeded, deterministic synthetic NASDAQ ITCH 5.0 trading days, as day-file bytes.

The stream has the shape of a real day: start of messages, a directory (R, H, Y, L) for every
symbol, start of system hours, pre-market flow, the opening cross, regular hours with an IPO
release, a LULD halt and an operational halt, the closing cross, after-hours flow, end of system
hours and end of messages. Every ITCH 5.0 type appears.

Order flow is per symbol around a random-walking fair price and is self-consistent the way a real
book is: order references are unique and increasing; deletes, cancels, executions and replaces
name only live orders and never take more shares than remain; a replace retires its old reference;
executions take the best-priced resting order of a side, oldest first (price-time priority); and
a new bid is always below the best ask (and a new ask above the best bid), so books never cross.
Each symbol keeps at most `pool_cap` live orders: adds turn into deletes more often as a book
deepens, always when it is full, so busy books settle near a quarter of the cap.

All state lives in numpy arrays and one numba loop (`Generator.fill`) writes length-prefixed
messages into a caller's buffer, as many as fit, resumably: the venue streams a day in chunks and
`generate` makes a whole file in one call. Same parameters, same bytes.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, fields

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from ..feed.dayfile import PREFIX_SIZE, write_dayfile
from ..feed.itch_descriptor import (
    ACT_REASON, ACT_RESERVED, ACT_STATE, ACT_STOCK, ADD_MPID, ADD_PRICE, ADD_REF, ADD_SHARES,
    ADD_SIDE, ADD_STOCK, BRK_MATCH, CRS_MATCH, CRS_PRICE, CRS_SHARES, CRS_STOCK, CRS_TYPE, CXL_REF,
    CXL_SHARES, DEL_REF, DIR_AUTHENTICITY, DIR_ETP_FLAG, DIR_ETP_LEVERAGE, DIR_FINANCIAL_STATUS,
    DIR_INVERSE, DIR_IPO_FLAG, DIR_ISSUE_CLASS, DIR_ISSUE_SUBTYPE, DIR_LULD_TIER, DIR_MARKET_CATEGORY,
    DIR_ROUND_LOT, DIR_ROUND_LOTS_ONLY, DIR_SHORT_SALE, DIR_STOCK, EXE_MATCH, EXE_PRICE,
    EXE_PRINTABLE, EXE_REF, EXE_SHARES, FIELDS, LENGTHS, MAX_LENGTH, OFF_LOCATE, OFF_TIMESTAMP,
    OFF_TRACKING, OFF_TYPE, REP_NEW_REF, REP_OLD_REF, REP_PRICE, REP_SHARES, SYS_EVENT_CODE,
    TRD_MATCH, TRD_PRICE, TRD_REF, TRD_SHARES, TRD_SIDE, TRD_STOCK,
)
from ..runtime.wire import alpha_to_int, put_u8, put_u16, put_u32, put_u48, put_u64


def _off(mtype: str, name: str) -> int:
    for fname, off, _size, _kind in FIELDS[mtype]:
        if fname == name:
            return off
    raise KeyError(f"ITCH {mtype!r} has no field {name!r}")


# Offsets the descriptor does not name, read from its field table (one source of truth).
Y_STOCK_OFF, Y_ACTION_OFF = _off("Y", "stock"), _off("Y", "action")
L_MPID_OFF, L_STOCK_OFF = _off("L", "mpid"), _off("L", "stock")
L_PRIMARY_OFF, L_MODE_OFF, L_STATE_OFF = _off("L", "primary"), _off("L", "mode"), _off("L", "state")
V_LEVEL1_OFF, V_LEVEL2_OFF, V_LEVEL3_OFF = _off("V", "level1"), _off("V", "level2"), _off("V", "level3")
W_LEVEL_OFF = _off("W", "breached_level")
K_STOCK_OFF, K_RELEASE_OFF = _off("K", "stock"), _off("K", "release_time")
K_QUALIFIER_OFF, K_PRICE_OFF = _off("K", "qualifier"), _off("K", "ipo_price")
J_STOCK_OFF, J_REF_OFF, J_UPPER_OFF = _off("J", "stock"), _off("J", "ref_price"), _off("J", "upper_price")
J_LOWER_OFF, J_EXT_OFF = _off("J", "lower_price"), _off("J", "extension")
OH_STOCK_OFF, OH_MARKET_OFF, OH_ACTION_OFF = _off("h", "stock"), _off("h", "market_code"), _off("h", "action")
I_PAIRED_OFF, I_IMBALANCE_OFF, I_DIRECTION_OFF = _off("I", "paired"), _off("I", "imbalance"), _off("I", "direction")
I_STOCK_OFF, I_FAR_OFF, I_NEAR_OFF = _off("I", "stock"), _off("I", "far_price"), _off("I", "near_price")
I_REF_OFF, I_CROSS_OFF, I_VARIATION_OFF = _off("I", "ref_price"), _off("I", "cross_type"), _off("I", "variation")
N_STOCK_OFF, N_INTEREST_OFF = _off("N", "stock"), _off("N", "interest")
O_STOCK_OFF, O_ELIGIBLE_OFF = _off("O", "stock"), _off("O", "open_eligibility")
O_MIN_OFF, O_MAX_OFF, O_NEAR_OFF = _off("O", "min_price"), _off("O", "max_price"), _off("O", "near_price")
O_NEAR_TIME_OFF, O_LOWER_OFF, O_UPPER_OFF = _off("O", "near_time"), _off("O", "lower_collar"), _off("O", "upper_collar")

FRAME_MAX = PREFIX_SIZE + MAX_LENGTH  # room one more message of any type needs

US = 1_000
MS = 1_000_000
SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
PRICE_ONE = 10_000  # $1 in Price(4) units
NO_ASK = 1 << 40  # best ask of an empty ask side
NO_TIME = 1 << 62  # "no next flow message"
ALIAS_ONE = 1 << 30  # probability 1 in the alias table

# ---- st: one int64 array with everything scalar the loop reads and writes ------------------------
# [0, 32) parameters (C_*), [32, 48) state (S_*), ST_RNG, [MPIDS, +16) MPIDs for F and L,
# [COUNTS, +256) messages written per type byte. One array rather than five: every array argument
# of a numba call costs about a dozen scalar arguments.
C_TICK = 0
C_CAP = 1  # live orders per symbol
C_NFLOW = 3  # order-flow messages to emit (beside the schedule)
C_MIN_FAIR = 4  # the fair price reflects off this floor
C_MPID_PPM = 5  # adds carrying an MPID (F), per million adds
C_NOII_PPM = 6  # flow inside a cross window that is NOII, per million
C_MOVE_PPM = 7  # flow messages that move their symbol's fair price, per million
C_STICKY_PPM = 8  # flow messages for the same symbol as the previous one, per million
C_OPEN_WIN_LO = 9
C_OPEN = 10
C_CLOSE_WIN_LO = 11
C_CLOSE = 12
C_NMPID = 13
C_FIRST_MATCH = 14
C_MIX = 16  # cumulative per-million thresholds of the flow kinds below, in order

# flow kinds, in the order of their C_MIX thresholds
F_ADD, F_DELETE, F_REPLACE, F_CANCEL, F_EXEC, F_EXEC_PRICE, F_TRADE, F_RPII, F_REGSHO, \
    F_PARTICIPANT, F_BROKEN = range(11)
F_SWEEP = 11  # the next execution of an aggressive order sweeping a side
F_NOII = 12  # an imbalance indication in a cross window
MIX_KEYS = ("A", "D", "U", "X", "E", "C", "P", "N", "Y", "L", "B")  # "A" stands for all adds (A and F)

S_SCHED = 32  # next schedule row
S_FLOW = 33  # flow messages emitted
S_SEG = 34  # current time segment
S_NEXT_T = 35  # time drawn for the next flow message, -1 when not drawn yet
S_LAST_TS = 36
S_NEXT_REF = 37
S_NEXT_MATCH = 38
S_PREV_SYM = 39
S_SWEEP_LEFT = 40  # further executions of an aggressive order sweeping a side
S_SWEEP_SYM = 41
S_SWEEP_SIDE = 42
S_EMITTED = 43
S_SEG_J = 44  # index of the next flow message within its segment
S_SEG_ACC = 45  # (j * r) mod c for that segment (see _flow_time)
S_SEG_FRAC = 46  # floor(j * r / c)
ST_RNG = 48  # xorshift64* state (bits of a uint64)
MPIDS = 64
MAX_MPIDS = 16
COUNTS = 128
ST_WORDS = COUNTS + 256

# ---- per-symbol columns -------------------------------------------------------------------------
Y_STOCK = 0  # alpha8 packed big-endian
Y_FAIR = 1
Y_UNIT = 2  # quoting unit in ticks (wider for dearer names)
Y_N = 3  # live orders
Y_NSIDE = 4  # + side: live orders of that side (the size of its heap)
Y_HALT = 6  # nonzero: no executions (halted, quotation only, operational halt)
Y_TRACK = 7
Y_LAST_MATCH = 8  # the symbol's latest match number, 0 before its first trade
SYM_WORDS = 16  # 128 bytes a row

# ---- live orders, per symbol and side ------------------------------------------------------------
# pool[s, side, i] holds live order slot i of that side (slots 0..count-1, dense: a removal moves the
# last slot into the hole). heap[s, side, k] is a binary min-heap of (priority key, slot): heap entry
# 0 is the side's best price and, at that price, its oldest order, the one an execution takes. The
# key is the price (bids: PRICE_CEIL - price) shifted above the reference, so comparing keys alone
# gives price-time priority and a sift touches only the compact heap rows.
P_REF = 0
P_PRICE = 1
P_SHARES = 2
P_HPOS = 3  # where this slot sits in the heap
POOL_WORDS = 4
H_KEY = 0
H_SLOT = 1
HEAP_WORDS = 2
REF_BITS = 33  # references stay below 2**33: they grow by at most 4 a message, messages <= MAX_MESSAGES
PRICE_CEIL = 1 << 30  # generated prices stay below this, so keys stay below 2**63
MAX_MESSAGES = 2_000_000_000

# ---- time segments: rows (start, length, first flow index, end flow index, length // count, length % count)
SEG_T0, SEG_LEN, SEG_LO, SEG_HI, SEG_Q, SEG_R = range(6)

# ---- schedule rows: (time, kind, symbol index, a, b) ----------------------------------------------
EV_SYSTEM = 0  # a: event code
EV_DIRECTORY = 1  # a: market category, b: flags
EV_ACTION = 2  # a: trading state, b: reason (alpha4 packed)
EV_REGSHO = 3  # a: action
EV_PARTICIPANT = 4  # a: MPID (alpha4 packed), b: primary market maker
EV_MWCB_DECLINE = 5  # a: reference index level in 1e-8 dollars
EV_MWCB_STATUS = 6  # a: breached level
EV_IPO = 7  # a: release time (s since midnight)
EV_LULD = 8
EV_OPHALT = 9  # a: action
EV_CROSS = 10  # a: cross type
EV_DLCR = 11
DIR_IPO = 1
DIR_TIER1 = 2
DIR_ETP = 4

MPID_NAMES = ("NITE", "GSCO", "MSCO", "UBSS", "JPMS", "CDRG", "VIRT", "ETMM", "TMBR", "CITD", "SBSH",
              "ABNC", "BARD", "HRTF", "JNST", "XTXM")
assert len(MPID_NAMES) <= MAX_MPIDS

DEFAULT_MIX = (("A", 40.5), ("D", 35.0), ("U", 9.0), ("X", 3.0), ("E", 5.0), ("C", 0.5), ("P", 2.0),
               ("N", 0.12), ("Y", 0.01), ("L", 0.01), ("B", 0.005))

LEN_S, LEN_R, LEN_H, LEN_Y, LEN_L = LENGTHS["S"], LENGTHS["R"], LENGTHS["H"], LENGTHS["Y"], LENGTHS["L"]
LEN_V, LEN_W, LEN_K, LEN_J, LEN_h = LENGTHS["V"], LENGTHS["W"], LENGTHS["K"], LENGTHS["J"], LENGTHS["h"]
LEN_A, LEN_F, LEN_E, LEN_C, LEN_X = LENGTHS["A"], LENGTHS["F"], LENGTHS["E"], LENGTHS["C"], LENGTHS["X"]
LEN_D, LEN_U, LEN_P, LEN_Q, LEN_B = LENGTHS["D"], LENGTHS["U"], LENGTHS["P"], LENGTHS["Q"], LENGTHS["B"]
LEN_I, LEN_N, LEN_O = LENGTHS["I"], LENGTHS["N"], LENGTHS["O"]


# ================================ numba kernels ===================================================
@intrinsic
def _borrowed(typingctx, arr):
    """The same array without its owner, so numba skips the atomic reference counting it would do around
    every helper call and view (a third of the generator's time). The caller keeps the array alive."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        src = context.make_array(sig.args[0])(context, builder, args[0])
        dst = context.make_array(sig.return_type)(context, builder)
        dst.meminfo = cgutils.get_null_value(dst.meminfo.type)
        dst.parent = cgutils.get_null_value(dst.parent.type)
        dst.nitems = src.nitems
        dst.itemsize = src.itemsize
        dst.data = src.data
        dst.shape = src.shape
        dst.strides = src.strides
        return dst._getvalue()

    return arr(arr), codegen


@njit(inline="always", cache=True)
def _r63(st):
    """xorshift64*: 63 random bits as a non-negative int64 (the state lives in st, so runs resume)."""
    x = np.uint64(st[ST_RNG])
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    st[ST_RNG] = np.int64(x)
    return np.int64((x * np.uint64(0x2545F4914F6CDD1D)) >> np.uint64(1))


@njit(inline="always", cache=True)
def _below(st, n):
    """Uniform integer in [0, n) for 0 < n < 2**31."""
    return ((_r63(st) >> 31) * n) >> 32


@njit(inline="always", cache=True)
def _geom(st, cap):
    """0 with probability 1/2, 1 with 1/4, ... capped at `cap`."""
    r = _r63(st)
    k = 0
    while k < cap and (r >> k) & 1:
        k += 1
    return k


@njit(inline="always", cache=True)
def _frame(out, p, mtype, length, locate, tracking, ts, st):
    """Write a frame's length prefix and the ITCH header; returns where the message starts."""
    put_u16(out, p, length)
    m = p + PREFIX_SIZE
    put_u8(out, m + OFF_TYPE, mtype)
    put_u16(out, m + OFF_LOCATE, locate)
    put_u16(out, m + OFF_TRACKING, tracking)
    put_u48(out, m + OFF_TIMESTAMP, ts)
    st[COUNTS + mtype] += 1
    return m


@njit(inline="always", cache=True)
def _sym_frame(out, p, mtype, length, sym, s, ts, st):
    return _frame(out, p, mtype, length, s + 1, sym[s, Y_TRACK], ts, st)


@njit(inline="always", cache=True)
def _key(side, price, ref):
    """Heap key: smaller is better priced, then older (references grow with time)."""
    return ((price if side else PRICE_CEIL - price) << REF_BITS) | ref


@njit(cache=True)
def _sift(pool, heap, s, side, k, n):
    """Move heap entry k of `side` (a heap of n entries) up or down to where it belongs."""
    key = heap[s, side, k, H_KEY]
    slot = heap[s, side, k, H_SLOT]
    while k > 0:
        parent = (k - 1) >> 1
        pk = heap[s, side, parent, H_KEY]
        if key >= pk:
            break
        ps = heap[s, side, parent, H_SLOT]
        heap[s, side, k, H_KEY] = pk
        heap[s, side, k, H_SLOT] = ps
        pool[s, side, ps, P_HPOS] = k
        k = parent
    while True:  # does nothing when the entry went up: everything below it is worse than its old parent
        c = 2 * k + 1
        if c >= n:
            break
        ck = heap[s, side, c, H_KEY]
        if c + 1 < n and heap[s, side, c + 1, H_KEY] < ck:
            c += 1
            ck = heap[s, side, c, H_KEY]
        if ck >= key:
            break
        cs = heap[s, side, c, H_SLOT]
        heap[s, side, k, H_KEY] = ck
        heap[s, side, k, H_SLOT] = cs
        pool[s, side, cs, P_HPOS] = k
        k = c
    heap[s, side, k, H_KEY] = key
    heap[s, side, k, H_SLOT] = slot
    pool[s, side, slot, P_HPOS] = k


@njit(inline="always", cache=True)
def _best(pool, heap, sym, s, side):
    """A side's best price: -1 for no bid, NO_ASK for no ask."""
    if sym[s, Y_NSIDE + side] == 0:
        return -1 if side == 0 else NO_ASK
    return pool[s, side, heap[s, side, 0, H_SLOT], P_PRICE]


@njit(inline="always", cache=True)
def _insert(pool, heap, sym, s, side, ref, price, shares):
    i = sym[s, Y_NSIDE + side]
    sym[s, Y_NSIDE + side] = i + 1
    sym[s, Y_N] += 1
    pool[s, side, i, P_REF] = ref
    pool[s, side, i, P_PRICE] = price
    pool[s, side, i, P_SHARES] = shares
    heap[s, side, i, H_KEY] = _key(side, price, ref)
    heap[s, side, i, H_SLOT] = i
    _sift(pool, heap, s, side, i, i + 1)


@njit(inline="always", cache=True)
def _remove(pool, heap, sym, s, side, i):
    """Drop slot i of `side` from its heap and its pool (the side's last slot moves into it)."""
    n = sym[s, Y_NSIDE + side] - 1
    sym[s, Y_NSIDE + side] = n
    sym[s, Y_N] -= 1
    k = pool[s, side, i, P_HPOS]
    if k < n:
        heap[s, side, k, H_KEY] = heap[s, side, n, H_KEY]
        heap[s, side, k, H_SLOT] = heap[s, side, n, H_SLOT]
        _sift(pool, heap, s, side, k, n)
    if i != n:
        for f in range(POOL_WORDS):
            pool[s, side, i, f] = pool[s, side, n, f]
        heap[s, side, pool[s, side, i, P_HPOS], H_SLOT] = i


@njit(inline="always", cache=True)
def _any_order(st, sym, s):
    """A uniformly random live order of symbol s (it has one): (side, slot)."""
    j = _below(st, sym[s, Y_N])
    nb = sym[s, Y_NSIDE]
    return (0, j) if j < nb else (1, j - nb)


@njit(inline="always", cache=True)
def _shares(st):
    """Order size: mostly round lots of 100, some odd lots."""
    if _below(st, 100) < 7:
        return 1 + _below(st, 99)
    r = _below(st, 100)
    if r < 35:
        lots = 1
    elif r < 55:
        lots = 2
    elif r < 65:
        lots = 3
    elif r < 72:
        lots = 4
    elif r < 84:
        lots = 5
    elif r < 93:
        lots = 10
    elif r < 98:
        lots = 20
    else:
        lots = 50 + _below(st, 50)
    return 100 * lots


@njit(inline="always", cache=True)
def _quote_price(st, sym, s, side, bb, ba):
    """A limit price for a new order on `side` that does not cross the other side; -1 when none can."""
    tick = st[C_TICK]
    u = sym[s, Y_UNIT] * tick
    fair = sym[s, Y_FAIR]
    r = _below(st, 100)
    if r < 10 and bb >= 0 and ba < NO_ASK and ba - bb > tick:
        price = bb + tick if side == 0 else ba - tick  # improve the quote inside the spread
    else:
        k = _below(st, 60) if r < 16 else _geom(st, 12)
        off = u + k * u + _below(st, sym[s, Y_UNIT]) * tick
        price = fair - off if side == 0 else fair + off
    if side == 0:
        if price >= ba:
            price = ba - tick
        if price < tick:
            price = tick
        return price if price < ba else -1
    if price <= bb:
        price = bb + tick
    top = (PRICE_CEIL - 1) // tick * tick
    if price > top:
        price = top
    return price if price > bb else -1


@njit(inline="always", cache=True)
def _next_ref(st):
    ref = st[S_NEXT_REF]
    st[S_NEXT_REF] = ref + 1 + _below(st, 4)  # gaps: references also go to other books' orders
    return ref


@njit(inline="always", cache=True)
def _next_match(st):
    m = st[S_NEXT_MATCH]
    st[S_NEXT_MATCH] = m + 1
    return m


@njit(inline="always", cache=True)
def _do_add(out, p, ts, st, sym, pool, heap, s):
    nb = sym[s, Y_NSIDE]
    na = sym[s, Y_NSIDE + 1]
    side = 0 if _below(st, nb + na + 2) < na + 1 else 1  # the thinner side gets more orders
    bb = _best(pool, heap, sym, s, 0)
    ba = _best(pool, heap, sym, s, 1)
    price = _quote_price(st, sym, s, side, bb, ba)
    if price < 0:
        side = 1 - side
        price = _quote_price(st, sym, s, side, bb, ba)
    shares = _shares(st)
    ref = _next_ref(st)
    _insert(pool, heap, sym, s, side, ref, price, shares)
    if _below(st, 1_000_000) < st[C_MPID_PPM]:
        m = _sym_frame(out, p, 70, LEN_F, sym, s, ts, st)  # 'F'
        put_u32(out, m + ADD_MPID, st[MPIDS + _below(st, st[C_NMPID])])
        length = LEN_F
    else:
        m = _sym_frame(out, p, 65, LEN_A, sym, s, ts, st)  # 'A'
        length = LEN_A
    put_u64(out, m + ADD_REF, ref)
    put_u8(out, m + ADD_SIDE, 66 if side == 0 else 83)  # 'B' / 'S'
    put_u32(out, m + ADD_SHARES, shares)
    put_u64(out, m + ADD_STOCK, sym[s, Y_STOCK])
    put_u32(out, m + ADD_PRICE, price)
    return m + length


@njit(inline="always", cache=True)
def _do_delete(out, p, ts, st, sym, pool, heap, s):
    side, i = _any_order(st, sym, s)
    # Of two orders cancel the one further from the fair price, so stale quotes go first. The second is
    # the slot sharing i's cache line: slot order is arbitrary, so it is as random a pick as any.
    j = i ^ 1
    if j < sym[s, Y_NSIDE + side]:
        fair = sym[s, Y_FAIR]
        if abs(pool[s, side, j, P_PRICE] - fair) > abs(pool[s, side, i, P_PRICE] - fair):
            i = j
    ref = pool[s, side, i, P_REF]
    _remove(pool, heap, sym, s, side, i)
    m = _sym_frame(out, p, 68, LEN_D, sym, s, ts, st)  # 'D'
    put_u64(out, m + DEL_REF, ref)
    return m + LEN_D


@njit(inline="always", cache=True)
def _do_cancel(out, p, ts, st, sym, pool, heap, s):
    side, i = _any_order(st, sym, s)
    sh = pool[s, side, i, P_SHARES]
    ref = pool[s, side, i, P_REF]
    if sh <= 1:  # nothing to cancel partially: the order goes
        _remove(pool, heap, sym, s, side, i)
        m = _sym_frame(out, p, 68, LEN_D, sym, s, ts, st)
        put_u64(out, m + DEL_REF, ref)
        return m + LEN_D
    if sh >= 200 and sh % 100 == 0:
        c = 100 * (1 + _below(st, sh // 100 - 1))
    else:
        c = 1 + _below(st, sh - 1)
    pool[s, side, i, P_SHARES] = sh - c
    m = _sym_frame(out, p, 88, LEN_X, sym, s, ts, st)  # 'X'
    put_u64(out, m + CXL_REF, ref)
    put_u32(out, m + CXL_SHARES, c)
    return m + LEN_X


@njit(inline="always", cache=True)
def _do_replace(out, p, ts, st, sym, pool, heap, s):
    side, i = _any_order(st, sym, s)
    old_ref = pool[s, side, i, P_REF]
    price = pool[s, side, i, P_PRICE]
    shares = pool[s, side, i, P_SHARES]
    _remove(pool, heap, sym, s, side, i)
    if _below(st, 100) < 60:
        # The other side never reaches past any resting order, so the old price stays a valid fallback.
        q = _quote_price(st, sym, s, side, _best(pool, heap, sym, s, 0), _best(pool, heap, sym, s, 1))
        if q > 0:
            price = q
    if _below(st, 100) < 50:
        shares = _shares(st)
    ref = _next_ref(st)
    _insert(pool, heap, sym, s, side, ref, price, shares)
    m = _sym_frame(out, p, 85, LEN_U, sym, s, ts, st)  # 'U'
    put_u64(out, m + REP_OLD_REF, old_ref)
    put_u64(out, m + REP_NEW_REF, ref)
    put_u32(out, m + REP_SHARES, shares)
    put_u32(out, m + REP_PRICE, price)
    return m + LEN_U


@njit(inline="always", cache=True)
def _do_exec(out, p, ts, st, sym, pool, heap, s, side, with_price, sweep):
    """Execute against the best-priced, oldest order of `side` (-1: pick the side the fair price leans to)."""
    if side < 0:
        if sym[s, Y_NSIDE] == 0:
            side = 1
        elif sym[s, Y_NSIDE + 1] == 0:
            side = 0
        else:
            mid2 = _best(pool, heap, sym, s, 0) + _best(pool, heap, sym, s, 1)
            fair2 = 2 * sym[s, Y_FAIR]
            take_ask = 500 if fair2 == mid2 else (750 if fair2 > mid2 else 250)
            side = 1 if _below(st, 1000) < take_ask else 0
    i = heap[s, side, 0, H_SLOT]  # the best price's oldest order
    price = pool[s, side, i, P_PRICE]
    ref = pool[s, side, i, P_REF]
    sh = pool[s, side, i, P_SHARES]
    if sweep or sh <= 1 or _below(st, 100) < 55:
        x = sh
    elif sh >= 200 and sh % 100 == 0:
        x = 100 * (1 + _below(st, sh // 100 - 1))
    else:
        x = 1 + _below(st, sh - 1)
    if x == sh:
        _remove(pool, heap, sym, s, side, i)
        if not sweep and _below(st, 100) < 20:
            st[S_SWEEP_LEFT] = 1 + _below(st, 3)
            st[S_SWEEP_SYM] = s
            st[S_SWEEP_SIDE] = side
    else:
        pool[s, side, i, P_SHARES] = sh - x
    match = _next_match(st)
    sym[s, Y_LAST_MATCH] = match
    if with_price:
        m = _sym_frame(out, p, 67, LEN_C, sym, s, ts, st)  # 'C'
        put_u8(out, m + EXE_PRINTABLE, 78 if _below(st, 10) == 0 else 89)  # 'N' / 'Y'
        put_u32(out, m + EXE_PRICE, price)
        length = LEN_C
    else:
        m = _sym_frame(out, p, 69, LEN_E, sym, s, ts, st)  # 'E'
        length = LEN_E
    put_u64(out, m + EXE_REF, ref)
    put_u32(out, m + EXE_SHARES, x)
    put_u64(out, m + EXE_MATCH, match)
    return m + length


@njit(inline="always", cache=True)
def _do_trade(out, p, ts, st, sym, pool, heap, s):
    """A hidden (non-displayed) order executes: a P at or inside the spread, no book change."""
    bb = _best(pool, heap, sym, s, 0)
    ba = _best(pool, heap, sym, s, 1)
    if bb >= 0 and ba < NO_ASK:
        price = (bb + ba) // 100 * 50  # the midpoint, to the half tick
        if price < bb:
            price = bb
    else:
        price = sym[s, Y_FAIR]
    m = _sym_frame(out, p, 80, LEN_P, sym, s, ts, st)  # 'P'
    put_u64(out, m + TRD_REF, 0)  # NASDAQ zeroes the reference of non-displayed orders
    put_u8(out, m + TRD_SIDE, 66)  # and reports every side as 'B'
    put_u32(out, m + TRD_SHARES, _shares(st))
    put_u64(out, m + TRD_STOCK, sym[s, Y_STOCK])
    put_u32(out, m + TRD_PRICE, price)
    match = _next_match(st)
    sym[s, Y_LAST_MATCH] = match
    put_u64(out, m + TRD_MATCH, match)
    return m + LEN_P


@njit(cache=True)
def _do_noii(out, p, ts, st, sym, s, cross_type):
    tick = st[C_TICK]
    fair = sym[s, Y_FAIR]
    paired = 100 * _below(st, 20_000)
    imbalance = 100 * _below(st, 5_000)
    r = _below(st, 100)
    if imbalance == 0:
        direction = 78  # 'N'
    elif r < 47:
        direction = 66  # 'B'
    elif r < 94:
        direction = 83  # 'S'
    else:
        direction = 79  # 'O' (insufficient orders to calculate)
    near = fair + (_below(st, 5) - 2) * tick
    far = near + (_below(st, 9) - 4) * tick
    m = _sym_frame(out, p, 73, LEN_I, sym, s, ts, st)  # 'I'
    put_u64(out, m + I_PAIRED_OFF, paired)
    put_u64(out, m + I_IMBALANCE_OFF, imbalance)
    put_u8(out, m + I_DIRECTION_OFF, direction)
    put_u64(out, m + I_STOCK_OFF, sym[s, Y_STOCK])
    put_u32(out, m + I_FAR_OFF, far if far > 0 else tick)
    put_u32(out, m + I_NEAR_OFF, near if near > 0 else tick)
    put_u32(out, m + I_REF_OFF, fair)
    put_u8(out, m + I_CROSS_OFF, cross_type)
    put_u8(out, m + I_VARIATION_OFF, 76 if r % 4 else 32)  # 'L' (< 1%) or ' ' (not calculated)
    return m + LEN_I


@njit(cache=True)
def _do_misc(out, p, ts, st, sym, s, kind):
    """The rare flow kinds: retail interest (N), Reg SHO (Y), participant position (L), broken trade (B)."""
    if kind == F_RPII:
        r = _below(st, 4)
        m = _sym_frame(out, p, 78, LEN_N, sym, s, ts, st)  # 'N'
        put_u64(out, m + N_STOCK_OFF, sym[s, Y_STOCK])
        put_u8(out, m + N_INTEREST_OFF, 66 if r == 0 else (83 if r == 1 else (65 if r == 2 else 78)))
        return m + LEN_N
    if kind == F_REGSHO:
        m = _sym_frame(out, p, 89, LEN_Y, sym, s, ts, st)  # 'Y'
        put_u64(out, m + Y_STOCK_OFF, sym[s, Y_STOCK])
        put_u8(out, m + Y_ACTION_OFF, 49 if _below(st, 4) else 50)  # '1' activated / '2' continued
        return m + LEN_Y
    if kind == F_PARTICIPANT:
        m = _sym_frame(out, p, 76, LEN_L, sym, s, ts, st)  # 'L'
        put_u32(out, m + L_MPID_OFF, st[MPIDS + _below(st, st[C_NMPID])])
        put_u64(out, m + L_STOCK_OFF, sym[s, Y_STOCK])
        put_u8(out, m + L_PRIMARY_OFF, 78)  # 'N'
        put_u8(out, m + L_MODE_OFF, 78)  # 'N' normal
        put_u8(out, m + L_STATE_OFF, 65 if _below(st, 2) else 69)  # 'A' active / 'E' excused
        return m + LEN_L
    # F_BROKEN: the symbol's latest trade is broken
    m = _sym_frame(out, p, 66, LEN_B, sym, s, ts, st)  # 'B'
    put_u64(out, m + BRK_MATCH, sym[s, Y_LAST_MATCH])
    return m + LEN_B


@njit(inline="always", cache=True)
def _pick_symbol(st, pick):
    """The symbol of the next flow message: often the last one again, else drawn by activity (alias method)."""
    prev = st[S_PREV_SYM]
    if prev >= 0 and _below(st, 1_000_000) < st[C_STICKY_PPM]:
        return prev
    i = _below(st, pick.shape[0])
    return i if _below(st, ALIAS_ONE) < pick[i, 0] else pick[i, 1]


@njit(inline="always", cache=True)
def _next_kind(ts, st, sym, pick):
    """What the next flow message is: (kind, symbol, side or cross type); moves the symbol's fair price."""
    if st[S_SWEEP_LEFT] > 0:
        st[S_SWEEP_LEFT] -= 1
        s = st[S_SWEEP_SYM]
        side = st[S_SWEEP_SIDE]
        if sym[s, Y_HALT] == 0 and sym[s, Y_NSIDE + side] > 0:
            return F_SWEEP, s, side
        st[S_SWEEP_LEFT] = 0
    s = _pick_symbol(st, pick)
    st[S_PREV_SYM] = s
    if _below(st, 1_000_000) < st[C_MOVE_PPM]:
        step = sym[s, Y_UNIT] * st[C_TICK]
        fair = sym[s, Y_FAIR]
        if _below(st, 2) == 0 and fair - step >= st[C_MIN_FAIR]:
            fair -= step
        elif fair + step < PRICE_CEIL // 2:
            fair += step
        sym[s, Y_FAIR] = fair
    if st[C_OPEN_WIN_LO] <= ts < st[C_OPEN] and _below(st, 1_000_000) < st[C_NOII_PPM]:
        return F_NOII, s, 79  # 'O' opening cross
    if st[C_CLOSE_WIN_LO] <= ts < st[C_CLOSE] and _below(st, 1_000_000) < st[C_NOII_PPM]:
        return F_NOII, s, 67  # 'C' closing cross
    r = _below(st, 1_000_000)
    kind = 0
    while kind < F_BROKEN and r >= st[C_MIX + kind]:
        kind += 1
    n = sym[s, Y_N]
    halted = sym[s, Y_HALT] != 0
    if (kind == F_EXEC or kind == F_EXEC_PRICE) and (halted or n == 0):
        kind = F_ADD
    elif kind == F_TRADE and halted:
        kind = F_ADD
    elif (kind == F_DELETE or kind == F_REPLACE or kind == F_CANCEL) and n == 0:
        kind = F_ADD
    elif kind == F_BROKEN and sym[s, Y_LAST_MATCH] == 0:
        kind = F_ADD
    if kind == F_ADD:
        # Books would fill up through the day unless cancels rise with depth: an add becomes a delete
        # with probability (live / cap)**3, so every active book settles near a quarter of the cap.
        cap = st[C_CAP]
        if n >= cap or (_below(st, cap) < n and _below(st, cap) < n and _below(st, cap) < n):
            kind = F_DELETE
    return kind, s, -1


@njit(cache=True)
def _emit_scheduled(out, p, ts, st, sym, row):
    """One message of the day's schedule (system events, directory, crosses, halts)."""
    kind = row[1]
    s = row[2]
    a = row[3]
    b = row[4]
    tick = st[C_TICK]
    if kind == EV_SYSTEM:
        m = _frame(out, p, 83, LEN_S, 0, 0, ts, st)  # 'S'
        put_u8(out, m + SYS_EVENT_CODE, a)
        return m + LEN_S
    if kind == EV_MWCB_DECLINE:
        m = _frame(out, p, 86, LEN_V, 0, 0, ts, st)  # 'V'
        put_u64(out, m + V_LEVEL1_OFF, a // 100 * 93)
        put_u64(out, m + V_LEVEL2_OFF, a // 100 * 87)
        put_u64(out, m + V_LEVEL3_OFF, a // 100 * 80)
        return m + LEN_V
    if kind == EV_MWCB_STATUS:
        m = _frame(out, p, 87, LEN_W, 0, 0, ts, st)  # 'W'
        put_u8(out, m + W_LEVEL_OFF, a)
        return m + LEN_W
    stock = sym[s, Y_STOCK]
    fair = sym[s, Y_FAIR]
    if kind == EV_DIRECTORY:
        m = _sym_frame(out, p, 82, LEN_R, sym, s, ts, st)  # 'R'
        put_u64(out, m + DIR_STOCK, stock)
        put_u8(out, m + DIR_MARKET_CATEGORY, a)
        put_u8(out, m + DIR_FINANCIAL_STATUS, 78)  # 'N' normal
        put_u32(out, m + DIR_ROUND_LOT, 100)
        put_u8(out, m + DIR_ROUND_LOTS_ONLY, 78)
        put_u8(out, m + DIR_ISSUE_CLASS, 81 if b & DIR_ETP else 67)  # 'Q' / 'C' common stock
        put_u16(out, m + DIR_ISSUE_SUBTYPE, (73 << 8) | 32 if b & DIR_ETP else (90 << 8) | 32)  # 'I ' ETF / 'Z ' n/a
        put_u8(out, m + DIR_AUTHENTICITY, 80)  # 'P' production
        put_u8(out, m + DIR_SHORT_SALE, 78)
        put_u8(out, m + DIR_IPO_FLAG, 89 if b & DIR_IPO else 78)
        put_u8(out, m + DIR_LULD_TIER, 49 if b & DIR_TIER1 else 50)
        put_u8(out, m + DIR_ETP_FLAG, 89 if b & DIR_ETP else 78)
        put_u32(out, m + DIR_ETP_LEVERAGE, 1 if b & DIR_ETP else 0)
        put_u8(out, m + DIR_INVERSE, 78)
        return m + LEN_R
    if kind == EV_ACTION:
        sym[s, Y_HALT] = 0 if a == 84 else 1  # only 'T' trades
        m = _sym_frame(out, p, 72, LEN_H, sym, s, ts, st)  # 'H'
        put_u64(out, m + ACT_STOCK, stock)
        put_u8(out, m + ACT_STATE, a)
        put_u8(out, m + ACT_RESERVED, 32)
        put_u32(out, m + ACT_REASON, b)
        return m + LEN_H
    if kind == EV_REGSHO:
        m = _sym_frame(out, p, 89, LEN_Y, sym, s, ts, st)
        put_u64(out, m + Y_STOCK_OFF, stock)
        put_u8(out, m + Y_ACTION_OFF, a)
        return m + LEN_Y
    if kind == EV_PARTICIPANT:
        m = _sym_frame(out, p, 76, LEN_L, sym, s, ts, st)
        put_u32(out, m + L_MPID_OFF, a)
        put_u64(out, m + L_STOCK_OFF, stock)
        put_u8(out, m + L_PRIMARY_OFF, 89 if b else 78)
        put_u8(out, m + L_MODE_OFF, 78)
        put_u8(out, m + L_STATE_OFF, 65)
        return m + LEN_L
    if kind == EV_IPO:
        m = _sym_frame(out, p, 75, LEN_K, sym, s, ts, st)  # 'K'
        put_u64(out, m + K_STOCK_OFF, stock)
        put_u32(out, m + K_RELEASE_OFF, a)
        put_u8(out, m + K_QUALIFIER_OFF, 65)  # 'A' anticipated release time
        put_u32(out, m + K_PRICE_OFF, fair)
        return m + LEN_K
    if kind == EV_LULD:
        band = fair // 10 // tick * tick
        m = _sym_frame(out, p, 74, LEN_J, sym, s, ts, st)  # 'J'
        put_u64(out, m + J_STOCK_OFF, stock)
        put_u32(out, m + J_REF_OFF, fair)
        put_u32(out, m + J_UPPER_OFF, fair + band)
        put_u32(out, m + J_LOWER_OFF, fair - band)
        put_u32(out, m + J_EXT_OFF, 0)
        return m + LEN_J
    if kind == EV_OPHALT:
        sym[s, Y_HALT] = 1 if a == 72 else 0  # 'H' halted, 'T' resumed
        m = _sym_frame(out, p, 104, LEN_h, sym, s, ts, st)  # 'h'
        put_u64(out, m + OH_STOCK_OFF, stock)
        put_u8(out, m + OH_MARKET_OFF, 81)  # 'Q' NASDAQ
        put_u8(out, m + OH_ACTION_OFF, a)
        return m + LEN_h
    if kind == EV_CROSS:
        m = _sym_frame(out, p, 81, LEN_Q, sym, s, ts, st)  # 'Q'
        put_u64(out, m + CRS_SHARES, 100 * (1 + _below(st, 20_000)))
        put_u64(out, m + CRS_STOCK, stock)
        put_u32(out, m + CRS_PRICE, fair)
        match = _next_match(st)
        sym[s, Y_LAST_MATCH] = match
        put_u64(out, m + CRS_MATCH, match)
        put_u8(out, m + CRS_TYPE, a)
        return m + LEN_Q
    # EV_DLCR
    band = fair // 10 // tick * tick
    m = _sym_frame(out, p, 79, LEN_O, sym, s, ts, st)  # 'O'
    put_u64(out, m + O_STOCK_OFF, stock)
    put_u8(out, m + O_ELIGIBLE_OFF, 89)  # 'Y'
    put_u32(out, m + O_MIN_OFF, fair - 2 * band)
    put_u32(out, m + O_MAX_OFF, fair + 8 * band)
    put_u32(out, m + O_NEAR_OFF, fair)
    put_u64(out, m + O_NEAR_TIME_OFF, ts)
    put_u32(out, m + O_LOWER_OFF, fair - band)
    put_u32(out, m + O_UPPER_OFF, fair + band)
    return m + LEN_O


@njit(inline="always", cache=True)
def _flow_time(st, seg):
    """The time of flow message st[S_FLOW]: spread evenly (with jitter) over its time segment.

    Message j of a segment of length L holding c messages goes at start + floor(j * L / c) plus a
    jitter below L // c, so times never decrease. floor(j * L / c) = j * (L // c) + floor(j * (L % c) / c)
    is kept incrementally: no division per message, no overflow.
    """
    k = st[S_FLOW]
    si = st[S_SEG]
    if k >= seg[si, SEG_HI]:
        while k >= seg[si, SEG_HI]:  # empty segments are skipped
            si += 1
        st[S_SEG] = si
        st[S_SEG_J] = 0
        st[S_SEG_ACC] = 0
        st[S_SEG_FRAC] = 0
    j = st[S_SEG_J]
    q = seg[si, SEG_Q]
    t = seg[si, SEG_T0] + j * q + st[S_SEG_FRAC]
    acc = st[S_SEG_ACC] + seg[si, SEG_R]
    if acc >= seg[si, SEG_HI] - seg[si, SEG_LO]:
        acc -= seg[si, SEG_HI] - seg[si, SEG_LO]
        st[S_SEG_FRAC] += 1
    st[S_SEG_ACC] = acc
    st[S_SEG_J] = j + 1
    if q > 1:
        t += _below(st, q)
    return t


@njit(cache=True)
def _flow_run(out, p, n_left, t_limit, st, sym, pool, heap, pick, seg):
    """Emit order-flow messages until the next one is due at or after `t_limit` (the next scheduled
    message), `n_left` are written, the buffer is full or the flow is done; returns (p, messages).

    One call covers the long runs between scheduled messages, so the per-message work stays inside it.
    """
    cap = out.shape[0]
    nflow = st[C_NFLOW]
    n = 0
    while n < n_left and p + FRAME_MAX <= cap and st[S_FLOW] < nflow:
        if st[S_NEXT_T] < 0:
            # An aggressive order's executions share its timestamp.
            st[S_NEXT_T] = st[S_LAST_TS] if st[S_SWEEP_LEFT] > 0 else _flow_time(st, seg)
        t = st[S_NEXT_T]
        if t >= t_limit:
            break
        ts = max(t, st[S_LAST_TS])
        kind, s, arg = _next_kind(ts, st, sym, pick)
        if kind == F_ADD:
            p = _do_add(out, p, ts, st, sym, pool, heap, s)
        elif kind == F_DELETE:
            p = _do_delete(out, p, ts, st, sym, pool, heap, s)
        elif kind == F_REPLACE:
            p = _do_replace(out, p, ts, st, sym, pool, heap, s)
        elif kind == F_CANCEL:
            p = _do_cancel(out, p, ts, st, sym, pool, heap, s)
        elif kind == F_EXEC or kind == F_EXEC_PRICE or kind == F_SWEEP:
            p = _do_exec(out, p, ts, st, sym, pool, heap, s, arg, kind == F_EXEC_PRICE, kind == F_SWEEP)
        elif kind == F_TRADE:
            p = _do_trade(out, p, ts, st, sym, pool, heap, s)
        elif kind == F_NOII:
            p = _do_noii(out, p, ts, st, sym, s, arg)
        else:
            p = _do_misc(out, p, ts, st, sym, s, kind)
        st[S_FLOW] += 1
        st[S_NEXT_T] = -1
        st[S_LAST_TS] = ts
        n += 1
    return p, n


@njit(nogil=True, cache=True)
def fill_kernel(out_a, off, max_messages, st_a, sym_a, pool_a, heap_a, sched_a, seg_a, pick_a):
    """Write up to `max_messages` length-prefixed messages into out[off:], as many as fit.

    Returns (bytes written, messages written); 0 messages once the day is complete.
    """
    out = _borrowed(out_a)
    st = _borrowed(st_a)
    sym = _borrowed(sym_a)
    pool = _borrowed(pool_a)
    heap = _borrowed(heap_a)
    sched = _borrowed(sched_a)
    seg = _borrowed(seg_a)
    pick = _borrowed(pick_a)
    cap = out.shape[0]
    p = off
    n = 0
    nflow = st[C_NFLOW]
    nsched = sched.shape[0]
    while n < max_messages and p + FRAME_MAX <= cap:
        t = NO_TIME
        if st[S_FLOW] < nflow:
            if st[S_NEXT_T] < 0:
                st[S_NEXT_T] = st[S_LAST_TS] if st[S_SWEEP_LEFT] > 0 else _flow_time(st, seg)
            t = st[S_NEXT_T]
        si = st[S_SCHED]
        if si < nsched and sched[si, 0] <= t:  # the schedule goes first on a tie
            ts = max(sched[si, 0], st[S_LAST_TS])
            p = _emit_scheduled(out, p, ts, st, sym, sched[si])
            st[S_SCHED] = si + 1
            st[S_LAST_TS] = ts
            n += 1
        elif t != NO_TIME:
            p, k = _flow_run(out, p, max_messages - n, sched[si, 0] if si < nsched else NO_TIME, st, sym, pool,
                             heap, pick, seg)
            n += k
        else:
            break
    st[S_EMITTED] += n
    return p - off, n


# ================================ set-up (Python) =================================================
@dataclass(frozen=True)
class GeneratorParams:
    """What day to make. Defaults give a realistic 500-symbol NASDAQ day from 4:00 am to 8:00 pm."""

    seed: int = 1
    messages: int = 1_000_000  # total messages in the file (at least the fixed schedule's count)
    symbols: int = 500
    start_ns: int = 4 * HOUR  # start of system hours, ns since midnight
    end_ns: int = 20 * HOUR  # end of system hours
    open_ns: int = 9 * HOUR + 30 * MINUTE  # opening cross / start of market hours
    close_ns: int = 16 * HOUR  # closing cross / end of market hours
    tick: int = 100  # $0.01 in Price(4) units
    min_price: int = 5 * PRICE_ONE  # base prices are log-uniform in [min_price, max_price]
    max_price: int = 500 * PRICE_ONE
    pool_cap: int = 512  # most live orders one symbol may have (busy books settle near a quarter of it)
    mpid_share: float = 0.05  # adds that carry an MPID (F rather than A)
    mix: tuple = DEFAULT_MIX  # relative weights of the flow kinds; "A" covers A and F
    noii_share: float = 0.25  # flow inside the cross windows that is NOII (I)
    activity_skew: float = 0.9  # Zipf exponent of per-symbol activity
    burst: float = 0.3  # chance a flow message is for the same symbol as the one before
    move_share: float = 0.03  # flow messages that move their symbol's fair price by one unit

    def __post_init__(self):
        problems = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "int" and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                problems.append(f"{f.name} must be an integer, got {v!r}")
        if problems:
            raise ValueError("; ".join(problems))
        if not 0 <= self.messages <= MAX_MESSAGES:
            problems.append(f"messages must be in 0..{MAX_MESSAGES}, got {self.messages}")
        if not 1 <= self.symbols <= 65535:
            problems.append(f"symbols must be in 1..65535 (stock locate is 16 bits), got {self.symbols}")
        if not 0 <= self.start_ns < self.end_ns <= 24 * HOUR:
            problems.append(f"need 0 <= start_ns < end_ns <= 24 h, got {self.start_ns}, {self.end_ns}")
        elif self.end_ns - self.start_ns < SECOND:
            problems.append("the day (end_ns - start_ns) must last at least a second")
        if self.open_ns > self.close_ns:
            problems.append(f"open_ns ({self.open_ns}) is after close_ns ({self.close_ns})")
        if self.tick <= 0:
            problems.append(f"tick must be > 0, got {self.tick}")
        if not 0 < self.min_price <= self.max_price <= PRICE_CEIL // 4:
            problems.append(f"need 0 < min_price <= max_price <= {PRICE_CEIL // 4}, "
                            f"got {self.min_price}, {self.max_price}")
        elif self.min_price < 2 * self.tick:
            problems.append(f"min_price ({self.min_price}) must be at least two ticks ({2 * self.tick})")
        if not 2 <= self.pool_cap <= 1 << 20:
            problems.append(f"pool_cap must be in 2..{1 << 20}, got {self.pool_cap}")
        for name in ("mpid_share", "noii_share", "burst", "move_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.activity_skew < 0:
            problems.append(f"activity_skew must be >= 0, got {self.activity_skew}")
        try:
            mix = dict(self.mix)
        except (TypeError, ValueError):
            mix = None
            problems.append(f"mix must be (type, weight) pairs, got {self.mix!r}")
        if mix is not None:
            unknown = set(mix) - set(MIX_KEYS)
            if unknown:
                problems.append(f"mix has unknown kinds {sorted(unknown)}; known: {list(MIX_KEYS)}")
            if any(not isinstance(w, (int, float)) or w < 0 for w in mix.values()):
                problems.append("mix weights must be numbers >= 0")
            elif sum(mix.values()) <= 0:
                problems.append("mix weights must not all be zero")
        if problems:
            raise ValueError("; ".join(problems))


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _tickers(rng: np.random.Generator, n: int) -> list[str]:
    """n unique ticker-like names (mostly 3-4 letters), sorted: NASDAQ assigns locates alphabetically."""
    names: set[str] = set()
    letters = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
    while len(names) < n:
        want = n - len(names)
        lengths = rng.choice([1, 2, 3, 4, 5], size=2 * want + 16, p=[0.005, 0.02, 0.3, 0.6, 0.075])
        for ln in lengths:
            names.add(bytes(letters[rng.integers(0, 26, size=ln)]).decode())
            if len(names) == n:
                break
    return sorted(names)


def _profile_weight(t: np.ndarray, open_ns: int, close_ns: int) -> np.ndarray:
    """Relative message rate through the day: thin outside market hours, U-shaped inside."""
    t = t.astype(np.float64)
    w = np.where(t < open_ns, 0.06 + 1.0 * np.exp(-(open_ns - t) / (5 * MINUTE)), 0.0)
    inside = (t >= open_ns) & (t < close_ns)
    w += np.where(inside, 1.0 + 4.0 * np.exp(-(t - open_ns) / (15 * MINUTE))
                  + 3.0 * np.exp(-(close_ns - t) / (10 * MINUTE)), 0.0)
    w += np.where(t >= close_ns, 0.05 + 0.5 * np.exp(-(t - close_ns) / (5 * MINUTE)), 0.0)
    return w


def _alias_table(weights: np.ndarray) -> np.ndarray:
    """Vose's alias table: rows (keep threshold out of ALIAS_ONE, alias) for O(1) weighted draws."""
    n = len(weights)
    scaled = weights * n / weights.sum()
    keep = np.ones(n)
    alias = np.arange(n, dtype=np.int64)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        lo, hi = small.pop(), large.pop()
        keep[lo] = scaled[lo]
        alias[lo] = hi
        scaled[hi] -= 1.0 - scaled[lo]
        (small if scaled[hi] < 1.0 else large).append(hi)
    table = np.empty((n, 2), dtype=np.int64)
    table[:, 0] = np.round(keep * ALIAS_ONE).astype(np.int64)
    table[:, 1] = alias
    return table


class Generator:
    """A synthetic trading day held as numpy state; `fill` writes its next messages into a buffer.

    Resumable: calling `fill` repeatedly with any chunk sizes yields the same bytes as one call.
    """

    SEGMENT_NS = 10 * SECOND

    def __init__(self, params: GeneratorParams | None = None):
        self.params = params = params or GeneratorParams()
        prng = np.random.default_rng([params.seed & 0xFFFFFFFFFFFFFFFF, 0x17C5])
        n = params.symbols
        self.symbols = _tickers(prng, n)

        # ---- per-symbol state
        sym = np.zeros((n, SYM_WORDS), dtype=np.int64)
        sym[:, Y_STOCK] = [alpha_to_int(name) for name in self.symbols]
        lo, hi = math.log(params.min_price), math.log(params.max_price)
        base = np.exp(prng.uniform(lo, hi, size=n))
        fair = np.maximum(np.round(base / params.tick).astype(np.int64), 2) * params.tick
        sym[:, Y_FAIR] = fair
        sym[:, Y_UNIT] = 1 + fair // (100 * PRICE_ONE)  # one more tick of spread per $100 of price
        sym[:, Y_TRACK] = 1 + prng.integers(0, 12, size=n)
        self._sym = sym
        # Either side may hold the whole cap. Only the rows in use are ever touched.
        self._pool = np.zeros((n, 2, params.pool_cap, POOL_WORDS), dtype=np.int64)
        self._heap = np.zeros((n, 2, params.pool_cap, HEAP_WORDS), dtype=np.int64)

        # ---- activity: Zipf over a random ranking of the symbols
        ranks = prng.permutation(n)
        self._pick = _alias_table(1.0 / np.power(ranks + 1.0, params.activity_skew))
        self._mpids = np.array([alpha_to_int(m, 4) for m in MPID_NAMES], dtype=np.int64)

        # ---- the day's fixed messages, and the order flow's time profile
        sched, flow_start = self._schedule(prng, ranks)
        self._sched = sched
        self.flow_messages = max(0, params.messages - len(sched))
        self.total_messages = len(sched) + self.flow_messages
        self._seg = self._segments(flow_start, params.end_ns - MS)

        # ---- parameters and state of the loop
        st = np.zeros(ST_WORDS, dtype=np.int64)
        cfg = st  # the parameter words, C_*
        cfg[C_TICK] = params.tick
        cfg[C_CAP] = params.pool_cap
        cfg[C_NFLOW] = self.flow_messages
        cfg[C_MIN_FAIR] = max(PRICE_ONE, 4 * params.tick)
        cfg[C_MPID_PPM] = round(params.mpid_share * 1e6)
        cfg[C_NOII_PPM] = round(params.noii_share * 1e6)
        cfg[C_MOVE_PPM] = round(params.move_share * 1e6)
        cfg[C_STICKY_PPM] = round(params.burst * 1e6)
        cfg[C_OPEN_WIN_LO] = params.open_ns - 5 * MINUTE
        cfg[C_OPEN] = params.open_ns
        cfg[C_CLOSE_WIN_LO] = params.close_ns - 10 * MINUTE
        cfg[C_CLOSE] = params.close_ns
        cfg[C_NMPID] = len(self._mpids)
        cfg[C_FIRST_MATCH] = 1 + int(prng.integers(0, 1000))
        mix = dict(params.mix)
        w = np.array([float(mix.get(k, 0.0)) for k in MIX_KEYS])
        cum = np.round(np.cumsum(w) / w.sum() * 1_000_000).astype(np.int64)
        cum[-1] = 1_000_000
        cfg[C_MIX:C_MIX + len(MIX_KEYS)] = cum
        st[MPIDS:MPIDS + len(self._mpids)] = self._mpids
        st[S_NEXT_T] = -1
        st[S_LAST_TS] = params.start_ns
        st[S_NEXT_REF] = 1 + int(prng.integers(0, 1000))
        st[S_NEXT_MATCH] = cfg[C_FIRST_MATCH]
        st[S_PREV_SYM] = -1
        st[ST_RNG:ST_RNG + 1] = np.array([_splitmix64(params.seed & 0xFFFFFFFFFFFFFFFF) or 1],
                                         dtype=np.uint64).view(np.int64)
        self._st = st

    # -- schedule ---------------------------------------------------------------------------------
    def _schedule(self, prng, ranks):
        """Rows (time, kind, symbol, a, b) of the fixed messages, in time order; and when flow may start."""
        p = self.params
        n = p.symbols
        rows: list[tuple[int, int, int, int, int]] = []
        t = p.start_ns

        def at(when, kind, s=-1, a=0, b=0):
            rows.append((int(when), kind, int(s), int(a), int(b)))

        # Start of day: the directory, one message a microsecond.
        at(t, EV_SYSTEM, a=ord("O"))
        t += US
        at(t, EV_MWCB_DECLINE, a=5_000 * 100_000_000)  # a 5000-point reference index, Price(8)
        pick = prng.permutation(n)
        ipo, luld, ophalt = int(pick[0]), int(pick[1 % n]), int(pick[2 % n])
        tier1 = ranks < max(1, n // 5)  # the busiest fifth are LULD tier 1
        etp = prng.random(n) < 0.1
        category = prng.choice([ord("Q"), ord("G"), ord("S")], size=n, p=[0.4, 0.3, 0.3])
        for s in range(n):
            t += US
            flags = (DIR_IPO if s == ipo else 0) | (DIR_TIER1 if tier1[s] else 0) | (DIR_ETP if etp[s] else 0)
            at(t, EV_DIRECTORY, s, category[s], flags)
        for s in range(n):
            t += US
            if s == ipo:
                at(t, EV_ACTION, s, ord("H"), alpha_to_int("IPO1", 4))
            else:
                at(t, EV_ACTION, s, ord("T"), alpha_to_int("", 4))
        for s in range(n):
            t += US
            at(t, EV_REGSHO, s, ord("0"))
        for s in np.flatnonzero(prng.random(n) < 0.25):
            t += US
            at(t, EV_PARTICIPANT, s, self._mpids[prng.integers(0, len(self._mpids))], 1)
        t += US
        at(t, EV_SYSTEM, a=ord("S"))
        flow_start = t + US

        # The day's fixed points, declared in time order (clamping keeps that order when they collide).
        o, c = p.open_ns, p.close_ns
        at(o - 2 * US, EV_SYSTEM, a=ord("Q"))
        for i, s in enumerate(x for x in range(n) if x != ipo):
            at(o + MS + i * 20 * US, EV_CROSS, s, ord("O"))
        at(o + 30 * MINUTE, EV_IPO, ipo, (o + 45 * MINUTE) // SECOND)
        at(o + 30 * MINUTE + US, EV_ACTION, ipo, ord("Q"), alpha_to_int("IPOQ", 4))
        at(o + 35 * MINUTE, EV_DLCR, ipo)
        at(o + 40 * MINUTE, EV_DLCR, ipo)
        at(o + 45 * MINUTE, EV_CROSS, ipo, ord("H"))  # IPOs and halts both uncross with type H
        at(o + 45 * MINUTE + US, EV_ACTION, ipo, ord("T"), alpha_to_int("", 4))
        at(o + 90 * MINUTE, EV_ACTION, luld, ord("H"), alpha_to_int("LUDP", 4))
        at(o + 95 * MINUTE, EV_LULD, luld)
        at(o + 100 * MINUTE, EV_CROSS, luld, ord("H"))
        at(o + 100 * MINUTE + US, EV_ACTION, luld, ord("T"), alpha_to_int("", 4))
        at(o + 210 * MINUTE, EV_OPHALT, ophalt, ord("H"))
        at(o + 212 * MINUTE, EV_OPHALT, ophalt, ord("T"))
        at(c - 20 * MINUTE, EV_MWCB_STATUS, a=ord("1"))  # after 3:25 pm a level-1 breach halts nothing
        at(c, EV_SYSTEM, a=ord("M"))
        for s in range(n):
            at(c + MS + s * 20 * US, EV_CROSS, s, ord("C"))
        at(p.end_ns - US, EV_SYSTEM, a=ord("E"))
        at(p.end_ns, EV_SYSTEM, a=ord("C"))

        sched = np.array(rows, dtype=np.int64)
        head = np.flatnonzero(sched[:, 1] == EV_SYSTEM)[1]  # the 'S' row ends the fixed start of day
        tail = sched[head + 1:]
        tail[:-2, 0] = np.clip(tail[:-2, 0], flow_start, p.end_ns - 2 * US)
        tail[:] = tail[np.argsort(tail[:, 0], kind="stable")]
        return sched, flow_start

    def _segments(self, t0: int, t1: int) -> np.ndarray:
        """Time segments (SEG_* columns) spreading the flow over the day by the activity profile."""
        p = self.params
        t1 = max(t1, t0 + 1)
        nseg = max(1, -(-(t1 - t0) // self.SEGMENT_NS))
        starts = t0 + np.arange(nseg, dtype=np.int64) * self.SEGMENT_NS
        lengths = np.minimum(starts + self.SEGMENT_NS, t1) - starts
        w = _profile_weight(starts + lengths // 2, p.open_ns, p.close_ns) * lengths
        cum = np.round(np.cumsum(w) / w.sum() * self.flow_messages).astype(np.int64)
        cum[-1] = self.flow_messages
        seg = np.zeros((nseg, 6), dtype=np.int64)
        seg[:, SEG_T0] = starts
        seg[:, SEG_LEN] = lengths
        seg[:, SEG_LO] = np.concatenate(([0], cum[:-1]))
        seg[:, SEG_HI] = cum
        count = np.maximum(seg[:, SEG_HI] - seg[:, SEG_LO], 1)
        seg[:, SEG_Q] = lengths // count
        seg[:, SEG_R] = lengths % count
        return seg

    # -- running ----------------------------------------------------------------------------------
    @property
    def emitted(self) -> int:
        """Messages written so far."""
        return int(self._st[S_EMITTED])

    @property
    def done(self) -> bool:
        return self.emitted >= self.total_messages

    def fill(self, out: np.ndarray, max_messages: int | None = None, offset: int = 0) -> tuple[int, int]:
        """Write the next messages, length-prefixed, into out[offset:] until it is full, `max_messages`
        are written or the day ends; returns (bytes written, messages written)."""
        if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 1 \
                or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("out must be a writable, contiguous, one-dimensional uint8 array")
        if not 0 <= offset <= out.shape[0]:
            raise ValueError(f"offset {offset} is outside the buffer (0..{out.shape[0]})")
        limit = self.total_messages if max_messages is None else int(max_messages)
        if limit < 0:
            raise ValueError(f"max_messages must be >= 0, got {max_messages}")
        nbytes, n = fill_kernel(out, offset, limit, self._st, self._sym, self._pool, self._heap, self._sched,
                                self._seg, self._pick)
        return int(nbytes), int(n)

    def counts(self) -> dict[str, int]:
        """Messages written so far, per ITCH type letter."""
        return {chr(t): int(c) for t, c in enumerate(self._st[COUNTS:COUNTS + 256]) if c}

    def max_bytes(self) -> int:
        """An upper bound on the bytes of the whole day."""
        return self.total_messages * FRAME_MAX


def generate(params: GeneratorParams | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """A whole synthetic day: (day-file bytes as a uint8 array, messages per ITCH type letter)."""
    gen = Generator(params)
    # Pages of the oversized buffer that are never written are never touched, so cost nothing.
    buf = np.empty(gen.max_bytes(), dtype=np.uint8)
    nbytes, _ = gen.fill(buf)
    assert gen.done, "a buffer sized for the worst case was too small"
    return buf[:nbytes], gen.counts()


def main(argv: list[str] | None = None) -> int:
    """`appliance generate`: write a synthetic ITCH 5.0 day file and print a one-line summary."""
    ap = argparse.ArgumentParser(prog="appliance generate",
                                 description="Write a seeded synthetic NASDAQ ITCH 5.0 day file.")
    ap.add_argument("out", metavar="OUT", help="output path (gzipped when it ends in .gz or with --gzip)")
    ap.add_argument("--messages", type=int, default=GeneratorParams.messages, help="total messages")
    ap.add_argument("--symbols", type=int, default=GeneratorParams.symbols, help="number of symbols")
    ap.add_argument("--seed", type=int, default=GeneratorParams.seed, help="random seed")
    ap.add_argument("--gzip", action="store_true", help="gzip the output whatever its name")
    args = ap.parse_args(argv)
    try:
        params = GeneratorParams(seed=args.seed, messages=args.messages, symbols=args.symbols)
    except ValueError as e:
        print(f"appliance generate: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    buf, counts = generate(params)
    t1 = time.perf_counter()
    write_dayfile(args.out, buf, compress=True if args.gzip else None)
    t2 = time.perf_counter()
    total = sum(counts.values())
    mix = " ".join(f"{k}={v / total:.1%}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:8])
    print(f"{args.out}: {total} messages, {buf.size / 1e6:.1f} MB, {params.symbols} symbols, seed {params.seed}; "
          f"generated in {t1 - t0:.2f} s ({total / max(t1 - t0, 1e-9) / 1e6:.1f} M msgs/s), "
          f"written in {t2 - t1:.2f} s; {mix}")
    return 0


__all__ = ["GeneratorParams", "Generator", "generate", "main", "fill_kernel", "DEFAULT_MIX", "MIX_KEYS"]

if __name__ == "__main__":
    sys.exit(main())
