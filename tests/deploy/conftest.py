"""Fixtures for the deployment tests: the frozen binary and a cached Debian rootfs to boot under systemd-nspawn."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"


@pytest.fixture(scope="session")
def frozen_binary() -> Path:
    """dist/appliance, built (or rebuilt when stale) by `build.py binary`; skips without PyInstaller."""
    from tests.deploy.binary import ensure_binary

    return ensure_binary()


@pytest.fixture(scope="session")
def debian_rootfs() -> Path:
    """A minimal Debian bookworm with systemd, debootstrapped once into .cache/nspawn/ and reused (read-only)."""
    from tests.deploy.nspawn import debian_rootfs, require_root_and_tools

    require_root_and_tools("debootstrap", "systemd-nspawn", "nsenter")
    return debian_rootfs(CACHE / "nspawn")
