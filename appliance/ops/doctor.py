"""`appliance doctor`: can this node run this config? One line per check, a fix under each problem.

Run before the appliance is scheduled on a node: from ExecStartPre, in an initContainer, or by hand.
Each check is ok, warn, fail or skip; the config decides which shortfalls are failures (cpu.strict,
memory.require_hugepages, memory.lock, cpu.sched_fifo). Exit 0 when nothing failed, 1 when something
did, 2 for a bad config or usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import socket
import sys
import textwrap
import time
import typing

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
CHECKS = ("hot_cores", "nohz_full", "numa", "hugepages", "memlock", "sched_fifo", "governor", "thp",
          "irqbalance", "nic.feed", "nic.gateway", "clock_sync", "clocksource")
EXIT_VALID, EXIT_INVALID, EXIT_USAGE = 0, 1, 2

DESCRIPTION = """\
Check that this node can run the appliance with a config, before it is scheduled here: isolated and
nohz_full hot cores, NUMA locality, free HugePages for the arena, the memlock limit, SCHED_FIFO
permission, CPU frequency governor, transparent huge pages, irqbalance, the feed and order-entry
NICs (present, up, MTU, multicast), clock synchronisation and PTP clocks, and the clock source.

Each check is ok, warn, fail or skip. What fails follows the config: unisolated hot cores fail
under cpu.strict = true (else warn), too few free HugePages fail under
memory.require_hugepages = true (else warn: the arena falls back), a memlock limit below the arena
fails under memory.lock = true, no SCHED_FIFO permission fails under cpu.sched_fifo = true. Every
problem is printed with how to fix it. Nothing is changed on the node and no kernel is compiled.
"""

EPILOG = """\
examples:
  appliance doctor -c /etc/appliance/appliance.toml        the table, for a person
  appliance doctor -c appliance.toml --json                 {"valid": ..., "checks": [...], "failures": [...]}
  appliance doctor --warn-only hot_cores,nic.feed           on a laptop: report those, do not fail on them
  ExecStartPre=/usr/bin/appliance doctor -c /etc/appliance/appliance.toml

--root DIR reads /proc and /sys under DIR instead of / (a copy of another node's files, or a test's
fake tree); the route lookup, adjtimex and the SCHED_FIFO attempt still ask the running kernel (the
SCHED_FIFO attempt only when DIR is /).

checks: """ + ", ".join(CHECKS) + """

exit status: 0 nothing failed (warnings allowed); 1 at least one check failed; 2 bad config or usage.
"""


@dataclasses.dataclass
class Check:
    """One check's verdict: `detail` says what was found, `fix` how to put it right (empty when ok)."""

    name: str
    status: str
    detail: str
    fix: str = ""


@dataclasses.dataclass
class Context:
    """The facts several checks share, gathered once."""

    cfg: object
    node: object
    topo: object
    placement: object
    hot: list  # the hot cores the placement chose, sorted, unique
    layout: object
    nics: dict  # role -> Nic


def cpus(cores) -> str:
    """CPUs as a cpulist ("0-3,8"), or "none"."""
    from ..runtime.cpu import format_cpulist

    return format_cpulist(cores) or "none"


def size(n: float) -> str:
    """Bytes for a person: 64 KiB, 2 MiB, 1.5 GiB, unlimited."""
    if n == float("inf"):
        return "unlimited"
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n:g} bytes"


def hard(flag: bool) -> str:
    """A shortfall the config insists on is a failure, otherwise a warning."""
    return FAIL if flag else WARN


# ---- CPU ------------------------------------------------------------------------------------------

