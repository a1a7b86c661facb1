"""Fixtures for the deployment tests: the frozen binary and a cached Debian rootfs to boot under systemd-nspawn."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"


@pytest.fixture(scope="session")
def frozen_binary() -> Path:
    """The PyInstaller binary to deploy: $APPLIANCE_BINARY (to be replaced by one that runs build.py binary)."""
    path = os.environ.get("APPLIANCE_BINARY")
    if not path:
        pytest.skip("no frozen binary: set APPLIANCE_BINARY to one built by `python3 build.py binary`")
    binary = Path(path).resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"APPLIANCE_BINARY={path} is not an executable file")
    return binary


@pytest.fixture(scope="session")
def debian_rootfs() -> Path:
    """A minimal Debian bookworm with systemd, debootstrapped once into .cache/nspawn/ and reused (read-only)."""
    from tests.deploy.nspawn import debian_rootfs, require_root_and_tools

    require_root_and_tools("debootstrap", "systemd-nspawn", "nsenter")
    return debian_rootfs(CACHE / "nspawn")
