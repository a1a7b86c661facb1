"""compute_layout: aligned, non-overlapping regions in whole 2 MiB pages."""

import numpy as np
import pytest

from appliance.runtime.event import EVENT_DTYPE
from appliance.runtime.histogram import HIST_WORDS
from appliance.runtime.layout import (
    AGENTS, ALIGN, HISTOGRAMS, HUGE_PAGE, R_HEAD, R_HEAD_CACHE, R_TAIL, R_TAIL_CACHE, RING_HDR_WORDS, RINGS, ROW_WORDS,
    compute_layout,
)

SPLIT = ("feed", "strategy", "gateway")
FUSED = ("fused",)


@pytest.mark.parametrize("threads", [SPLIT, FUSED])
@pytest.mark.parametrize("slots", [64, 4096, 65536, 1048576])
def test_regions_are_aligned_disjoint_and_fit_in_whole_hugepages(threads, slots):
    layout = compute_layout(threads, slots)
    regions = layout.regions
    assert len({r.name for r in regions}) == len(regions)
    assert regions[0].offset == 0
    for r in regions:
        assert r.offset % ALIGN == 0, f"{r.name} at {r.offset} is not {ALIGN}-byte aligned"
        assert r.nbytes > 0
    for a, b in zip(regions, regions[1:]):
        assert a.offset + a.nbytes <= b.offset, f"{a.name} overlaps {b.name}"
    spans = sorted((r.offset, r.offset + r.nbytes) for r in regions)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start
    assert layout.used == max(r.offset + r.nbytes for r in regions)
    assert layout.size % HUGE_PAGE == 0 and layout.size >= layout.used
    assert layout.size - layout.used < HUGE_PAGE  # no wasted whole page
    assert layout.hugepages * HUGE_PAGE == layout.size
    assert layout.ring_slots == slots and layout.threads == threads
    for ring in RINGS:
        s = layout.region(f"ring.{ring}.slots")
        assert s.shape == (slots,) and s.dtype == EVENT_DTYPE and s.nbytes == slots * 64
        hdr = layout.region(f"ring.{ring}.hdr")
        assert hdr.shape == (RING_HDR_WORDS,) and hdr.dtype == np.int64
    assert layout.region("hist").shape == (len(HISTOGRAMS), HIST_WORDS)



def test_ring_header_words_each_have_a_128_byte_block():
    # Each cached view on a line of its own: on the line the other side polls it cost a coherence miss per event.
    words = (R_TAIL, R_HEAD, R_HEAD_CACHE, R_TAIL_CACHE)
    blocks = [w * 8 // ALIGN for w in words]
    assert len(set(blocks)) == len(words), dict(zip(("tail", "head", "head_cache", "tail_cache"), blocks))
    assert all(0 <= w < RING_HDR_WORDS for w in words)
    assert RING_HDR_WORDS * 8 % ALIGN == 0


def test_big_rings_need_many_pages():
    layout = compute_layout(SPLIT, 1048576)
    assert layout.used > 2 * 1048576 * 64
    assert layout.hugepages == -(-layout.used // HUGE_PAGE) >= 65


@pytest.mark.parametrize("bad", [0, -64, 3, 100, 4095, 65537])
def test_ring_slots_must_be_a_power_of_two(bad):
    with pytest.raises(ValueError, match="power of two"):
        compute_layout(SPLIT, bad)


def test_split_and_fused_heartbeat_rows():
    split, fused = compute_layout(SPLIT, 1024), compute_layout(FUSED, 1024)
    assert split.region("heartbeat").shape == (3, ROW_WORDS)
    assert fused.region("heartbeat").shape == (1, ROW_WORDS)
    # agents (and their counters and state) exist in both layouts
    for layout in (split, fused):
        assert layout.region("counters").shape == (len(AGENTS), ROW_WORDS)
        assert layout.region("state").shape == (len(AGENTS), ROW_WORDS)
        assert ROW_WORDS * 8 == 128  # one 128-byte row per writer
    assert split.region("counters").offset > fused.region("counters").offset  # two more heartbeat rows before it
    with pytest.raises(KeyError):
        split.region("nope")
