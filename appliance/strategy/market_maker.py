"""Built-in strategies on the strategy hot thread: a market maker, and a mean-reversion taker.

A strategy is numba code called on book events (from the feed ring) and on its own order updates and
fills (from the gateway ring); it emits order intents (new, replace, cancel) into the ring to the
gateway, which risk-checks them. Its parameters are one float64 array written by the control plane from
[strategy] at start and on every reload (`P_*`), so reloadable keys take effect on the next event.

Market maker: fair value is the mid or the microprice, optionally shifted by the mean-reversion signal;
each side is quoted `half_spread + vol_multiplier * volatility` away, skewed against inventory, never
crossing the touch; a quote is replaced once its target moved `replace_ticks`, at most once per
`refresh_us` per side; a side stops quoting at `max_position`.
Mean reversion: over a window of mids, signal = mean - median; beyond `signal_threshold` ticks it sends
an immediate-or-cancel order against the move, one at a time per side.
Module (`kind = "module"`): the user's compiled `quote` function (appliance/strategy/user.py) sets each
symbol's target orders and the same side machinery works them; the user's `on_fill` sees each fill. The two
functions arrive as first-class function arguments, so these kernels are the same for every kind.

Per symbol and side the strategy keeps one working order and its state (none, pending new, live,
changing), driven only by the gateway's updates, so it never has two requests for one side in flight.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from ..gateway import orders as go
from ..runtime.atomics import load_relaxed, rdtsc
from ..runtime.clock import cycles_to_ns
from ..runtime.event import (
    KIND_BBO, KIND_CANCEL, KIND_FILL, KIND_NEW, KIND_ORDER, KIND_POSITION, KIND_REPLACE,
)
from ..runtime.histogram import hist_record
from ..runtime.layout import C_BACKPRESSURE, C_EVENTS_IN, C_EVENTS_OUT, H_DECIDE, H_HOP_FS, H_HOP_GS
from ..runtime.ring import ring_available, ring_free, ring_head, ring_publish_stamped, ring_release, ring_tail
from .user import STATE_WORDS, T_ASK_PX, T_ASK_QTY, T_BID_PX, T_BID_QTY, T_TIF, TARGET_WORDS, TIF_IOC_CODE

KIND_MARKET_MAKER = 0
KIND_MEAN_REVERSION = 1
KIND_MODULE = 2
KINDS = {"market_maker": KIND_MARKET_MAKER, "mean_reversion": KIND_MEAN_REVERSION, "module": KIND_MODULE}

# p[] parameters (float64; prices in 1e-4 dollars)
P_KIND = 0
P_MICROPRICE = 1
P_QUOTE_SIZE = 2
P_HALF_SPREAD = 3
P_VOL_MULT = 4
P_VOL_ALPHA = 5
P_SKEW = 6
P_MAX_POS = 7
P_REPLACE_TICKS = 8
P_REFRESH_CYCLES = 9
P_TICK = 10
P_WINDOW = 11
P_THRESHOLD = 12
P_SIGNAL_WEIGHT = 13
P_NS_PER_CYCLE = 14
P_WORDS = 16

# w[] words
SW_NEXT_URN = 0
SW_BOOK_EVENTS = 1
SW_UPDATES = 2
SW_INTENTS = 3
SW_FILLS = 4
SW_REFUSED = 5  # intents the gateway refused
SW_DIRTY = 6  # symbols marked Q_DIRTY
SW_WORDS = 16

# q[sym, side * SIDE_WORDS + Q_*]: the working order of one side
Q_URN = 0
Q_STATE = 1
Q_PX = 2
Q_QTY = 3  # shares working (leaves)
Q_LAST = 4  # TSC of the last request on this side
Q_PENDING = 5  # the new UserRefNum of a replace in flight
SIDE_WORDS = 6
Q_POS = 12
Q_BID = 13
Q_ASK = 14
Q_WIN_N = 15  # mids in the window
Q_WIN_HEAD = 16
Q_BID_QTY = 17
Q_ASK_QTY = 18
Q_DIRTY = 19  # an update settled a side: decide again without waiting for the touch to move
Q_WORDS = 20
# f[sym, *]
F_FAIR = 0
F_VOL = 1
F_WORDS = 4

SS_NONE = 0
SS_PENDING = 1  # a new order sent, not yet accepted
SS_LIVE = 2
SS_CHANGING = 3  # a cancel or replace sent, not yet answered

WINDOW_MAX = 64
TIF_DAY = 48  # '0'
TIF_IOC = 51  # '3'

St = namedtuple("St", "w p slot_map traded q f win srt up us tgt")
St.__doc__ = """Strategy state: words, parameters, book slot -> traded index map (-1 unknown, -2 not traded),
traded stocks (alpha8 ints), per-symbol working orders and signals, the mid window and its sorted copy; for a
user strategy its parameters, per-symbol scratch and the target its quote function fills."""


def make_strategy_state(symbols, max_book_symbols: int, user_params: int = 0) -> St:
    from ..runtime.wire import alpha_to_int

    n = len(symbols)
    st = St(w=np.zeros(SW_WORDS, dtype=np.int64), p=np.zeros(P_WORDS, dtype=np.float64),
            slot_map=np.full(max_book_symbols, -1, dtype=np.int32),
            traded=np.array([alpha_to_int(s) for s in symbols], dtype=np.int64),
            q=np.zeros((n, Q_WORDS), dtype=np.int64), f=np.zeros((n, F_WORDS), dtype=np.float64),
            win=np.zeros((n, WINDOW_MAX), dtype=np.float64), srt=np.zeros((n, WINDOW_MAX), dtype=np.float64),
            up=np.zeros(user_params, dtype=np.float64), us=np.zeros((n, STATE_WORDS), dtype=np.float64),
            tgt=np.zeros(TARGET_WORDS, dtype=np.int64))
    st.w[SW_NEXT_URN] = 1
    return st


def params_from_config(scfg, tsc_hz: float, out) -> None:
    """Write [strategy] into the parameter array the hot loop reads (on start and on reload)."""
    out[P_KIND] = KINDS.get(scfg.kind, KIND_MARKET_MAKER)
    out[P_MICROPRICE] = 1.0 if scfg.fair_value == "microprice" else 0.0
    out[P_QUOTE_SIZE] = scfg.quote_size
    out[P_HALF_SPREAD] = scfg.half_spread
    out[P_VOL_MULT] = scfg.vol_multiplier
    out[P_VOL_ALPHA] = scfg.vol_alpha
    out[P_SKEW] = scfg.skew_per_share
    out[P_MAX_POS] = scfg.max_position
    out[P_REPLACE_TICKS] = scfg.replace_ticks
    out[P_REFRESH_CYCLES] = scfg.refresh_us * tsc_hz / 1e6
    out[P_TICK] = scfg.tick_size
    out[P_WINDOW] = scfg.signal_window
    out[P_THRESHOLD] = scfg.signal_threshold
    out[P_SIGNAL_WEIGHT] = scfg.signal_weight
    out[P_NS_PER_CYCLE] = 1e9 / tsc_hz


# ---- intents --------------------------------------------------------------------------------------

@njit(nogil=True, cache=True, _nrt=False)
def _next_urn(st, gw_w):
    """UserRefNums strictly increase; after a restart or reconnect the gateway raises the floor."""
    u = st.w[SW_NEXT_URN]
    floor = load_relaxed(gw_w, go.W_URN_FLOOR)
    if floor > u:
        u = floor
    st.w[SW_NEXT_URN] = u + 1
    return u


@njit(nogil=True, cache=True, _nrt=False)
def _intent(out, pos, mask, kind, sym, side, urn, px, qty, other, tif, t_in, seq, st):
    o = out[pos & mask]
    o.kind = kind
    o.side = side
    o.flags = tif
    o.symbol = sym
    o.seq = seq
    o.t_in = t_in
    o.ref = urn
    o.px = px
    o.qty = qty
    o.px2 = st.q[sym, Q_BID]
    o.qty2 = st.q[sym, Q_ASK]
    o.aux = other


@njit(nogil=True, cache=True, _nrt=False)
def _work_side(st, gw_w, sym, side, target, want, qty, tif, t_in, seq, now, out, pos, mask, requote_qty=False):
    """Bring one side's working order to `target` (0 or not `want`: no order); intents written (0 or 1).
    `requote_qty`: a new quantity alone is a reason to replace (user targets; the built-ins' size is fixed)."""
    b = side * SIDE_WORDS
    q = st.q
    state = q[sym, b + Q_STATE]
    if state == SS_PENDING or state == SS_CHANGING:
        return 0
    if now - q[sym, b + Q_LAST] < st.p[P_REFRESH_CYCLES]:
        return 0
    if state == SS_NONE:
        if not want or target <= 0 or qty <= 0:
            return 0
        urn = _next_urn(st, gw_w)
        _intent(out, pos, mask, KIND_NEW, sym, side, urn, target, qty, 0, tif, t_in, seq, st)
        q[sym, b + Q_URN] = urn
        q[sym, b + Q_STATE] = SS_PENDING
        q[sym, b + Q_PX] = target
        q[sym, b + Q_QTY] = qty
        q[sym, b + Q_LAST] = now
        return 1
    # live
    if not want or target <= 0:
        _intent(out, pos, mask, KIND_CANCEL, sym, side, q[sym, b + Q_URN], q[sym, b + Q_PX], 0, 0, 0, t_in, seq, st)
        q[sym, b + Q_STATE] = SS_CHANGING
        q[sym, b + Q_LAST] = now
        return 1
    if abs(target - q[sym, b + Q_PX]) >= st.p[P_REPLACE_TICKS] * st.p[P_TICK] or (
            requote_qty and qty != q[sym, b + Q_QTY]):
        urn = _next_urn(st, gw_w)
        _intent(out, pos, mask, KIND_REPLACE, sym, side, urn, target, qty, q[sym, b + Q_URN], tif, t_in, seq, st)
        q[sym, b + Q_PENDING] = urn
        q[sym, b + Q_QTY] = qty
        q[sym, b + Q_STATE] = SS_CHANGING
        q[sym, b + Q_LAST] = now
        return 1
    return 0


# ---- signals --------------------------------------------------------------------------------------

@njit(nogil=True, cache=True, _nrt=False)
def _window_push(st, sym, x):
    """Add a mid to the window (dropping the oldest when full), keeping the sorted copy sorted; O(window)."""
    cap = int(st.p[P_WINDOW])
    if cap > WINDOW_MAX:
        cap = WINDOW_MAX
    if cap < 3:
        cap = 3
    n = st.q[sym, Q_WIN_N]
    head = st.q[sym, Q_WIN_HEAD]
    srt = st.srt[sym]
    if n >= cap:
        old = st.win[sym, head]
        k = 0
        while k < n - 1 and srt[k] != old:
            k += 1
        for j in range(k, n - 1):
            srt[j] = srt[j + 1]
        n -= 1
    st.win[sym, head] = x
    st.q[sym, Q_WIN_HEAD] = (head + 1) % cap
    k = n
    while k > 0 and srt[k - 1] > x:
        srt[k] = srt[k - 1]
        k -= 1
    srt[k] = x
    st.q[sym, Q_WIN_N] = n + 1


@njit(nogil=True, cache=True, _nrt=False)
def signal(st, sym):
    """Mean minus median of the window's mids (0 until the window is full)."""
    n = st.q[sym, Q_WIN_N]
    cap = int(st.p[P_WINDOW])
    if n < cap or n == 0:
        return 0.0
    srt = st.srt[sym]
    total = 0.0
    for j in range(n):
        total += srt[j]
    median = srt[n // 2] if n % 2 == 1 else 0.5 * (srt[n // 2 - 1] + srt[n // 2])
    return total / n - median


# ---- book events ----------------------------------------------------------------------------------

@njit(nogil=True, cache=True, _nrt=False)
def _traded_index(st, book_stock, slot):
    t = st.slot_map[slot]
    if t == -1:
        stock = book_stock[slot]
        t = -2
        for i in range(st.traded.shape[0]):
            if st.traded[i] == stock:
                t = i
                break
        st.slot_map[slot] = t
    return t


@njit(nogil=True, cache=True, _nrt=False)
def on_bbo(st, gw_w, sym, ev, now, out, pos, mask, quote_fn):
    """Take one touch change of a traded symbol (fair value, volatility, signal window), then decide;
    intents written at out[pos..] (at most 2)."""
    p = st.p
    bid = np.int64(ev.px)
    ask = np.int64(ev.px2)
    st.q[sym, Q_BID] = bid
    st.q[sym, Q_ASK] = ask
    st.q[sym, Q_BID_QTY] = ev.qty
    st.q[sym, Q_ASK_QTY] = ev.qty2
    if bid <= 0 or ask <= 0 or ask <= bid:
        return 0
    if p[P_KIND] == KIND_MODULE:  # the user's function keeps its own signals
        return _decide_user(st, gw_w, sym, now, out, pos, mask, ev.t_in, ev.seq, quote_fn)
    bq = np.float64(ev.qty)
    aq = np.float64(ev.qty2)
    if p[P_MICROPRICE] != 0.0 and bq + aq > 0:
        fair = (bid * aq + ask * bq) / (bq + aq)
    else:
        fair = 0.5 * (bid + ask)
    _window_push(st, sym, 0.5 * (bid + ask))
    if p[P_SIGNAL_WEIGHT] != 0.0:
        fair -= p[P_SIGNAL_WEIGHT] * signal(st, sym)
    last = st.f[sym, F_FAIR]
    if last > 0:
        a = p[P_VOL_ALPHA]
        st.f[sym, F_VOL] = (1.0 - a) * st.f[sym, F_VOL] + a * abs(fair - last)
    st.f[sym, F_FAIR] = fair
    return decide(st, gw_w, sym, now, out, pos, mask, ev.t_in, ev.seq, quote_fn)


@njit(nogil=True, cache=True, _nrt=False)
def decide(st, gw_w, sym, now, out, pos, mask, t_in, seq, quote_fn):
    """Bring both sides' working orders to where the last touch says they belong; intents written (at most 2).
    Runs on each touch change, and again when an order update settles a side (a quiet market may not move
    again for a long time)."""
    p = st.p
    bid = st.q[sym, Q_BID]
    ask = st.q[sym, Q_ASK]
    if bid <= 0 or ask <= 0 or ask <= bid:
        return 0
    tick = p[P_TICK]
    pos_shares = st.q[sym, Q_POS]
    max_pos = p[P_MAX_POS]
    size = np.int64(p[P_QUOTE_SIZE])
    if p[P_KIND] == KIND_MODULE:
        return _decide_user(st, gw_w, sym, now, out, pos, mask, t_in, seq, quote_fn)
    if p[P_KIND] == KIND_MEAN_REVERSION:
        sig = signal(st, sym)
        if sig > p[P_THRESHOLD] * tick and pos_shares - size >= -max_pos:  # mean above median: expect a fall
            return _work_side(st, gw_w, sym, go.SIDE_SELL, bid, True, size, TIF_IOC, t_in, seq, now, out, pos, mask)
        if sig < -p[P_THRESHOLD] * tick and pos_shares + size <= max_pos:
            return _work_side(st, gw_w, sym, go.SIDE_BUY, ask, True, size, TIF_IOC, t_in, seq, now, out, pos, mask)
        return 0
    fair = st.f[sym, F_FAIR]
    half = p[P_HALF_SPREAD] + p[P_VOL_MULT] * st.f[sym, F_VOL]
    skew = p[P_SKEW] * pos_shares
    tb = np.int64(np.floor((fair - half - skew) / tick) * tick)
    ta = np.int64(np.ceil((fair + half - skew) / tick) * tick)
    t = np.int64(tick)
    if tb > ask - t:
        tb = ask - t  # never cross the touch: quotes rest
    if ta < bid + t:
        ta = bid + t
    if ta <= tb:
        ta = tb + t
    want_bid = pos_shares + size <= max_pos
    want_ask = pos_shares - size >= -max_pos
    # Moving up, the offer goes first (and moving down, the bid), so the two quotes never meet on the way.
    q = st.q
    if q[sym, SIDE_WORDS + Q_STATE] == SS_LIVE and tb >= q[sym, SIDE_WORDS + Q_PX]:
        w = _work_side(st, gw_w, sym, go.SIDE_SELL, ta, want_ask, size, TIF_DAY, t_in, seq, now, out, pos, mask)
        return w + _work_side(st, gw_w, sym, go.SIDE_BUY, tb, want_bid, size, TIF_DAY, t_in, seq, now, out, pos + w,
                              mask)
    w = _work_side(st, gw_w, sym, go.SIDE_BUY, tb, want_bid, size, TIF_DAY, t_in, seq, now, out, pos, mask)
    return w + _work_side(st, gw_w, sym, go.SIDE_SELL, ta, want_ask, size, TIF_DAY, t_in, seq, now, out, pos + w,
                          mask)


@njit(nogil=True, cache=True, _nrt=False)
def _decide_user(st, gw_w, sym, now, out, pos, mask, t_in, seq, quote_fn):
    """Ask the user's quote function for this symbol's target orders and work both sides to it; intents
    written (at most 2)."""
    q = st.q
    bid = q[sym, Q_BID]
    ask = q[sym, Q_ASK]
    if bid <= 0 or ask <= 0 or ask <= bid:
        return 0
    t = st.tgt
    for side in range(2):  # preset to the working orders: returning 1 unchanged changes nothing
        b = side * SIDE_WORDS
        working = q[sym, b + Q_STATE] != SS_NONE
        t[2 * side] = q[sym, b + Q_PX] if working else 0
        t[2 * side + 1] = q[sym, b + Q_QTY] if working else 0
    t[T_TIF] = 0
    now_ns = np.int64(now * st.p[P_NS_PER_CYCLE])
    if quote_fn(st.up, st.us[sym], np.int64(sym), bid, q[sym, Q_BID_QTY], ask, q[sym, Q_ASK_QTY], q[sym, Q_POS],
                now_ns, t) == 0:
        return 0
    tif = TIF_IOC if t[T_TIF] == TIF_IOC_CODE else TIF_DAY
    tb, nb, ta, na = t[T_BID_PX], t[T_BID_QTY], t[T_ASK_PX], t[T_ASK_QTY]
    want_bid = tb > 0 and nb > 0
    want_ask = ta > 0 and na > 0
    # As in decide: moving up, the offer goes first (and moving down, the bid), so the quotes never meet.
    if q[sym, SIDE_WORDS + Q_STATE] == SS_LIVE and tb >= q[sym, SIDE_WORDS + Q_PX]:
        w = _work_side(st, gw_w, sym, go.SIDE_SELL, ta, want_ask, na, tif, t_in, seq, now, out, pos, mask, True)
        return w + _work_side(st, gw_w, sym, go.SIDE_BUY, tb, want_bid, nb, tif, t_in, seq, now, out, pos + w, mask,
                              True)
    w = _work_side(st, gw_w, sym, go.SIDE_BUY, tb, want_bid, nb, tif, t_in, seq, now, out, pos, mask, True)
    return w + _work_side(st, gw_w, sym, go.SIDE_SELL, ta, want_ask, na, tif, t_in, seq, now, out, pos + w, mask,
                          True)


# ---- order updates --------------------------------------------------------------------------------

@njit(nogil=True, cache=True, _nrt=False)
def _side_done(q, sym, b):
    """The side's working order is finished; a replace still in flight will be refused by the venue."""
    q[sym, b + Q_URN] = 0
    if q[sym, b + Q_PENDING] == 0:
        q[sym, b + Q_STATE] = SS_NONE


@njit(nogil=True, cache=True, _nrt=False)
def on_update(st, ev, out, pos, mask, fill_fn):
    """Follow the gateway's word on one order, fill or position; intents written (a cancel of a duplicate)."""
    q = st.q
    sym = ev.symbol
    if sym >= q.shape[0]:
        return 0
    if ev.kind == KIND_POSITION:
        # A resync (after a restart, a reconnect or the kill switch's release) starts with the position and
        # then lists every open order: what it does not list is gone (e.g. lost in a disconnect).
        q[sym, Q_POS] = ev.aux
        for b in (0, SIDE_WORDS):
            q[sym, b + Q_URN] = 0
            q[sym, b + Q_PENDING] = 0
            q[sym, b + Q_STATE] = SS_NONE
        if q[sym, Q_DIRTY] == 0:
            q[sym, Q_DIRTY] = 1
            st.w[SW_DIRTY] += 1
        return 0
    b = ev.side * SIDE_WORDS
    urn = ev.ref
    # A settled side may want a new order now; a refusal by our own risk checks would only be repeated until
    # the market moves, but one by the venue (or a loss in a disconnect) leaves nothing to wait for.
    if q[sym, Q_DIRTY] == 0 and (ev.flags != go.OS_REJECTED or ev.aux >= go.REASON_LOST):
        q[sym, Q_DIRTY] = 1
        st.w[SW_DIRTY] += 1
    mine = urn == q[sym, b + Q_URN] and urn != 0
    pending = urn == q[sym, b + Q_PENDING] and urn != 0
    if ev.kind == KIND_FILL:
        st.w[SW_FILLS] += 1
        if ev.side == go.SIDE_BUY:
            q[sym, Q_POS] += ev.qty
        else:
            q[sym, Q_POS] -= ev.qty
        if st.p[P_KIND] == KIND_MODULE:
            fill_fn(st.up, st.us[sym], np.int64(sym), np.int64(ev.side), np.int64(ev.px), np.int64(ev.qty),
                    q[sym, Q_POS])
        if mine:
            q[sym, b + Q_QTY] = ev.qty2  # shares still working: what a user's target is compared with
            if ev.qty2 == 0:
                _side_done(q, sym, b)
        return 0
    state = ev.flags
    if state == go.OS_NEW or state == go.OS_PARTIAL:
        if pending:  # the replace took effect: the new order is the working one
            q[sym, b + Q_URN] = urn
            q[sym, b + Q_PENDING] = 0
            q[sym, b + Q_STATE] = SS_LIVE
            q[sym, b + Q_PX] = ev.px
            q[sym, b + Q_QTY] = ev.qty
        elif mine:
            if q[sym, b + Q_STATE] == SS_PENDING:
                q[sym, b + Q_STATE] = SS_LIVE
            q[sym, b + Q_PX] = ev.px
            q[sym, b + Q_QTY] = ev.qty
        elif q[sym, b + Q_STATE] == SS_NONE and q[sym, b + Q_URN] == 0:  # resync: adopt it
            q[sym, b + Q_URN] = urn
            q[sym, b + Q_STATE] = SS_LIVE
            q[sym, b + Q_PX] = ev.px
            q[sym, b + Q_QTY] = ev.qty
        else:  # a second order on a side that already has one (found at resync): cancel it
            _intent(out, pos, mask, KIND_CANCEL, sym, ev.side, urn, ev.px, 0, 0, 0, 0, 0, st)
            return 1
    elif state == go.OS_PENDING_NEW or state == go.OS_PENDING_CANCEL or state == go.OS_PENDING_REPLACE:
        if not mine and not pending and q[sym, b + Q_STATE] == SS_NONE and q[sym, b + Q_URN] == 0:
            q[sym, b + Q_URN] = urn  # resync of an order in flight: wait for its answer
            q[sym, b + Q_STATE] = SS_CHANGING if state != go.OS_PENDING_NEW else SS_PENDING
            q[sym, b + Q_PX] = ev.px
    elif state == go.OS_REJECTED:
        st.w[SW_REFUSED] += 1
        request = ev.qty2
        if pending:
            q[sym, b + Q_PENDING] = 0
            q[sym, b + Q_STATE] = SS_LIVE if q[sym, b + Q_URN] != 0 else SS_NONE
        elif mine:
            if request == KIND_CANCEL:
                q[sym, b + Q_STATE] = SS_LIVE  # the cancel was refused (e.g. no session): the order stands
            else:
                _side_done(q, sym, b)
    elif state == go.OS_FILLED or state == go.OS_CANCELED:
        if mine:
            _side_done(q, sym, b)
        elif pending:
            q[sym, b + Q_PENDING] = 0
            if q[sym, b + Q_URN] == 0:
                q[sym, b + Q_STATE] = SS_NONE
    return 0


# ---- the agent ------------------------------------------------------------------------------------

@njit(nogil=True, cache=True, _nrt=False)
def strategy_work(st, gw_w, book_stock, counters, in_hdr, in_slots, up_hdr, up_slots, out_hdr, out_slots, hist, mult,
                  batch, quote_fn, fill_fn):
    """One unit of strategy work: the gateway's updates, then a batch of book events; returns events handled.
    quote_fn and fill_fn: the user strategy's compiled functions (no-ops for the built-in kinds)."""
    out_cap = out_slots.shape[0]
    out_mask = out_cap - 1
    written = 0
    handled = 0
    free = ring_free(out_hdr, out_cap)
    opos = ring_tail(out_hdr)
    now = rdtsc()
    # updates first: a decision should see every fill that arrived before it
    n = ring_available(up_hdr)
    if n > 0:
        if n > batch:
            n = batch
        if n > free:
            n = free
        up_mask = up_slots.shape[0] - 1
        src = ring_head(up_hdr)
        for k in range(n):
            ev = up_slots[(src + k) & up_mask]
            hist_record(hist[H_HOP_GS], cycles_to_ns(now - ev.t_hop, mult))
            written += on_update(st, ev, out_slots, opos + written, out_mask, fill_fn)
        ring_release(up_hdr, n)
        st.w[SW_UPDATES] += n
        handled += n
    if st.w[SW_DIRTY] > 0:
        for sym in range(st.q.shape[0]):
            if st.q[sym, Q_DIRTY] != 0:
                if free - written < 2:
                    break
                st.q[sym, Q_DIRTY] = 0
                st.w[SW_DIRTY] -= 1
                written += decide(st, gw_w, sym, now, out_slots, opos + written, out_mask, 0, 0, quote_fn)
    n = ring_available(in_hdr)
    if n > 0:
        if n > batch:
            n = batch
        in_mask = in_slots.shape[0] - 1
        src = ring_head(in_hdr)
        k = 0
        while k < n:
            if free - written < 2:
                counters[C_BACKPRESSURE] += 1
                break
            ev = in_slots[(src + k) & in_mask]
            hist_record(hist[H_HOP_FS], cycles_to_ns(now - ev.t_hop, mult))
            if ev.kind == KIND_BBO:
                sym = _traded_index(st, book_stock, ev.symbol)
                if sym >= 0:
                    written += on_bbo(st, gw_w, sym, ev, now, out_slots, opos + written, out_mask, quote_fn)
            k += 1
        ring_release(in_hdr, k)
        st.w[SW_BOOK_EVENTS] += k
        handled += k
    if written:
        stamp = ring_publish_stamped(out_hdr, out_slots, opos, written)
        hist_record(hist[H_DECIDE], cycles_to_ns(stamp - now, mult))
        st.w[SW_INTENTS] += written
        counters[C_EVENTS_OUT] += written
    counters[C_EVENTS_IN] += handled
    return handled