def check_hot_cores(ctx: Context) -> Check:
    cfg, topo, placement = ctx.cfg, ctx.topo, ctx.placement
    where = " ".join(f"{r}={c}" for r, c in placement.hot.items()) + f" (control {cpus(placement.control)})"
    if not placement.problems:
        return Check("hot_cores", OK, f"{where}: dedicated, allowed and isolated")
    # The runtime's plan() found the problems (its sentences are in the log at start); here they are
    # summarised by kind, each with its fix.
    cores = list(placement.hot.values())
    problems, fixes = [], []
    if len(set(cores)) < len(cores):
        problems.append(f"{len(cores)} hot threads share {len(set(cores))} core(s) (allowed CPUs: {cpus(topo.allowed)})")
        fixes.append(f"give the process at least {len(cores) + 1} CPUs (systemd CPUAffinity=, Kubernetes: a "
                     "Guaranteed pod with whole CPUs and the static CPU manager), or set runtime.layout = \"fused\"")
        if cfg.runtime.idle == "spin":
            problems.append('runtime.idle = "spin" on shared cores starves them')
            fixes.append('use runtime.idle = "yield" while cores are shared')
    outside = sorted(c for c in set(cores) if c not in topo.allowed)
    if outside:
        problems.append(f"configured core(s) {cpus(outside)} are not among the CPUs this process may use "
                        f"({cpus(topo.allowed)}): `appliance run` refuses the config here")
        fixes.append(f"set cpu.<role> to allowed cores ({cpus(topo.allowed)}) or widen the process's cpuset "
                     "(systemd AllowedCPUs=/CPUAffinity=, Kubernetes: more whole CPUs)")
    loose = sorted(c for c in set(cores) if c in topo.allowed and c not in topo.isolated)
    if loose:
        problems.append(f"core(s) {cpus(loose)} are not isolated (isolated: {cpus(topo.isolated)}), so the "
                        "scheduler and interrupts run other work there")
        fixes.append(f"isolate them: add `isolcpus=managed_irq,domain,{cpus(loose)} nohz_full={cpus(loose)} "
                     f"rcu_nocbs={cpus(loose)}` to the kernel command line and reboot (Kubernetes: the static CPU "
                     "manager with the other CPUs reserved by kubelet --reserved-cpus)")
    shared_control = set(cores) & set(placement.control)
    if shared_control:
        problems.append(f"the control plane shares core(s) {cpus(shared_control)} with hot threads")
        fixes.append("set cpu.control to cores that no hot thread uses")
    if outside:  # a config error on this node whatever cpu.strict says
        return Check("hot_cores", FAIL, f"{where}: " + "; ".join(problems), "; ".join(fixes))
    tail = "" if cfg.cpu.strict else " (cpu.strict = false: the appliance starts anyway and warns)"
    return Check("hot_cores", hard(cfg.cpu.strict), f"{where}: " + "; ".join(problems) + tail, "; ".join(fixes))


def check_nohz_full(ctx: Context) -> Check:
    if not ctx.node.exists("sys/devices/system/cpu/nohz_full"):
        return Check("nohz_full", WARN, "this kernel has no nohz_full support (CONFIG_NO_HZ_FULL): the "
                     "scheduler tick interrupts the hot cores",
                     "use a kernel built with CONFIG_NO_HZ_FULL (most distribution kernels are) and boot with "
                     f"nohz_full={cpus(ctx.hot)}")
    missing = [c for c in ctx.hot if c not in ctx.topo.nohz_full]
    if not missing:
        return Check("nohz_full", OK, f"hot cores {cpus(ctx.hot)} are nohz_full (no scheduler tick while one task runs)")
    return Check("nohz_full", WARN, f"hot core(s) {cpus(missing)} are not nohz_full (nohz_full: "
                 f"{cpus(ctx.topo.nohz_full)}): the scheduler tick interrupts them every few ms",
                 f"add `nohz_full={cpus(missing)} rcu_nocbs={cpus(missing)}` to the kernel command line and reboot")


