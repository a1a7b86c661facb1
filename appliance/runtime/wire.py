"""Big-endian field access on uint8 buffers, for every wire format (ITCH, MoldUDP64, SoupBinTCP, OUCH).

All helpers are numba `njit(inline="always")`, so a descriptor's `get_*`/`put_*` calls compile to a few
byte loads and shifts inside the hot loop; they also run as plain Python under NUMBA_DISABLE_JIT.
No bounds checks: callers check a message's length against its descriptor once, before reading fields.
Every getter returns int64: numba types a shifted uint8 as uint64, and uint64 mixed with int64 becomes
float64, which would turn order arithmetic into floating point.
"""

import numpy as np
from numba import njit


@njit(inline="always", cache=True)
def get_u8(buf, off):
    return np.int64(buf[off])


@njit(inline="always", cache=True)
def get_u16(buf, off):
    return (np.int64(buf[off]) << 8) | np.int64(buf[off + 1])


@njit(inline="always", cache=True)
def get_u32(buf, off):
    return ((np.int64(buf[off]) << 24) | (np.int64(buf[off + 1]) << 16) | (np.int64(buf[off + 2]) << 8)
            | np.int64(buf[off + 3]))


@njit(inline="always", cache=True)
def get_u48(buf, off):
    v = np.int64(0)
    for i in range(6):
        v = (v << 8) | np.int64(buf[off + i])
    return v


@njit(inline="always", cache=True)
def get_u64(buf, off):
    """An unsigned 64-bit field returned as int64 (all ITCH values fit below 2**63)."""
    v = np.int64(0)
    for i in range(8):
        v = (v << 8) | np.int64(buf[off + i])
    return v


@njit(inline="always", cache=True)
def get_alpha8(buf, off):
    """An 8-byte space-padded ASCII field packed big-endian into one int64 (cheap to compare and store)."""
    return get_u64(buf, off)


@njit(inline="always", cache=True)
def put_u8(buf, off, v):
    buf[off] = v & 0xFF


@njit(inline="always", cache=True)
def put_u16(buf, off, v):
    buf[off] = (v >> 8) & 0xFF
    buf[off + 1] = v & 0xFF


@njit(inline="always", cache=True)
def put_u32(buf, off, v):
    buf[off] = (v >> 24) & 0xFF
    buf[off + 1] = (v >> 16) & 0xFF
    buf[off + 2] = (v >> 8) & 0xFF
    buf[off + 3] = v & 0xFF


@njit(inline="always", cache=True)
def put_u48(buf, off, v):
    for i in range(6):
        buf[off + 5 - i] = (v >> (8 * i)) & 0xFF


@njit(inline="always", cache=True)
def put_u64(buf, off, v):
    for i in range(8):
        buf[off + 7 - i] = (v >> (8 * i)) & 0xFF


def alpha_to_int(text: str | bytes, width: int = 8) -> int:
    """Pack an ASCII field, left-justified and space-padded to `width`, the way get_u64 reads it."""
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    if len(raw) > width:
        raise ValueError(f"{raw!r} is longer than {width} bytes")
    return int.from_bytes(raw.ljust(width, b" "), "big")


def int_to_alpha(value: int, width: int = 8) -> str:
    """Unpack a field packed by alpha_to_int/get_u64, dropping the padding."""
    return (int(value) & ((1 << (8 * width)) - 1)).to_bytes(width, "big").decode("ascii", "replace").rstrip(" \x00")
