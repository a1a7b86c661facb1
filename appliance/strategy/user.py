"""User strategies: one plain Python function in a file named by `strategy.module`, compiled by numba and
called on the strategy hot thread, while the framework manages the orders.

The file declares its parameters and defines `quote` (and optionally `on_fill`); it needs no numba import:

    PARAMS = {"half_width": 200.0, "quote_size": 100}    # names and defaults, in order; [strategy.params] overrides

    def quote(params, state, sym, bid, bid_qty, ask, ask_qty, position, now_ns, target):
        ...fill target...
        return 1                                        # 1: bring the working orders to target; 0: leave them

    def on_fill(params, state, sym, side, price, qty, position):   # optional; returns nothing
        ...

quote runs on every change of a traded symbol's two-sided touch, and again when one of its orders settles
(accepted, filled, canceled, refused), so a quiet market still gets an answer:
  params   float64[::1]  the PARAMS values in declaration order (rewritten on a config reload)
  state    float64[::1]  16 words of this symbol's scratch, zero at start, kept between calls (yours alone)
  sym      int64         index of the symbol in strategy.symbols
  bid, ask int64         the touch, prices in 1e-4 dollars; bid_qty, ask_qty its sizes in shares
  position int64         shares held (negative: short), counting every fill so far
  now_ns   int64         a monotonic clock in nanoseconds (the TSC scaled): compare differences only
  target   int64[::1]    [bid_px, bid_qty, ask_px, ask_qty, tif], preset to the working orders (price and shares
                         still working; 0 where a side has none); qty 0 = no order on that side; tif 0 = day,
                         3 = immediate-or-cancel
on_fill runs on each fill of one of its orders: side 0 buy / 1 sell, price and qty of the fill, and the
position after it.

Returning 1 hands the target to the same side machinery the market maker uses: a new order where a side
has none, a replace when the price moved `strategy.replace_ticks` ticks or the quantity differs from the
shares still working (a partial fill is topped up), a cancel when the quantity goes to 0; never two requests in flight on one side, at most one action per side per
`strategy.refresh_us`, UserRefNums and the gateway's refusals handled. Risk checks apply as to any order.

Compiling: both functions are compiled with numba `njit(<the signature above>, nogil=True)` at config
validation (so `appliance config check` reports errors), in nopython mode; a function using
`numba.objmode` is refused (it would take the GIL on the hot thread). Other plain functions in the file are
compiled too, so `quote` may call them. Allocating (e.g. `np.empty`) works but costs latency on every
call; an exception raised at run time (e.g. integer division by zero) is printed, taking the GIL, and
counts as returning 0. Indices are not bounds-checked: stay within `state`'s 16 words and `target`'s 5.

The compiled code is cached in the kernel cache directory (under `user-strategies/`), keyed by the file's
content, so a changed file recompiles; helpers imported from other files are not tracked (touch the
strategy file after changing them). The hot loops receive the functions as first-class function values
(`numba.types.FunctionType`), so the loops themselves stay cached whatever module is loaded; the built-in
strategies get no-op functions of the same type.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass

from numba import njit, types
from numba.core import caching
from numba.core import config as nb_config
from numba.core.types import WrapperAddressProtocol

STATE_WORDS = 16
TARGET_WORDS = 8
T_BID_PX, T_BID_QTY, T_ASK_PX, T_ASK_QTY, T_TIF = range(5)
TIF_IOC_CODE = 3  # what the user writes in target[T_TIF] for immediate-or-cancel (OUCH's '3')

_I = types.int64
_FA = types.float64[::1]
QUOTE_SIG = _I(_FA, _FA, _I, _I, _I, _I, _I, _I, _I, types.int64[::1])
FILL_SIG = types.void(_FA, _FA, _I, _I, _I, _I, _I)
QUOTE_ARGS = ("params", "state", "sym", "bid", "bid_qty", "ask", "ask_qty", "position", "now_ns", "target")
FILL_ARGS = ("params", "state", "sym", "side", "price", "qty", "position")
KEY = "strategy.module"
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class StrategyError(ValueError):
    """A user strategy that cannot be used; `key` is the config key path to blame."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(message)