def check_numa(ctx: Context) -> Check:
    numa = ctx.topo.numa
    nodes = sorted({numa.get(c, 0) for c in ctx.hot})
    problems, fixes = [], []
    if len(nodes) > 1:
        problems.append(f"hot cores {cpus(ctx.hot)} span NUMA nodes {nodes}: their rings cross the interconnect")
        fixes.append(f"configure hot cores from one node (node {nodes[0]}: {cpus(c for c, n in numa.items() if n == nodes[0])})")
    for role, nic in ctx.nics.items():
        name, link = nic.ifname, nic.link
        nic_node = link.get("numa_node") if link else None
        if nic_node is None or nic_node < 0 or len(set(numa.values())) < 2:
            continue
        if nic_node not in nodes:
            problems.append(f"the {role} NIC {name} is on NUMA node {nic_node}, the hot cores on {nodes}")
            fixes.append(f"put the hot cores on node {nic_node} ({cpus(c for c, n in numa.items() if n == nic_node)}) "
                         "or the NIC in a slot of theirs")
    if problems:
        return Check("numa", WARN, "; ".join(problems), "; ".join(fixes))
    if len(set(numa.values())) < 2:
        return Check("numa", OK, "one NUMA node")
    nic_nodes = {role: nic.link.get("numa_node") for role, nic in ctx.nics.items() if nic.link}
    tail = "".join(f", {role} NIC node {n}" for role, n in nic_nodes.items() if n is not None and n >= 0)
    return Check("numa", OK, f"hot cores on node {nodes[0]}{tail}")


def check_governor(ctx: Context) -> Check:
    govs = {c: ctx.node.governor(c) for c in ctx.hot}
    if all(g is None for g in govs.values()):
        return Check("governor", SKIP, "no cpufreq for the hot cores (a VM, or the firmware controls frequency)")
    slow = {c: g for c, g in govs.items() if g is not None and g != "performance"}
    if not slow:
        return Check("governor", OK, f"performance on hot cores {cpus(ctx.hot)}")
    shown = ", ".join(f"cpu{c}={g}" for c, g in slow.items())
    return Check("governor", WARN, f"{shown}: the core clocks down when idle and takes time to clock up on a burst",
                 f"`cpupower -c {cpus(slow)} frequency-set -g performance` (or write performance to "
                 "/sys/devices/system/cpu/cpuN/cpufreq/scaling_governor; tuned's latency-performance profile does it)")


def check_irqbalance(ctx: Context) -> Check:
    from ..runtime.cpu import parse_cpulist

    pids = ctx.node.processes("irqbalance")
    if not pids:
        return Check("irqbalance", OK, "not running (in a container only the container's processes are visible)")
    env = ctx.node.environ(pids[0])
    banned = set()
    if env.get("IRQBALANCE_BANNED_CPULIST"):
        banned = parse_cpulist(env["IRQBALANCE_BANNED_CPULIST"])
    elif env.get("IRQBALANCE_BANNED_CPUS"):
        mask = int(env["IRQBALANCE_BANNED_CPUS"].replace(",", ""), 16)
        banned = {c for c in range(mask.bit_length()) if mask >> c & 1}
    # irqbalance 1.2 and later also leave isolated and nohz_full cores alone.
    spared = banned | set(ctx.topo.isolated) | set(ctx.topo.nohz_full)
    exposed = [c for c in ctx.hot if c not in spared]
    if not exposed:
        how = "banned" if set(ctx.hot) <= banned else "isolated, banned or nohz_full"
        return Check("irqbalance", OK, f"running (pid {pids[0]}); the hot cores {cpus(ctx.hot)} are {how}, it leaves them alone")
    return Check("irqbalance", WARN, f"running (pid {pids[0]}) and free to move interrupts onto hot core(s) "
                 f"{cpus(exposed)}",
                 f"ban them: IRQBALANCE_BANNED_CPULIST={cpus(ctx.hot)} in /etc/default/irqbalance and restart it, "
                 "or stop it (`systemctl disable --now irqbalance`) and pin NIC interrupts away from the hot cores")


# ---- memory ---------------------------------------------------------------------------------------

