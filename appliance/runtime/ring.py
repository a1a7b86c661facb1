"""Single-producer single-consumer ring of 64-byte event slots, for numba hot loops.

The header puts the tail, the head and each side's cached view of the other's index in 128-byte
blocks of their own (see layout.py). Each side reloads the other's index (load-acquire) only when
its cached view says full or empty, so a steady stream costs one cross-core read per batch, not per
event; the views stay off the lines the other side polls, so keeping them costs no coherence
traffic. Publication is batched: write any number of slots, then one store-release of the tail.

Producer:                                   Consumer:
    n = ring_free(hdr, cap)                     n = ring_available(hdr)
    pos = ring_tail(hdr)                        pos = ring_head(hdr)
    slots[(pos + i) & mask] ... (i < n)         ... read slots[(pos + i) & mask] (i < n)
    ring_publish(hdr, k)      (k <= n)          ring_release(hdr, k)      (k <= n)
"""

from numba import njit

from .atomics import load_acquire, load_relaxed, rdtsc, store_relaxed, store_release
from .layout import R_HEAD, R_HEAD_CACHE, R_TAIL, R_TAIL_CACHE


@njit(nogil=True, cache=True, inline="always")
def ring_tail(hdr):
    """Producer: the position the next written slot will take."""
    return load_relaxed(hdr, R_TAIL)


@njit(nogil=True, cache=True, inline="always")
def ring_free(hdr, capacity):
    """Producer: how many slots may be written now; refreshes the view of the consumer only when needed."""
    tail = load_relaxed(hdr, R_TAIL)
    cached = load_relaxed(hdr, R_HEAD_CACHE)
    free = capacity - (tail - cached)
    # Refresh once the cached view says less than a quarter is free, not only when it says full: a
    # producer that needs several slots at once would otherwise wait forever on a stale view.
    if free < (capacity >> 2) or free == 0:
        head = load_acquire(hdr, R_HEAD)
        if head != cached:  # store only news: the view's line is private, but a store per spin is still waste
            store_relaxed(hdr, R_HEAD_CACHE, head)
            free = capacity - (tail - head)
    return free


@njit(nogil=True, cache=True, inline="always")
def ring_publish(hdr, count):
    """Producer: make `count` written slots visible to the consumer (store-release of the tail)."""
    store_release(hdr, R_TAIL, load_relaxed(hdr, R_TAIL) + count)


@njit(nogil=True, cache=True, inline="always")
def ring_head(hdr):
    """Consumer: the position of the next slot to read."""
    return load_relaxed(hdr, R_HEAD)


@njit(nogil=True, cache=True, inline="always")
def ring_available(hdr):
    """Consumer: how many slots can be read now; refreshes the view of the producer only when empty."""
    head = load_relaxed(hdr, R_HEAD)
    avail = load_relaxed(hdr, R_TAIL_CACHE) - head
    if avail == 0:
        tail = load_acquire(hdr, R_TAIL)
        avail = tail - head
        if avail != 0:  # store only news: the view's line is private, but a store per spin is still waste
            store_relaxed(hdr, R_TAIL_CACHE, tail)
    return avail


@njit(nogil=True, cache=True, inline="always")
def ring_release(hdr, count):
    """Consumer: hand `count` read slots back to the producer (store-release of the head)."""
    store_release(hdr, R_HEAD, load_relaxed(hdr, R_HEAD) + count)


@njit(nogil=True, cache=True, inline="always")
def ring_publish_stamped(hdr, slots, pos, count):
    """Producer: stamp t_hop (TSC) on the `count` event slots written from `pos`, then publish them; the stamp."""
    now = rdtsc()
    mask = slots.shape[0] - 1
    for j in range(count):
        slots[(pos + j) & mask].t_hop = now
    store_release(hdr, R_TAIL, load_relaxed(hdr, R_TAIL) + count)
    return now


def ring_depth(hdr) -> int:
    """Control plane: events published and not yet consumed (a racy but safe read for metrics)."""
    return int(hdr[R_TAIL]) - int(hdr[R_HEAD])
