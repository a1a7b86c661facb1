"""Ring benchmark: hop latency and throughput of the SPSC ring between two pinned cores, beside queue.SimpleQueue.

Run from the repository root with `python3 build.py bench ring` (or `python bench/ring.py`). Human-readable
lines come first; the last line is one JSON object. Exits non-zero only on an error or a stream that
arrived out of order; missed targets are reported as `"pass": false`.
"""

import json
import logging
import os
import platform
import queue
import statistics
import sys
import threading
import time

import numpy as np
from numba import njit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Before any kernel module is imported: numba checks a cached kernel against its own file only, so
# without the package's source-fingerprinted cache a bench kernel would keep stale inlined callees
# (a ring edit would go unmeasured).
from appliance.runtime import cache  # noqa: E402

cache.configure()

from appliance.runtime.arena import Arena  # noqa: E402
from appliance.runtime.atomics import cpu_pause, load_acquire, rdtsc, store_release  # noqa: E402
from appliance.runtime.clock import calibrate, cycles_to_ns, read_tsc  # noqa: E402
from appliance.runtime.histogram import HIST_WORDS, Snapshot, hist_record  # noqa: E402
from appliance.runtime.layout import R_HEAD, compute_layout  # noqa: E402
from appliance.runtime.ring import (  # noqa: E402
    ring_available,
    ring_free,
    ring_head,
    ring_publish,
    ring_release,
    ring_tail,
)

RING_SLOTS = 4096
BATCH = 64
HOP_SAMPLES = 2_000_000
HOP_LIMIT_S = 15.0
HOP_SPACING_NS = 300  # idle time between hops, so each sample is one hop and never queueing
TPUT_EVENTS = 100_000_000
TPUT_LIMIT_S = 20.0
TPUT_RUNS = 3
FLOOR_ROUND_TRIPS = 1_000_000
FLOOR_LIMIT_S = 5.0
# Paired windows: the host moves the vCPUs between physical cores (and now and then onto sibling
# hyperthreads), so the floor changes under a long run; short floor-then-hop pairs show the ring
# tracking whatever floor it is given.
WINDOWS = 40
WINDOW_SAMPLES = 50_000
PEER_HOP_SAMPLES = 200_000
PEER_TPUT_ITEMS = 2_000_000
PEER_LIMIT_S = 20.0
JOIN_SLACK_S = 10.0  # beyond a run's own time limit, how long a stuck thread may take before we give up

TARGET_HOP_P50_NS = 150
TARGET_TPUT_MPS = 50

# Benchmark control words, producer's and consumer's on separate 128-byte lines.
B_STOP = 0  # main thread: nonzero tells both loops to leave
B_SENT = 16  # producer: events it published in total, or -1 while still running
B_WORDS = 48


# ---------------------------------------------------------------------------------------------
# numba kernels
# ---------------------------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def hop_producer(bctl, hdr, slots, n, spacing_cycles, deadline):
    """Publish `n` single events, each stamped with rdtsc, one at a time: the next waits for the consumer's release."""
    mask = slots.shape[0] - 1
    sent = 0
    while sent < n:
        pos = ring_tail(hdr)
        ev = slots[pos & mask]
        # Build the event before the gap, as a real producer builds it before stamping: the hop timed
        # is stamp + publication + receipt, and the slot's cache line is already owned by the stamp.
        ev.seq = sent
        t0 = rdtsc()
        while rdtsc() - t0 < spacing_cycles:
            cpu_pause()
        ev.t_hop = rdtsc()
        ring_publish(hdr, 1)
        sent += 1
        # Wait until the consumer has taken it, so the next sample never queues behind this one.
        while load_acquire(hdr, R_HEAD) != pos + 1:
            if load_acquire(bctl, B_STOP) != 0:
                store_release(bctl, B_SENT, sent)
                return sent
            cpu_pause()
        if rdtsc() > deadline or load_acquire(bctl, B_STOP) != 0:
            break
    store_release(bctl, B_SENT, sent)
    return sent