def check_hugepages(ctx: Context) -> Check:
    cfg, need = ctx.cfg, ctx.layout.hugepages
    mi = ctx.node.meminfo()
    size_kb = mi.get("Hugepagesize")
    total = mi.get("HugePages_Total", 0)
    avail = mi.get("HugePages_Free", 0) - mi.get("HugePages_Rsvd", 0)  # Free counts pages promised, not yet faulted
    status = hard(cfg.memory.require_hugepages)
    fallback = "" if cfg.memory.require_hugepages else (
        " (memory.require_hugepages = false: the arena falls back to "
        + ("transparent huge pages)" if cfg.memory.transparent_hugepages else "normal pages)"))
    if size_kb is None:
        return Check("hugepages", status, "no HugePages in /proc/meminfo (kernel without hugetlbfs)" + fallback,
                     "use a kernel with CONFIG_HUGETLBFS")
    if size_kb != 2048:
        return Check("hugepages", status, f"the default HugePage size is {size_kb} kB; the arena maps 2 MiB pages"
                     + fallback, "boot with default_hugepagesz=2M hugepagesz=2M hugepages=N")
    have = f"the arena needs {need} x 2 MiB HugePages; {max(avail, 0)} of {total} are free"
    if avail >= need:
        return Check("hugepages", OK, have)
    target = total + need - max(avail, 0)
    return Check("hugepages", status, have + fallback,
                 f"`echo {target} > /proc/sys/vm/nr_hugepages` (persist: vm.nr_hugepages = {target} in /etc/sysctl.d/, "
                 f"or hugepages={target} on the kernel command line); Kubernetes: request and limit "
                 f"hugepages-2Mi: {need * 2}Mi")


def check_memlock(ctx: Context) -> Check:
    from .nodefacts import CAP_IPC_LOCK

    cfg, node = ctx.cfg, ctx.node
    if not cfg.memory.lock and not cfg.memory.lockall:
        return Check("memlock", SKIP, "memory.lock = false: the arena is not locked")
    fix = ("LimitMEMLOCK=infinity in the unit (or AmbientCapabilities=CAP_IPC_LOCK); `ulimit -l unlimited` in a "
           "shell; podman/docker --ulimit memlock=-1:-1; Kubernetes: capabilities add IPC_LOCK")
    lim = node.limit("Max locked memory")
    shown = "unknown" if lim is None else size(lim[0])
    if node.has_capability(CAP_IPC_LOCK):
        return Check("memlock", OK, f"CAP_IPC_LOCK is held: locking is not limited (memlock limit {shown})")
    if lim is None:
        return Check("memlock", WARN, "the memlock limit is unknown (no Max locked memory in /proc/self/limits)", fix)
    soft = lim[0]
    if cfg.memory.lockall:
        if soft == float("inf"):
            return Check("memlock", OK, "memlock limit unlimited (memory.lockall locks the whole process)")
        return Check("memlock", FAIL, f"memory.lockall locks the whole process (a few hundred MB with LLVM) but the "
                     f"memlock limit is {shown}", fix)
    if soft >= ctx.layout.size:
        return Check("memlock", OK, f"memlock limit {shown} covers the {size(ctx.layout.size)} arena")
    return Check("memlock", FAIL, f"memlock limit {shown} is below the {size(ctx.layout.size)} arena "
                 "(memory.lock = true)", fix)


def check_thp(ctx: Context) -> Check:
    mode = ctx.node.thp_mode()
    if mode is None:
        return Check("thp", SKIP, "no transparent huge pages on this kernel")
    if mode == "madvise":
        return Check("thp", OK, "madvise: only regions that ask (the arena's fallback) get huge pages")
    fix = "`echo madvise > /sys/kernel/mm/transparent_hugepage/enabled` (persist: transparent_hugepage=madvise on the kernel command line)"
    if mode == "always":
        return Check("thp", WARN, "always: every process's memory is collapsed by khugepaged and page faults may "
                     "stall on compaction", fix)
    mi = ctx.node.meminfo()
    short = mi.get("HugePages_Free", 0) - mi.get("HugePages_Rsvd", 0) < ctx.layout.hugepages
    if short and ctx.cfg.memory.transparent_hugepages:
        return Check("thp", WARN, "never, and reserved HugePages are short: the arena falls back to 4 KiB pages "
                     "(more TLB misses on the hot path)", fix + ", or reserve HugePages (see hugepages)")
    return Check("thp", OK, f"{mode}")


