"""Kernel cache: directory precedence, the frozen-binary locator (in subprocesses) and running from a read-only package."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance.runtime.cache import ENV_CACHE_DIR, resolve_cache_dir

ROOT = Path(__file__).resolve().parents[2]
DEMO_TOML = '[runtime]\nidle = "yield"\n[synthetic]\nrate = 100000\n'


# --- (a) precedence -------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in (ENV_CACHE_DIR, "NUMBA_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_resolve_precedence(clean_env, tmp_path):
    mp = clean_env
    assert resolve_cache_dir() == str(tmp_path / "home" / ".cache" / "appliance")
    mp.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == str(tmp_path / "xdg" / "appliance")
    mp.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    assert resolve_cache_dir() == str(tmp_path / "numba")
    mp.setenv(ENV_CACHE_DIR, str(tmp_path / "appliance"))
    assert resolve_cache_dir() == str(tmp_path / "appliance")
    assert resolve_cache_dir(str(tmp_path / "configured")) == str(tmp_path / "configured")
    assert resolve_cache_dir("") == str(tmp_path / "appliance")  # "" means not configured


def test_resolve_skips_empty_variables_and_makes_paths_absolute(clean_env, tmp_path):
    mp = clean_env
    mp.setenv(ENV_CACHE_DIR, "")
    mp.setenv("NUMBA_CACHE_DIR", "")
    mp.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == str(tmp_path / "xdg" / "appliance")
    mp.chdir(tmp_path)
    assert resolve_cache_dir("rel/cache") == str(tmp_path / "rel" / "cache")
    mp.setenv("NUMBA_CACHE_DIR", "nb")
    assert resolve_cache_dir() == str(tmp_path / "nb")


# --- (b) the frozen-binary locator, in subprocesses -----------------------------------------------

FROZEN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    fake_binary, cache_dir, module_dir = sys.argv[1:4]
    sys.frozen = True            # as PyInstaller sets it
    sys.executable = fake_binary
    from appliance.runtime import cache
    used = cache.configure(cache_dir)
    sys.path.insert(0, module_dir)
    import tinykernel
    result = tinykernel.triple_plus(14)
    stats = tinykernel.triple_plus.stats
    print(json.dumps({"result": result, "dir": used,
                      "hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values())}))
    """
)

TINY_MODULE = textwrap.dedent(
    """
    from numba import njit

    @njit(cache=True)
    def triple_plus(x):
        return 3 * x + 1
    """
)


def _run_frozen(tmp_path, fake_binary, cache_dir, kernel_cache_dir):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1", APPLIANCE_CACHE_DIR=kernel_cache_dir)
    env.pop("NUMBA_CACHE_DIR", None)
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "frozen_probe.py"), str(fake_binary), str(cache_dir), str(tmp_path / "mod")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["result"] == 43 and out["dir"] == str(cache_dir)
    return out


def _ident(binary: Path) -> str:
    st = binary.stat()
    return f"{binary.name}-{st.st_size}-{int(st.st_mtime)}"


def test_frozen_binary_cache_is_keyed_on_the_binary(tmp_path, kernel_cache_dir):
    (tmp_path / "frozen_probe.py").write_text(FROZEN_SCRIPT)
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "tinykernel.py").write_text(TINY_MODULE)
    binary = tmp_path / "bin" / "appliance"
    binary.parent.mkdir()
    binary.write_bytes(b"\x7fELF fake onefile binary" * 100)
    os.utime(binary, (1_700_000_000, 1_700_000_000))
    cache_dir = tmp_path / "cache"

    first = _run_frozen(tmp_path, binary, cache_dir, kernel_cache_dir)
    assert first["misses"] >= 1 and first["hits"] == 0
    ident_dir = cache_dir / "frozen" / _ident(binary)
    assert ident_dir.is_dir(), sorted(str(p) for p in cache_dir.rglob("*"))
    index = list(ident_dir.rglob("tinykernel.triple_plus-*.nbi"))
    data = list(ident_dir.rglob("tinykernel.triple_plus-*.nbc"))
    assert len(index) == 1 and data, sorted(str(p) for p in ident_dir.rglob("*"))
    assert not list((tmp_path / "mod").rglob("*.nb[ic]")), "the cache must not be written next to the source"
    assert not [p for p in cache_dir.rglob("*.nbi") if ident_dir not in p.parents]

    second = _run_frozen(tmp_path, binary, cache_dir, kernel_cache_dir)
    assert second["hits"] >= 1 and second["misses"] == 0, second

    # a new build of the binary (different size and mtime) gets a cache of its own
    binary.write_bytes(b"\x7fELF rebuilt onefile binary" * 150)
    os.utime(binary, (1_700_000_100, 1_700_000_100))
    third = _run_frozen(tmp_path, binary, cache_dir, kernel_cache_dir)
    new_dir = cache_dir / "frozen" / _ident(binary)
    assert new_dir != ident_dir and new_dir.is_dir()
    assert third["misses"] >= 1 and third["hits"] == 0
    assert list(new_dir.rglob("tinykernel.triple_plus-*.nbi"))
    assert sorted(p.name for p in (cache_dir / "frozen").iterdir()) == sorted([ident_dir.name, new_dir.name])


