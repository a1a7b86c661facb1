"""Memory-ordering and CPU primitives for numba hot loops (LLVM intrinsics, no Python objects).

A plain numpy load inside a spin loop is loop-invariant to LLVM and gets hoisted, so the loop
spins forever; every index another thread writes is read with `load_acquire` and written with
`store_release`. Single-writer counters use relaxed (monotonic) atomics so the compiler can
neither tear nor sink them out of a loop; on x86 all of these compile to plain moves.
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _item_pointer(context, builder, aryty, ary_val, idx_val):
    ary = context.make_array(aryty)(context, builder, ary_val)
    return cgutils.get_item_pointer(context, builder, aryty, ary, [idx_val], wraparound=False)


def _make_load(ordering):
    @intrinsic
    def _load(typingctx, arr, idx):
        if not isinstance(arr, types.Array) or arr.dtype not in (types.int64, types.uint64):
            return None

        def codegen(context, builder, signature, args):
            ptr = _item_pointer(context, builder, signature.args[0], args[0], args[1])
            return builder.load_atomic(ptr, ordering, 8)

        return arr.dtype(arr, idx), codegen

    return _load


def _make_store(ordering):
    @intrinsic
    def _store(typingctx, arr, idx, val):
        if not isinstance(arr, types.Array) or arr.dtype not in (types.int64, types.uint64):
            return None

        def codegen(context, builder, signature, args):
            aryty, _, valty = signature.args
            ptr = _item_pointer(context, builder, aryty, args[0], args[1])
            value = context.cast(builder, args[2], valty, aryty.dtype)
            builder.store_atomic(value, ptr, ordering, 8)
            return context.get_dummy_value()

        return types.void(arr, idx, val), codegen

    return _store


load_acquire = _make_load("acquire")
load_relaxed = _make_load("monotonic")
store_release = _make_store("release")
store_relaxed = _make_store("monotonic")


@intrinsic
def cpu_pause(typingctx):
    """The x86 `pause` spin-loop hint: saves power and avoids a memory-order flush on exit."""

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.VoidType(), [])
        builder.call(cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()

    return types.void(), codegen


@intrinsic
def rdtsc(typingctx):
    """The time-stamp counter (about 10 ns to read); invariant and shared by all cores on x86."""

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        return builder.call(cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter"), [])

    return types.int64(), codegen


@intrinsic
def leading_zeros(typingctx, val):
    """Count of leading zero bits of a 64-bit integer (lzcnt/bsr); 64 for zero."""
    if val not in (types.int64, types.uint64):
        return None

    def codegen(context, builder, signature, args):
        return builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))

    return val(val), codegen


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the CPU to bring arr[idx]'s cache line in (prefetcht0); never faults, never waits."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        ptr = _item_pointer(context, builder, signature.args[0], args[0], args[1])
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        builder.call(fn, [i8p, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen
