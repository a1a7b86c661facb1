"""Fixtures for the runtime tests."""

import os

import pytest


@pytest.fixture(scope="session")
def kernel_cache_dir(tmp_path_factory) -> str:
    """Numba kernel cache for subprocesses: $APPLIANCE_CACHE_DIR when set (warm across runs), else a session tmp dir."""
    return os.environ.get("APPLIANCE_CACHE_DIR") or str(tmp_path_factory.mktemp("kernel-cache"))
