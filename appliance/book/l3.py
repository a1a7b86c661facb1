"""Full-depth (L3) order books for every ITCH 5.0 symbol, updated message by message on the feed thread.

State lives in preallocated numpy arrays (a `Book` namedtuple), so the same numba code serves the live
feed, day-file replay and the benchmark, and nothing is allocated per message:

- orders: open-addressed table keyed by order reference (linear probing, home = ref & mask, deletion by
  backward shift). NASDAQ assigns references in increasing order, so live orders sit in nearly
  consecutive slots and a lookup touches one cache line.
- levels: per symbol and side, an array of (key, count, shares) sorted so the best level is last; the
  key is the price for bids and minus the price for asks, so "better" is "greater" on both sides. Almost
  all activity is near the touch, so searches and inserts walk a few entries from the end.
- per symbol: stock, locate, trading state; per locate: book slot (or untracked).

`book_apply` applies one message and writes book events (BBO change, trade, state) into an event array;
malformed input and inconsistent references are counted by kind (`ST_*`) with the first examples kept,
and never raise.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from ..feed import itch_descriptor as d
from ..runtime.tables import huge_array
from ..runtime.event import (
    KIND_BBO,
    KIND_STATE,
    KIND_SYSTEM,
    KIND_TRADE,
    TRADE_CROSS,
    TRADE_EXECUTION,
    TRADE_EXECUTION_PRICE,
    TRADE_HIDDEN,
    TRADE_NON_PRINTABLE,
)
from ..runtime.atomics import prefetch
from ..runtime.wire import get_u16, get_u32, get_u48, get_u64

ORDER_DTYPE = np.dtype([("ref", np.int64), ("price", np.int32), ("shares", np.int32),
                        ("slot", np.int32), ("side", np.uint8), ("flags", np.uint8)], align=True)
LEVEL_DTYPE = np.dtype([("key", np.int32), ("count", np.int32), ("shares", np.int64)], align=True)
assert ORDER_DTYPE.itemsize == 24 and LEVEL_DTYPE.itemsize == 16

EMPTY = -1  # orders.ref of a free slot
UNTRACKED = -2  # loc_slot of a locate outside the configured symbol subset
UNKNOWN = -1  # loc_slot of a locate not seen yet
NUM_LOCATES = 65536

# meta[] words
M_MASK = 0  # order table capacity - 1
M_LEVELS = 1  # level capacity per symbol side
M_MAX_SYMBOLS = 2
M_SYMBOLS = 3  # book slots in use
M_LIVE = 4  # live orders
M_MAX_LIVE = 5  # live orders allowed (load factor bound)
M_ALL = 6  # 1 = book every symbol, 0 = only those in `subset`
M_EXAMPLES = 7  # examples kept per error kind
META_WORDS = 8

# stats[] words: what was applied, and everything that was wrong with the input, by kind
ST_MESSAGES = 0
ST_EVENTS = 1
ST_BBO = 2
ST_TRADES = 3
ST_FILTERED = 4  # messages for symbols outside the configured subset (not an error)
ST_TRUNCATED = 5  # a frame's length runs past the end of its buffer
ST_BAD_LENGTH = 6  # a known type with the wrong length
ST_UNKNOWN_TYPE = 7
ST_UNKNOWN_ORDER = 8  # execute/cancel/delete/replace of a reference not in the book
ST_DUPLICATE_ORDER = 9  # add with a reference already live
ST_OVER_EXECUTION = 10  # executed or cancelled more shares than the order had
ST_BAD_SIDE = 11
ST_LOCATE_MISMATCH = 12  # a reference used under another stock locate than its add
ST_LEVEL_OVERFLOW = 13  # a side already had the configured number of price levels
ST_LEVEL_MISS = 14  # an order's price level was not found (after an overflow)
ST_ORDER_TABLE_FULL = 15
ST_SYMBOL_TABLE_FULL = 16
ST_ZERO_LENGTH = 17
STATS_WORDS = 24

# Error kinds as exported in /metrics (appliance_feed_malformed_total{kind=...}) and logged.
ERROR_KINDS = {
    ST_TRUNCATED: "truncated", ST_BAD_LENGTH: "bad_length", ST_UNKNOWN_TYPE: "unknown_type",
    ST_UNKNOWN_ORDER: "unknown_order", ST_DUPLICATE_ORDER: "duplicate_order",
    ST_OVER_EXECUTION: "over_execution", ST_BAD_SIDE: "bad_side", ST_LOCATE_MISMATCH: "locate_mismatch",
    ST_LEVEL_OVERFLOW: "level_overflow", ST_LEVEL_MISS: "level_miss",
    ST_ORDER_TABLE_FULL: "order_table_full", ST_SYMBOL_TABLE_FULL: "symbol_table_full",
    ST_ZERO_LENGTH: "zero_length",
}
# examples[kind, i] = (sequence, type byte, stock locate, order reference or offending length)
EX_SEQ, EX_TYPE, EX_LOCATE, EX_REF = range(4)

Book = namedtuple("Book", "orders levels nlev loc_slot sym_stock sym_locate sym_state subset "
                          "meta stats counts examples")


def make_book(max_orders: int = 1 << 22, levels: int = 256, max_symbols: int = 12000,
              symbols: tuple[str, ...] = (), examples: int = 8) -> Book:
    """Allocate an empty book set; `symbols` limits booking to those stocks (empty = every symbol)."""
    cap = 1 << max(4, int(max_orders - 1).bit_length())  # power of two >= max_orders
    n = len(symbols)
    if n > max_symbols:
        raise ValueError(f"{n} symbols configured but the book holds at most {max_symbols}")
    bk = Book(
        orders=huge_array(cap, ORDER_DTYPE),
        levels=huge_array(max_symbols * 2 * levels, LEVEL_DTYPE),
        nlev=np.zeros(max_symbols * 2, dtype=np.int32),
        loc_slot=huge_array(NUM_LOCATES, np.int32, UNKNOWN),
        sym_stock=np.zeros(max_symbols, dtype=np.int64),
        sym_locate=np.zeros(max_symbols, dtype=np.int32),
        sym_state=np.zeros(max_symbols, dtype=np.uint8),
        subset=np.array(sorted(d.alpha_to_int(s.upper()) for s in symbols), dtype=np.int64),
        meta=np.zeros(META_WORDS, dtype=np.int64),
        stats=np.zeros(STATS_WORDS, dtype=np.int64),
        counts=np.zeros(256, dtype=np.int64),
        examples=np.zeros((STATS_WORDS, max(1, examples), 4), dtype=np.int64),
    )
    bk.orders["ref"] = EMPTY
    bk.meta[M_MASK] = cap - 1
    bk.meta[M_LEVELS] = levels
    bk.meta[M_MAX_SYMBOLS] = max_symbols
    bk.meta[M_MAX_LIVE] = cap - cap // 8  # linear probing stays short below 7/8 full
    bk.meta[M_ALL] = 1 if n == 0 else 0
    bk.meta[M_EXAMPLES] = max(1, examples)
    return bk


# The kernels are compiled without numba's reference counting: they never allocate, and NRT's
# incref/decref of each of the Book's arrays on every call made a message cost about 1 us (measured).
_HOT = dict(nogil=True, cache=True, _nrt=False)
_INLINE = dict(nogil=True, cache=True, _nrt=False, inline="always")


# ---- errors -------------------------------------------------------------------------------------
@njit(**_HOT)
def record_fault(bk, kind, seq, mtype, locate, ref):
    """Count one bad input by kind and keep it as an example while there is room."""
    n = bk.stats[kind]
    bk.stats[kind] = n + 1
    if n < bk.meta[M_EXAMPLES]:
        ex = bk.examples[kind, n]
        ex[EX_SEQ] = seq
        ex[EX_TYPE] = mtype
        ex[EX_LOCATE] = locate
        ex[EX_REF] = ref


# ---- order table --------------------------------------------------------------------------------
@njit(**_INLINE)
def _probe(orders, mask, ref):
    """(slot holding `ref`, True), or (the free slot that ends its probe run, False)."""
    i = ref & mask
    while True:
        r = orders[i].ref
        if r == ref:
            return i, True
        if r == EMPTY:
            return i, False
        i = (i + 1) & mask


@njit(**_INLINE)
def _find(orders, mask, ref):
    """Index of the live order `ref`, or -1."""
    i, found = _probe(orders, mask, ref)
    return i if found else -1


@njit(**_INLINE)
def _insert(orders, mask, ref):
    """Index of a free slot for `ref`, or -1 when `ref` is already live."""
    i, found = _probe(orders, mask, ref)
    return -1 if found else i


@njit(**_INLINE)
def _erase(orders, mask, i):
    """Free slot i, shifting later entries of its probe run back so lookups never need tombstones."""
    j = i
    while True:
        j = (j + 1) & mask
        r = orders[j].ref
        if r == EMPTY:
            break
        home = r & mask
        # entry j may move to the hole at i only if its home is not cyclically within (i, j]
        if i <= j:
            if i < home <= j:
                continue
        elif home > i or home <= j:
            continue
        orders[i] = orders[j]
        i = j
    orders[i].ref = EMPTY


# ---- price levels -------------------------------------------------------------------------------
@njit(**_INLINE)
def _side_key(side, price):
    return price if side == 0 else -price


@njit(**_INLINE)
def _level_add(bk, book_side, key, shares):
    """Add one order's shares at `key`; False when the side is full and the price is new."""
    L = bk.meta[M_LEVELS]
    base = book_side * L
    n = bk.nlev[book_side]
    lv = bk.levels
    i = n - 1
    while i >= 0 and lv[base + i].key > key:
        i -= 1
    if i >= 0 and lv[base + i].key == key:
        lv[base + i].count += 1
        lv[base + i].shares += shares
        return True
    if n == L:
        return False
    j = n
    while j > i + 1:
        lv[base + j] = lv[base + j - 1]
        j -= 1
    lv[base + i + 1].key = key
    lv[base + i + 1].count = 1
    lv[base + i + 1].shares = shares
    bk.nlev[book_side] = n + 1
    return True


