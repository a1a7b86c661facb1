"""Where compiled numba kernels are cached, including inside a PyInstaller binary and on a read-only root.

Numba keys its cache on source files; a frozen binary has none, so there the cache is keyed on the
binary itself (the build id build.py writes into it) and lives under <cache dir>/frozen/<build id>/. Numba also checks only a
kernel's own file: a cached caller keeps the code of callees from other modules as they were when it
was compiled. So from source, kernels live in a subdirectory named after a fingerprint of the whole
package's source, and any edit anywhere starts a fresh cache. Call `configure` before importing any
module that defines a cached kernel: numba picks the locator at decoration time.
"""

import hashlib
import os
import shutil
import sys
import time

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STALE_AFTER_S = 7 * 86400  # other fingerprints' caches untouched this long are removed

ENV_CACHE_DIR = "APPLIANCE_CACHE_DIR"


def resolve_cache_dir(configured: str = "") -> str:
    """numba.cache_dir, else $APPLIANCE_CACHE_DIR, else $NUMBA_CACHE_DIR, else $XDG_CACHE_HOME/appliance, else ~/.cache/appliance."""
    for candidate in (configured, os.environ.get(ENV_CACHE_DIR), os.environ.get("NUMBA_CACHE_DIR")):
        if candidate:
            return os.path.abspath(candidate)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "appliance")


def source_fingerprint(package_dir: str = PACKAGE_DIR) -> str:
    """A short hash of every .py file of the package (paths and contents)."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                full = os.path.join(root, name)
                h.update(os.path.relpath(full, package_dir).encode() + b"\0")
                with open(full, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()[:16]


def _prune(base: str, keep: str) -> None:
    """Remove other source fingerprints' caches that nobody has used for a week (best effort)."""
    try:
        entries = os.listdir(base)
    except OSError:
        return
    now = time.time()
    for name in entries:
        full = os.path.join(base, name)
        if name.startswith("src-") and name != keep:
            try:
                if now - os.stat(full).st_mtime > STALE_AFTER_S:
                    shutil.rmtree(full, ignore_errors=True)
            except OSError:
                pass


def configure(configured: str = "") -> str:
    """Point numba's cache at the resolved directory and install the frozen-binary locator; returns the directory.

    From source the kernels go under <dir>/src-<fingerprint>; a frozen binary keys them on itself.
    """
    path = resolve_cache_dir(configured)
    if not getattr(sys, "frozen", False):
        sub = "src-" + source_fingerprint()
        _prune(path, sub)
        path = os.path.join(path, sub)
    os.environ["NUMBA_CACHE_DIR"] = path
    from numba.core import config as nb_config

    nb_config.CACHE_DIR = path
    _install_frozen_locator()
    return path


BUILD_ID_FILE = "appliance-build-id"  # written into the bundle by build.py binary


def frozen_build_id() -> str:
    """What the frozen binary's kernels are keyed on: the id build.py gave this build, carried inside the
    bundle, so that a copy (installed, in an image layer, with another mtime) still finds its cache; an
    older binary without one is keyed on its name, size and mtime."""
    try:
        with open(os.path.join(getattr(sys, "_MEIPASS", ""), BUILD_ID_FILE)) as f:
            return f.read().strip()
    except OSError:
        st = os.stat(sys.executable)
        return f"{os.path.basename(sys.executable)}-{st.st_size}-{int(st.st_mtime)}"


def _install_frozen_locator() -> None:
    from numba.core import caching

    if any(getattr(c, "__name__", "") == "_FrozenBinaryLocator" for c in _impl(caching)._locator_classes):
        return

    class _FrozenBinaryLocator(caching._CacheLocator):
        """Cache files for a frozen binary, in a directory named after the binary's identity."""

        def __init__(self, py_func, py_file):
            ident = frozen_build_id()
            self._stamp = ident
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
