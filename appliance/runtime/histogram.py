"""Latency histograms in the arena: log-linear nanosecond buckets, one writer each, read by the control plane.

Values below 64 ns get a bucket each; above, every power of two is split into 32 linear sub-buckets,
so a recorded value is known to within 1/32 (about 3%). The writer does two relaxed atomic updates
and a handful of integer operations; no division, no branch on the value's magnitude beyond one.

```
 int64 words:  [0 .. NBUCKETS)   counts per bucket
               NBUCKETS + 0      sum of recorded nanoseconds
               NBUCKETS + 1      largest recorded value
               NBUCKETS + 2      count of recorded values
```
"""

import numpy as np
from numba import njit

from .atomics import leading_zeros, load_relaxed, store_relaxed
from .histshape import H_COUNT, H_MAX, H_SUM, HIST_WORDS, LINEAR, MAX_EXP, NBUCKETS, SUB, SUB_BITS  # noqa: F401

# Exported to Prometheus as `le` bounds (seconds); internal buckets are assigned by their midpoint.
EXPORT_BOUNDS_NS = (
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000, 100_000_000, 1_000_000_000,
)


@njit(nogil=True, cache=True, inline="always")
def bucket_of(ns):
    """Bucket index of a non-negative nanosecond value."""
    if ns < LINEAR:
        return ns
    exp = 63 - leading_zeros(ns)
    if exp > MAX_EXP:
        return NBUCKETS - 1
    return LINEAR + (exp - SUB_BITS - 1) * SUB + ((ns >> (exp - SUB_BITS)) & (SUB - 1))


@njit(nogil=True, cache=True, inline="always")
def hist_record(h, ns):
    """Record one value; only the histogram's single writer may call this."""
    if ns < 0:
        ns = 0
    b = bucket_of(ns)
    store_relaxed(h, b, load_relaxed(h, b) + 1)
    store_relaxed(h, H_SUM, load_relaxed(h, H_SUM) + ns)
    if ns > load_relaxed(h, H_MAX):
        store_relaxed(h, H_MAX, ns)
    store_relaxed(h, H_COUNT, load_relaxed(h, H_COUNT) + 1)


def bucket_bounds(index: int) -> tuple[int, int]:
    """Inclusive lower and exclusive upper nanosecond bound of a bucket."""
    if index < LINEAR:
        return index, index + 1
    k = index - LINEAR
    exp = k // SUB + SUB_BITS + 1
    width = 1 << (exp - SUB_BITS)
    lower = (SUB + k % SUB) * width
    return lower, lower + width


_BOUNDS = np.array([bucket_bounds(i) for i in range(NBUCKETS)], dtype=np.int64)
_MIDS = (_BOUNDS[:, 0] + _BOUNDS[:, 1]) // 2
# For each internal bucket, the index of the exported bucket its midpoint falls in (len = +Inf).
_EXPORT_INDEX = np.searchsorted(np.array(EXPORT_BOUNDS_NS), _MIDS, side="left")


class Snapshot:
    """A point-in-time copy of one histogram, with the statistics reports need."""

    def __init__(self, words: np.ndarray):
        words = np.array(words[:HIST_WORDS], dtype=np.int64, copy=True)
        self.counts = words[:NBUCKETS]
        self.count = int(self.counts.sum())  # the buckets, not H_COUNT: consistent with themselves
        self.sum_ns = int(words[H_SUM])
        self.max_ns = int(words[H_MAX])

    def __sub__(self, older: "Snapshot") -> "Snapshot":
        """What was recorded between `older` and this snapshot (max is this snapshot's)."""
        out = Snapshot.__new__(Snapshot)
        out.counts = self.counts - older.counts
        out.count = int(out.counts.sum())
        out.sum_ns = self.sum_ns - older.sum_ns
        out.max_ns = self.max_ns
        return out

    def percentile(self, p: float) -> float:
        """The p-th percentile in ns: the highest value of the bucket where it falls (an upper bound)."""
        if self.count == 0:
            return float("nan")
        rank = max(1, int(np.ceil(p / 100.0 * self.count)))
        idx = int(np.searchsorted(np.cumsum(self.counts), rank, side="left"))
        lower, upper = _BOUNDS[idx]
        return float(lower if upper - lower == 1 else upper - 1)

    def mean(self) -> float:
        return self.sum_ns / self.count if self.count else float("nan")

    def summary(self) -> dict:
        """count, mean and the usual percentiles in ns, as a report wants them."""
        return {
            "count": self.count,
            "mean_ns": round(self.mean(), 1) if self.count else None,
            "p50_ns": self.percentile(50) if self.count else None,
            "p90_ns": self.percentile(90) if self.count else None,
            "p99_ns": self.percentile(99) if self.count else None,
            "p99_9_ns": self.percentile(99.9) if self.count else None,
            "max_ns": self.max_ns if self.count else None,
        }

    def prometheus_buckets(self) -> list[tuple[str, int]]:
        """Cumulative (le, count) pairs in seconds, ending with +Inf, as prometheus-client wants them."""
        per = np.bincount(_EXPORT_INDEX, weights=self.counts, minlength=len(EXPORT_BOUNDS_NS) + 1)
        cum = np.cumsum(per).astype(np.int64)
        out = [(_le(b), int(c)) for b, c in zip(EXPORT_BOUNDS_NS, cum[:-1])]
        out.append(("+Inf", int(cum[-1])))
        return out


def _le(ns: int) -> str:
    return repr(ns / 1e9)