@njit(nogil=True, cache=True)
def pingpong_ping(bctl, words, n, hist, mult, deadline):
    """Floor reference: write a word, wait for the other core's echo on another line; records round trips in ns."""
    i = 0
    while i < n:
        i += 1
        t0 = rdtsc()
        store_release(words, 0, i)
        while load_acquire(words, 16) != i:
            if load_acquire(bctl, B_STOP) != 0:
                return i - 1
            cpu_pause()
        hist_record(hist, cycles_to_ns(rdtsc() - t0, mult))
        if (i & 1023) == 0 and rdtsc() > deadline:
            break
    store_release(words, 0, -1)  # tells the echoing side to leave
    return i


@njit(nogil=True, cache=True)
def pingpong_pong(bctl, words):
    """Floor reference: echo every value the other core writes until it writes -1."""
    last = 0
    while True:
        v = load_acquire(words, 0)
        if v == -1 or load_acquire(bctl, B_STOP) != 0:
            return last
        if v != last:
            last = v
            store_release(words, 16, v)
        else:
            cpu_pause()


@njit(nogil=True, cache=True)
def hop_consumer(bctl, hdr, slots, hist, mult):
    """Receive events until the producer is done; record (rdtsc on receipt - t_hop) in ns. Returns order errors."""
    mask = slots.shape[0] - 1
    got = 0
    errors = 0
    while True:
        if ring_available(hdr) == 0:
            sent = load_acquire(bctl, B_SENT)
            if (sent >= 0 and got >= sent) or load_acquire(bctl, B_STOP) != 0:
                break
            cpu_pause()
            continue
        now = rdtsc()
        ev = slots[ring_head(hdr) & mask]
        t_hop = ev.t_hop
        if ev.seq != got:
            errors += 1
        ring_release(hdr, 1)
        got += 1
        hist_record(hist, cycles_to_ns(now - t_hop, mult))
    return errors


@njit(nogil=True, cache=True)
def tput_producer(bctl, hdr, slots, n, batch, deadline):
    """Publish sequence numbers 0..n-1 as fast as the ring allows, up to `batch` per publication."""
    cap = slots.shape[0]
    mask = cap - 1
    seq = 0
    while seq < n:
        free = ring_free(hdr, cap)
        if free == 0:
            if rdtsc() > deadline or load_acquire(bctl, B_STOP) != 0:
                break
            cpu_pause()
            continue
        k = batch if free > batch else free
        if k > n - seq:
            k = n - seq
        pos = ring_tail(hdr)
        for j in range(k):
            slots[(pos + j) & mask].seq = seq + j  # only the field the consumer checks: one store per line
        ring_publish(hdr, k)
        seq += k
    store_release(bctl, B_SENT, seq)
    return seq


@njit(nogil=True, cache=True)
def tput_consumer(bctl, hdr, slots, batch):
    """Drain until the producer is done, up to `batch` per release, counting events out of sequence."""
    mask = slots.shape[0] - 1
    expected = 0
    errors = 0
    while True:
        avail = ring_available(hdr)
        if avail == 0:
            sent = load_acquire(bctl, B_SENT)
            if (sent >= 0 and expected >= sent) or load_acquire(bctl, B_STOP) != 0:
                break
            cpu_pause()
            continue
        k = batch if avail > batch else avail
        pos = ring_head(hdr)
        for j in range(k):
            errors += slots[(pos + j) & mask].seq != expected + j
        ring_release(hdr, k)
        expected += k
    return expected, errors


# ---------------------------------------------------------------------------------------------
# running pinned threads
# ---------------------------------------------------------------------------------------------


def pick_cores() -> tuple[int, int]:
    """Producer and consumer cores: CPU 0 and CPU 1 when allowed, else the first two allowed (or one, shared)."""
    allowed = sorted(os.sched_getaffinity(0))
    if {0, 1} <= set(allowed):
        return 0, 1
    return (allowed[0], allowed[1]) if len(allowed) > 1 else (allowed[0], allowed[0])


