"""What a node offers the appliance, read from /proc and /sys under a root directory, plus the few live kernel probes.

`Node(root)` reads files under `root` ("/" on a real node; a fake tree in tests), so every file-based
fact can be made up. The probes ask the running kernel whatever the root: the route to an address
(netlink, pyroute2), the clock's sync state (adjtimex), a PTP clock's time, and whether SCHED_FIFO is
granted (tried on a short-lived thread, only when the root is "/").
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import os
import re
import threading
import time

from ..runtime.cpu import parse_cpulist

CAP_IPC_LOCK = 14
CAP_SYS_NICE = 23
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_MULTICAST = 0x1000
MAX_PROCESSES = 100_000  # bound on the /proc scan (a node has far fewer)


class Node:
    """File-based facts about a node, all paths taken under `root`."""

    def __init__(self, root: str = "/"):
        self.root = root
        self.live = os.path.realpath(root) == "/"

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *(p.lstrip("/") for p in parts))

    def read(self, *parts: str) -> str | None:
        """A file's stripped text, or None when it is missing or unreadable."""
        try:
            with open(self.path(*parts)) as f:
                return f.read().strip()
        except OSError:
            return None

    def exists(self, *parts: str) -> bool:
        return os.path.exists(self.path(*parts))

    # ---- CPUs -----------------------------------------------------------------------------------
    def sysfs_system(self) -> str:
        return self.path("sys/devices/system")

    def allowed_cpus(self) -> frozenset:
        """Cpus_allowed_list of this process (the same set sched_getaffinity gives); live affinity if absent."""
        m = re.search(r"^Cpus_allowed_list:\s*(\S+)", self.read("proc/self/status") or "", re.M)
        return frozenset(parse_cpulist(m.group(1))) if m else frozenset(os.sched_getaffinity(0))

    def cmdline(self) -> str:
        return self.read("proc/cmdline") or ""

    def governor(self, cpu: int) -> str | None:
        return self.read(f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")

    # ---- memory ---------------------------------------------------------------------------------
    def meminfo(self) -> dict:
        """/proc/meminfo as {key: first number} (kB for sizes, counts for HugePages_*)."""
        out = {}
        for line in (self.read("proc/meminfo") or "").splitlines():
            key, _, rest = line.partition(":")
            if rest.split() and rest.split()[0].isdigit():
                out[key.strip()] = int(rest.split()[0])
        return out

    def thp_mode(self) -> str | None:
        """The bracketed choice of transparent_hugepage/enabled ("always", "madvise", "never")."""
        m = re.search(r"\[(\w+)\]", self.read("sys/kernel/mm/transparent_hugepage/enabled") or "")
        return m.group(1) if m else None

    # ---- limits and capabilities ----------------------------------------------------------------
    def limit(self, name: str) -> tuple[float, float] | None:
        """(soft, hard) of a /proc/self/limits row such as "Max locked memory"; inf for unlimited."""
        for line in (self.read("proc/self/limits") or "").splitlines():
            if line.startswith(name):
                values = line[len(name):].split()[:2]
                return tuple(float("inf") if v == "unlimited" else float(v) for v in values)
        return None

    def has_capability(self, bit: int) -> bool | None:
        """Whether CapEff of this process holds capability `bit`; None when unknown."""
        m = re.search(r"^CapEff:\s*([0-9a-fA-F]+)", self.read("proc/self/status") or "", re.M)
        return bool(int(m.group(1), 16) >> bit & 1) if m else None

    def sysctl(self, name: str) -> str | None:
        return self.read("proc/sys", name.replace(".", "/"))

    # ---- processes ------------------------------------------------------------------------------
    def processes(self, comm: str) -> list[int]:
        """PIDs whose /proc/PID/comm is `comm` (in a container: only the container's own processes)."""
        try:
            entries = os.listdir(self.path("proc"))
        except OSError:
            return []
        pids = [int(e) for e in entries[:MAX_PROCESSES] if e.isdigit()]
        return sorted(p for p in pids if self.read(f"proc/{p}/comm") == comm)

    def environ(self, pid: int) -> dict:
        try:
            with open(self.path(f"proc/{pid}/environ"), "rb") as f:
                raw = f.read()
        except OSError:
            return {}
        pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
        return {k: v for k, _, v in pairs}

    # ---- network --------------------------------------------------------------------------------
    def link(self, name: str) -> dict | None:
        """State of a network interface from /sys/class/net/NAME; None when there is no such interface."""
        base = f"sys/class/net/{name}"
        if not self.exists(base):
            return None
        flags = self.read(base, "flags")
        mtu = self.read(base, "mtu")
        numa = self.read(base, "device/numa_node")
        ptp = []
        try:
            ptp = sorted(os.listdir(self.path(base, "device/ptp")))
        except OSError:
            pass
        return {
            "name": name,
            "flags": int(flags, 16) if flags else 0,
            "operstate": self.read(base, "operstate") or "unknown",
            "carrier": self.read(base, "carrier") == "1",
            "mtu": int(mtu) if mtu and mtu.isdigit() else None,
            "numa_node": int(numa) if numa and re.fullmatch(r"-?\d+", numa) else None,
            "ptp": ptp,
        }

    def ptp_devices(self) -> list[tuple[str, str]]:
        """(ptpN, clock_name) of every PTP hardware clock."""
        try:
            names = sorted(os.listdir(self.path("sys/class/ptp")))
        except OSError:
            return []
        return [(n, self.read(f"sys/class/ptp/{n}/clock_name") or "?") for n in names if n.startswith("ptp")]

    def clocksource(self) -> tuple[str | None, str]:
        base = "sys/devices/system/clocksource/clocksource0"
        return self.read(base, "current_clocksource"), self.read(base, "available_clocksource") or ""


# ---- live kernel probes ---------------------------------------------------------------------------

class RouteError(RuntimeError):
    """The kernel has no route to an address, or no interface holds it."""


@contextlib.contextmanager
def _stock_asyncio():
    """pyroute2 talks netlink through an asyncio loop of the current policy, and uvloop's (which a host
    process, such as the venue, may have installed) cannot open an AF_NETLINK datagram endpoint."""
    policy = asyncio.get_event_loop_policy()
    stock = type(policy) is asyncio.DefaultEventLoopPolicy
    if not stock:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        yield
    finally:
        if not stock:
            asyncio.set_event_loop_policy(policy)


def interface_for(address: str, local: bool) -> str:
    """The interface name the kernel uses: holding `address` (local=True), else routing to it."""
    from pyroute2 import IPRoute  # imported here: it costs a few hundred ms and only NIC checks need it

    with _stock_asyncio(), IPRoute() as ip:
        if local:
            addrs = ip.get_addr(address=address)
            if not addrs:
                raise RouteError(f"no interface has the address {address}")
            index = addrs[0]["index"]
        else:
            try:
                routes = ip.route("get", dst=address)
            except Exception as e:  # noqa: BLE001 - netlink says "network unreachable" as an exception
                raise RouteError(f"no route to {address}: {e}") from None
            index = routes[0].get("RTA_OIF")
        links = ip.get_links(index)
        return links[0].get("IFLA_IFNAME")


def is_multicast(address: str) -> bool:
    return ipaddress.ip_address(address).is_multicast


class _Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
                ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
                ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
                ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
                ("_reserved", ctypes.c_int * 11)]


