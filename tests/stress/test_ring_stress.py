"""Stress tests of the SPSC ring: ten million events between two pinned threads arrive complete and in order.

Every event carries its sequence number and two payload words derived from it, and the consumer checks all
three, so a lost, duplicated, reordered or torn slot is counted. Each test is bounded: the threads are
joined with a timeout, after which a stop flag the numba loops poll makes them leave and the test fails.
"""

import os
import threading
import warnings

import numpy as np
import pytest
from numba import njit

from appliance.runtime import libc
from appliance.runtime.atomics import cpu_pause, load_acquire, rdtsc
from appliance.runtime.clock import calibrate
from appliance.runtime.event import EVENT_DTYPE
from appliance.runtime.layout import RING_HDR_WORDS
from appliance.runtime.ring import ring_available, ring_free, ring_head, ring_publish, ring_release, ring_tail

pytestmark = pytest.mark.stress

EVENTS = 10_000_000
JOIN_TIMEOUT_S = 30.0
PX_MASK = 0x7FFFFFFF  # px is an int32: keep the derived price positive
REF_XOR = 0x5DEECE66D

CTL_STOP = 0  # the test sets it when a thread overran its timeout
CTL_WORDS = 16


@njit(nogil=True, cache=True, inline="always")
def _next_random(x):
    """A 64-bit LCG step (int64 wraps in numba): cheap varying batch sizes inside the loops."""
    return x * 6364136223846793005 + 1442695040888963407


@njit(nogil=True, cache=True, inline="always")
def _size(x, most):
    """1..most from the LCG state's high bits (its low bits have short periods)."""
    return 1 + ((x >> 33) & 0x7FFFFFFF) % most


@njit(nogil=True, cache=True, inline="always")
def _wait(share_cpu):
    """One idle turn of a spin loop; on a shared CPU give the core to the other side instead of spinning."""
    if share_cpu:
        libc.sched_yield()
    else:
        cpu_pause()


@njit(nogil=True, cache=True)
def produce(ctl, hdr, slots, n, max_batch, vary, seed, share_cpu):
    """Publish events 0..n-1 in batches of `max_batch` (or 1..max_batch when `vary`); returns (sent, full rings seen)."""
    cap = slots.shape[0]
    mask = cap - 1
    rnd = seed
    seq = 0
    full = 0
    was_full = False
    while seq < n:
        free = ring_free(hdr, cap)
        if free == 0:
            # Count each time the ring fills, not each spin while it stays full.
            if not was_full:
                full += 1
                was_full = True
            if load_acquire(ctl, CTL_STOP) != 0:
                break
            _wait(share_cpu)
            continue
        was_full = False
        k = max_batch
        if vary:
            rnd = _next_random(rnd)
            k = _size(rnd, max_batch)
        if k > free:
            k = free
        if k > n - seq:
            k = n - seq
        pos = ring_tail(hdr)
        for j in range(k):
            s = seq + j
            ev = slots[(pos + j) & mask]
            ev.seq = s
            ev.px = (s * 7) & PX_MASK
            ev.ref = s ^ REF_XOR
        ring_publish(hdr, k)
        seq += k
    return seq, full


@njit(nogil=True, cache=True)
def consume(ctl, hdr, slots, n, max_release, vary, dawdle_every, dawdle_cycles, seed, share_cpu):
    """Read until `n` events arrived, checking seq, px and ref of each; returns (received, mismatches).

    Releases up to `max_release` at a time (1..max_release when `vary`); every `dawdle_every` events
    (0: never) it spins `dawdle_cycles` TSC cycles so that the producer finds the ring full.
    """
    mask = slots.shape[0] - 1
    rnd = seed
    got = 0
    bad = 0
    next_dawdle = dawdle_every
    while got < n:
        avail = ring_available(hdr)
        if avail == 0:
            if load_acquire(ctl, CTL_STOP) != 0:
                break
            _wait(share_cpu)
            continue
        k = max_release
        if vary:
            rnd = _next_random(rnd)
            k = _size(rnd, max_release)
        if k > avail:
            k = avail
        pos = ring_head(hdr)
        for j in range(k):
            s = got + j
            ev = slots[(pos + j) & mask]
            if ev.seq != s or ev.px != ((s * 7) & PX_MASK) or ev.ref != (s ^ REF_XOR):
                bad += 1
        ring_release(hdr, k)
        got += k
        if dawdle_every > 0 and got >= next_dawdle:
            next_dawdle += dawdle_every
            t0 = rdtsc()
            while rdtsc() - t0 < dawdle_cycles:
                cpu_pause()
    return got, bad