@njit(**_INLINE)
def _level_remove(bk, book_side, key, shares, whole_order):
    """Take shares (and the order, when it is gone) off the level at `key`; False if there is none."""
    L = bk.meta[M_LEVELS]
    base = book_side * L
    n = bk.nlev[book_side]
    lv = bk.levels
    i = n - 1
    while i >= 0 and lv[base + i].key > key:
        i -= 1
    if i < 0 or lv[base + i].key != key:
        return False
    lv[base + i].shares -= shares
    if whole_order:
        lv[base + i].count -= 1
    if lv[base + i].count <= 0:
        for j in range(i, n - 1):
            lv[base + j] = lv[base + j + 1]
        bk.nlev[book_side] = n - 1
    return True


@njit(**_INLINE)
def _top(bk, book_side):
    """(key, shares) of the best level of a side, (0, 0) when empty."""
    n = bk.nlev[book_side]
    if n == 0:
        return np.int64(0), np.int64(0)
    lv = bk.levels[book_side * bk.meta[M_LEVELS] + n - 1]
    return np.int64(lv.key), np.int64(lv.shares)


# ---- events -------------------------------------------------------------------------------------
@njit(**_INLINE)
def _emit_bbo(bk, slot, seq, t_in, ts, out, out_mask, pos):
    e = out[pos & out_mask]
    e.kind = KIND_BBO
    e.side = 0
    e.flags = 0
    e.symbol = slot
    e.seq = seq
    e.t_in = t_in
    e.t_hop = 0
    e.ref = bk.sym_locate[slot]
    bkey, bqty = _top(bk, 2 * slot)
    akey, aqty = _top(bk, 2 * slot + 1)
    e.px = bkey
    e.qty = bqty
    e.px2 = -akey
    e.qty2 = aqty
    e.aux = ts
    bk.stats[ST_EVENTS] += 1
    bk.stats[ST_BBO] += 1


