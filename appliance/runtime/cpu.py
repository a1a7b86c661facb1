"""CPU placement: what the process may use, which cores are isolated, where the hot threads and the control plane go.

The allowed set is sched_getaffinity (what a cgroup cpuset or Kubernetes' static CPU manager
grants). Auto placement prefers isolated cores, then the highest-numbered allowed cores (core 0
usually takes the housekeeping and interrupt load), keeping one core for the control plane.
"""

import glob
import os
import re
from dataclasses import dataclass, field


def parse_cpulist(text: str) -> set:
    """'0-3,8,10-11' -> {0,1,2,3,8,10,11}; '' -> set()."""
    cpus = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def format_cpulist(cpus) -> str:
    """{0,1,2,5} -> '0-2,5'."""
    out, run = [], []
    for c in sorted(cpus):
        if run and c == run[-1] + 1:
            run.append(c)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [c]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Topology:
    """What the kernel says about this process's CPUs."""

    allowed: frozenset
    isolated: frozenset
    nohz_full: frozenset
    numa: dict = field(default_factory=dict)  # cpu -> node

    @classmethod
    def read(cls, sysfs: str = "/sys/devices/system") -> "Topology":
        numa = {}
        for node_dir in glob.glob(f"{sysfs}/node/node[0-9]*"):
            node = int(re.sub(r"\D", "", os.path.basename(node_dir)))
            for cpu in parse_cpulist(_read(f"{node_dir}/cpulist")):
                numa[cpu] = node
        return cls(
            allowed=frozenset(os.sched_getaffinity(0)),
            isolated=frozenset(parse_cpulist(_read(f"{sysfs}/cpu/isolated"))),
            nohz_full=frozenset(parse_cpulist(_read(f"{sysfs}/cpu/nohz_full"))),
            numa=numa,
        )

    def describe(self) -> dict:
        return {
            "allowed": format_cpulist(self.allowed),
            "isolated": format_cpulist(self.isolated),
            "nohz_full": format_cpulist(self.nohz_full),
            "numa_nodes": sorted(set(self.numa.values())),
        }


class PlacementError(RuntimeError):
    """cpu.strict is set and the placement falls short of dedicated, isolated, allowed hot cores."""


@dataclass(frozen=True)
class Placement:
    """Hot thread -> core, the control plane's cores, and what falls short of the ideal."""

    hot: dict
    control: tuple
    problems: tuple  # each a sentence an operator can act on

    @property
    def shared(self) -> bool:
        cores = list(self.hot.values())
        return len(set(cores)) < len(cores) or bool(set(cores) & set(self.control))


def plan(cpu_cfg, threads: tuple, topo: Topology, idle: str = "spin") -> Placement:
    """Place `threads` by the [cpu] config; raises PlacementError under cpu.strict when anything falls short."""
    allowed = sorted(topo.allowed)
    explicit = {r: getattr(cpu_cfg, r) for r in threads if getattr(cpu_cfg, r) != "auto"}
    control_cfg = None if cpu_cfg.control == "auto" else tuple(cpu_cfg.control)
    taken = set(explicit.values()) | set(control_cfg or ())
    # Hot threads talk through shared cache lines: keep them on one NUMA node, the node of the first
    # configured hot core, else of the best candidate. Within it, isolated cores first, then from the
    # top down: core 0 usually carries housekeeping and interrupts.
    candidates = [c for c in allowed if c not in taken]
    best = sorted(candidates, key=lambda c: (c not in topo.isolated, -c))
    anchor = topo.numa.get(next(iter(explicit.values()), best[0] if best else -1), 0)
    free = sorted(candidates, key=lambda c: (topo.numa.get(c, 0) != anchor, c not in topo.isolated, -c))
    auto_roles = [r for r in threads if r not in explicit]
    hot = dict(explicit)
    pool = free or allowed  # too few cores: hot threads share (reported below; refused under strict)
    for i, role in enumerate(auto_roles):
        hot[role] = pool[i % len(pool)]
    hot = {r: hot[r] for r in threads}
    # Auto control cores: allowed, not hot, and not isolated (isolated cores are for hot threads);
    # failing that any core that is not hot, failing that everything.
    rest = [c for c in allowed if c not in hot.values()]
    control = control_cfg or tuple(c for c in rest if c not in topo.isolated) or tuple(rest) or tuple(allowed)

    problems = []
    cores = list(hot.values())
    if len(set(cores)) < len(cores):
        problems.append(
            f"the {'split' if len(threads) > 1 else 'fused'} layout wants {len(threads)} dedicated hot cores but "
            f"this process may use only {format_cpulist(topo.allowed)}: hot threads share cores "
            f"({', '.join(f'{r}={c}' for r, c in hot.items())}); give the process more CPUs or use runtime.layout = \"fused\""
        )
    if set(cores) & set(control):
        problems.append(
            f"the control plane shares core(s) {format_cpulist(set(cores) & set(control))} with hot threads; "
            "its requests will be slower and may disturb the hot path"
        )
    for role, core in hot.items():
        if core not in topo.allowed:
            problems.append(f"cpu.{role}: core {core} is not allowed (allowed: {format_cpulist(topo.allowed)})")
        elif core not in topo.isolated:
            problems.append(
                f"cpu.{role}: core {core} is not isolated (isolcpus= / an exclusive cpuset); "
                "the scheduler and interrupts may run other work there"
            )
    if cpu_cfg.strict and problems:
        raise PlacementError("cpu.strict is true and the placement falls short:\n  " + "\n  ".join(problems))
    if idle == "spin" and len(set(cores)) < len(cores):
        problems.append(
            'runtime.idle = "spin" with hot threads sharing a core: they starve each other; use runtime.idle = "yield"'
        )
    return Placement(hot=hot, control=control, problems=tuple(problems))


_SCHED_POLICY = {0: "other", 1: "fifo", 2: "rr", 3: "batch", 5: "idle", 6: "deadline"}


def inspect_thread(tid: int) -> dict:
    """Where the kernel actually lets a thread run and where it last ran, from /proc/self/task/TID."""
    status = _read(f"/proc/self/task/{tid}/status")
    m = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M)
    stat = _read(f"/proc/self/task/{tid}/stat")
    fields = stat.rsplit(")", 1)[-1].split() if stat else []
    try:
        policy = _SCHED_POLICY.get(os.sched_getscheduler(tid), "?")
        priority = os.sched_getparam(tid).sched_priority
    except OSError:
        policy, priority = "?", 0
    return {
        "tid": tid,
        "name": _read(f"/proc/self/task/{tid}/comm"),
        "cpus_allowed": m.group(1) if m else "",
        "last_cpu": int(fields[36]) if len(fields) > 36 else -1,
        "policy": policy,
        "priority": priority,
    }
