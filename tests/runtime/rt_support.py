"""Helpers for the runtime tests: deadlines instead of sleeps, and HugePages gating (imported as `rt_support`)."""

import time

import pytest


def wait_until(predicate, timeout: float, interval: float = 0.01, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value or `timeout` seconds pass; returns that value or fails."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def hugepages_free() -> int:
    from appliance.runtime.arena import meminfo_hugepages

    return meminfo_hugepages().get("HugePages_Free", 0)


def require_free_hugepages(pages: int) -> None:
    """Skip unless `pages` reserved 2 MiB HugePages are free right now."""
    from appliance.runtime.arena import meminfo_hugepages

    info = meminfo_hugepages()
    free, total = info.get("HugePages_Free", 0), info.get("HugePages_Total", 0)
    if free < pages:
        want = max(64, total + pages - free)
        pytest.skip(f"needs {pages} free 2 MiB HugePages, HugePages_Free is {free}; reserve them as root with "
                    f"`echo {want} > /proc/sys/vm/nr_hugepages` (CI reserves 64) and set it back after")
