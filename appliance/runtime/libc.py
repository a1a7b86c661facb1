"""libc, reached two ways: numba ExternalFunctions for hot loops (cacheable), ctypes for the control plane."""

import ctypes
import ctypes.util
import os

from numba import types

# Hot-path declarations: resolved by the JIT against the libc already loaded in the process.
sched_yield = types.ExternalFunction("sched_yield", types.int32())
usleep = types.ExternalFunction("usleep", types.int32(types.uint32))

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.munlock.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.mlockall.argtypes = (ctypes.c_int,)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)

MCL_CURRENT = 1
MCL_FUTURE = 2
PR_SET_NAME = 15


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mlock(address: int, length: int) -> None:
    """Lock a range in RAM so the hot path never takes a major page fault."""
    _check(_libc.mlock(address, length), "mlock")


def mlockall(flags: int = MCL_CURRENT | MCL_FUTURE) -> None:
    """Lock every present and future page of the process."""
    _check(_libc.mlockall(flags), "mlockall")


def set_thread_name(name: str) -> None:
    """Name the calling thread (shown by top -H, ps -L and /proc/self/task/*/comm; 15 bytes max)."""
    _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