# --- (c) running from a read-only package --------------------------------------------------------


def _demo_cmd(config: Path) -> list:
    return [sys.executable, "-m", "appliance", "demo", "-c", str(config), "--seconds", "0.3", "--layout", "fused", "--json"]


def _check_demo(proc):
    assert proc.returncode == 0, f"rc {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    (layout,) = report["layouts"]
    assert layout["layout"] == "fused" and layout["events"] > 0 and layout["sequence_errors"] == 0
    assert layout["stopped_cleanly"] is True
    return report


@pytest.fixture
def package_copy(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(ROOT / "appliance", pkg / "appliance",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
    config = tmp_path / "demo.toml"
    config.write_text(DEMO_TOML)
    env = dict(os.environ, APPLIANCE_CACHE_DIR=str(tmp_path / "cache"), PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(pkg))
    for var in ("NUMBA_CACHE_DIR", "APPLIANCE_CONFIG"):
        env.pop(var, None)
    return pkg, config, env


def test_demo_caches_outside_the_package(package_copy, tmp_path):
    pkg, config, env = package_copy
    proc = subprocess.run(_demo_cmd(config), cwd=pkg, env=env, capture_output=True, text=True, timeout=240)
    cold = _check_demo(proc)["layouts"][0]["compile_seconds"]
    written = [p for p in pkg.rglob("*") if p.suffix in (".nbi", ".nbc", ".pyc") or p.name == "__pycache__"]
    assert not written, f"the package directory was written to: {written[:5]}"
    assert list((tmp_path / "cache").rglob("*.nbi")), "no kernel index files under APPLIANCE_CACHE_DIR"
    assert list((tmp_path / "cache").rglob("*.nbc"))

    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        pytest.skip("the read-only bind-mount check needs root and util-linux unshare/mount")
    indexes = sorted(p.relative_to(tmp_path) for p in (tmp_path / "cache").rglob("*.nbi"))
    script = (
        'mount --bind -o ro "$1" "$1" || exit 98; '
        'if touch "$1/appliance/.write-probe" 2>/dev/null; then echo "package is still writable" >&2; exit 97; fi; '
        'shift; exec "$@"'
    )
    ro = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(pkg), *_demo_cmd(config)],
                        cwd=pkg, env=env, capture_output=True, text=True, timeout=240)
    if ro.returncode == 98 or (ro.returncode == 1 and "unshare" in ro.stderr and not ro.stdout):
        pytest.skip(f"cannot make a read-only bind mount here: {ro.stderr.strip()[-300:]}")
    assert ro.returncode != 97, ro.stderr
    warm = _check_demo(ro)["layouts"][0]["compile_seconds"]
    assert warm < cold / 2, f"kernels took {warm} s from a warm cache vs {cold} s cold: the cache was not reused"
    assert not (pkg / "appliance" / ".write-probe").exists()
    assert not [p for p in pkg.rglob("*") if p.suffix in (".nbi", ".nbc", ".pyc")]
    # the warm cache was reused, not rebuilt under new names
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "cache").rglob("*.nbi")) == indexes
