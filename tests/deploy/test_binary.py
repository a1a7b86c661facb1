"""The frozen binary (dist/appliance, PyInstaller onefile): its kernel cache, warmup, and user strategies in it.

Builds the binary when it is missing or stale (about a minute; skips without PyInstaller). Uses the
runtime self-test config, whose hot loops compile in seconds, so that a cold cache is affordable here;
the trading path's start-up is measured by `python3 build.py bench startup`.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.binary import ROOT

pytestmark = pytest.mark.process

SELFTEST = """
[process]
name = "binary-test"
[runtime]
layout = "fused"
idle = "yield"
[memory]
lock = false
"""


@pytest.fixture(scope="module")
def binary(frozen_binary) -> Path:
    return frozen_binary


def _run(binary, args, cache, cwd, timeout=600):
    env = dict(os.environ, APPLIANCE_CACHE_DIR=str(cache))
    return subprocess.run([str(binary), *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _cache_files(cache: Path) -> dict:
    return {p.relative_to(cache): p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}


def test_version_says_frozen(binary, tmp_path):
    p = _run(binary, ["version", "--json"], tmp_path / "cache", tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["frozen"] is True


def test_warmup_keys_kernels_on_the_binary_and_a_second_warmup_compiles_nothing(binary, tmp_path):
    cfg = tmp_path / "selftest.toml"
    cfg.write_text(SELFTEST)
    cache = tmp_path / "cache"
    first = _run(binary, ["warmup", "-c", cfg, "--json"], cache, tmp_path)
    assert first.returncode == 0, first.stderr
    ident = json.loads(_run(binary, ["version", "--json"], cache, tmp_path).stdout)["build"]
    assert ident.startswith("appliance-")
    assert [p.name for p in (cache / "frozen").iterdir()] == [ident]
    modules = {p.name for p in (cache / "frozen" / ident).iterdir()}
    assert "appliance.runtime.hotloop" in modules, modules
    before = _cache_files(cache)
    assert any(str(p).endswith(".nbc") for p in before)

    second = _run(binary, ["warmup", "-c", cfg, "--json"], cache, tmp_path)
    assert second.returncode == 0, second.stderr
    # Every kernel was found: nothing new was written and no index was rewritten.
    assert _cache_files(cache) == before

    # A copy under another name with another mtime (installed, in an image layer) is the same build.
    copy = tmp_path / "bin" / "trading-appliance"
    copy.parent.mkdir()
    shutil.copy(binary, copy)
    os.utime(copy, (1_700_000_000, 1_700_000_000))
    third = _run(copy, ["warmup", "-c", cfg, "--json"], cache, tmp_path)
    assert third.returncode == 0, third.stderr
    assert _cache_files(cache) == before


def test_frozen_code_is_not_mistaken_for_source_under_a_checkout(binary, tmp_path):
    """Run from the repository root, where appliance/*.py exist under the same relative names the frozen code
    reports: the kernels must still be keyed on the binary, not cached as if they were source files."""
    cfg = tmp_path / "selftest.toml"
    cfg.write_text(SELFTEST)
    cache = tmp_path / "cache"
    p = _run(binary, ["warmup", "-c", cfg], cache, ROOT)
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in cache.iterdir()) == ["frozen"]


def test_user_strategy_loads_in_the_binary_and_an_edit_recompiles_it(binary, tmp_path):
    shutil.copy(ROOT / "config" / "strategies" / "example_quoter.py", tmp_path / "quoter.py")
    demo = (ROOT / "config" / "demo.toml").read_text()
    assert 'kind = "market_maker"' in demo
    cfg = tmp_path / "module.toml"
    cfg.write_text(demo.replace('kind = "market_maker"', 'kind = "module"\nmodule = "quoter.py"'))
    cache = tmp_path / "cache"

    first = _run(binary, ["config", "check", cfg], cache, tmp_path)
    assert first.returncode == 0, first.stderr
    user_cache = cache / "user-strategies"
    compiled = _cache_files(user_cache)
    assert any(p.name.startswith("quoter.quote-") for p in compiled), compiled

    # The module's own source keys its cache: unchanged, nothing is rewritten; edited, it compiles anew.
    again = _run(binary, ["config", "check", cfg], cache, tmp_path)
    assert again.returncode == 0, again.stderr
    assert _cache_files(user_cache) == compiled
    src = (tmp_path / "quoter.py").read_text()
    (tmp_path / "quoter.py").write_text(src.replace('"half_width": 200.0', '"half_width": 300.0'))
    edited = _run(binary, ["config", "check", cfg], cache, tmp_path)
    assert edited.returncode == 0, edited.stderr
    assert _cache_files(user_cache) != compiled

    # A broken module is refused by the binary as from source: exit 2 naming the key.
    (tmp_path / "quoter.py").write_text(src.replace("def quote(", "def quote_renamed("))
    broken = _run(binary, ["config", "check", cfg], cache, tmp_path)
    assert broken.returncode == 2
    assert "strategy.module" in broken.stderr


def test_doctor_json_agrees_with_its_exit_status(binary, tmp_path):
    cfg = tmp_path / "selftest.toml"
    cfg.write_text(SELFTEST)
    p = _run(binary, ["doctor", "--json", "-c", cfg], tmp_path / "cache", tmp_path, timeout=60)
    report = json.loads(p.stdout)
    assert p.returncode == (0 if report["valid"] else 1), p.stderr
    assert {c["name"] for c in report["checks"]} >= {"hugepages", "memlock", "hot_cores", "clocksource"}


def test_bad_config_exits_2_naming_the_key(binary, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[runtime]\nlayout = "sideways"\n')
    p = _run(binary, ["run", "-c", cfg], tmp_path / "cache", tmp_path, timeout=60)
    assert p.returncode == 2
    assert "runtime.layout" in p.stderr
