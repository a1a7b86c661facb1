"""Big-endian field helpers: the one-instruction numba path equals the byte-by-byte Python path."""

import numpy as np
import pytest
from numba import njit

from appliance.runtime import wire

GETTERS = (wire.get_u8, wire.get_u16, wire.get_u32, wire.get_u48, wire.get_u64, wire.get_alpha8)
WIDTH = {wire.put_u8: 1, wire.put_u16: 2, wire.put_u32: 4, wire.put_u48: 6, wire.put_u64: 8}


@njit
def _read_all(buf, off):
    return (wire.get_u8(buf, off), wire.get_u16(buf, off), wire.get_u32(buf, off), wire.get_u48(buf, off),
            wire.get_u64(buf, off), wire.get_alpha8(buf, off))


@njit
def _write_all(bufs, off, v):
    wire.put_u8(bufs[0], off, v)
    wire.put_u16(bufs[1], off, v)
    wire.put_u32(bufs[2], off, v)
    wire.put_u48(bufs[3], off, v)
    wire.put_u64(bufs[4], off, v)


def test_getters_match_python_at_every_alignment():
    rng = np.random.default_rng(7)
    buf = rng.integers(0, 256, 64, dtype=np.uint8)
    buf[:8] = 0xFF  # high bit set: a 64-bit field must come back as the same int64 bit pattern
    for off in range(0, 56):
        jit = _read_all(buf, off)
        py = tuple(g(buf, off) for g in GETTERS)
        assert tuple(int(x) for x in jit) == tuple(int(x) for x in py), off
        assert int(jit[2]) == int.from_bytes(bytes(buf[off:off + 4]), "big")
        assert int(jit[3]) == int.from_bytes(bytes(buf[off:off + 6]), "big")


def test_strided_views_take_the_byte_path():
    buf = np.arange(64, dtype=np.uint8)
    view = buf[::2]  # not contiguous: a single wide load would read the wrong bytes
    assert int(_read_all(view, 3)[2]) == int.from_bytes(bytes(view[3:7]), "big")


@pytest.mark.parametrize("value", [0, 1, 0x0102030405060708, 0x7FFFFFFFFFFFFFFF, 0xDEADBEEF])
def test_putters_match_python_and_touch_only_their_bytes(value):
    for off in (0, 1, 3, 7):
        jit = [np.full(24, 0xAA, dtype=np.uint8) for _ in range(5)]
        _write_all(tuple(jit), off, np.int64(value))
        for put, got in zip(WIDTH, jit):
            want = np.full(24, 0xAA, dtype=np.uint8)
            put(want, off, value)
            n = WIDTH[put]
            assert bytes(want[off:off + n]) == (value & ((1 << 8 * n) - 1)).to_bytes(n, "big")
            assert bytes(got) == bytes(want), (put.__name__, off)
