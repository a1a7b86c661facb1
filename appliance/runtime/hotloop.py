"""The hot threads' loops: each runs its agents' units of work until the arena's stop flag is set.

One loop per thread kind: `split` runs feed, strategy and gateway loops on three threads, `fused`
runs all three agents in turn on one thread (run to completion). Every loop advances its
heartbeat each iteration, and idles by the configured strategy only when no agent found work.
"""

from numba import njit

from ..feed.itch_feed import RECV_BATCH, itch_feed_work
from ..feed.synthetic import source_work
from ..gateway.ouch_gateway import gateway_work
from ..gateway.sink import sink_work
from ..strategy.market_maker import strategy_work
from ..strategy.passthrough import passthrough_work
from . import libc
from .atomics import cpu_pause, load_acquire, load_relaxed, rdtsc, store_relaxed
from .layout import (
    CTL_STALL,
    CTL_STOP,
    CTL_TSC_MULT,
    HB_BEAT,
    HB_BUSY,
    HB_STALLS,
    HB_STATE,
    P_BATCH,
    P_IDLE,
    THREAD_RUNNING,
    THREAD_STALLED,
    THREAD_STOPPED,
)


@njit(nogil=True, cache=True, inline="always")
def idle(params):
    """What a loop does when an iteration found no work: spin with pause, yield the core, or sleep 50 us."""
    mode = load_relaxed(params, P_IDLE)
    if mode == 0:
        cpu_pause()
    elif mode == 1:
        libc.sched_yield()
    else:
        libc.usleep(50)


@njit(nogil=True, cache=True)
def stall(ctl, hb, tidx):
    """Fault injection: stop advancing the heartbeat while the control plane holds this thread's stall flag."""
    store_relaxed(hb, HB_STATE, THREAD_STALLED)
    store_relaxed(hb, HB_STALLS, load_relaxed(hb, HB_STALLS) + 1)
    while load_relaxed(ctl, CTL_STALL + tidx) != 0 and load_acquire(ctl, CTL_STOP) == 0:
        cpu_pause()
    store_relaxed(hb, HB_STATE, THREAD_RUNNING)


@njit(nogil=True, cache=True, inline="always")
def keep_running(ctl, hb, tidx):
    """The loop condition: False once the stop flag is set; holds the thread here while it is stalled on purpose."""
    if load_relaxed(ctl, CTL_STALL + tidx) != 0:
        stall(ctl, hb, tidx)
    return load_acquire(ctl, CTL_STOP) == 0


@njit(nogil=True, cache=True, inline="always")
def end_iteration(params, hb, beats, work):
    """Advance the heartbeat; idle by the configured strategy only when the iteration found no work."""
    store_relaxed(hb, HB_BEAT, beats)
    if work:
        store_relaxed(hb, HB_BUSY, load_relaxed(hb, HB_BUSY) + 1)
    else:
        idle(params)


@njit(nogil=True, cache=True)
def run_feed(ctl, params, hb, tidx, counters, state, out_hdr, out_slots):
    """Feed thread (split layout)."""
    store_relaxed(hb, HB_STATE, THREAD_RUNNING)
    beats = load_relaxed(hb, HB_BEAT)
    while keep_running(ctl, hb, tidx):
        work = source_work(ctl, params, counters, state, out_hdr, out_slots, rdtsc())
        beats += 1
        end_iteration(params, hb, beats, work)
    store_relaxed(hb, HB_STATE, THREAD_STOPPED)


@njit(nogil=True, cache=True)
def run_itch_feed(ctl, params, hb, tidx, counters, io, sess, bk, out_hdr, out_slots):
    """Feed thread (split layout) on the live ITCH 5.0 / MoldUDP64 feed."""
    store_relaxed(hb, HB_STATE, THREAD_RUNNING)
    beats = load_relaxed(hb, HB_BEAT)
    mult = load_relaxed(ctl, CTL_TSC_MULT)
    while keep_running(ctl, hb, tidx):
        work = itch_feed_work(io, sess, bk, counters, out_hdr, out_slots, mult, RECV_BATCH)
        beats += 1
        end_iteration(params, hb, beats, work)
    store_relaxed(hb, HB_STATE, THREAD_STOPPED)


@njit(nogil=True, cache=True)
def run_strategy(ctl, params, hb, tidx, counters, in_hdr, in_slots, out_hdr, out_slots, hop_hist):
    """Strategy thread (split layout)."""
    store_relaxed(hb, HB_STATE, THREAD_RUNNING)
    beats = load_relaxed(hb, HB_BEAT)
    mult = load_relaxed(ctl, CTL_TSC_MULT)
    while keep_running(ctl, hb, tidx):
        batch = load_relaxed(params, P_BATCH)
        work = passthrough_work(counters, in_hdr, in_slots, out_hdr, out_slots, hop_hist, mult, batch)
        beats += 1
        end_iteration(params, hb, beats, work)
    store_relaxed(hb, HB_STATE, THREAD_STOPPED)