@njit(**_INLINE)
def _emit(bk, kind, slot, side, flags, seq, t_in, ts, ref, px, qty, out, out_mask, pos):
    e = out[pos & out_mask]
    e.kind = kind
    e.side = side
    e.flags = flags
    e.symbol = slot
    e.seq = seq
    e.t_in = t_in
    e.t_hop = 0
    e.ref = ref
    e.px = px
    e.qty = qty
    e.px2 = 0
    e.qty2 = 0
    e.aux = ts
    bk.stats[ST_EVENTS] += 1
    if kind == KIND_TRADE:
        bk.stats[ST_TRADES] += 1


# ---- symbols ------------------------------------------------------------------------------------
@njit(**_INLINE)
def _in_subset(subset, stock):
    for s in subset:
        if s == stock:
            return True
    return False


@njit(**_INLINE)
def _new_slot(bk, locate, stock, seq, mtype):
    """Give `locate` a book slot; UNTRACKED when it is outside the subset or the table is full."""
    if bk.meta[M_ALL] == 0 and not _in_subset(bk.subset, stock):
        bk.loc_slot[locate] = UNTRACKED
        return UNTRACKED
    slot = bk.meta[M_SYMBOLS]
    if slot >= bk.meta[M_MAX_SYMBOLS]:
        record_fault(bk, ST_SYMBOL_TABLE_FULL, seq, mtype, locate, 0)
        bk.loc_slot[locate] = UNTRACKED
        return UNTRACKED
    bk.meta[M_SYMBOLS] = slot + 1
    bk.loc_slot[locate] = slot
    bk.sym_stock[slot] = stock
    bk.sym_locate[slot] = locate
    return slot


