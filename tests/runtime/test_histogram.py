"""Log-linear latency histogram: bucket geometry, recording from numba, snapshots and the Prometheus export."""

import math

import numpy as np
import pytest
from numba import njit

from appliance.runtime.histogram import (
    EXPORT_BOUNDS_NS,
    H_COUNT,
    H_MAX,
    H_SUM,
    HIST_WORDS,
    LINEAR,
    NBUCKETS,
    SUB,
    Snapshot,
    bucket_bounds,
    bucket_of,
    hist_record,
)

TOP = 1 << 40  # values at or above this are clamped into the last bucket


@njit(cache=True)
def _buckets(values):
    out = np.empty(values.shape[0], dtype=np.int64)
    for i in range(values.shape[0]):
        out[i] = bucket_of(values[i])
    return out


@njit(cache=True)
def _record_all(h, values):
    for i in range(values.shape[0]):
        hist_record(h, values[i])


def _edge_values() -> list[int]:
    vals = set(range(0, 200))
    for e in range(1, 41):
        p = 1 << e
        vals.update(v for v in (p - 2, p - 1, p, p + 1, p + 2) if 0 <= v < TOP)
    for e in range(6, 40):  # sub-bucket edges inside each power of two
        width = 1 << (e - 5)
        for k in range(SUB):
            lo = (1 << e) + k * width
            vals.update((lo - 1, lo, lo + width - 1))
    return sorted(v for v in vals if 0 <= v < TOP)


def _values() -> np.ndarray:
    rng = np.random.default_rng(1234)
    rand = rng.integers(0, TOP, size=20_000, dtype=np.int64)
    logu = np.exp(rng.uniform(0, math.log(TOP - 1), size=20_000)).astype(np.int64)  # spread over magnitudes
    return np.unique(np.concatenate([np.array(_edge_values(), dtype=np.int64), rand, logu]))


def _record(values) -> np.ndarray:
    h = np.zeros(HIST_WORDS, dtype=np.int64)
    _record_all(h, np.asarray(values, dtype=np.int64))
    return h


def test_every_value_lands_in_a_bucket_that_contains_it():
    values = _values()
    buckets = _buckets(values)
    bounds = np.array([bucket_bounds(i) for i in range(NBUCKETS)], dtype=np.int64)
    assert buckets.min() >= 0 and buckets.max() < NBUCKETS
    lo, hi = bounds[buckets, 0], bounds[buckets, 1]
    bad = np.nonzero((values < lo) | (values >= hi))[0]
    assert bad.size == 0, [(int(values[i]), int(buckets[i]), bucket_bounds(int(buckets[i]))) for i in bad[:10]]
    # the Python-dispatched kernel agrees with the vectorised one
    for v in (0, 1, 63, 64, 65, 127, 128, 1000, (1 << 39) + 12345, TOP - 1):
        assert bucket_of(v) == _buckets(np.array([v], dtype=np.int64))[0]
        lower, upper = bucket_bounds(bucket_of(v))
        assert lower <= v < upper


def test_small_values_are_exact():
    vals = np.arange(LINEAR, dtype=np.int64)
    assert list(_buckets(vals)) == list(range(LINEAR))
    assert all(bucket_bounds(i) == (i, i + 1) for i in range(LINEAR))
    assert bucket_of(63) == 63 and bucket_of(64) == 64 and bucket_bounds(64) == (64, 66)


def test_buckets_are_contiguous_non_overlapping_and_narrow():
    assert bucket_bounds(0) == (0, 1)
    prev_upper = 0
    for i in range(NBUCKETS):
        lower, upper = bucket_bounds(i)
        assert lower == prev_upper, f"bucket {i} starts at {lower}, previous ended at {prev_upper}"
        assert upper > lower
        if lower >= LINEAR:
            assert (upper - lower) * 32 <= lower, f"bucket {i} [{lower},{upper}) wider than 1/32"
        prev_upper = upper
    assert prev_upper == TOP  # the last bucket ends at 2**40


def test_values_beyond_the_top_are_clamped_into_the_last_bucket():
    vals = np.array([TOP, TOP + 1, 1 << 50, (1 << 62) + 7], dtype=np.int64)
    assert set(_buckets(vals)) == {NBUCKETS - 1}