def run_pair(producer, consumer, cores, bctl, limit_s):
    """Run two callables on threads pinned to `cores`; returns their results. Stops both if they overrun."""
    results = [None, None]
    errors = []

    def body(i, fn):
        try:
            os.sched_setaffinity(0, {cores[i]})  # pid 0: this thread only
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - reported to the main thread
            errors.append(e)

    bctl[:] = 0
    bctl[B_SENT] = -1
    # The consumer starts first, so it is waiting when the first event comes; the producer takes cores[0].
    threads = [threading.Thread(target=body, args=(i, fn), daemon=True) for i, fn in ((1, consumer), (0, producer))]
    _start_and_join(threads, limit_s, "benchmark", on_timeout=lambda: bctl.__setitem__(B_STOP, 1))
    if errors:
        raise errors[0]
    producer_result, consumer_result = results
    return producer_result, consumer_result


def reset_ring(hdr, slots):
    """Empty the ring and zero its slots between runs."""
    hdr[:] = 0
    slots[:] = np.zeros(1, slots.dtype)


def bench_hop(hdr, slots, bctl, cal, cores, samples=HOP_SAMPLES):
    """Hop latency: returns the histogram snapshot, events sent and events out of order."""
    hist = np.zeros(HIST_WORDS, np.int64)
    spacing = int(HOP_SPACING_NS * cal.hz / 1e9)
    reset_ring(hdr, slots)
    deadline = rdtsc_now() + int(HOP_LIMIT_S * cal.hz)
    sent, errors = run_pair(
        lambda: hop_producer(bctl, hdr, slots, samples, spacing, deadline),
        lambda: hop_consumer(bctl, hdr, slots, hist, cal.mult),
        cores, bctl, HOP_LIMIT_S,
    )  # fmt: skip
    return Snapshot(hist), sent, errors


def bench_floor(bctl, cal, cores, trips=FLOOR_ROUND_TRIPS):
    """The hardware's floor for a hop: half the median round trip of a written cache line between the two cores."""
    words = np.zeros(32, np.int64)  # two 128-byte lines, like the ring header's producer and consumer lines
    hist = np.zeros(HIST_WORDS, np.int64)
    deadline = rdtsc_now() + int(FLOOR_LIMIT_S * cal.hz)
    run_pair(
        lambda: pingpong_ping(bctl, words, trips, hist, cal.mult, deadline),
        lambda: pingpong_pong(bctl, words),
        cores, bctl, FLOOR_LIMIT_S,
    )  # fmt: skip
    snap = Snapshot(hist)
    return snap.percentile(50) / 2, snap.count


def bench_windows(hdr, slots, bctl, cal, cores):
    """`WINDOWS` short pairs of (floor, hop p50) measured back to back; returns the pairs and a summary."""
    pairs = []
    for _ in range(WINDOWS):
        floor_ns, _ = bench_floor(bctl, cal, cores, WINDOW_SAMPLES)
        snap, _, errors = bench_hop(hdr, slots, bctl, cal, cores, WINDOW_SAMPLES)
        if errors:
            raise RuntimeError(f"{errors} events out of order in a window")
        pairs.append((round(floor_ns, 1), snap.percentile(50)))
    lowest = min(pairs)
    return {
        "count": len(pairs),
        "samples_each": WINDOW_SAMPLES,
        "floor_ns": [f for f, _ in pairs],
        "hop_p50_ns": [h for _, h in pairs],
        "ratio_median": round(statistics.median(h / f for f, h in pairs if f > 0), 2),
        "lowest_floor": {"floor_ns": lowest[0], "hop_p50_ns": lowest[1]},
        "hop_p50_within_target": sum(h <= TARGET_HOP_P50_NS for _, h in pairs),
    }