@njit(nogil=True, cache=True)
def run_gateway(ctl, params, hb, tidx, counters, state, in_hdr, in_slots, hop_hist, pipe_hist):
    """Gateway thread (split layout)."""
    store_relaxed(hb, HB_STATE, THREAD_RUNNING)
    beats = load_relaxed(hb, HB_BEAT)
    mult = load_relaxed(ctl, CTL_TSC_MULT)
    while keep_running(ctl, hb, tidx):
        batch = load_relaxed(params, P_BATCH)
        work = sink_work(counters, state, in_hdr, in_slots, hop_hist, pipe_hist, mult, batch)
        beats += 1
        end_iteration(params, hb, beats, work)
    store_relaxed(hb, HB_STATE, THREAD_STOPPED)


@njit(nogil=True, cache=True)
def run_fused(
    ctl, params, hb, tidx,
    feed_counters, feed_state, strat_counters, gw_counters, gw_state,
    r1_hdr, r1_slots, r2_hdr, r2_slots, hop1_hist, hop2_hist, pipe_hist,
):  # fmt: skip
    """The one hot thread of the fused layout: feed, strategy and gateway work in turn, run to completion."""
    store_relaxed(hb, HB_STATE, THREAD_RUNNING)
    beats = load_relaxed(hb, HB_BEAT)
    mult = load_relaxed(ctl, CTL_TSC_MULT)
    while keep_running(ctl, hb, tidx):
        batch = load_relaxed(params, P_BATCH)
        work = source_work(ctl, params, feed_counters, feed_state, r1_hdr, r1_slots, rdtsc())
        work += passthrough_work(strat_counters, r1_hdr, r1_slots, r2_hdr, r2_slots, hop1_hist, mult, batch)
        work += sink_work(gw_counters, gw_state, r2_hdr, r2_slots, hop2_hist, pipe_hist, mult, batch)
        beats += 1
        end_iteration(params, hb, beats, work)
    store_relaxed(hb, HB_STATE, THREAD_STOPPED)


@njit(nogil=True, cache=True)
def run_fused_itch(
    ctl, params, hb, tidx,
    feed_counters, io, sess, bk, strat_counters, gw_counters, gw_state,
    r1_hdr, r1_slots, r2_hdr, r2_slots, hop1_hist, hop2_hist, pipe_hist,
):  # fmt: skip
    """The fused hot thread on the live ITCH feed: feed, strategy and gateway work in turn."""
    store_relaxed(hb, HB_STATE, THREAD_RUNNING)
    beats = load_relaxed(hb, HB_BEAT)
    mult = load_relaxed(ctl, CTL_TSC_MULT)
    while keep_running(ctl, hb, tidx):
        batch = load_relaxed(params, P_BATCH)
        work = itch_feed_work(io, sess, bk, feed_counters, r1_hdr, r1_slots, mult, RECV_BATCH)
        work += passthrough_work(strat_counters, r1_hdr, r1_slots, r2_hdr, r2_slots, hop1_hist, mult, batch)
        work += sink_work(gw_counters, gw_state, r2_hdr, r2_slots, hop2_hist, pipe_hist, mult, batch)
        beats += 1
        end_iteration(params, hb, beats, work)
    store_relaxed(hb, HB_STATE, THREAD_STOPPED)


@njit(nogil=True, cache=True, _nrt=False)  # no refcounting of the state's arrays per call
def run_strategy_trading(ctl, params, hb, tidx, counters, st, gw_w, book_stock, r1_hdr, r1_slots, r3_hdr, r3_slots,
                         r2_hdr, r2_slots, hist, quote_fn, fill_fn):
    """Strategy thread (split layout) on the trading path: book events and order updates in, intents out.
    quote_fn, fill_fn: the user strategy's functions (first-class, so this loop is one kernel for every kind)."""
    store_relaxed(hb, HB_STATE, THREAD_RUNNING)
    beats = load_relaxed(hb, HB_BEAT)
    mult = load_relaxed(ctl, CTL_TSC_MULT)
    while keep_running(ctl, hb, tidx):
        batch = load_relaxed(params, P_BATCH)
        work = strategy_work(st, gw_w, book_stock, counters, r1_hdr, r1_slots, r3_hdr, r3_slots, r2_hdr, r2_slots,
                             hist, mult, batch, quote_fn, fill_fn)
        beats += 1
        end_iteration(params, hb, beats, work)
    store_relaxed(hb, HB_STATE, THREAD_STOPPED)


@njit(nogil=True, cache=True, _nrt=False)  # no refcounting of the state's arrays per call
def run_gateway_trading(ctl, params, hb, tidx, counters, gw, fxs, lim, r2_hdr, r2_slots, r3_hdr, r3_slots, jr_hdr,
                        jr_slots, hist):
    """Gateway thread (split layout): the venue's OUCH or FIX messages in, risk-checked intents out."""
    store_relaxed(hb, HB_STATE, THREAD_RUNNING)
    beats = load_relaxed(hb, HB_BEAT)
    mult = load_relaxed(ctl, CTL_TSC_MULT)
    while keep_running(ctl, hb, tidx):
        batch = load_relaxed(params, P_BATCH)
        work = gateway_work(ctl, gw, fxs, lim, counters, r2_hdr, r2_slots, r3_hdr, r3_slots, jr_hdr, jr_slots, hist,
                            mult, batch)
        beats += 1
        end_iteration(params, hb, beats, work)
    store_relaxed(hb, HB_STATE, THREAD_STOPPED)


