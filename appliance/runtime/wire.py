"""Big-endian field access on uint8 buffers, for every wire format (ITCH, MoldUDP64, SoupBinTCP, OUCH).

Inside numba code a descriptor's `get_*`/`put_*` call on a contiguous uint8 array compiles to one
unaligned load or store and a byte swap (`movbe`); the same functions run as plain Python on the cold
path and under NUMBA_DISABLE_JIT.
No bounds checks: callers check a message's length against its descriptor once, before reading fields.
Every getter returns int64: numba types a shifted uint8 as uint64, and uint64 mixed with int64 becomes
float64, which would turn order arithmetic into floating point.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload


# ---- unaligned big-endian loads and stores (one mov + bswap, or movbe) -------------------------
def _be_pointer(context, builder, aryty, ary_val, off_val, offty, nbytes):
    ary = context.make_array(aryty)(context, builder, ary_val)
    off = context.cast(builder, off_val, offty, types.intp)
    return builder.bitcast(builder.gep(ary.data, [off]), ir.IntType(8 * nbytes).as_pointer())


def _make_be_load(nbytes):
    @intrinsic
    def _load(typingctx, buf, off):
        def codegen(context, builder, signature, args):
            ptr = _be_pointer(context, builder, signature.args[0], args[0], args[1], signature.args[1], nbytes)
            v = builder.load(ptr, align=1)
            if nbytes > 1:
                v = builder.bswap(v)
            return builder.zext(v, ir.IntType(64)) if nbytes < 8 else v

        return types.int64(buf, off), codegen

    return _load


def _make_be_store(nbytes):
    @intrinsic
    def _store(typingctx, buf, off, val):
        def codegen(context, builder, signature, args):
            ptr = _be_pointer(context, builder, signature.args[0], args[0], args[1], signature.args[1], nbytes)
            v = context.cast(builder, args[2], signature.args[2], types.int64)
            if nbytes < 8:
                v = builder.trunc(v, ir.IntType(8 * nbytes))
            if nbytes > 1:
                v = builder.bswap(v)
            builder.store(v, ptr, align=1)
            return context.get_dummy_value()

        return types.void(buf, off, val), codegen

    return _store


_load16, _load32, _load64 = (_make_be_load(n) for n in (2, 4, 8))
_store16, _store32, _store64 = (_make_be_store(n) for n in (2, 4, 8))


def _contiguous_bytes(buf):
    return isinstance(buf, types.Array) and buf.ndim == 1 and buf.layout == "C" and buf.dtype == types.uint8


# ---- getters and putters ------------------------------------------------------------------------
# Each is plain Python (for NUMBA_DISABLE_JIT and cold-path callers) with a numba overload: on a
# contiguous uint8 array a field is one unaligned load or store with a byte swap; any other array
# (a strided view) takes the byte-by-byte path.
def get_u8(buf, off):
    return np.int64(buf[off])


def get_u16(buf, off):
    return (np.int64(buf[off]) << 8) | np.int64(buf[off + 1])


def get_u32(buf, off):
    return ((np.int64(buf[off]) << 24) | (np.int64(buf[off + 1]) << 16) | (np.int64(buf[off + 2]) << 8)
            | np.int64(buf[off + 3]))


def get_u48(buf, off):
    v = np.int64(0)
    for i in range(6):
        v = (v << 8) | np.int64(buf[off + i])
    return v


def get_u64(buf, off):
    """An unsigned 64-bit field returned as int64 (all ITCH values fit below 2**63)."""
    v = np.int64(0)
    for i in range(8):
        v = (v << 8) | np.int64(buf[off + i])
    return v


def get_alpha8(buf, off):
    """An 8-byte space-padded ASCII field packed big-endian into one int64 (cheap to compare and store)."""
    return get_u64(buf, off)


def put_u8(buf, off, v):
    buf[off] = v & 0xFF


def put_u16(buf, off, v):
    buf[off] = (v >> 8) & 0xFF
    buf[off + 1] = v & 0xFF


def put_u32(buf, off, v):
    buf[off] = (v >> 24) & 0xFF
    buf[off + 1] = (v >> 16) & 0xFF
    buf[off + 2] = (v >> 8) & 0xFF
    buf[off + 3] = v & 0xFF


def put_u48(buf, off, v):
    for i in range(6):
        buf[off + 5 - i] = (v >> (8 * i)) & 0xFF


def put_u64(buf, off, v):
    for i in range(8):
        buf[off + 7 - i] = (v >> (8 * i)) & 0xFF


# The overloads are not IR-inlined (overload(inline="always")): under numba 0.68 that lost the caller's
# stores to other arrays in the L3 book (found by its tests). LLVM inlines these few instructions anyway.
def _overload_get(pyfunc, fast):
    slow = njit(inline="always")(pyfunc)

    @overload(pyfunc)
    def _ov(buf, off):
        return fast if _contiguous_bytes(buf) else (lambda buf, off: slow(buf, off))


def _overload_put(pyfunc, fast):
    slow = njit(inline="always")(pyfunc)

    @overload(pyfunc)
    def _ov(buf, off, v):
        return fast if fast is not None and _contiguous_bytes(buf) else (lambda buf, off, v: slow(buf, off, v))


_overload_get(get_u8, lambda buf, off: np.int64(buf[off]))
_overload_get(get_u16, lambda buf, off: _load16(buf, off))
_overload_get(get_u32, lambda buf, off: _load32(buf, off))
_overload_get(get_u48, lambda buf, off: (_load16(buf, off) << 32) | _load32(buf, off + 2))
_overload_get(get_u64, lambda buf, off: _load64(buf, off))
_overload_get(get_alpha8, lambda buf, off: _load64(buf, off))


def _put_u48_fast(buf, off, v):
    _store16(buf, off, v >> 32)
    _store32(buf, off + 2, v)


_overload_put(put_u8, None)
_overload_put(put_u16, lambda buf, off, v: _store16(buf, off, v))
_overload_put(put_u32, lambda buf, off, v: _store32(buf, off, v))
_overload_put(put_u48, _put_u48_fast)
_overload_put(put_u64, lambda buf, off, v: _store64(buf, off, v))


def alpha_to_int(text: str | bytes, width: int = 8) -> int:
    """Pack an ASCII field, left-justified and space-padded to `width`, the way get_u64 reads it."""
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    if len(raw) > width:
        raise ValueError(f"{raw!r} is longer than {width} bytes")
    return int.from_bytes(raw.ljust(width, b" "), "big")


def int_to_alpha(value: int, width: int = 8) -> str:
    """Unpack a field packed by alpha_to_int/get_u64, dropping the padding."""
    return (int(value) & ((1 << (8 * width)) - 1)).to_bytes(width, "big").decode("ascii", "replace").rstrip(" \x00")
