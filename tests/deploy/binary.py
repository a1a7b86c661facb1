"""The frozen binary the deployment tests run: dist/appliance, rebuilt by `build.py binary` when stale."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "dist" / "appliance"
# What goes into the binary: a change to any of these makes the built one stale.
INPUTS = ("appliance", "config", "systemd", "build.py", "pyproject.toml")
BUILD_TIMEOUT_S = 1200


def newest_input_mtime() -> float:
    newest = 0.0
    for name in INPUTS:
        top = ROOT / name
        paths = [top] if top.is_file() else (p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        for p in paths:
            newest = max(newest, p.stat().st_mtime)
    return newest


def ensure_binary() -> Path:
    """Return dist/appliance, building it first if it is missing or older than its inputs; skip without PyInstaller."""
    if BINARY.is_file() and BINARY.stat().st_mtime >= newest_input_mtime():
        return BINARY
    if importlib.util.find_spec("PyInstaller") is None:
        pytest.skip("PyInstaller is not installed (python3 build.py test installs it; else pip install -e '.[build]')")
    p = subprocess.run([sys.executable, str(ROOT / "build.py"), "binary", "--no-smoke"], cwd=ROOT,
                       capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if p.returncode != 0:
        pytest.fail(f"build.py binary failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    assert BINARY.is_file() and os.access(BINARY, os.X_OK), "build.py binary left no executable dist/appliance"
    return BINARY