@njit(**_INLINE)
def _slot_of(bk, locate, stock, seq, mtype, ref):
    """Book slot for a message's locate, or < 0 to skip the message (counted here).

    A locate never seen in the Stock Directory is booked on its first message that names a stock (A, F,
    P, Q, H, h carry one) when every symbol is booked, so a feed joined mid-day still builds books;
    references under a locate with no book at all cannot name a live order and count as unknown_order.
    """
    slot = bk.loc_slot[locate]
    if slot == UNKNOWN:
        if bk.meta[M_ALL] != 0 and stock != 0:
            slot = _new_slot(bk, locate, stock, seq, mtype)
        elif bk.meta[M_ALL] != 0:
            record_fault(bk, ST_UNKNOWN_ORDER, seq, mtype, locate, ref)
            return UNKNOWN
        else:
            slot = UNTRACKED
    if slot == UNTRACKED:
        bk.stats[ST_FILTERED] += 1
    return slot


# ---- orders -------------------------------------------------------------------------------------
@njit(**_INLINE)
def _add(bk, slot, locate, ref, side_byte, shares, price, seq, mtype, t_in, ts, out, out_mask, pos):
    """Rest a new order; returns events written (0 or 1)."""
    if side_byte == 66:  # 'B'
        side = 0
    elif side_byte == 83:  # 'S'
        side = 1
    else:
        record_fault(bk, ST_BAD_SIDE, seq, mtype, locate, ref)
        return 0
    if bk.meta[M_LIVE] >= bk.meta[M_MAX_LIVE]:
        record_fault(bk, ST_ORDER_TABLE_FULL, seq, mtype, locate, ref)
        return 0
    orders = bk.orders
    i = _insert(orders, bk.meta[M_MASK], ref)
    if i < 0:
        record_fault(bk, ST_DUPLICATE_ORDER, seq, mtype, locate, ref)
        return 0
    book_side = 2 * slot + side
    tkey, tqty = _top(bk, book_side)
    key = _side_key(side, price)
    if not _level_add(bk, book_side, key, shares):
        record_fault(bk, ST_LEVEL_OVERFLOW, seq, mtype, locate, ref)
    o = orders[i]
    o.ref = ref
    o.price = price
    o.shares = shares
    o.slot = slot
    o.side = side
    bk.meta[M_LIVE] += 1
    nkey, nqty = _top(bk, book_side)
    if nkey != tkey or nqty != tqty:
        _emit_bbo(bk, slot, seq, t_in, ts, out, out_mask, pos)
        return 1
    return 0