class CompiledFunction(WrapperAddressProtocol):
    """A compiled function handed to the hot loops by address: numba types it FunctionType(signature)
    whichever function it is, so the loops taking it are compiled (and cached) once for all of them."""

    def __init__(self, dispatcher, sig):
        self.dispatcher = dispatcher  # keeps the machine code alive
        self.sig = sig
        cres = dispatcher.overloads[sig.args]
        self._addr = cres.library.get_pointer_to_function(cres.fndesc.llvm_cfunc_wrapper_name)

    def __wrapper_address__(self):
        return self._addr

    def signature(self):
        return self.sig


@dataclass(frozen=True)
class UserStrategy:
    """A loaded, compiled user strategy: its file, parameters and the two functions for the hot loops."""

    path: str
    digest: str  # sha256 of the file as compiled
    names: tuple[str, ...]
    defaults: tuple[float, ...]
    quote: CompiledFunction
    on_fill: CompiledFunction
    has_on_fill: bool
    seconds: float  # to compile or load from the cache
    cached: bool  # every function came from the kernel cache


def resolve_path(module: str, config_source: str) -> str:
    """strategy.module as an absolute path: relative to the config file's directory (the working directory
    for a config that is not a file)."""
    module = os.path.expanduser(module)
    if os.path.isabs(module):
        return os.path.normpath(module)
    base = os.path.dirname(os.path.abspath(config_source)) if os.path.isfile(config_source) else os.getcwd()
    return os.path.normpath(os.path.join(base, module))


_loaded: dict[str, UserStrategy] = {}
_user_files: set[str] = set()


def load(path: str) -> UserStrategy:
    """Import the strategy file at `path` (absolute) and compile its functions, or load them from the kernel
    cache; the same file unchanged is loaded once per process. Raises StrategyError.

    Call after `appliance.runtime.cache.configure`: the compiled code goes under its directory."""
    try:
        with open(path, "rb") as f:
            source = f.read()
    except FileNotFoundError:
        raise StrategyError(KEY, f"{path}: no such file") from None
    except OSError as e:
        raise StrategyError(KEY, f"{path}: cannot read: {e.strerror or e}") from None
    digest = hashlib.sha256(source).hexdigest()
    done = _loaded.get(path)
    if done is not None and done.digest == digest:
        return done
    module = _import(path)
    names, defaults = _params(module, path)
    quote = _function(module, "quote", QUOTE_ARGS, path, required=True)
    on_fill = _function(module, "on_fill", FILL_ARGS, path, required=False)
    _user_files.add(os.path.realpath(path))
    _install_locator()
    _compile_helpers(module, exclude=(quote, on_fill))
    t0 = time.monotonic()
    q = _compile(quote, QUOTE_SIG, path)
    fill = _compile(on_fill, FILL_SIG, path) if on_fill is not None else None
    seconds = time.monotonic() - t0
    cached = all(bool(d.stats.cache_hits) for d in (q, fill) if d is not None)
    strategy = UserStrategy(path=path, digest=digest, names=names, defaults=defaults,
                            quote=CompiledFunction(q, QUOTE_SIG),
                            on_fill=CompiledFunction(fill, FILL_SIG) if fill is not None else builtin()[1],
                            has_on_fill=fill is not None, seconds=seconds, cached=cached)
    _loaded[path] = strategy
    return strategy