@njit(nogil=True, cache=True, _nrt=False)  # no refcounting of the state's arrays per call
def run_fused_trading(
    ctl, params, hb, tidx,
    feed_counters, io, sess, bk, strat_counters, st, gw_counters, gw, fxs, lim,
    r1_hdr, r1_slots, r2_hdr, r2_slots, r3_hdr, r3_slots, jr_hdr, jr_slots, hist, quote_fn, fill_fn,
):  # fmt: skip
    """The fused hot thread on the trading path: feed, strategy and gateway in turn, run to completion.

    After the feed publishes, the strategy and the gateway run at once, so a tick's order is on the wire
    before the next datagram is read."""
    store_relaxed(hb, HB_STATE, THREAD_RUNNING)
    beats = load_relaxed(hb, HB_BEAT)
    mult = load_relaxed(ctl, CTL_TSC_MULT)
    while keep_running(ctl, hb, tidx):
        batch = load_relaxed(params, P_BATCH)
        work = itch_feed_work(io, sess, bk, feed_counters, r1_hdr, r1_slots, mult, 1)  # one datagram, then act on it
        work += strategy_work(st, gw.w, bk.sym_stock, strat_counters, r1_hdr, r1_slots, r3_hdr, r3_slots, r2_hdr,
                              r2_slots, hist, mult, batch, quote_fn, fill_fn)
        work += gateway_work(ctl, gw, fxs, lim, gw_counters, r2_hdr, r2_slots, r3_hdr, r3_slots, jr_hdr, jr_slots,
                             hist, mult, batch)
        beats += 1
        end_iteration(params, hb, beats, work)
    store_relaxed(hb, HB_STATE, THREAD_STOPPED)


def kernel_calls(arena, feed=None, trading=None) -> list:
    """(thread name, numba loop, its arguments) for every hot thread of the arena's layout.

    `feed` is the live ItchFeed when feed.source = "moldudp64"; without it the feed thread runs the
    synthetic source. `trading` (the Trading object: strategy and gateway state) puts the strategy and
    the order gateway on the path instead of the pass-through and the checking sink.
    """
    v = arena.view
    ctl, params, hb, counters, state = v("control"), v("params"), v("heartbeat"), v("counters"), v("state")
    hist = v("hist")
    r1 = (v("ring.feed_to_strategy.hdr"), v("ring.feed_to_strategy.slots"))
    r2 = (v("ring.strategy_to_gateway.hdr"), v("ring.strategy_to_gateway.slots"))
    r3 = (v("ring.gateway_to_strategy.hdr"), v("ring.gateway_to_strategy.slots"))
    jr = (v("journal.hdr"), v("journal.slots"))
    threads = arena.layout.threads
    if trading is not None:
        io, sess, bk = feed.kernel_args()
        st, gw, fxs, lim = trading.st, trading.gw, trading.fx, trading.limits
        fns = (trading.quote_fn, trading.fill_fn)
        if threads == ("fused",):
            args = (ctl, params, hb[0], 0, counters[0], io, sess, bk, counters[1], st, counters[2], gw, fxs, lim,
                    *r1, *r2, *r3, *jr, hist, *fns)  # fmt: skip
            return [("fused", run_fused_trading, args)]
        return [
            ("feed", run_itch_feed, (ctl, params, hb[0], 0, counters[0], io, sess, bk, *r1)),
            ("strategy", run_strategy_trading, (ctl, params, hb[1], 1, counters[1], st, gw.w, bk.sym_stock, *r1, *r3,
                                                *r2, hist, *fns)),
            ("gateway", run_gateway_trading, (ctl, params, hb[2], 2, counters[2], gw, fxs, lim, *r2, *r3, *jr,
                                              hist)),
        ]
    if feed is not None:
        io, sess, bk = feed.kernel_args()
        if threads == ("fused",):
            args = (ctl, params, hb[0], 0, counters[0], io, sess, bk, counters[1], counters[2], state[2], *r1, *r2,
                    hist[0], hist[1], hist[2])  # fmt: skip
            return [("fused", run_fused_itch, args)]
        feed_call = ("feed", run_itch_feed, (ctl, params, hb[0], 0, counters[0], io, sess, bk, *r1))
    else:
        feed_call = ("feed", run_feed, (ctl, params, hb[0], 0, counters[0], state[0], *r1))
    if threads == ("fused",):
        args = (ctl, params, hb[0], 0, counters[0], state[0], counters[1], counters[2], state[2], *r1, *r2,
                hist[0], hist[1], hist[2])  # fmt: skip
        return [("fused", run_fused, args)]
    return [
        feed_call,
        ("strategy", run_strategy, (ctl, params, hb[1], 1, counters[1], *r1, *r2, hist[0])),
        ("gateway", run_gateway, (ctl, params, hb[2], 2, counters[2], state[2], *r2, hist[1], hist[2])),
    ]
