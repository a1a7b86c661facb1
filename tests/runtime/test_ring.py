"""SPSC ring: full and empty edges, wrap-around with varying batches, FIFO order, and ring_depth (one thread)."""

import numpy as np
import pytest
from numba import njit

from appliance.runtime.event import EVENT_DTYPE, KIND_SYNTHETIC
from appliance.runtime.layout import R_HEAD, R_TAIL, RING_HDR_WORDS
from appliance.runtime.ring import (
    ring_available,
    ring_depth,
    ring_free,
    ring_head,
    ring_publish,
    ring_release,
    ring_tail,
)

CAP = 64


@njit(cache=True)
def produce(hdr, slots, first_seq, want):
    """Write up to `want` events with consecutive seqs; returns (free before, written)."""
    cap = slots.shape[0]
    free = ring_free(hdr, cap)
    n = want if want < free else free
    pos = ring_tail(hdr)
    for i in range(n):
        ev = slots[(pos + i) & (cap - 1)]
        ev.kind = KIND_SYNTHETIC
        ev.seq = first_seq + i
        ev.ref = (first_seq + i) * 3
    if n > 0:
        ring_publish(hdr, n)
    return free, n


@njit(cache=True)
def consume(hdr, slots, want, out):
    """Read up to `want` events' seqs into `out`; returns (available before, read)."""
    cap = slots.shape[0]
    avail = ring_available(hdr)
    n = want if want < avail else avail
    pos = ring_head(hdr)
    for i in range(n):
        ev = slots[(pos + i) & (cap - 1)]
        out[i] = ev.seq if ev.ref == ev.seq * 3 and ev.kind == KIND_SYNTHETIC else -1
    if n > 0:
        ring_release(hdr, n)
    return avail, n


@njit(cache=True)
def churn(hdr, slots, produce_sizes, consume_sizes, rounds):
    """Alternate producer and consumer batches inside one kernel; returns (events moved, order errors, max depth)."""
    cap = slots.shape[0]
    mask = cap - 1
    next_out = 0
    next_in = 0
    errors = 0
    max_depth = 0
    for r in range(rounds):
        want = produce_sizes[r % produce_sizes.shape[0]]
        free = ring_free(hdr, cap)
        n = want if want < free else free
        pos = ring_tail(hdr)
        for i in range(n):
            slots[(pos + i) & mask].seq = next_out
            next_out += 1
        ring_publish(hdr, n)
        depth = ring_tail(hdr) - ring_head(hdr)
        if depth > max_depth:
            max_depth = depth
        if depth > cap:
            errors += 1
        want = consume_sizes[r % consume_sizes.shape[0]]
        avail = ring_available(hdr)
        k = want if want < avail else avail
        pos = ring_head(hdr)
        for i in range(k):
            if slots[(pos + i) & mask].seq != next_in:
                errors += 1
            next_in += 1
        ring_release(hdr, k)
    # drain what is left (the consumer's cached view of the tail may need a refresh, so loop until empty)
    avail = ring_available(hdr)
    while avail > 0:
        pos = ring_head(hdr)
        for i in range(avail):
            if slots[(pos + i) & mask].seq != next_in:
                errors += 1
            next_in += 1
        ring_release(hdr, avail)
        avail = ring_available(hdr)
    if next_in != next_out:
        errors += 1
    return next_out, errors, max_depth


def new_ring(cap=CAP):
    return np.zeros(RING_HDR_WORDS, dtype=np.int64), np.zeros(cap, dtype=EVENT_DTYPE)


def test_fill_to_full_then_drain():
    hdr, slots = new_ring()
    out = np.zeros(CAP, dtype=np.int64)
    assert ring_depth(hdr) == 0
    assert consume(hdr, slots, 10, out) == (0, 0)  # empty: nothing to read
    assert produce(hdr, slots, 0, 40) == (CAP, 40)
    assert ring_depth(hdr) == 40
    assert produce(hdr, slots, 40, 100) == (CAP - 40, CAP - 40)  # only what fits
    assert ring_depth(hdr) == CAP
    assert produce(hdr, slots, 999, 5) == (0, 0)  # full: ring_free returns 0 and nothing is written
    assert ring_depth(hdr) == CAP
    avail, n = consume(hdr, slots, CAP, out)
    assert (avail, n) == (CAP, CAP)
    assert list(out) == list(range(CAP))
    assert ring_depth(hdr) == 0
    assert consume(hdr, slots, 1, out) == (0, 0)
    assert produce(hdr, slots, CAP, CAP) == (CAP, CAP)  # the freed space is seen again
    assert hdr[R_TAIL] == 2 * CAP and hdr[R_HEAD] == CAP


def test_wrap_around_with_varying_batches_keeps_fifo_order():
    hdr, slots = new_ring()
    out = np.zeros(CAP, dtype=np.int64)
    rng = np.random.default_rng(11)
    sent = received = 0
    saw_full = saw_empty = False
    for _ in range(400):  # ~ a few dozen trips round the ring
        free, n = produce(hdr, slots, sent, int(rng.integers(1, CAP + 1)))
        # the producer's cached view of the head may understate the space, never overstate it,
        # and it reads 0 only when the ring really is full
        assert n <= free <= CAP - (sent - received)
        assert (free == 0) == (sent - received == CAP)
        sent += n
        saw_full |= ring_depth(hdr) == CAP
        assert ring_depth(hdr) == sent - received
        avail, k = consume(hdr, slots, int(rng.integers(1, CAP + 1)), out)
        assert k <= avail <= sent - received  # likewise for the consumer's cached view of the tail
        assert (avail == 0) == (sent == received)
        assert list(out[:k]) == list(range(received, received + k)), "events out of order or corrupted"
        received += k
        saw_empty |= ring_depth(hdr) == 0
    assert sent > 20 * CAP, "the ring did not wrap around enough"
    assert saw_full and saw_empty
    assert hdr[R_TAIL] == sent and hdr[R_HEAD] == received


@pytest.mark.parametrize(
    "produce_sizes, consume_sizes",
    [([1], [1]), ([64], [64]), ([7, 50, 3, 64, 33], [13, 1, 64, 40]), ([64, 64], [5]), ([3], [64, 2, 17])],
)
def test_churn_inside_one_kernel(produce_sizes, consume_sizes):
    hdr, slots = new_ring()
    moved, errors, max_depth = churn(hdr, slots, np.array(produce_sizes, np.int64), np.array(consume_sizes, np.int64), 2000)
    assert errors == 0
    assert moved >= 2000 and moved > 10 * CAP
    assert 0 < max_depth <= CAP
    assert ring_depth(hdr) == 0 and hdr[R_TAIL] == hdr[R_HEAD] == moved


def test_ring_depth_is_tail_minus_head():
    hdr = np.zeros(RING_HDR_WORDS, dtype=np.int64)
    hdr[R_TAIL], hdr[R_HEAD] = 1_000_005, 1_000_000
    assert ring_depth(hdr) == 5 and isinstance(ring_depth(hdr), int)