def _import(path: str):
    """Execute the file as a module registered in sys.modules (numba finds a cached function's globals there)."""
    name = "appliance_user_strategy_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise StrategyError(KEY, f"{path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # SystemExit and KeyboardInterrupt in a strategy file are its errors too
        del sys.modules[name]
        if isinstance(e, KeyboardInterrupt):
            raise
        where = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
        at = f" (line {where[-1].lineno})" if where else ""
        raise StrategyError(KEY, f"importing {path} failed{at}: {type(e).__name__}: {e}") from None
    return module


def _params(module, path: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    declared = getattr(module, "PARAMS", {})
    if not isinstance(declared, dict):
        raise StrategyError(KEY, f"{path}: PARAMS must be a dict of parameter names to numbers; got "
                            f"{type(declared).__name__}")
    for name, value in declared.items():
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise StrategyError(KEY, f"{path}: PARAMS name {name!r} is not an identifier")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StrategyError(KEY, f"{path}: PARAMS[{name!r}] must be a number; got {value!r}")
    return tuple(declared), tuple(float(v) for v in declared.values())


def _function(module, name: str, args: tuple[str, ...], path: str, required: bool):
    fn = getattr(module, name, None)
    fn = getattr(fn, "py_func", fn)  # already decorated with numba: compiled again with our options
    if fn is None and not required:
        return None
    wanted = f"{name}({', '.join(args)})"
    if not inspect.isfunction(fn):
        raise StrategyError(KEY, f"{path} defines no function {wanted}" if fn is None else
                            f"{path}: {name} is a {type(fn).__name__}, not a function {wanted}")
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != len(args) or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params):
        raise StrategyError(KEY, f"{path}: {name} must take the {len(args)} arguments {wanted}; it takes "
                            f"({', '.join(map(str, params))})")
    return fn


def _compile_helpers(module, exclude) -> None:
    """Compile the file's other plain functions lazily, so that quote and on_fill may call them."""
    for attr, obj in list(vars(module).items()):
        if inspect.isfunction(obj) and obj.__module__ == module.__name__ and obj not in exclude:
            setattr(module, attr, njit(nogil=True, cache=True)(obj))


def _compile(fn, sig, path: str):
    """njit with the explicit signature (nopython, nogil, cached); errors name the function and numba's reason."""
    described = f"{fn.__name__}{_describe(sig, QUOTE_ARGS if sig is QUOTE_SIG else FILL_ARGS)}"
    try:
        disp = njit(sig, nogil=True, cache=True)(fn)
    except Exception as e:
        lines = [ln.rstrip() for ln in str(e).splitlines() if ln.strip()]
        reason = "\n    ".join(lines[:8]) or type(e).__name__
        raise StrategyError(KEY, f"{path}: {described} does not compile in numba's nopython mode:\n    "
                            f"{reason}") from None
    if disp.overloads[sig.args].lifted:
        raise StrategyError(KEY, f"{path}: {fn.__name__} uses numba.objmode, which takes the GIL on the hot "
                            "thread; strategies must run in nopython mode throughout")
    return disp


def _describe(sig, names) -> str:
    args = ", ".join(f"{n}: {t}" for n, t in zip(names, sig.args))
    return f"({args}) -> {sig.return_type}"


# ---- the built-in kinds' stand-ins ----------------------------------------------------------------

def _noop_quote(params, state, sym, bid, bid_qty, ask, ask_qty, position, now_ns, target):
    return 0


def _noop_fill(params, state, sym, side, price, qty, position):
    return None


_builtin: tuple[CompiledFunction, CompiledFunction] | None = None


def builtin() -> tuple[CompiledFunction, CompiledFunction]:
    """(quote, on_fill) that do nothing, for the built-in kinds: the same kernels serve every kind."""
    global _builtin
    if _builtin is None:  # compiled on first use, after the kernel cache is configured
        _builtin = (CompiledFunction(njit(QUOTE_SIG, nogil=True, cache=True)(_noop_quote), QUOTE_SIG),
                    CompiledFunction(njit(FILL_SIG, nogil=True, cache=True)(_noop_fill), FILL_SIG))
    return _builtin


def write_params(strategy: UserStrategy | None, values: dict[str, float], out) -> list[str]:
    """Write the parameters in the running strategy's order into the array it reads (defaults for names the
    config leaves out); returns the config's names the running strategy does not declare."""
    if strategy is None:
        return []
    for i, (name, default) in enumerate(zip(strategy.names, strategy.defaults)):
        out[i] = values.get(name, default)
    return [n for n in values if n not in strategy.names]


# ---- caching the user's file ----------------------------------------------------------------------

def _impl_class():
    return getattr(caching, "CacheImpl", None) or caching._CacheImpl


class _UserFileLocator(caching._CacheLocator):
    """Cache for functions of a loaded strategy file: under the kernel cache directory, keyed by the file's
    content. Numba's own locators would stamp a frozen binary's functions with the binary, so an edited
    strategy would never recompile there; and nothing is written beside the user's file."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(nb_config.CACHE_DIR, "user-strategies",
                                        self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self):
        return self._cache_path

    def get_source_stamp(self):
        with open(self._py_file, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def get_disambiguator(self):
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        if not nb_config.CACHE_DIR or os.path.realpath(py_file) not in _user_files:
            return None
        locator = cls(py_func, py_file)
        try:
            locator.ensure_cache_path()
        except OSError:
            return None  # numba compiles without a cache
        return locator


def _install_locator() -> None:
    classes = _impl_class()._locator_classes
    if _UserFileLocator not in classes:
        classes.insert(0, _UserFileLocator)  # ahead of the frozen-binary locator, which keys on the binary