def test_record_then_snapshot_gives_exact_count_sum_max_and_bounded_percentiles():
    rng = np.random.default_rng(7)
    values = np.concatenate([
        rng.lognormal(mean=6.0, sigma=1.5, size=50_000).astype(np.int64),  # ~400 ns median, long tail
        np.array([0, 1, 63, 64, 65, 1 << 20, (1 << 39) + 5], dtype=np.int64),
    ])
    h = _record(values)
    assert h[H_COUNT] == len(values) and h[H_SUM] == values.sum() and h[H_MAX] == values.max()
    snap = Snapshot(h)
    assert snap.count == len(values)
    assert snap.sum_ns == int(values.sum())
    assert snap.max_ns == int(values.max())
    assert snap.mean() == pytest.approx(values.mean())
    ordered = np.sort(values)
    for p in (0.1, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100):
        rank = max(1, math.ceil(p / 100 * len(values)))
        true = int(ordered[rank - 1])
        est = snap.percentile(p)
        assert true <= est <= true + true / 32, f"p{p}: true {true}, reported {est}"
    summary = snap.summary()
    assert summary["count"] == len(values) and summary["max_ns"] == int(values.max())
    assert summary["p50_ns"] == snap.percentile(50)


def test_negative_values_record_as_zero():
    h = _record([-5, -1, 0])
    snap = Snapshot(h)
    assert snap.count == 3 and snap.counts[0] == 3 and snap.sum_ns == 0 and snap.max_ns == 0


def test_empty_snapshot():
    snap = Snapshot(np.zeros(HIST_WORDS, dtype=np.int64))
    assert snap.count == 0 and math.isnan(snap.percentile(50)) and math.isnan(snap.mean())
    assert snap.summary()["p99_ns"] is None
    assert snap.prometheus_buckets()[-1] == ("+Inf", 0)


def test_prometheus_buckets_are_cumulative_and_end_with_inf():
    values = [10, 10, 75, 300, 20_000, 3_000_000_000]  # each well inside one exported bucket
    snap = Snapshot(_record(values))
    buckets = snap.prometheus_buckets()
    assert len(buckets) == len(EXPORT_BOUNDS_NS) + 1
    assert [le for le, _ in buckets[:-1]] == [repr(b / 1e9) for b in EXPORT_BOUNDS_NS]
    assert buckets[-1] == ("+Inf", len(values))
    got = dict(buckets)
    assert got[repr(50 / 1e9)] == 2
    assert got[repr(100 / 1e9)] == 3
    assert got[repr(250 / 1e9)] == 3
    assert got[repr(500 / 1e9)] == 4
    assert got[repr(25_000 / 1e9)] == 5
    assert got[repr(1.0)] == 5


def test_prometheus_buckets_track_the_true_cumulative_counts():
    rng = np.random.default_rng(3)
    values = np.exp(rng.uniform(0, math.log(5e9), size=30_000)).astype(np.int64)
    snap = Snapshot(_record(values))
    buckets = snap.prometheus_buckets()
    counts = [c for _, c in buckets]
    assert all(a <= b for a, b in zip(counts, counts[1:])), counts
    assert counts[-1] == snap.count == len(values)
    buckets_of = _buckets(values)
    for (le, c), bound in zip(buckets, EXPORT_BOUNDS_NS):
        true = int((values <= bound).sum())
        straddling = bucket_of(bound)  # only the internal bucket holding the bound can go either way
        slack = int((buckets_of == straddling).sum())
        assert abs(c - true) <= slack, f"le={le}: exported {c}, true {true}, slack {slack}"


def test_snapshot_difference():
    h = np.zeros(HIST_WORDS, dtype=np.int64)
    first = np.array([100, 200, 5_000], dtype=np.int64)
    second = np.array([7, 100, 1_000_000, 42], dtype=np.int64)
    _record_all(h, first)
    older = Snapshot(h)
    _record_all(h, second)
    newer = Snapshot(h)
    only_second = Snapshot(_record(second))
    d = newer - older
    assert d.count == len(second)
    assert d.sum_ns == int(second.sum())
    assert np.array_equal(d.counts, only_second.counts)
    assert d.max_ns == newer.max_ns == 1_000_000
    assert d.percentile(50) == only_second.percentile(50)
    # snapshots are copies: recording more does not change them
    _record_all(h, first)
    assert newer.count == len(first) + len(second)
