"""Synthetic source: stamps and publishes sequenced events at a paced rate, standing in for the live feed."""

from numba import njit

from ..runtime.atomics import load_relaxed, store_relaxed
from ..runtime.event import KIND_SYNTHETIC
from ..runtime.layout import C_BACKPRESSURE, C_EVENTS_OUT, CTL_TSC_HZ, P_BATCH, P_RATE
from ..runtime.ring import ring_free, ring_publish, ring_tail

# state row words
S_NEXT_TSC = 0  # TSC at which the next event is due
S_SEQ = 1  # next sequence number
S_PERIOD = 2  # TSC cycles per event, x 256 (fixed point keeps high rates exact enough)
S_RATE = 3  # the rate S_PERIOD was computed for
FIXED = 256


@njit(nogil=True, cache=True)
def source_work(ctl, params, counters, state, out_hdr, out_slots, now):
    """Publish the events that are due by `now`, up to a batch; returns how many were published."""
    rate = load_relaxed(params, P_RATE)
    batch = load_relaxed(params, P_BATCH)
    if rate != state[S_RATE]:  # a reload changed the rate: re-derive the period, restart pacing
        state[S_RATE] = rate
        state[S_PERIOD] = load_relaxed(ctl, CTL_TSC_HZ) * FIXED // rate if rate > 0 else 0
        state[S_NEXT_TSC] = now
    period = state[S_PERIOD]
    if period == 0:
        due = batch
    elif now < state[S_NEXT_TSC]:
        return 0
    else:
        due = (now - state[S_NEXT_TSC]) * FIXED // period + 1
        if due > batch:
            due = batch
    cap = out_slots.shape[0]
    free = ring_free(out_hdr, cap)
    n = due if due < free else free
    if n == 0:
        store_relaxed(counters, C_BACKPRESSURE, load_relaxed(counters, C_BACKPRESSURE) + 1)
        return 0
    mask = cap - 1
    pos = ring_tail(out_hdr)
    seq = state[S_SEQ]
    for i in range(n):
        ev = out_slots[(pos + i) & mask]
        ev.kind = KIND_SYNTHETIC
        ev.seq = seq + i
        ev.t_in = now
        ev.t_hop = now
    ring_publish(out_hdr, n)
    state[S_SEQ] = seq + n
    if period != 0:
        nxt = state[S_NEXT_TSC] + n * period // FIXED
        # More than 1 ms behind (descheduled): resume pacing from now rather than burst to catch up.
        if now - nxt > load_relaxed(ctl, CTL_TSC_HZ) // 1000:
            nxt = now
        state[S_NEXT_TSC] = nxt
    store_relaxed(counters, C_EVENTS_OUT, load_relaxed(counters, C_EVENTS_OUT) + n)
    return n
