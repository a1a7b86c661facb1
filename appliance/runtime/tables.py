"""Large hot-path tables (order books, gap buffers) on transparent huge pages, outside the arena.

A randomly indexed table of tens of MB on 4 KiB pages costs a TLB miss per lookup, and under a
hypervisor's nested paging a miss is a two-dimensional page walk: measured here, the L3 book ran at a
quarter of its speed on plain numpy memory. These arrays are carved from a 2 MiB-aligned anonymous
mapping with madvise(MADV_HUGEPAGE) and touched at once, so the kernel backs them with huge pages when
it has any (THP mode "madvise" or "always"); with THP off they are ordinary memory.
"""

import mmap

import numpy as np

HUGE_PAGE = 2 << 20


def huge_array(shape, dtype, fill=0) -> np.ndarray:
    """A C-contiguous array of `shape` and `dtype` on huge-page-advised memory, every element set to `fill`."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = max(count * dtype.itemsize, 1)
    if nbytes < HUGE_PAGE:  # small tables gain nothing and would waste most of a huge page
        return np.full(shape, fill, dtype=dtype)
    size = (nbytes + HUGE_PAGE - 1) // HUGE_PAGE * HUGE_PAGE
    mm = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = np.frombuffer(mm, dtype=np.uint8)
    skew = (-raw.ctypes.data) % HUGE_PAGE
    try:
        mm.madvise(mmap.MADV_HUGEPAGE, skew, size)
    except (OSError, AttributeError, ValueError):
        pass  # no THP here: ordinary pages
    arr = raw[skew:skew + count * dtype.itemsize].view(dtype).reshape(shape)
    if dtype.fields is None and fill == 0:
        arr[...] = 0  # fault every page in now, not on the hot path
    else:
        arr[...] = fill
    return arr