@njit(**_INLINE)
def _reduce(bk, slot, locate, ref, shares, trade_flags, trade_px, match, seq, mtype, t_in, ts,
            out, out_mask, pos):
    """Execute (trade_flags != 0) or cancel `shares` of an order, deleting it at zero or when shares < 0.

    Returns events written: a trade for executions, then a BBO change if the touch moved.
    """
    orders = bk.orders
    mask = bk.meta[M_MASK]
    i = _find(orders, mask, ref)
    if i < 0:
        record_fault(bk, ST_UNKNOWN_ORDER, seq, mtype, locate, ref)
        return 0
    o = orders[i]
    if o.slot != slot:
        record_fault(bk, ST_LOCATE_MISMATCH, seq, mtype, locate, ref)
        return 0
    side = np.int64(o.side)
    price = np.int64(o.price)
    left = np.int64(o.shares)
    if shares < 0:  # delete
        shares = left
    elif shares > left:
        record_fault(bk, ST_OVER_EXECUTION, seq, mtype, locate, ref)
        shares = left
    book_side = 2 * slot + side
    tkey, tqty = _top(bk, book_side)
    gone = shares == left
    if not _level_remove(bk, book_side, _side_key(side, price), shares, gone):
        record_fault(bk, ST_LEVEL_MISS, seq, mtype, locate, ref)
    if gone:
        _erase(orders, mask, i)
        bk.meta[M_LIVE] -= 1
    else:
        o.shares = left - shares
    n = 0
    if trade_flags != 0:
        px = price if trade_px < 0 else trade_px
        _emit(bk, KIND_TRADE, slot, side, trade_flags, seq, t_in, ts, match, px, shares, out, out_mask, pos)
        n = 1
    nkey, nqty = _top(bk, book_side)
    if nkey != tkey or nqty != tqty:
        _emit_bbo(bk, slot, seq, t_in, ts, out, out_mask, pos + n)
        n += 1
    return n


@njit(**_INLINE)
def _replace(bk, slot, locate, old_ref, new_ref, shares, price, seq, mtype, t_in, ts, out, out_mask, pos):
    """Order Replace: the old order leaves the book and a new one (same side, new priority) enters."""
    orders = bk.orders
    mask = bk.meta[M_MASK]
    i = _find(orders, mask, old_ref)
    if i < 0:
        record_fault(bk, ST_UNKNOWN_ORDER, seq, mtype, locate, old_ref)
        return 0
    o = orders[i]
    if o.slot != slot:
        record_fault(bk, ST_LOCATE_MISMATCH, seq, mtype, locate, old_ref)
        return 0
    if _find(orders, mask, new_ref) >= 0:
        record_fault(bk, ST_DUPLICATE_ORDER, seq, mtype, locate, new_ref)
        return 0
    side = np.int64(o.side)
    book_side = 2 * slot + side
    tkey, tqty = _top(bk, book_side)
    if not _level_remove(bk, book_side, _side_key(side, np.int64(o.price)), np.int64(o.shares), True):
        record_fault(bk, ST_LEVEL_MISS, seq, mtype, locate, old_ref)
    _erase(orders, mask, i)
    j = _insert(orders, mask, new_ref)
    if not _level_add(bk, book_side, _side_key(side, price), shares):
        record_fault(bk, ST_LEVEL_OVERFLOW, seq, mtype, locate, new_ref)
    no = orders[j]
    no.ref = new_ref
    no.price = price
    no.shares = shares
    no.slot = slot
    no.side = side
    nkey, nqty = _top(bk, book_side)
    if nkey != tkey or nqty != tqty:
        _emit_bbo(bk, slot, seq, t_in, ts, out, out_mask, pos)
        return 1
    return 0


# ---- prefetch -----------------------------------------------------------------------------------
# Every order message (A, F, E, C, X, D, U) carries its (original) reference at the same offset.
_REF_OFF = 11
PREFETCH_BYTES = _REF_OFF + 8  # bytes of a message that prefetch_order reads
_ORDER_TYPES = np.zeros(256, dtype=np.uint8)
for _t in "AFECXDU":
    _ORDER_TYPES[ord(_t)] = 1
