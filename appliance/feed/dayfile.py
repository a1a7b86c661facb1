"""NASDAQ ITCH 5.0 day files: every message preceded by its length, the whole file raw or gzipped.

This is the format NASDAQ publishes its history in (`MMDDYYYY.NASDAQ_ITCH50[.gz]`):

```
 +--------+--------+-------------------------+--------+--------+----------------- ...
 | length u16 (BE) | message (length bytes)  | length u16 (BE) | message ...
 +--------+--------+-------------------------+--------+--------+----------------- ...
```

A file is gzipped when it starts with the gzip magic (1f 8b), whatever its name. Readers load the
whole file, decompressed, into one uint8 array; the numba walkers below frame it without copying.
"""

from __future__ import annotations

import gzip
import os
from typing import Iterator

import numpy as np
from numba import njit

from ..runtime.wire import get_u16

PREFIX_SIZE = 2
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 24  # decompression step; the output array grows geometrically from the size hint


def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with the gzip magic."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def read_dayfile(path: str | os.PathLike) -> np.ndarray:
    """The whole day file as one writable uint8 array of length-prefixed messages (decompressed)."""
    if not is_gzip(path):
        return np.fromfile(path, dtype=np.uint8)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        # ISIZE (the last 4 bytes) is the uncompressed size mod 2**32 of the last member: a hint only.
        f.seek(max(size - 4, 0))
        hint = int.from_bytes(f.read(4), "little")
    buf = np.empty(max(hint, size, _CHUNK), dtype=np.uint8)
    n = 0
    with gzip.open(path, "rb") as f:
        while True:
            if len(buf) - n < _CHUNK:
                grown = np.empty(len(buf) * 2, dtype=np.uint8)
                grown[:n] = buf[:n]
                buf = grown
            got = f.readinto(memoryview(buf)[n:])
            if not got:
                break
            n += got
    return buf[:n].copy() if n < len(buf) // 2 else buf[:n]


def write_dayfile(path: str | os.PathLike, buf, compress: bool | None = None, level: int = 6) -> int:
    """Write length-prefixed messages to `path`, gzipped when `compress` is True (or None and the name ends .gz).

    Returns the number of uncompressed bytes written.
    """
    data = np.ascontiguousarray(buf, dtype=np.uint8)
    if compress is None:
        compress = os.fspath(path).endswith(".gz")
    if compress:
        with gzip.open(path, "wb", compresslevel=level) as f:
            f.write(memoryview(data))
    else:
        with open(path, "wb") as f:
            f.write(memoryview(data))
    return int(data.size)


@njit(nogil=True, cache=True)
def walk_frames(buf, start, end):
    """Count the whole frames in buf[start:end].

    Returns (n_messages, next_offset, bad_offset): next_offset is just past the last whole frame;
    bad_offset is where a truncated frame starts (== next_offset), or -1 when the range ends cleanly.
    """
    p = start
    n = 0
    while p + PREFIX_SIZE <= end:
        q = p + PREFIX_SIZE + get_u16(buf, p)
        if q > end:
            break
        n += 1
        p = q
    return n, p, (p if p < end else -1)


@njit(nogil=True, cache=True)
def index_frames(buf, start, end, offsets):
    """Record where each whole frame's message starts (just past its prefix), up to len(offsets).

    Returns (n_recorded, next_offset); the length of message i is get_u16(buf, offsets[i] - 2).
    """
    p = start
    n = 0
    cap = offsets.shape[0]
    while n < cap and p + PREFIX_SIZE <= end:
        q = p + PREFIX_SIZE + get_u16(buf, p)
        if q > end:
            break
        offsets[n] = p + PREFIX_SIZE
        n += 1
        p = q
    return n, p


@njit(nogil=True, cache=True)
def count_types(buf, start, end, counts):
    """Add each whole frame's first byte (its ITCH type) to counts[256]; returns the frames counted.

    Zero-length frames are counted under counts[0] (they have no type byte).
    """
    p = start
    n = 0
    while p + PREFIX_SIZE <= end:
        ln = get_u16(buf, p)
        q = p + PREFIX_SIZE + ln
        if q > end:
            break
        if ln == 0:
            counts[0] += 1
        else:
            counts[buf[p + PREFIX_SIZE]] += 1
        n += 1
        p = q
    return n


def type_counts(buf: np.ndarray) -> dict[str, int]:
    """Messages per ITCH type letter in a day-file buffer (tests and tools)."""
    counts = np.zeros(256, dtype=np.int64)
    count_types(buf, 0, buf.shape[0], counts)
    return {chr(t): int(c) for t, c in enumerate(counts) if c}


def iter_messages(buf, strict: bool = True) -> Iterator[memoryview]:
    """Yield each message of a day-file buffer as a memoryview (tests and tools, not the hot path).

    A truncated tail raises ValueError naming its offset when `strict`, else ends the iteration.
    """
    view = memoryview(np.ascontiguousarray(buf, dtype=np.uint8)).cast("B")
    end = len(view)
    p = 0
    while p < end:
        if p + PREFIX_SIZE > end:
            break
        q = p + PREFIX_SIZE + ((view[p] << 8) | view[p + 1])
        if q > end:
            break
        yield view[p + PREFIX_SIZE:q]
        p = q
    if p < end and strict:
        raise ValueError(f"truncated frame at offset {p}: {end - p} bytes left")


__all__ = ["PREFIX_SIZE", "GZIP_MAGIC", "is_gzip", "read_dayfile", "write_dayfile", "walk_frames",
           "index_frames", "count_types", "type_counts", "iter_messages"]
