"""Helpers for the runtime tests: deadlines instead of sleeps, and HugePages gating (imported as `rt_support`)."""

import pytest

from tests.support import wait_for


wait_until = wait_for  # the runtime tests' name for the shared helper


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