def _cores() -> tuple[int, int]:
    """CPU 0 for the producer and CPU 1 for the consumer; both on the one CPU when only one is allowed."""
    allowed = sorted(os.sched_getaffinity(0))
    if {0, 1} <= set(allowed):
        return 0, 1
    if len(allowed) > 1:
        return allowed[0], allowed[1]
    warnings.warn(f"only CPU {allowed[0]} is allowed: producer and consumer share it and yield when idle")
    return allowed[0], allowed[0]


def _ring(slots: int):
    return np.zeros(RING_HDR_WORDS, np.int64), np.zeros(slots, EVENT_DTYPE)


@pytest.fixture(scope="module", autouse=True)
def tsc():
    """Compile (or load) both kernels before any test starts threads (a compile holds the GIL); the TSC rate."""
    ctl = np.zeros(CTL_WORDS, np.int64)
    hdr, slots = _ring(64)
    for share in (False, True):
        produce(ctl, hdr, slots, 0, 1, False, 1, share)
        consume(ctl, hdr, slots, 0, 1, False, 0, 0, 1, share)
    return calibrate()


def _run(tsc, slots_n, *, batch, release, vary=False, dawdle_every=0, dawdle_ns=0):
    """Stream EVENTS through a fresh ring of `slots_n` slots on two pinned threads; returns both results."""
    producer_core, consumer_core = _cores()
    share = producer_core == consumer_core
    ctl = np.zeros(CTL_WORDS, np.int64)
    hdr, slots = _ring(slots_n)
    dawdle_cycles = int(dawdle_ns * tsc.hz / 1e9)
    results, errors = {}, []

    def body(name, core, fn, *args):
        try:
            os.sched_setaffinity(0, {core})  # pid 0: this thread only
            results[name] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test
            errors.append(e)

    threads = [
        threading.Thread(
            target=body,
            args=("consumer", consumer_core, consume, ctl, hdr, slots, EVENTS, release, vary, dawdle_every,
                  dawdle_cycles, 12345, share),
            daemon=True,
        ),  # fmt: skip
        threading.Thread(
            target=body,
            args=("producer", producer_core, produce, ctl, hdr, slots, EVENTS, batch, vary, 67890, share),
            daemon=True,
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT_S)
    if any(t.is_alive() for t in threads):
        ctl[CTL_STOP] = 1  # the loops poll it whenever they wait, so they leave promptly
        for t in threads:
            t.join(5.0)
        pytest.fail(f"ring stress run did not finish within {JOIN_TIMEOUT_S:.0f} s; stopped it: {results}")
    if errors:
        raise errors[0]
    return results["producer"], results["consumer"]


def test_ten_million_events_arrive_complete_and_in_order(tsc):
    (sent, _), (got, bad) = _run(tsc, 4096, batch=64, release=64)
    assert sent == EVENTS
    assert got == EVENTS
    assert bad == 0


def test_full_ring_loses_and_reorders_nothing(tsc):
    # A 64-slot ring and a consumer that stalls 5 us every 1000 events: the producer fills the ring
    # during each stall, so it must wait on the consumer thousands of times.
    (sent, full), (got, bad) = _run(tsc, 64, batch=16, release=16, dawdle_every=1000, dawdle_ns=5000)
    assert sent == EVENTS
    assert got == EVENTS
    assert bad == 0
    assert full >= 5000, f"the producer found the ring full only {full} times"


def test_varying_batches_publish_and_release_in_any_sizes(tsc):
    # Batch sizes 1..97 and release sizes 1..61 (primes, so they drift against each other and the ring wrap).
    (sent, _), (got, bad) = _run(tsc, 256, batch=97, release=61, vary=True)
    assert sent == EVENTS
    assert got == EVENTS
    assert bad == 0
