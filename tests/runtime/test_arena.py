"""Arena.allocate: each mapping mode, writable and non-aliasing views, describe(), and the HugePages error."""

import gc
import os

import numpy as np
import pytest

from appliance.runtime.arena import MODE_HUGETLB, MODE_NORMAL, MODE_THP, Arena, HugePagesUnavailable
from appliance.runtime.layout import HUGE_PAGE, compute_layout

from rt_support import hugepages_free, require_free_hugepages, wait_until

SPLIT = ("feed", "strategy", "gateway")
THP_AVAILABLE = os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled")


def _check_views(arena):
    """Every view has its region's shape, starts zeroed, and a distinct pattern per region survives in all."""
    layout = arena.layout
    for r in layout.regions:
        v = arena.view(r.name)
        assert v.shape == r.shape and v.dtype == r.dtype
        assert v.flags.writeable
        assert v.ctypes.data == arena.address + r.offset
        assert not v.view(np.uint8).any(), f"{r.name} is not zeroed"
    for i, r in enumerate(layout.regions):
        arena.view(r.name).view(np.uint8).reshape(-1)[:] = (i * 37 + 11) % 251 + 1
    for i, r in enumerate(layout.regions):
        raw = arena.view(r.name).view(np.uint8).reshape(-1)
        assert (raw == (i * 37 + 11) % 251 + 1).all(), f"region {r.name} was overwritten by another region"
        assert (arena.buffer[r.offset : r.offset + r.nbytes] == raw).all()
    # typed access lands at the region's offset: counters row 2, word 3
    arena.view("counters")[2, 3] = -12345
    at = layout.region("counters").offset + (2 * 16 + 3) * 8
    assert arena.buffer[at : at + 8].view(np.int64)[0] == -12345


def test_normal_pages():
    layout = compute_layout(SPLIT, 256)
    arena = Arena.allocate(layout, modes=(MODE_NORMAL,))
    assert arena.mode == MODE_NORMAL and arena.huge_bytes == 0
    assert arena.buffer.size == layout.size
    _check_views(arena)


def test_transparent_hugepages_then_normal():
    layout = compute_layout(SPLIT, 4096)
    arena = Arena.allocate(layout, modes=(MODE_THP, MODE_NORMAL))
    assert arena.mode == (MODE_THP if THP_AVAILABLE else MODE_NORMAL)
    if arena.mode == MODE_THP:
        assert arena.address % HUGE_PAGE == 0, "THP arena must start on a 2 MiB boundary"
        assert 0 <= arena.huge_bytes <= layout.size
    _check_views(arena)


def test_transparent_switched_off_gives_normal_pages():
    arena = Arena.allocate(compute_layout(("fused",), 64), transparent_hugepages=False, modes=(MODE_THP, MODE_NORMAL))
    assert arena.mode == MODE_NORMAL


def test_two_arenas_do_not_share_memory():
    layout = compute_layout(("fused",), 64)
    a = Arena.allocate(layout, modes=(MODE_NORMAL,), lock=False)
    b = Arena.allocate(layout, modes=(MODE_NORMAL,), lock=False)
    a.view("control")[:] = 7
    assert not b.view("control").any()


def test_describe():
    layout = compute_layout(SPLIT, 1024)
    arena = Arena.allocate(layout, modes=(MODE_NORMAL,), lock=True)
    d = arena.describe()
    assert d["mode"] == MODE_NORMAL
    assert d["size_bytes"] == layout.size and d["used_bytes"] == layout.used and d["huge_bytes"] == 0
    assert d["regions"] == {r.name: {"offset": r.offset, "bytes": r.nbytes} for r in layout.regions}
    if os.geteuid() == 0:
        assert d["locked"] is True
    unlocked = Arena.allocate(layout, modes=(MODE_NORMAL,), lock=False)
    assert unlocked.describe()["locked"] is False


def test_hugetlb_when_pages_are_free():
    layout = compute_layout(("fused",), 4096)
    require_free_hugepages(layout.hugepages)
    before = hugepages_free()
    arena = Arena.allocate(layout, require_hugepages=True)
    assert arena.mode == MODE_HUGETLB
    assert arena.huge_bytes == layout.size and arena.describe()["huge_bytes"] == layout.size
    assert hugepages_free() <= before - layout.hugepages  # MAP_POPULATE faulted the pages in
    _check_views(arena)
    del arena
    gc.collect()
    wait_until(lambda: hugepages_free() >= before, 2.0, what="the arena's HugePages to be returned")


def test_require_hugepages_too_big_raises_with_advice():
    free = hugepages_free()
    slots = 1048576
    layout = compute_layout(SPLIT, slots)
    while layout.hugepages <= free:  # CI may have reserved some; ask for more than there are
        slots *= 2
        layout = compute_layout(SPLIT, slots)
    with pytest.raises(HugePagesUnavailable) as info:
        Arena.allocate(layout, require_hugepages=True)
    msg = str(info.value)
    assert f"needs {layout.hugepages} x 2 MiB HugePages" in msg
    assert "nr_hugepages" in msg
    assert f"hugepages-2Mi: {layout.hugepages * 2}Mi" in msg


def test_require_hugepages_with_hugetlb_excluded_raises():
    with pytest.raises(HugePagesUnavailable):
        Arena.allocate(compute_layout(("fused",), 64), require_hugepages=True, modes=(MODE_NORMAL,))


def test_fallback_without_requirement_never_raises():
    free = hugepages_free()
    slots = 65536
    layout = compute_layout(("fused",), slots)
    while layout.hugepages <= free:
        slots *= 2
        layout = compute_layout(("fused",), slots)
    arena = Arena.allocate(layout, lock=False)
    assert arena.mode in (MODE_THP, MODE_NORMAL)
