"""The process's one memory arena: reserved HugePages first, then transparent huge pages, then normal pages.

Every ring, table, counter and histogram is a numpy view carved from it by the layout, so the hot
threads (numba, no GIL) and the control plane (Python) read the same bytes with no copies.
"""

import logging
import mmap
import os

import numpy as np

from . import libc
from .layout import HUGE_PAGE, Layout

log = logging.getLogger("appliance.runtime")

MAP_HUGETLB = getattr(mmap, "MAP_HUGETLB", 0x40000)

MODE_HUGETLB = "hugetlb"  # explicitly reserved 2 MiB pages (MAP_HUGETLB)
MODE_THP = "transparent"  # madvise(MADV_HUGEPAGE); the kernel may or may not back it with huge pages
MODE_NORMAL = "normal"  # 4 KiB pages
MODES = (MODE_HUGETLB, MODE_THP, MODE_NORMAL)


class HugePagesUnavailable(RuntimeError):
    """Reserved HugePages were required and could not be mapped."""


def meminfo_hugepages() -> dict:
    """HugePages_Total / _Free / _Rsvd and Hugepagesize from /proc/meminfo."""
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key.startswith("HugePages_") or key == "Hugepagesize":
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def hugepages_advice(pages: int) -> str:
    """How an operator reserves `pages` more 2 MiB pages, for error messages and the doctor."""
    info = meminfo_hugepages()
    total, free = info.get("HugePages_Total", 0), info.get("HugePages_Free", 0)
    return (
        f"the arena needs {pages} x 2 MiB HugePages and {free} of {total} are free; reserve them with "
        f"`echo {total + max(pages - free, 0)} > /proc/sys/vm/nr_hugepages` (persist with vm.nr_hugepages in "
        f"/etc/sysctl.d/ or hugepages={total + max(pages - free, 0)} on the kernel command line); "
        f"in Kubernetes request hugepages-2Mi: {pages * 2}Mi"
    )


class Arena:
    """One mapped region and the named numpy views the layout carves from it."""

    def __init__(self, layout: Layout, mm: mmap.mmap, base_offset: int, mode: str):
        self.layout = layout
        self.mode = mode
        self._mm = mm
        self.buffer = np.frombuffer(mm, dtype=np.uint8, count=layout.size, offset=base_offset)
        self.address = self.buffer.ctypes.data
        self.locked = False
        self.huge_bytes = layout.size if mode == MODE_HUGETLB else 0
        self._views = {}
        for r in layout.regions:
            raw = self.buffer[r.offset : r.offset + r.nbytes]
            self._views[r.name] = raw.view(r.dtype).reshape(r.shape)

    def view(self, name: str) -> np.ndarray:
        return self._views[name]

    @classmethod
    def allocate(
        cls,
        layout: Layout,
        *,
        require_hugepages: bool = False,
        transparent_hugepages: bool = True,
        lock: bool = True,
        modes: tuple = MODES,
    ) -> "Arena":
        """Map the arena in the best mode available; `modes` narrows the choice (tests use it)."""
        size = layout.size
        arena = None
        if MODE_HUGETLB in modes:
            try:
                flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_HUGETLB | mmap.MAP_POPULATE
                arena = cls(layout, mmap.mmap(-1, size, flags=flags), 0, MODE_HUGETLB)
            except OSError as e:
                if require_hugepages:
                    raise HugePagesUnavailable(
                        f"memory.require_hugepages is true but MAP_HUGETLB failed ({e.strerror}): "
                        + hugepages_advice(layout.hugepages)
                    ) from None
                log.warning("reserved HugePages unavailable (%s): %s", e.strerror, hugepages_advice(layout.hugepages))
        elif require_hugepages:
            raise HugePagesUnavailable("memory.require_hugepages is true but the hugetlb mode was excluded")
        if arena is None and transparent_hugepages and MODE_THP in modes:
            # THP only backs 2 MiB-aligned ranges: over-map by one page and start at the aligned address.
            mm = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            start = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
            skew = (-start) % HUGE_PAGE
            try:
                mm.madvise(mmap.MADV_HUGEPAGE, skew, size)
                arena = cls(layout, mm, skew, MODE_THP)
            except OSError as e:
                log.warning("madvise(MADV_HUGEPAGE) failed (%s); using normal pages", e.strerror)
        if arena is None:
            arena = cls(layout, mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), 0, MODE_NORMAL)
        arena.buffer[::4096] = 0  # fault every page in now, not on the hot path
        if arena.mode == MODE_THP:
            arena.huge_bytes = arena._anon_huge_bytes()
        if lock:
            try:
                libc.mlock(arena.address, size)
                arena.locked = True
            except OSError as e:
                log.warning(
                    "mlock of the %d MiB arena failed (%s); raise the memlock limit (LimitMEMLOCK=infinity, "
                    "ulimit -l unlimited) or grant CAP_IPC_LOCK",
                    size >> 20,
                    e.strerror,
                )
        return arena

    def _anon_huge_bytes(self) -> int:
        """Bytes of this arena the kernel actually backs with transparent huge pages (from smaps)."""
        lo, hi = self.address, self.address + self.layout.size
        total, inside = 0, False
        try:
            with open(f"/proc/{os.getpid()}/smaps") as f:
                for line in f:
                    head = line.split(None, 1)[0]
                    if "-" in head and not head.endswith(":"):
                        a, b = (int(x, 16) for x in head.split("-"))
                        inside = a < hi and b > lo
                    elif inside and head == "AnonHugePages:":
                        total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            return 0
        return min(total, self.layout.size)

    def describe(self) -> dict:
        """What the log line, /status and the metrics say about the memory."""
        return {
            "mode": self.mode,
            "size_bytes": self.layout.size,
            "used_bytes": self.layout.used,
            "huge_bytes": self.huge_bytes,
            "locked": self.locked,
            "regions": {r.name: {"offset": r.offset, "bytes": r.nbytes} for r in self.layout.regions},
        }
