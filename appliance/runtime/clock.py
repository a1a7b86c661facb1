"""TSC clock: calibrated once against CLOCK_MONOTONIC, converted to nanoseconds by a multiply and a shift."""

import time
from dataclasses import dataclass

from numba import njit

from .atomics import rdtsc

MULT_SHIFT = 32
# Deltas are clamped below this many cycles before scaling so (delta * mult) cannot overflow int64.
MAX_DELTA_CYCLES = 1 << 31


@njit(nogil=True, cache=True)
def read_tsc():
    """The TSC from Python (one numba call, about 100 ns of dispatch)."""
    return rdtsc()


@njit(nogil=True, cache=True, inline="always")
def cycles_to_ns(cycles, mult):
    """Nanoseconds in a TSC delta, using the calibrated multiplier; negative deltas read as 0."""
    if cycles <= 0:
        return 0
    if cycles >= MAX_DELTA_CYCLES:
        cycles = MAX_DELTA_CYCLES - 1
    return (cycles * mult) >> MULT_SHIFT


@dataclass(frozen=True)
class TscCalibration:
    """TSC frequency and the fixed-point multiplier that turns cycles into nanoseconds."""

    hz: float
    mult: int
    invariant: bool

    def ns(self, cycles: int) -> float:
        return cycles * 1e9 / self.hz


def _invariant_tsc() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split()
                    return "constant_tsc" in flags and "nonstop_tsc" in flags
    except OSError:
        pass
    return False


def calibrate(duration_s: float = 0.05) -> TscCalibration:
    """Measure TSC ticks per second of CLOCK_MONOTONIC over `duration_s` (median of three)."""
    read_tsc()  # compile or load before timing
    samples = []
    for _ in range(3):
        t0, c0 = time.monotonic_ns(), read_tsc()
        deadline = t0 + int(duration_s * 1e9 / 3)
        while time.monotonic_ns() < deadline:
            pass
        t1, c1 = time.monotonic_ns(), read_tsc()
        samples.append((c1 - c0) * 1e9 / (t1 - t0))
    best = sorted(samples)[1]  # the median shrugs off one preempted sample
    mult = int(round((1e9 / best) * (1 << MULT_SHIFT)))
    return TscCalibration(hz=best, mult=mult, invariant=_invariant_tsc())