def bench_tput(hdr, slots, bctl, cal, cores, batch):
    """One throughput run: returns M events/s, events sent, received, and out of order."""
    reset_ring(hdr, slots)
    deadline = rdtsc_now() + int(TPUT_LIMIT_S * cal.hz)
    box = {}

    def produce():
        box["t0"] = time.perf_counter_ns()
        return tput_producer(bctl, hdr, slots, TPUT_EVENTS, batch, deadline)

    def consume():
        out = tput_consumer(bctl, hdr, slots, batch)
        box["t1"] = time.perf_counter_ns()
        return out

    sent, (got, errors) = run_pair(produce, consume, cores, bctl, TPUT_LIMIT_S)
    # From the producer's first event to the consumer's last: the GIL handoffs at either end are
    # a few microseconds against a run of a second or more.
    seconds = (box["t1"] - box["t0"]) / 1e9
    return got / seconds / 1e6, sent, got, errors


def rdtsc_now() -> int:
    """The TSC from Python, for deadlines handed to the kernels."""
    return int(read_tsc())


# ---------------------------------------------------------------------------------------------
# the peer: queue.SimpleQueue between two pinned Python threads
# ---------------------------------------------------------------------------------------------


def peer_hop(cores):
    """One put stamped with perf_counter_ns, the receiver's stamp on get; an ack queue paces the sender."""
    q, ack = queue.SimpleQueue(), queue.SimpleQueue()
    lat = np.zeros(PEER_HOP_SAMPLES, np.int64)
    state = {"n": 0, "errors": 0}
    clock = time.perf_counter_ns

    def producer():
        os.sched_setaffinity(0, {cores[0]})
        deadline = clock() + int(PEER_LIMIT_S * 1e9)
        for i in range(PEER_HOP_SAMPLES):
            q.put((i, clock()))
            # Blocking on the ack (not spinning) lets the receiver have the GIL; then the same spacing.
            ack.get()
            t0 = clock()
            while clock() - t0 < HOP_SPACING_NS:
                pass
            if t0 > deadline:
                break
        q.put(None)

    def consumer():
        os.sched_setaffinity(0, {cores[1]})
        n = 0
        while True:
            item = q.get()
            now = clock()
            if item is None:
                break
            seq, t = item
            if seq != n:
                state["errors"] += 1
            lat[n] = now - t
            n += 1
            ack.put(None)
        state["n"] = n

    _join_python_pair(producer, consumer, PEER_LIMIT_S)
    lat = np.sort(lat[: state["n"]])
    return lat, state["errors"]


def peer_tput(cores):
    """Put 0..N-1 one by one as fast as possible; the receiver gets them one by one and checks order."""
    q = queue.SimpleQueue()
    state = {"n": 0, "errors": 0}
    clock = time.perf_counter_ns

    def producer():
        os.sched_setaffinity(0, {cores[0]})
        state["t0"] = clock()
        deadline = state["t0"] + int(PEER_LIMIT_S * 1e9)
        put = q.put
        for i in range(PEER_TPUT_ITEMS):
            put(i)
            if i & 0xFFFF == 0 and clock() > deadline:
                break
        put(None)

    def consumer():
        os.sched_setaffinity(0, {cores[1]})
        get = q.get
        n = errors = 0
        while True:
            item = get()
            if item is None:
                break
            if item != n:
                errors += 1
            n += 1
        state["t1"] = clock()
        state["n"], state["errors"] = n, errors

    _join_python_pair(producer, consumer, PEER_LIMIT_S)
    return state["n"] / ((state["t1"] - state["t0"]) / 1e9) / 1e6, state["n"], state["errors"]


def _join_python_pair(producer, consumer, limit_s):
    """Run the peer's two Python threads (consumer first) and wait for both, bounded."""
    threads = [threading.Thread(target=consumer, daemon=True), threading.Thread(target=producer, daemon=True)]
    _start_and_join(threads, limit_s, "SimpleQueue peer")