# ---- scheduling -----------------------------------------------------------------------------------

def check_sched_fifo(ctx: Context) -> Check:
    from .nodefacts import CAP_SYS_NICE, try_sched_fifo

    cfg, node = ctx.cfg, ctx.node
    if not cfg.cpu.sched_fifo:
        return Check("sched_fifo", SKIP, "cpu.sched_fifo = false: hot threads run SCHED_OTHER")
    prio = cfg.cpu.fifo_priority
    cap = node.has_capability(CAP_SYS_NICE)
    rt = node.limit("Max realtime priority")
    facts = f"CAP_SYS_NICE {'held' if cap else 'not held'}, RLIMIT_RTPRIO {'unknown' if rt is None else f'{rt[0]:g}'}"
    if node.live:
        err = try_sched_fifo(prio)
        allowed = err is None
        facts += f"; a thread {'was' if allowed else 'was not'} granted SCHED_FIFO {prio}" + ("" if allowed else f": {err}")
    else:
        allowed = bool(cap) or (rt is not None and rt[0] >= prio)
    if not allowed:
        return Check("sched_fifo", FAIL, f"cpu.sched_fifo = true but SCHED_FIFO {prio} is not permitted ({facts})",
                     f"AmbientCapabilities=CAP_SYS_NICE or LimitRTPRIO={prio} in the unit; podman/docker --cap-add "
                     "SYS_NICE; Kubernetes: capabilities add SYS_NICE (and a cgroup with RT runtime where "
                     "CONFIG_RT_GROUP_SCHED is on)")
    runtime_us = node.sysctl("kernel.sched_rt_runtime_us")
    if runtime_us not in (None, "-1") and cfg.runtime.idle == "spin":
        return Check("sched_fifo", WARN, f"permitted ({facts}), but kernel.sched_rt_runtime_us = {runtime_us}: RT "
                     "throttling may take the core from a spinning SCHED_FIFO thread for part of every second",
                     "`sysctl kernel.sched_rt_runtime_us=-1` (persist in /etc/sysctl.d/; tuned's realtime profiles do it)")
    return Check("sched_fifo", OK, f"permitted ({facts})")


# ---- network --------------------------------------------------------------------------------------

class Nic(typing.NamedTuple):
    """Where one configured address lives on this node, as far as the kernel says."""

    key: str  # the config key that names the address
    address: str | None  # None: nothing to check (`problem` says why)
    ifname: str | None = None
    link: dict | None = None  # /sys/class/net facts
    problem: str | None = None
    unasked: bool = False  # the kernel could not be asked (netlink refused, library missing)


def nic_targets(cfg) -> dict:
    """role -> (config key, address, whether it is a local address to look up, why not checked)."""
    feed, gw = cfg.feed, cfg.gateway
    out = {}
    if feed.source != "moldudp64":
        out["feed"] = ("feed.source", None, False, f"feed.source = {feed.source}: no network feed")
    elif feed.interface != "0.0.0.0":
        out["feed"] = ("feed.interface", feed.interface, True, None)
    else:
        from .nodefacts import is_multicast

        if is_multicast(feed.address):  # the interface the kernel routes the group to
            out["feed"] = ("feed.address", feed.address, False, None)
        elif feed.address == "0.0.0.0":
            out["feed"] = ("feed.address", None, False, "feed.address = 0.0.0.0: the feed binds every interface")
        else:  # a unicast feed binds this local address
            out["feed"] = ("feed.address", feed.address, True, None)
    if gw.protocol == "none":
        out["gateway"] = ("gateway.protocol", None, False, "gateway.protocol = none: no order entry")
    else:
        out["gateway"] = ("gateway.host", gw.host, False, None)
    return out