assert all(o == _REF_OFF for o in (d.ADD_REF, d.EXE_REF, d.CXL_REF, d.DEL_REF, d.REP_OLD_REF))


@njit(**_INLINE)
def prefetch_order(orders, mask, buf, off):
    """Start loading the order-table line that the message at buf[off] will touch.

    Hot loops call this for the next message before applying the current one: a lookup of an order
    added long ago is a cache miss, and this overlaps it with the current message's work.
    Reads buf[off:off + PREFETCH_BYTES]; the caller checks that those bytes are in the buffer.
    """
    if _ORDER_TYPES[buf[off]]:
        prefetch(orders, get_u64(buf, off + _REF_OFF) & mask)


# ---- one message --------------------------------------------------------------------------------
def _book_apply(bk, buf, off, ln, seq, t_in, out, out_mask, pos):
    """Apply the ITCH message buf[off:off+ln] (sequence `seq`, arrival TSC `t_in`) to the books.

    Events go to out[(pos + k) & out_mask] for k < the returned count (at most 2): the caller leaves
    room for two. Bad messages are counted by kind and skipped.
    """
    if ln <= 0:
        record_fault(bk, ST_ZERO_LENGTH, seq, 0, 0, ln)
        return 0
    mtype = np.int64(buf[off])
    if d.MSG_LENGTH[mtype] != ln:
        if d.MSG_LENGTH[mtype] == 0:
            record_fault(bk, ST_UNKNOWN_TYPE, seq, mtype, 0, ln)
        else:
            record_fault(bk, ST_BAD_LENGTH, seq, mtype, 0, ln)
        return 0
    bk.counts[mtype] += 1
    bk.stats[ST_MESSAGES] += 1
    locate = get_u16(buf, off + d.OFF_LOCATE)

    if mtype == d.MSG_ADD or mtype == d.MSG_ADD_MPID:
        slot = _slot_of(bk, locate, get_u64(buf, off + d.ADD_STOCK), seq, mtype, get_u64(buf, off + d.ADD_REF))
        if slot < 0:
            return 0
        return _add(bk, slot, locate, get_u64(buf, off + d.ADD_REF), buf[off + d.ADD_SIDE],
                    get_u32(buf, off + d.ADD_SHARES), get_u32(buf, off + d.ADD_PRICE), seq, mtype, t_in,
                    get_u48(buf, off + d.OFF_TIMESTAMP), out, out_mask, pos)
    if mtype == d.MSG_DELETE:
        slot = _slot_of(bk, locate, 0, seq, mtype, get_u64(buf, off + d.DEL_REF))
        if slot < 0:
            return 0
        return _reduce(bk, slot, locate, get_u64(buf, off + d.DEL_REF), -1, 0, -1, 0, seq, mtype, t_in,
                       get_u48(buf, off + d.OFF_TIMESTAMP), out, out_mask, pos)
    if mtype == d.MSG_REPLACE:
        slot = _slot_of(bk, locate, 0, seq, mtype, get_u64(buf, off + d.REP_OLD_REF))
        if slot < 0:
            return 0
        return _replace(bk, slot, locate, get_u64(buf, off + d.REP_OLD_REF), get_u64(buf, off + d.REP_NEW_REF),
                        get_u32(buf, off + d.REP_SHARES), get_u32(buf, off + d.REP_PRICE), seq, mtype, t_in,
                        get_u48(buf, off + d.OFF_TIMESTAMP), out, out_mask, pos)
    if mtype == d.MSG_EXECUTED or mtype == d.MSG_EXECUTED_PRICE:
        slot = _slot_of(bk, locate, 0, seq, mtype, get_u64(buf, off + d.EXE_REF))
        if slot < 0:
            return 0
        if mtype == d.MSG_EXECUTED:
            flags = TRADE_EXECUTION
            px = -1
        else:
            flags = TRADE_EXECUTION_PRICE
            if buf[off + d.EXE_PRINTABLE] != 89:  # 'Y'
                flags |= TRADE_NON_PRINTABLE
            px = get_u32(buf, off + d.EXE_PRICE)
        return _reduce(bk, slot, locate, get_u64(buf, off + d.EXE_REF), get_u32(buf, off + d.EXE_SHARES), flags,
                       px, get_u64(buf, off + d.EXE_MATCH), seq, mtype, t_in, get_u48(buf, off + d.OFF_TIMESTAMP),
                       out, out_mask, pos)
    if mtype == d.MSG_CANCEL:
        slot = _slot_of(bk, locate, 0, seq, mtype, get_u64(buf, off + d.CXL_REF))
        if slot < 0:
            return 0
        return _reduce(bk, slot, locate, get_u64(buf, off + d.CXL_REF), get_u32(buf, off + d.CXL_SHARES), 0, -1, 0,
                       seq, mtype, t_in, get_u48(buf, off + d.OFF_TIMESTAMP), out, out_mask, pos)
    if mtype == d.MSG_TRADE:
        slot = _slot_of(bk, locate, get_u64(buf, off + d.TRD_STOCK), seq, mtype, 0)
        if slot < 0:
            return 0
        side = 1 if buf[off + d.TRD_SIDE] == 83 else 0
        _emit(bk, KIND_TRADE, slot, side, TRADE_HIDDEN, seq, t_in, get_u48(buf, off + d.OFF_TIMESTAMP),
              get_u64(buf, off + d.TRD_MATCH), get_u32(buf, off + d.TRD_PRICE), get_u32(buf, off + d.TRD_SHARES),
              out, out_mask, pos)
        return 1
    if mtype == d.MSG_CROSS_TRADE:
        slot = _slot_of(bk, locate, get_u64(buf, off + d.CRS_STOCK), seq, mtype, 0)
        if slot < 0:
            return 0
        _emit(bk, KIND_TRADE, slot, 0, TRADE_CROSS, seq, t_in, get_u48(buf, off + d.OFF_TIMESTAMP),
              get_u64(buf, off + d.CRS_MATCH), get_u32(buf, off + d.CRS_PRICE),
              min(get_u64(buf, off + d.CRS_SHARES), 0xFFFFFFFF), out, out_mask, pos)
        return 1
    if mtype == d.MSG_STOCK_DIRECTORY:
        slot = bk.loc_slot[locate]
        stock = get_u64(buf, off + d.DIR_STOCK)
        if slot == UNKNOWN:
            _new_slot(bk, locate, stock, seq, mtype)
        elif slot >= 0:
            bk.sym_stock[slot] = stock
        return 0
    if mtype == d.MSG_TRADING_ACTION or mtype == d.MSG_OPERATIONAL_HALT:
        slot = _slot_of(bk, locate, get_u64(buf, off + d.ACT_STOCK), seq, mtype, 0)
        if slot < 0:
            return 0
        if mtype == d.MSG_TRADING_ACTION:
            state = buf[off + d.ACT_STATE]
            bk.sym_state[slot] = state
            reason = get_u32(buf, off + d.ACT_REASON)
        else:
            state = buf[off + 20]  # operational halt action: 'H' halted, 'T' resumed
            reason = buf[off + 19]  # market code
        _emit(bk, KIND_STATE, slot, 0, state, seq, t_in, get_u48(buf, off + d.OFF_TIMESTAMP), reason, 0, 0,
              out, out_mask, pos)
        return 1
    if mtype == d.MSG_SYSTEM_EVENT:
        _emit(bk, KIND_SYSTEM, 0, 0, buf[off + d.SYS_EVENT_CODE], seq, t_in,
              get_u48(buf, off + d.OFF_TIMESTAMP), 0, 0, 0, out, out_mask, pos)
        return 1
    return 0  # counted; carries nothing the book keeps