def _start_and_join(threads, limit_s, what, on_timeout=None):
    """Start `threads` and wait for all of them within the run's limit plus slack; a straggler is an error.

    `on_timeout` (the numba pair's stop flag) gets a stuck loop to leave before the error is raised.
    """
    for t in threads:
        t.start()
    end = time.monotonic() + limit_s + JOIN_SLACK_S
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    if any(t.is_alive() for t in threads):
        if on_timeout is not None:
            on_timeout()
            for t in threads:
                t.join(5.0)
        raise RuntimeError(f"{what} threads did not finish within their time limit")


# ---------------------------------------------------------------------------------------------


def machine_info(cal, arena) -> dict:
    """What the figures were measured on, for the JSON's `machine` object."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "allowed_cpus": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numba": __import__("numba").__version__,
        "numpy": np.__version__,
        "tsc_hz": round(cal.hz),
        "tsc_invariant": cal.invariant,
        "arena_mode": arena.mode,
        "arena_huge_bytes": arena.huge_bytes,
        "arena_locked": arena.locked,
    }


def compile_kernels(hdr, slots, bctl, cal):
    """Compile (or load from cache) every kernel with the real argument types, before any timed thread."""
    hist = np.zeros(HIST_WORDS, np.int64)
    bctl[:] = 0
    reset_ring(hdr, slots)
    hop_producer(bctl, hdr, slots, 0, 0, 0)
    bctl[B_SENT] = 0
    hop_consumer(bctl, hdr, slots, hist, cal.mult)
    words = np.zeros(32, np.int64)
    pingpong_ping(bctl, words, 0, hist, cal.mult, 0)
    pingpong_pong(bctl, words)
    tput_producer(bctl, hdr, slots, 0, BATCH, 0)
    tput_consumer(bctl, hdr, slots, BATCH)
    reset_ring(hdr, slots)


def main() -> int:
    # Arena warnings (no reserved HugePages) go to stdout before the report, never after its JSON line.
    logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cal = calibrate()
    layout = compute_layout(("feed", "strategy", "gateway"), RING_SLOTS)
    arena = Arena.allocate(layout)
    hdr = arena.view("ring.feed_to_strategy.hdr")
    slots = arena.view("ring.feed_to_strategy.slots")
    bctl = np.zeros(B_WORDS, np.int64)
    cores = pick_cores()
    machine = machine_info(cal, arena)
    machine["cores"] = list(cores)

    t = time.perf_counter()
    compile_kernels(hdr, slots, bctl, cal)
    print(f"kernels ready in {time.perf_counter() - t:.2f} s", flush=True)
    print(
        f"machine: {machine['cpu_model']}, {machine['nproc']} CPUs, TSC {cal.hz / 1e9:.3f} GHz "
        f"(invariant {cal.invariant}); arena {arena.mode} ({arena.huge_bytes >> 20} MiB huge), "
        f"producer CPU {cores[0]}, consumer CPU {cores[1]}",
        flush=True,
    )
    if cores[0] == cores[1]:
        print("WARNING: only one CPU allowed; both threads share it, figures are meaningless", flush=True)

    order_errors = 0

    floor_ns, trips = bench_floor(bctl, cal, cores)
    machine["cacheline_one_way_ns"] = round(floor_ns, 1)
    print(f"floor: a written cache line crosses between the two cores in {floor_ns:.0f} ns one way "
          f"(half the median of {trips} round trips)", flush=True)

    snap, sent, errs = bench_hop(hdr, slots, bctl, cal, cores)
    order_errors += errs
    hop = {
        "p50": snap.percentile(50), "p90": snap.percentile(90), "p99": snap.percentile(99),
        "p99_9": snap.percentile(99.9), "max": snap.max_ns, "mean": round(snap.mean(), 1), "samples": snap.count,
    }  # fmt: skip
    print(
        f"hop latency ({snap.count} samples, {HOP_SPACING_NS} ns spacing): p50 {hop['p50']:.0f} ns, "
        f"p90 {hop['p90']:.0f}, p99 {hop['p99']:.0f}, p99.9 {hop['p99_9']:.0f}, max {hop['max']} ns",
        flush=True,
    )

    windows = bench_windows(hdr, slots, bctl, cal, cores)
    print(
        f"paired windows ({windows['count']} x {WINDOW_SAMPLES}): hop p50 / floor median {windows['ratio_median']}x; "
        f"floor {min(windows['floor_ns']):.0f}-{max(windows['floor_ns']):.0f} ns, hop p50 "
        f"{min(windows['hop_p50_ns']):.0f}-{max(windows['hop_p50_ns']):.0f} ns; lowest floor "
        f"{windows['lowest_floor']['floor_ns']:.0f} ns with hop p50 {windows['lowest_floor']['hop_p50_ns']:.0f} ns; "
        f"{windows['hop_p50_within_target']} windows with hop p50 <= {TARGET_HOP_P50_NS} ns",
        flush=True,
    )

    runs = []
    for r in range(TPUT_RUNS):
        mps, sent, got, errs = bench_tput(hdr, slots, bctl, cal, cores, BATCH)
        order_errors += errs + (sent != got)
        runs.append(round(mps, 2))
        print(f"throughput run {r + 1}: {got} events, {mps:.1f} M msgs/s, {errs} out of order", flush=True)
    tput_median = statistics.median(runs)
    print(f"throughput median of {TPUT_RUNS}: {tput_median:.1f} M msgs/s (ring {RING_SLOTS}, batch {BATCH})")

    lat, peer_hop_errs = peer_hop(cores)
    peer_mps, peer_n, peer_tput_errs = peer_tput(cores)

    def pct(p):
        return float(lat[min(len(lat) - 1, max(0, int(np.ceil(p / 100 * len(lat))) - 1))])

    peer = {
        "hop_ns": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "p99_9": pct(99.9), "max": float(lat[-1]),
                   "samples": int(len(lat)), "clock": "time.perf_counter_ns"},
        "throughput_mps": round(peer_mps, 3),
        "throughput_items": peer_n,
        "out_of_order": peer_hop_errs + peer_tput_errs,
    }  # fmt: skip
    print(
        f"peer queue.SimpleQueue: hop p50 {peer['hop_ns']['p50']:.0f} ns, p99 {peer['hop_ns']['p99']:.0f} ns "
        f"({len(lat)} samples); throughput {peer_mps:.2f} M msgs/s ({peer_n} items)",
        flush=True,
    )
    ratios = {
        "hop_p50_over_cacheline_floor": round(hop["p50"] / floor_ns, 2),
        "hop_p50_simplequeue_over_ring": round(peer["hop_ns"]["p50"] / hop["p50"], 1),
        "throughput_ring_over_simplequeue": round(tput_median / peer_mps, 1),
    }
    print(
        f"ratios: ring hop p50 is {ratios['hop_p50_simplequeue_over_ring']}x lower, ring throughput "
        f"{ratios['throughput_ring_over_simplequeue']}x higher than SimpleQueue; ring hop p50 is "
        f"{ratios['hop_p50_over_cacheline_floor']}x the cache-line floor"
    )

    passed = hop["p50"] <= TARGET_HOP_P50_NS and tput_median >= TARGET_TPUT_MPS and order_errors == 0
    report = {
        "bench": "ring",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
        "config": {"ring_slots": RING_SLOTS, "batch": BATCH, "hop_spacing_ns": HOP_SPACING_NS,
                   "throughput_events_per_run": TPUT_EVENTS},
        "hop_ns": hop,
        "windows": windows,
        "throughput_mps": {"median": tput_median, "runs": runs},
        "out_of_order": order_errors,
        "peer_simplequeue": peer,
        "ratios": ratios,
        "targets": {"hop_p50_ns_max": TARGET_HOP_P50_NS, "throughput_mps_min": TARGET_TPUT_MPS},
        "pass": passed,
    }  # fmt: skip
    print(json.dumps(report))
    return 1 if order_errors else 0


if __name__ == "__main__":
    sys.exit(main())
