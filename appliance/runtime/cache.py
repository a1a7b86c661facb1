"""Where compiled numba kernels are cached, including inside a PyInstaller binary and on a read-only root.

Numba keys its cache on source files; a frozen binary has none, so there the cache is keyed on the
binary itself (its size and mtime) and lives under the cache directory. Call `configure` before
importing any module that defines a cached kernel: numba picks the locator at decoration time.
"""

import os
import sys

ENV_CACHE_DIR = "APPLIANCE_CACHE_DIR"


def resolve_cache_dir(configured: str = "") -> str:
    """numba.cache_dir, else $APPLIANCE_CACHE_DIR, else $NUMBA_CACHE_DIR, else $XDG_CACHE_HOME/appliance, else ~/.cache/appliance."""
    for candidate in (configured, os.environ.get(ENV_CACHE_DIR), os.environ.get("NUMBA_CACHE_DIR")):
        if candidate:
            return os.path.abspath(candidate)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "appliance")


def configure(configured: str = "") -> str:
    """Point numba's cache at the resolved directory and install the frozen-binary locator; returns the directory."""
    path = resolve_cache_dir(configured)
    os.environ["NUMBA_CACHE_DIR"] = path
    from numba.core import config as nb_config

    nb_config.CACHE_DIR = path
    _install_frozen_locator()
    return path


def _install_frozen_locator() -> None:
    from numba.core import caching

    if any(getattr(c, "__name__", "") == "_FrozenBinaryLocator" for c in _impl(caching)._locator_classes):
        return

    class _FrozenBinaryLocator(caching._CacheLocator):
        """Cache files for a frozen binary, in a directory named after the binary's identity."""

        def __init__(self, py_func, py_file):
            st = os.stat(sys.executable)
            self._stamp = (st.st_mtime, st.st_size)
            ident = f"{os.path.basename(sys.executable)}-{st.st_size}-{int(st.st_mtime)}"
            # The module name, not the file path: a onefile binary unpacks under a random _MEIxxxx dir.
            module = getattr(py_func, "__module__", None) or "unknown"
            self._cache_path = os.path.join(os.environ["NUMBA_CACHE_DIR"], "frozen", ident, module)

        def ensure_cache_path(self):
            os.makedirs(self._cache_path, exist_ok=True)
            # Fail now (numba then compiles without caching) rather than at save time.
            if not os.access(self._cache_path, os.W_OK):
                raise PermissionError(f"cache directory {self._cache_path} is not writable")

        def get_cache_path(self):
            return self._cache_path

        def get_source_stamp(self):
            return self._stamp

        def get_disambiguator(self):
            return ""

        @classmethod
        def from_function(cls, py_func, py_file):
            if not getattr(sys, "frozen", False) or not os.environ.get("NUMBA_CACHE_DIR"):
                return None
            locator = cls(py_func, py_file)
            try:
                locator.ensure_cache_path()
            except OSError:
                return None  # numba falls through to its other locators, or compiles without a cache
            return locator

    _impl(caching)._locator_classes.insert(0, _FrozenBinaryLocator)


def _impl(caching):
    """numba's cache implementation base class (renamed from _CacheImpl to CacheImpl in 0.61)."""
    return getattr(caching, "CacheImpl", None) or caching._CacheImpl