# Hot loops inline the message handler: a call passes the Book's dozen arrays (about 90 words) on the
# stack, which cost more per message than most of the handlers themselves (measured).
book_apply_inline = njit(**_INLINE)(_book_apply)
book_apply = njit(**_HOT)(_book_apply)


@njit(**_HOT)
def book_replay(bk, buf, start, end, seq, t_in, out, out_mask, pos):
    """Apply every length-prefixed message in buf[start:end] (day-file framing).

    Returns (offset after the last whole frame, next sequence number, next event position); a frame
    whose length runs past `end` is left for the caller (counted as truncated only at end of input).
    """
    off = start
    table_mask = bk.meta[M_MASK]
    while off + 2 <= end:
        ln = (np.int64(buf[off]) << 8) | buf[off + 1]
        nxt = off + 2 + ln
        if nxt > end:
            break
        if nxt + 2 + PREFETCH_BYTES <= end:
            prefetch_order(bk.orders, table_mask, buf, nxt + 2)
        pos += book_apply_inline(bk, buf, off + 2, ln, seq, t_in, out, out_mask, pos)
        seq += 1
        off = nxt
    return off, seq, pos


# ---- cold-path views ----------------------------------------------------------------------------
def bbo(bk: Book) -> dict[str, tuple[int, int, int, int]]:
    """Every booked symbol's best bid and offer: stock -> (bid_px, bid_shares, ask_px, ask_shares)."""
    out = {}
    L = int(bk.meta[M_LEVELS])
    for slot in range(int(bk.meta[M_SYMBOLS])):
        name = d.int_to_alpha(int(bk.sym_stock[slot])) or f"#{int(bk.sym_locate[slot])}"
        row = []
        for side in (0, 1):
            n = int(bk.nlev[2 * slot + side])
            if n:
                lv = bk.levels[(2 * slot + side) * L + n - 1]
                row += [abs(int(lv["key"])), int(lv["shares"])]
            else:
                row += [0, 0]
        out[name] = tuple(row)
    return out


