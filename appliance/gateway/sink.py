"""Checking sink: consumes events, verifies their sequence and records hop and end-to-end latency."""

from numba import njit

from ..runtime.atomics import load_relaxed, rdtsc, store_relaxed
from ..runtime.clock import cycles_to_ns
from ..runtime.event import KIND_SYNTHETIC
from ..runtime.histogram import hist_record
from ..runtime.layout import C_EVENTS_IN, C_SEQUENCE_ERRORS
from ..runtime.ring import ring_available, ring_head, ring_release

S_EXPECT = 0  # state word: the next sequence number expected


@njit(nogil=True, cache=True)
def sink_work(counters, state, in_hdr, in_slots, hop_hist, pipe_hist, mult, batch):
    """Consume up to a batch of events; returns how many."""
    n = ring_available(in_hdr)
    if n == 0:
        return 0
    if n > batch:
        n = batch
    mask = in_slots.shape[0] - 1
    pos = ring_head(in_hdr)
    now = rdtsc()
    expect = state[S_EXPECT]
    errors = 0
    for i in range(n):
        ev = in_slots[(pos + i) & mask]
        if ev.kind == KIND_SYNTHETIC:  # only the self-test stream is numbered contiguously
            if ev.seq != expect:
                errors += 1
            expect = ev.seq + 1
        hist_record(hop_hist, cycles_to_ns(now - ev.t_hop, mult))
        hist_record(pipe_hist, cycles_to_ns(now - ev.t_in, mult))
    state[S_EXPECT] = expect
    ring_release(in_hdr, n)
    store_relaxed(counters, C_EVENTS_IN, load_relaxed(counters, C_EVENTS_IN) + n)
    if errors:
        store_relaxed(counters, C_SEQUENCE_ERRORS, load_relaxed(counters, C_SEQUENCE_ERRORS) + errors)
    return n
