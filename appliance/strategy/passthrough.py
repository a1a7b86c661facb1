"""Pass-through agent: moves events from its input ring to its output ring, timing the hop it received."""

from numba import njit

from ..runtime.atomics import load_relaxed, rdtsc, store_relaxed
from ..runtime.clock import cycles_to_ns
from ..runtime.histogram import hist_record
from ..runtime.layout import C_BACKPRESSURE, C_EVENTS_IN, C_EVENTS_OUT
from ..runtime.ring import ring_available, ring_free, ring_head, ring_publish, ring_release, ring_tail


@njit(nogil=True, cache=True)
def passthrough_work(counters, in_hdr, in_slots, out_hdr, out_slots, hop_hist, mult, batch):
    """Forward up to a batch of events; returns how many moved."""
    avail = ring_available(in_hdr)
    if avail == 0:
        return 0
    out_cap = out_slots.shape[0]
    free = ring_free(out_hdr, out_cap)
    if free == 0:
        store_relaxed(counters, C_BACKPRESSURE, load_relaxed(counters, C_BACKPRESSURE) + 1)
        return 0
    n = avail if avail < free else free
    if n > batch:
        n = batch
    in_mask, out_mask = in_slots.shape[0] - 1, out_cap - 1
    src, dst = ring_head(in_hdr), ring_tail(out_hdr)
    now = rdtsc()
    for i in range(n):
        ev = in_slots[(src + i) & in_mask]
        hist_record(hop_hist, cycles_to_ns(now - ev.t_hop, mult))
        out_slots[(dst + i) & out_mask] = ev
    stamp = rdtsc()
    for i in range(n):
        out_slots[(dst + i) & out_mask].t_hop = stamp
    ring_release(in_hdr, n)
    ring_publish(out_hdr, n)
    store_relaxed(counters, C_EVENTS_IN, load_relaxed(counters, C_EVENTS_IN) + n)
    store_relaxed(counters, C_EVENTS_OUT, load_relaxed(counters, C_EVENTS_OUT) + n)
    return n