def depth(bk: Book, stock: str, levels: int = 10) -> dict[str, list[tuple[int, int, int]]]:
    """The top `levels` price levels of one stock: side -> [(price, shares, orders), ...] best first."""
    target = d.alpha_to_int(stock.upper())
    L = int(bk.meta[M_LEVELS])
    for slot in range(int(bk.meta[M_SYMBOLS])):
        if int(bk.sym_stock[slot]) == target:
            res = {}
            for side, name in ((0, "bid"), (1, "ask")):
                n = int(bk.nlev[2 * slot + side])
                base = (2 * slot + side) * L
                res[name] = [(abs(int(bk.levels[base + i]["key"])), int(bk.levels[base + i]["shares"]),
                              int(bk.levels[base + i]["count"])) for i in range(n - 1, max(-1, n - 1 - levels), -1)]
            return res
    raise KeyError(f"{stock} is not booked")


def stats(bk: Book) -> dict:
    """Counters as a dict: messages per type, events, and malformed input by kind."""
    counts = {t: int(bk.counts[ord(t)]) for t in d.FIELDS if bk.counts[ord(t)]}
    return {
        "messages": int(bk.stats[ST_MESSAGES]), "events": int(bk.stats[ST_EVENTS]),
        "bbo_events": int(bk.stats[ST_BBO]), "trades": int(bk.stats[ST_TRADES]),
        "filtered": int(bk.stats[ST_FILTERED]), "symbols": int(bk.meta[M_SYMBOLS]),
        "live_orders": int(bk.meta[M_LIVE]), "by_type": counts,
        "malformed": {name: int(bk.stats[k]) for k, name in ERROR_KINDS.items()},
    }


def examples(bk: Book) -> list[dict]:
    """The first kept examples of each kind of bad input, for the log."""
    out = []
    keep = int(bk.meta[M_EXAMPLES])
    for k, name in ERROR_KINDS.items():
        for i in range(min(keep, int(bk.stats[k]))):
            seq, mtype, loc, ref = (int(x) for x in bk.examples[k, i])
            out.append({"kind": name, "seq": seq, "type": chr(mtype) if 32 < mtype < 127 else f"{mtype:#04x}",
                        "locate": loc, "ref": ref})
    return out
