"""`appliance doctor` against fake nodes (a /proc and /sys tree under tmp_path, via --root) and this real node.

Each scenario starts from a node that can run the appliance, breaks one thing and reads the verdict.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from appliance.ops import doctor
from appliance.runtime.layout import compute_layout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAP_IPC_LOCK, CAP_SYS_NICE = 1 << 14, 1 << 23


class FakeNode:
    """A node's /proc and /sys as files under a directory: 8 CPUs, 2-7 isolated, 64 free HugePages, loopback up."""

    def __init__(self, root):
        self.root = root
        self.status(allowed="0-7", cap_eff=0)
        self.limits(memlock="unlimited", rtprio="99")
        self.hugepages(total=64, free=64)
        self.write("proc/sys/kernel/sched_rt_runtime_us", "-1")
        self.write("proc/cmdline", "BOOT_IMAGE=/vmlinuz isolcpus=2-7 nohz_full=2-7")
        self.isolate("2-7", nohz_full="2-7")
        self.write("sys/devices/system/node/node0/cpulist", "0-7")
        for cpu in range(8):
            self.write(f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor", "performance")
        self.write("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never")
        self.write("sys/devices/system/clocksource/clocksource0/current_clocksource", "tsc")
        self.write("sys/devices/system/clocksource/clocksource0/available_clocksource", "tsc hpet acpi_pm")
        self.interface("lo", flags=0x9, operstate="unknown", mtu=65536)
        os.makedirs(self.path("proc/1"), exist_ok=True)
        self.write("proc/1/comm", "init")

    def path(self, rel):
        return os.path.join(self.root, rel)

    def write(self, rel, text):
        os.makedirs(os.path.dirname(self.path(rel)), exist_ok=True)
        with open(self.path(rel), "w") as f:
            f.write(text + "\n")

    def remove(self, rel):
        os.remove(self.path(rel))

    def status(self, allowed, cap_eff):
        self.write("proc/self/status", f"Name:\tappliance\nCapEff:\t{cap_eff:016x}\nCpus_allowed_list:\t{allowed}")

    def limits(self, memlock, rtprio):
        self.write("proc/self/limits", textwrap.dedent(f"""\
            Limit                     Soft Limit           Hard Limit           Units
            Max open files            1024                 524288               files
            Max locked memory         {memlock:<20} {memlock:<20} bytes
            Max realtime priority     {rtprio:<20} {rtprio:<20}
            """))

    def hugepages(self, total, free, rsvd=0, size_kb=2048):
        self.write("proc/meminfo", f"MemTotal:       16000000 kB\nHugePages_Total:   {total}\n"
                   f"HugePages_Free:    {free}\nHugePages_Rsvd:    {rsvd}\nHugePages_Surp:        0\n"
                   f"Hugepagesize:       {size_kb} kB")

    def isolate(self, isolated, nohz_full):
        self.write("sys/devices/system/cpu/isolated", isolated)
        self.write("sys/devices/system/cpu/nohz_full", nohz_full)

    def interface(self, name, flags, operstate="up", mtu=1500, carrier=1):
        base = f"sys/class/net/{name}"
        self.write(f"{base}/flags", hex(flags))
        self.write(f"{base}/operstate", operstate)
        self.write(f"{base}/mtu", str(mtu))
        self.write(f"{base}/carrier", str(carrier))

    def process(self, pid, comm, environ=None):
        self.write(f"proc/{pid}/comm", comm)
        with open(self.path(f"proc/{pid}/environ"), "wb") as f:
            f.write(b"".join(f"{k}={v}".encode() + b"\0" for k, v in (environ or {}).items()))


@pytest.fixture
def node(tmp_path):
    return FakeNode(str(tmp_path / "node"))


@pytest.fixture
def config(tmp_path):
    """Write TOML text to a config file and return its path."""
    def write(text=""):
        path = tmp_path / f"config-{len(list(tmp_path.glob('config-*.toml')))}.toml"
        path.write_text(textwrap.dedent(text))
        return str(path)
    return write


def run(capsys, node, cfg_path, *extra):
    """Run the doctor in-process against the fake node; (exit status, report, checks by name)."""
    rc = doctor.main(["-c", cfg_path, "--root", node.root, "--json", *extra])
    rep = json.loads(capsys.readouterr().out)
    assert rep["valid"] == (rc == 0)
    return rc, rep, {c["name"]: c for c in rep["checks"]}


STRICT_NODE = """\
    [runtime]
    layout = "fused"
    [cpu]
    strict = true
    sched_fifo = true
    [memory]
    require_hugepages = true
    lock = true
"""


# ---- the healthy node -----------------------------------------------------------------------------

def test_a_well_prepared_node_passes_a_strict_config(capsys, node, config):
    rc, rep, checks = run(capsys, node, config(STRICT_NODE))
    assert rc == 0 and rep["failures"] == []
    assert [c["name"] for c in rep["checks"]] == list(doctor.CHECKS)
    for name in ("hot_cores", "nohz_full", "hugepages", "memlock", "sched_fifo", "governor", "thp", "irqbalance",
                 "clocksource", "numa"):
        assert checks[name]["status"] == "ok", checks[name]
    assert "fused=7" in checks["hot_cores"]["detail"]  # auto placement: the highest isolated core
    assert checks["nic.feed"]["status"] == "skip" and "synthetic" in checks["nic.feed"]["detail"]


# ---- cores ----------------------------------------------------------------------------------------

def test_unisolated_hot_cores_warn_unless_cpu_strict(capsys, node, config):
    node.isolate("", nohz_full="")
    rc, rep, checks = run(capsys, node, config('[runtime]\nlayout = "fused"\n'))
    assert rc == 0 and checks["hot_cores"]["status"] == "warn"
    assert "not isolated" in checks["hot_cores"]["detail"] and "isolcpus=" in checks["hot_cores"]["fix"]
    assert checks["nohz_full"]["status"] == "warn" and "nohz_full=7" in checks["nohz_full"]["fix"]

    rc, rep, checks = run(capsys, node, config('[runtime]\nlayout = "fused"\n[cpu]\nstrict = true\n'))
    assert rc == 1 and checks["hot_cores"]["status"] == "fail"
    assert [f["name"] for f in rep["failures"]] == ["hot_cores"]
    assert "isolcpus=managed_irq,domain,7" in rep["failures"][0]["fix"]


def test_too_few_cpus_for_the_split_layout(capsys, node, config):
    node.status(allowed="0-1", cap_eff=0)
    rc, _, checks = run(capsys, node, config("[cpu]\nstrict = true\n"))
    assert rc == 1 and checks["hot_cores"]["status"] == "fail"
    assert "3 hot threads share" in checks["hot_cores"]["detail"]
    assert 'runtime.layout = "fused"' in checks["hot_cores"]["fix"]


def test_a_configured_core_the_node_does_not_allow_fails_even_without_strict(capsys, node, config):
    node.status(allowed="0-3", cap_eff=0)
    rc, _, checks = run(capsys, node, config('[runtime]\nlayout = "fused"\n[cpu]\nfused = 6\n'))
    assert rc == 1 and checks["hot_cores"]["status"] == "fail"
    assert "core(s) 6 are not among the CPUs" in checks["hot_cores"]["detail"]


def test_hot_cores_across_numa_nodes_warn(capsys, node, config):
    node.write("sys/devices/system/node/node0/cpulist", "0-5")
    node.write("sys/devices/system/node/node1/cpulist", "6-7")
    rc, _, checks = run(capsys, node, config('[cpu]\nfeed = 7\nstrategy = 6\ngateway = 5\n'))
    assert rc == 0 and checks["numa"]["status"] == "warn"
    assert "span NUMA nodes [0, 1]" in checks["numa"]["detail"]
    rc, _, checks = run(capsys, node, config('[cpu]\nfeed = 4\nstrategy = 3\ngateway = 2\n'))
    assert checks["numa"]["status"] == "ok" and "node 0" in checks["numa"]["detail"]


def test_governor_other_than_performance_warns_and_a_vm_without_cpufreq_skips(capsys, node, config):
    node.write("sys/devices/system/cpu/cpu7/cpufreq/scaling_governor", "powersave")
    _, _, checks = run(capsys, node, config('[runtime]\nlayout = "fused"\n'))
    assert checks["governor"]["status"] == "warn" and "cpu7=powersave" in checks["governor"]["detail"]
    assert "frequency-set -g performance" in checks["governor"]["fix"]
    for cpu in range(8):
        node.remove(f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")
    _, _, checks = run(capsys, node, config('[runtime]\nlayout = "fused"\n'))
    assert checks["governor"]["status"] == "skip"


def test_irqbalance_warns_until_the_hot_cores_are_banned(capsys, node, config):
    node.isolate("", nohz_full="")
    node.process(4242, "irqbalance")
    _, _, checks = run(capsys, node, config('[runtime]\nlayout = "fused"\n'))
    assert checks["irqbalance"]["status"] == "warn" and "pid 4242" in checks["irqbalance"]["detail"]
    assert "IRQBALANCE_BANNED_CPULIST=7" in checks["irqbalance"]["fix"]
    node.process(4242, "irqbalance", {"IRQBALANCE_BANNED_CPULIST": "6-7"})
    _, _, checks = run(capsys, node, config('[runtime]\nlayout = "fused"\n'))
    assert checks["irqbalance"]["status"] == "ok"


# ---- memory ---------------------------------------------------------------------------------------

BIG_RINGS = '[runtime]\nlayout = "fused"\nring_slots = 65536\n'


def test_hugepages_are_counted_from_the_arena_layout_and_required_only_when_configured(capsys, node, config):
    need = compute_layout(("fused",), 65536, 4096).hugepages
    assert need > 1  # the scenario needs a count the default config would not give

    node.hugepages(total=need, free=need)
    rc, _, checks = run(capsys, node, config(BIG_RINGS + "[memory]\nrequire_hugepages = true\n"))
    assert rc == 0 and checks["hugepages"]["status"] == "ok"
    assert f"needs {need} x 2 MiB" in checks["hugepages"]["detail"]

    node.hugepages(total=need, free=need, rsvd=1)  # reserved by another mapping: not ours to take
    rc, rep, checks = run(capsys, node, config(BIG_RINGS + "[memory]\nrequire_hugepages = true\n"))
    assert rc == 1 and checks["hugepages"]["status"] == "fail"
    assert f"echo {need + 1} > /proc/sys/vm/nr_hugepages" in checks["hugepages"]["fix"]
    assert f"hugepages-2Mi: {need * 2}Mi" in checks["hugepages"]["fix"]

    rc, _, checks = run(capsys, node, config(BIG_RINGS))
    assert rc == 0 and checks["hugepages"]["status"] == "warn" and "falls back" in checks["hugepages"]["detail"]


def test_memlock_below_the_arena_fails_when_locking_is_configured(capsys, node, config):
    node.limits(memlock=str(64 * 1024), rtprio="0")
    rc, rep, checks = run(capsys, node, config())
    assert rc == 1 and checks["memlock"]["status"] == "fail"
    assert "memlock limit 64 KiB is below the 2 MiB arena" in checks["memlock"]["detail"]
    assert "LimitMEMLOCK=infinity" in checks["memlock"]["fix"]

    rc, _, checks = run(capsys, node, config("[memory]\nlock = false\n"))
    assert rc == 0 and checks["memlock"]["status"] == "skip"

    node.status(allowed="0-7", cap_eff=CAP_IPC_LOCK)  # the limit does not bind a process with CAP_IPC_LOCK
    rc, _, checks = run(capsys, node, config())
    assert rc == 0 and checks["memlock"]["status"] == "ok" and "CAP_IPC_LOCK" in checks["memlock"]["detail"]


def test_memory_lockall_wants_an_unlimited_memlock(capsys, node, config):
    node.limits(memlock=str(1 << 30), rtprio="0")
    rc, _, checks = run(capsys, node, config("[memory]\nlockall = true\n"))
    assert rc == 1 and checks["memlock"]["status"] == "fail"


def test_thp_always_warns(capsys, node, config):
    node.write("sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never")
    _, _, checks = run(capsys, node, config())
    assert checks["thp"]["status"] == "warn" and "echo madvise" in checks["thp"]["fix"]


# ---- scheduling -----------------------------------------------------------------------------------

def test_sched_fifo_needs_cap_sys_nice_or_rtprio(capsys, node, config):
    fifo = '[cpu]\nsched_fifo = true\nfifo_priority = 60\n[runtime]\nidle = "yield"\n'
    node.limits(memlock="unlimited", rtprio="50")
    rc, rep, checks = run(capsys, node, config(fifo))
    assert rc == 1 and checks["sched_fifo"]["status"] == "fail"
    assert "LimitRTPRIO=60" in checks["sched_fifo"]["fix"]

    node.limits(memlock="unlimited", rtprio="60")
    rc, _, checks = run(capsys, node, config(fifo))
    assert rc == 0 and checks["sched_fifo"]["status"] == "ok"

    node.limits(memlock="unlimited", rtprio="0")
    node.status(allowed="0-7", cap_eff=CAP_SYS_NICE)
    rc, _, checks = run(capsys, node, config(fifo))
    assert rc == 0 and checks["sched_fifo"]["status"] == "ok"

    rc, _, checks = run(capsys, node, config())
    assert checks["sched_fifo"]["status"] == "skip"


def test_rt_throttling_warns_for_spinning_fifo_threads(capsys, node, config):
    node.write("proc/sys/kernel/sched_rt_runtime_us", "950000")
    rc, _, checks = run(capsys, node, config("[cpu]\nsched_fifo = true\n"))
    assert rc == 0 and checks["sched_fifo"]["status"] == "warn"
    assert "sched_rt_runtime_us=-1" in checks["sched_fifo"]["fix"]


# ---- network --------------------------------------------------------------------------------------

MULTICAST_FEED = """\
    [feed]
    source = "moldudp64"
    address = "239.192.0.1"
    interface = "127.0.0.1"
"""


def test_feed_nic_must_be_present_up_and_multicast_capable(capsys, node, config):
    path = config(MULTICAST_FEED)
    rc, rep, checks = run(capsys, node, path)
    assert rc == 1 and checks["nic.feed"]["status"] == "fail"  # lo as the fake node has it: no IFF_MULTICAST
    assert "multicast is off" in checks["nic.feed"]["detail"]
    assert "ip link set lo multicast on" in checks["nic.feed"]["fix"]

    node.interface("lo", flags=0x1009, operstate="unknown", mtu=65536)
    rc, _, checks = run(capsys, node, path)
    assert rc == 0 and checks["nic.feed"]["status"] == "ok"
    assert "feed.interface = 127.0.0.1 on lo (loopback" in checks["nic.feed"]["detail"]

    node.interface("lo", flags=0x1008, operstate="down", mtu=65536, carrier=0)
    rc, _, checks = run(capsys, node, path)
    assert rc == 1 and "down" in checks["nic.feed"]["detail"] and "ip link set lo up" in checks["nic.feed"]["fix"]

    node.interface("lo", flags=0x1009, operstate="unknown", mtu=1280)
    rc, _, checks = run(capsys, node, path)
    assert rc == 0 and checks["nic.feed"]["status"] == "warn" and "MTU 1280" in checks["nic.feed"]["detail"]

    for name in ("flags", "operstate", "mtu", "carrier"):
        node.remove(f"sys/class/net/lo/{name}")
    os.rmdir(node.path("sys/class/net/lo"))
    rc, _, checks = run(capsys, node, path)
    assert rc == 1 and "does not list" in checks["nic.feed"]["detail"]


def test_a_feed_interface_address_no_nic_holds_fails(capsys, node, config):
    rc, _, checks = run(capsys, node, config(MULTICAST_FEED.replace("127.0.0.1", "192.0.2.123")))
    assert rc == 1 and checks["nic.feed"]["status"] == "fail"
    assert "no interface has the address 192.0.2.123" in checks["nic.feed"]["detail"]
    assert "correct feed.interface" in checks["nic.feed"]["fix"]


def test_no_route_fails_and_a_refused_netlink_socket_only_warns(capsys, node, monkeypatch):
    from appliance.ops import nodefacts

    demo = os.path.join(REPO, "config", "demo.toml")

    def no_route(address, local):
        raise nodefacts.RouteError(f"no route to {address}: network unreachable")

    monkeypatch.setattr(nodefacts, "interface_for", no_route)
    rc, _, checks = run(capsys, node, demo, "--warn-only", "hot_cores")
    assert rc == 1 and checks["nic.gateway"]["status"] == "fail"
    assert "add a route to 127.0.0.1" in checks["nic.gateway"]["fix"]

    def refused(address, local):
        raise OSError(97, "Address family not supported by protocol")

    monkeypatch.setattr(nodefacts, "interface_for", refused)
    rc, _, checks = run(capsys, node, demo, "--warn-only", "hot_cores")
    assert rc == 0 and checks["nic.feed"]["status"] == "warn" and checks["nic.gateway"]["status"] == "warn"
    assert "RestrictAddressFamilies" in checks["nic.feed"]["fix"]


def test_the_demo_config_trades_over_loopback(capsys, node):
    rc, _, checks = run(capsys, node, os.path.join(REPO, "config", "demo.toml"), "--warn-only", "hot_cores")
    for role in ("feed", "gateway"):
        assert checks[f"nic.{role}"]["status"] == "ok", checks[f"nic.{role}"]
        assert "on lo (loopback" in checks[f"nic.{role}"]["detail"]


# ---- clocks ---------------------------------------------------------------------------------------

def test_a_clock_source_other_than_tsc_warns(capsys, node, config):
    node.write("sys/devices/system/clocksource/clocksource0/current_clocksource", "hpet")
    _, _, checks = run(capsys, node, config())
    assert checks["clocksource"]["status"] == "warn" and "echo tsc >" in checks["clocksource"]["fix"]
    node.write("sys/devices/system/clocksource/clocksource0/available_clocksource", "hpet acpi_pm")
    _, _, checks = run(capsys, node, config())
    assert "does not offer tsc" in checks["clocksource"]["fix"]


def test_clock_sync_verdicts():
    synced = {"synced": True, "offset_s": 12e-6, "esterror_s": 3e-6, "maxerror_s": 0.02, "state": 0, "tai_s": 37}
    assert doctor.classify_clock(synced).status == "ok"
    unsynced = dict(synced, synced=False)
    check = doctor.classify_clock(unsynced, "; PTP clocks: ptp0 (mlx5_ptp)")
    assert check.status == "warn" and "chronyd" in check.fix and "ptp0" in check.detail
    assert doctor.classify_clock(None).status == "skip"


# ---- the command ----------------------------------------------------------------------------------

def test_warn_only_turns_a_named_failure_into_a_warning(capsys, node, config):
    node.isolate("", nohz_full="")
    path = config('[runtime]\nlayout = "fused"\n[cpu]\nstrict = true\n')
    rc, rep, checks = run(capsys, node, path, "--warn-only", "hot_cores")
    assert rc == 0 and checks["hot_cores"]["status"] == "warn" and "[--warn-only]" in checks["hot_cores"]["detail"]
    with pytest.raises(SystemExit) as e:
        doctor.main(["-c", path, "--root", node.root, "--warn-only", "hot_core"])
    assert e.value.code == 2 and "no check named hot_core" in capsys.readouterr().err


def test_the_table_prints_each_fix_under_its_problem(capsys, node, config):
    node.limits(memlock="65536", rtprio="0")
    rc = doctor.main(["-c", config(), "--root", node.root])
    out = capsys.readouterr().out
    assert rc == 1
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("FAIL  memlock"))
    assert lines[at + 1].strip().startswith("fix: LimitMEMLOCK=infinity")
    assert lines[-1].startswith("valid: no, 1 failed (memlock)")


def test_a_bad_config_exits_2_naming_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[memory]\nrequire_hugepages = "yes"\n[cpu]\nfifo_priority = 0\n')
    p = subprocess.run([sys.executable, "-m", "appliance", "doctor", "-c", str(bad)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "memory.require_hugepages" in p.stderr and "cpu.fifo_priority" in p.stderr


def test_help_through_the_cli():
    p = subprocess.run([sys.executable, "-m", "appliance", "doctor", "--help"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "--root DIR" in p.stdout and "exit status" in p.stdout


@pytest.mark.parametrize("cfg", [None, "config/demo.toml"])
def test_this_real_node(cfg):
    args = [sys.executable, "-m", "appliance", "doctor", "--json"] + (["-c", cfg] if cfg else [])
    p = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode in (0, 1), p.stderr
    rep = json.loads(p.stdout)
    assert rep["valid"] == (p.returncode == 0)
    assert [c["name"] for c in rep["checks"]] == list(doctor.CHECKS)
    for c in rep["checks"]:
        assert c["status"] in ("ok", "warn", "fail", "skip") and c["detail"], c
        assert c["status"] in ("ok", "skip") or c["fix"], c  # every problem says how to fix it
    assert [f["name"] for f in rep["failures"]] == [c["name"] for c in rep["checks"] if c["status"] == "fail"]
    assert rep["seconds"] < 2.0  # the checks themselves, imports aside


def test_sched_fifo_is_tried_for_real_on_this_node(tmp_path):
    cfg = tmp_path / "fifo.toml"
    cfg.write_text('[cpu]\nsched_fifo = true\n[runtime]\nidle = "yield"\n')
    p = subprocess.run([sys.executable, "-m", "appliance", "doctor", "--json", "-c", str(cfg)], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    check = next(c for c in json.loads(p.stdout)["checks"] if c["name"] == "sched_fifo")
    granted = "a thread was granted SCHED_FIFO 50" in check["detail"]
    refused = "a thread was not granted SCHED_FIFO 50" in check["detail"]
    assert granted != refused, check
    assert check["status"] == ("ok" if granted else "fail"), check


def test_nic_lookup_works_under_a_uvloop_policy():
    """The venue (and any host process) may install uvloop's policy; pyroute2's netlink socket must not
    end up on a uvloop loop, which cannot open AF_NETLINK endpoints."""
    import asyncio

    import uvloop

    from appliance.ops.nodefacts import interface_for

    before = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        assert interface_for("127.0.0.1", local=True) == "lo"
        assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)  # left as it was
    finally:
        asyncio.set_event_loop_policy(before)