def resolve_nics(cfg, node) -> dict:
    """role -> Nic: the interface holding or routing each configured address, and its state."""
    from .nodefacts import RouteError, interface_for

    out = {}
    for role, (key, address, local, skip) in nic_targets(cfg).items():
        if skip:
            out[role] = Nic(key, None, problem=skip)
            continue
        try:
            name = interface_for(address, local)
        except RouteError as e:
            out[role] = Nic(key, address, problem=str(e))
            continue
        except (OSError, ImportError) as e:  # e.g. RestrictAddressFamilies= without AF_NETLINK
            out[role] = Nic(key, address, problem=f"cannot ask the kernel over netlink: {e}", unasked=True)
            continue
        out[role] = Nic(key, address, name, node.link(name))
    return out


def check_nic(ctx: Context, role: str) -> Check:
    from .nodefacts import IFF_LOOPBACK, IFF_MULTICAST, IFF_UP, is_multicast

    cfg = ctx.cfg
    name = f"nic.{role}"
    key, address, ifname, link, error, unasked = ctx.nics[role]
    if address is None:
        return Check(name, SKIP, error)
    if unasked:
        return Check(name, WARN, f"{key} = {address}: not checked, {error}",
                     "let the doctor open AF_NETLINK sockets (RestrictAddressFamilies= in its unit)")
    if ifname is None:
        return Check(name, FAIL, f"{key} = {address}: {error}",
                     f"configure {address} on the NIC (ip addr add) or correct {key}" if "no interface" in error
                     else f"add a route to {address} (ip route add) or correct {key}")
    if link is None:
        return Check(name, FAIL, f"{key} = {address} is on {ifname}, which /sys/class/net does not list",
                     f"bring the NIC {ifname} back, or in a container give the pod the host's network or that NIC")
    flags, problems, fixes = link["flags"], [], []
    status = OK
    up = flags & IFF_UP and (link["operstate"] == "up" or (link["operstate"] == "unknown" and link["carrier"]))
    if not up:
        status = FAIL
        problems.append(f"down (operstate {link['operstate']}, {'no ' if not link['carrier'] else ''}carrier)")
        fixes.append(f"`ip link set {ifname} up`; check the cable, optics and switch port")
    if role == "feed" and is_multicast(cfg.feed.address) and not flags & IFF_MULTICAST:
        status = FAIL
        problems.append(f"multicast is off but feed.address {cfg.feed.address} is a multicast group")
        fixes.append(f"`ip link set {ifname} multicast on`")
    need = cfg.feed.max_payload + 28  # IPv4 and UDP headers
    if role == "feed" and link["mtu"] is not None and link["mtu"] < need:
        status = WARN if status == OK else status
        problems.append(f"MTU {link['mtu']} is below feed.max_payload {cfg.feed.max_payload} + 28 bytes of headers")
        fixes.append(f"`ip link set {ifname} mtu {need}` or lower feed.max_payload")
    what = f"{key} = {address} on {ifname}"
    if flags & IFF_LOOPBACK:
        what += " (loopback: fine for the demo and tests, not for a venue)"
    facts = f"up, MTU {link['mtu']}, multicast {'on' if flags & IFF_MULTICAST else 'off'}"
    if link["numa_node"] is not None and link["numa_node"] >= 0:
        facts += f", NUMA node {link['numa_node']}"
    if link["ptp"]:
        facts += f", PTP clock {', '.join(link['ptp'])}"
    if problems:
        return Check(name, status, f"{what}: " + "; ".join(problems), "; ".join(fixes))
    return Check(name, OK, f"{what}: {facts}")


# ---- clocks ---------------------------------------------------------------------------------------