STA_UNSYNC = 0x0040
STA_NANO = 0x2000
TIME_ERROR = 5


def adjtimex() -> dict | None:
    """The kernel clock discipline's state (read-only adjtimex); None where the call is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the libc already loaded (no ldconfig run; works frozen)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    scale = 1e-9 if tx.status & STA_NANO else 1e-6
    return {
        "state": state,
        "synced": not (tx.status & STA_UNSYNC) and state != TIME_ERROR,
        "offset_s": tx.offset * scale,
        "maxerror_s": tx.maxerror * 1e-6,
        "esterror_s": tx.esterror * 1e-6,
        "tai_s": tx.tai,
    }


def phc_minus_system(device: str) -> float | None:
    """Seconds by which /dev/DEVICE (a PTP hardware clock) is ahead of CLOCK_REALTIME; None if unreadable."""
    try:
        fd = os.open(f"/dev/{device}", os.O_RDONLY)
    except OSError:
        return None
    try:
        clock = ((~fd) << 3) | 3  # FD_TO_CLOCKID: a dynamic POSIX clock named by its descriptor
        before = time.clock_gettime_ns(time.CLOCK_REALTIME)
        phc = time.clock_gettime_ns(clock)
        after = time.clock_gettime_ns(time.CLOCK_REALTIME)
        return (phc - (before + after) // 2) * 1e-9
    except OSError:
        return None
    finally:
        os.close(fd)


def try_sched_fifo(priority: int) -> str | None:
    """Try SCHED_FIFO at `priority` on a throwaway thread; None when granted, else the error."""
    result = []

    def attempt():
        try:
            os.sched_setscheduler(threading.get_native_id(), os.SCHED_FIFO, os.sched_param(priority))
            result.append(None)
        except OSError as e:
            result.append(f"{e.strerror} (errno {e.errno})")

    t = threading.Thread(target=attempt, name="doctor-fifo-probe", daemon=True)
    t.start()
    t.join(5.0)
    return result[0] if result else "the probe thread did not finish in 5 s"
