"""The arena's one layout description: every region's name, offset and shape, computed once from config.

```
 offset 0  +------------------------+
           | control   int64[32]    |  stop flag, TSC multiplier, per-thread stall switches (control plane writes)
           | params    int64[32]    |  reloadable parameters the hot loops read (control plane writes)
           | heartbeat int64[T,16]  |  one 128-byte row per hot thread (that thread writes)
           | counters  int64[A,16]  |  one 128-byte row per agent (that agent writes)
           | state     int64[A,16]  |  agents' private state (that agent reads and writes)
           | ring hdr  int64[64]    |  per ring: four 128-byte blocks, see R_TAIL below
           | ring slots EVENT[N]    |
           | ...                    |
           | hist      int64[H,W]   |  latency histograms (the recording agent writes)
           +------------------------+  rounded up to whole 2 MiB pages
```
Independent writers are kept 128 bytes apart: the adjacent-line prefetcher pulls cache lines in
pairs, so 64 bytes of padding still lets two writers' lines bounce together.
"""

from dataclasses import dataclass

import numpy as np

from .event import EVENT_DTYPE
from .histshape import HIST_WORDS

HUGE_PAGE = 2 * 1024 * 1024
ALIGN = 128
ROW_WORDS = 16  # 128 bytes

# control block words
CTL_STOP = 0
CTL_TSC_MULT = 16
CTL_TSC_HZ = 17
CTL_KILL = 18  # nonzero (the TSC when it was tripped): the kill switch is on; the gateway cancels everything
CTL_STALL = 24  # + thread index; nonzero: that thread stops advancing its heartbeat (fault injection)
CTL_WORDS = 32

# params block words (reloadable; hot loops read them with relaxed loads)
P_RATE = 0  # synthetic events per second, 0 = unpaced
P_BATCH = 1
P_IDLE = 2  # 0 spin, 1 yield, 2 sleep
PARAM_WORDS = 32

# heartbeat row words
HB_BEAT = 0  # loop iterations
HB_BUSY = 1  # iterations that found work
HB_STATE = 2  # THREAD_* below
HB_STALLS = 3  # injected stalls entered

THREAD_STARTING, THREAD_RUNNING, THREAD_STALLED, THREAD_STOPPED = 0, 1, 2, 3

# Ring header words, each in its own 128-byte block:
#   word  0  R_TAIL        producer writes, consumer polls      (shared)
#   word 16  R_HEAD        consumer writes, producer polls      (shared)
#   word 32  R_HEAD_CACHE  producer only                        (private)
#   word 48  R_TAIL_CACHE  consumer only                        (private)
# The cached views must not share a line with the index the other side polls: a consumer that stored
# its view of the tail on the line the producer watches took a coherence miss on every event it
# received; on the 2-vCPU VM that put the idle-to-one-event hop at 1.6x the cache-line floor, against
# 1.1x with the views on lines of their own (the layout of Rigtorp's SPSCQueue).
R_TAIL = 0  # next position the producer will publish (producer writes, release)
R_HEAD = 16  # next position the consumer will read (consumer writes, release)
R_HEAD_CACHE = 32  # producer's last view of R_HEAD
R_TAIL_CACHE = 48  # consumer's last view of R_TAIL
RING_HDR_WORDS = 64

IDLE_MODES = {"spin": 0, "yield": 1, "sleep": 2}

# Agents are the units of work; hot threads run one (split) or all (fused) of them.
AGENTS = ("feed", "strategy", "gateway")
# Counter slots per agent row; their names and help live with the metrics exporter.
C_EVENTS_IN = 0
C_EVENTS_OUT = 1
C_BACKPRESSURE = 2  # times the agent found its output ring full
C_SEQUENCE_ERRORS = 3  # events that arrived out of order or with a gap

RINGS = ("feed_to_strategy", "strategy_to_gateway", "gateway_to_strategy")
# Latency histograms; the trading path's stages, in order: packet in user space -> MoldUDP64 decoded
# (feed_decode) -> book updated and events published (feed_book) -> ring hop -> strategy decided
# (strategy_decide) -> ring hop -> risk passed (risk_check) -> send() returned (send_call); tick_to_trade
# spans the whole of it (tick_to_send: up to the bytes being handed to send()), order_ack is send() to the
# venue's answer.
HISTOGRAMS = ("hop_feed_to_strategy", "hop_strategy_to_gateway", "pipeline", "hop_gateway_to_strategy",
              "feed_decode", "feed_book", "strategy_decide", "risk_check", "send_call", "tick_to_trade", "order_ack",
              "tick_to_send")
H_HOP_FS, H_HOP_SG, H_PIPELINE, H_HOP_GS, H_FEED_DECODE, H_FEED_BOOK, H_DECIDE, H_RISK, H_SEND, H_T2T, H_ACK, \
    H_T2S = range(len(HISTOGRAMS))
JOURNAL_RECORD = 128  # bytes per journal record (see gateway/journal.py)


@dataclass(frozen=True)
class Region:
    """One named, typed slice of the arena."""

    name: str
    offset: int
    dtype: np.dtype
    shape: tuple

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize


@dataclass(frozen=True)
class Layout:
    """Where everything lives in the arena; `size` is whole huge pages."""

    regions: tuple
    size: int
    threads: tuple
    ring_slots: int

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def used(self) -> int:
        last = self.regions[-1]
        return last.offset + last.nbytes

    @property
    def hugepages(self) -> int:
        return self.size // HUGE_PAGE


def compute_layout(threads: tuple, ring_slots: int, journal_slots: int = 64) -> Layout:
    """Lay out the arena for these hot threads and ring size (a power of two)."""
    for n, what in ((ring_slots, "ring_slots"), (journal_slots, "journal_slots")):
        if n <= 0 or n & (n - 1):
            raise ValueError(f"{what} must be a power of two, got {n}")
    i8 = np.dtype(np.int64)
    wanted = [
        ("control", i8, (CTL_WORDS,)),
        ("params", i8, (PARAM_WORDS,)),
        ("heartbeat", i8, (len(threads), ROW_WORDS)),
        ("counters", i8, (len(AGENTS), ROW_WORDS)),
        ("state", i8, (len(AGENTS), ROW_WORDS)),
    ]
    for ring in RINGS:
        wanted.append((f"ring.{ring}.hdr", i8, (RING_HDR_WORDS,)))
        wanted.append((f"ring.{ring}.slots", EVENT_DTYPE, (ring_slots,)))
    wanted.append(("journal.hdr", i8, (RING_HDR_WORDS,)))
    wanted.append(("journal.slots", np.dtype(np.uint8), (journal_slots, JOURNAL_RECORD)))
    wanted.append(("hist", i8, (len(HISTOGRAMS), HIST_WORDS)))

    regions, offset = [], 0
    for name, dtype, shape in wanted:
        regions.append(Region(name, offset, dtype, shape))
        offset += -(-regions[-1].nbytes // ALIGN) * ALIGN
    size = -(-offset // HUGE_PAGE) * HUGE_PAGE
    return Layout(tuple(regions), size, tuple(threads), ring_slots)