def check_clock_sync(ctx: Context) -> Check:
    from .nodefacts import adjtimex, phc_minus_system

    tx = adjtimex()
    ptp = ctx.node.ptp_devices()
    notes = []
    for dev, clock_name in ptp:
        offset = phc_minus_system(dev) if ctx.node.live else None
        notes.append(f"{dev} ({clock_name}" + (f", PHC - system {offset:+.6f} s" if offset is not None else "") + ")")
    ptp_text = ("; PTP clocks: " + ", ".join(notes)) if notes else "; no PTP hardware clock"
    return classify_clock(tx, ptp_text)


def classify_clock(tx: dict | None, ptp_text: str = "") -> Check:
    """The clock_sync verdict from adjtimex's answer (None: unavailable)."""
    if tx is None:
        return Check("clock_sync", SKIP, "adjtimex is unavailable here" + ptp_text)
    if tx["synced"]:
        return Check("clock_sync", OK, f"the kernel clock is synchronised (offset {tx['offset_s'] * 1e6:+.0f} us, "
                     f"estimated error {tx['esterror_s'] * 1e6:.0f} us, max error {tx['maxerror_s'] * 1e3:.1f} ms)"
                     + ptp_text)
    return Check("clock_sync", WARN, "the kernel clock is not synchronised (STA_UNSYNC: no NTP or PTP daemon "
                 "disciplines it); order and log timestamps drift" + ptp_text,
                 "run chronyd (or ntpd); for sub-microsecond time, ptp4l on the NIC plus phc2sys to the system clock")


def check_clocksource(ctx: Context) -> Check:
    current, available = ctx.node.clocksource()
    if current is None:
        return Check("clocksource", SKIP, "no clocksource in sysfs")
    if current == "tsc":
        return Check("clocksource", OK, "tsc: clock reads stay in user space (vDSO) and cost a few ns")
    fix = ("`echo tsc > /sys/devices/system/clocksource/clocksource0/current_clocksource` (persist: clocksource=tsc "
           "tsc=reliable on the kernel command line)") if "tsc" in available.split() else (
        "this kernel does not offer tsc (not invariant or not stable here); on a VM ask for an invariant TSC")
    return Check("clocksource", WARN, f"{current} (available: {available or '?'}): clock reads may cost more and "
                 "drift from the TSC the hot loops time with", fix)


# ---- running it all ------------------------------------------------------------------------------

def gather(cfg, root: str) -> Context:
    """Read the node once: topology and placement, the arena's layout, the NICs."""
    from ..runtime.cpu import Topology, plan
    from ..runtime.layout import compute_layout
    from .nodefacts import Node

    node = Node(root)
    topo = dataclasses.replace(Topology.read(node.sysfs_system()), allowed=node.allowed_cpus())
    # The runtime's own placement; strict off so that it reports its problems instead of raising.
    placement = plan(dataclasses.replace(cfg.cpu, strict=False), cfg.hot_threads(), topo, cfg.runtime.idle)
    layout = compute_layout(cfg.hot_threads(), cfg.runtime.ring_slots, cfg.journal.ring_slots)
    return Context(cfg, node, topo, placement, sorted(set(placement.hot.values())), layout, resolve_nics(cfg, node))


def run_checks(cfg, root: str = "/", warn_only=()) -> list[Check]:
    """Every check against the node under `root`; a check that crashes fails with its error."""
    ctx = gather(cfg, root)
    steps = [check_hot_cores, check_nohz_full, check_numa, check_hugepages, check_memlock, check_sched_fifo,
             check_governor, check_thp, check_irqbalance, lambda c: check_nic(c, "feed"),
             lambda c: check_nic(c, "gateway"), check_clock_sync, check_clocksource]
    out = []
    for name, step in zip(CHECKS, steps):
        try:
            check = step(ctx)
        except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
            check = Check(name, FAIL, f"the check itself failed: {type(e).__name__}: {e}",
                          "report this as a bug; --warn-only " + name + " lets the node pass meanwhile")
        if check.status == FAIL and check.name in warn_only:
            check = dataclasses.replace(check, status=WARN, detail=check.detail + " [--warn-only]")
        out.append(check)
    return out


def report(checks: list[Check], config: str, root: str, seconds: float) -> dict:
    failures = [c for c in checks if c.status == FAIL]
    return {
        "valid": not failures,
        "config": config,
        "host": socket.gethostname(),
        "root": root,
        "seconds": round(seconds, 3),  # the checks, with the netlink library's import; not Python's start
        "checks": [dataclasses.asdict(c) for c in checks],
        "failures": [{"name": c.name, "detail": c.detail, "fix": c.fix} for c in failures],
        "warnings": [c.name for c in checks if c.status == WARN],
    }


def render(rep: dict) -> str:
    """The table for a person: status, name, detail; the fix under every line that is not ok."""
    width = max(60, min(shutil.get_terminal_size((110, 24)).columns, 140))
    name_w = max(len(c["name"]) for c in rep["checks"])
    indent = " " * (6 + name_w + 2)
    lines = [f"appliance doctor: {rep['config']} on {rep['host']}"
             + (f" (files under {rep['root']})" if rep["root"] != "/" else "")]
    for c in rep["checks"]:
        tag = c["status"].upper() if c["status"] in (WARN, FAIL) else c["status"]
        head = f"{tag:<5} {c['name']:<{name_w}}  "
        lines.append(textwrap.fill(c["detail"], width, initial_indent=head, subsequent_indent=indent))
        if c["fix"] and c["status"] != OK:
            lines.append(textwrap.fill(c["fix"], width, initial_indent=indent + "fix: ",
                                       subsequent_indent=indent + "     "))
    fails, warns = [f["name"] for f in rep["failures"]], rep["warnings"]
    verdict = "valid: yes" if rep["valid"] else f"valid: no, {len(fails)} failed ({', '.join(fails)})"
    if warns:
        verdict += f"; {len(warns)} warning{'s' if len(warns) > 1 else ''} ({', '.join(warns)})"
    lines.append(verdict)
    return "\n".join(lines)


# Configured cores are checked against the node (maybe another node's files under --root) by
# hot_cores, not by the config loader against this process's affinity.
ANY_CPU = range(1 << 16)


def load_for_node(path):
    """Load and validate the config as `load_or_exit` does (exit 2 naming every bad key), cores aside."""
    from ..cli import EXIT_CONFIG
    from ..config import ConfigError, load_config

    try:
        return load_config(path, allowed_cpus=ANY_CPU)
    except ConfigError as e:
        print(f"appliance doctor: invalid configuration {path or '(defaults)'}:\n{e}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def main(argv=None) -> int:
    from ..cli import ENV_CONFIG

    p = argparse.ArgumentParser(prog="appliance doctor", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", metavar="FILE", help=f"TOML config (default: ${ENV_CONFIG}, else built-in defaults)")
    p.add_argument("--json", action="store_true", help="print one JSON object: valid, checks, failures, warnings")
    p.add_argument("--root", metavar="DIR", default="/", help="read /proc and /sys under DIR (default /)")
    p.add_argument("--warn-only", metavar="CHECK[,CHECK]", default="",
                   help="report these checks' failures as warnings (names as listed below)")
    args = p.parse_args(argv)
    warn_only = [x for x in args.warn_only.split(",") if x]
    unknown = [x for x in warn_only if x not in CHECKS]
    if unknown:
        p.error(f"--warn-only: no check named {', '.join(unknown)} (checks: {', '.join(CHECKS)})")
    if not os.path.isdir(args.root):
        p.error(f"--root: {args.root} is not a directory")
    path = args.config or os.environ.get(ENV_CONFIG) or None
    cfg = load_for_node(path)

    from ..runtime import layout  # noqa: F401 - imports numba (its histogram constants); not the checks' time

    t0 = time.monotonic()
    checks = run_checks(cfg, args.root, warn_only)
    rep = report(checks, path or "(defaults)", args.root, time.monotonic() - t0)
    print(json.dumps(rep, indent=2) if args.json else render(rep))
    return EXIT_VALID if rep["valid"] else EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
