"""The whole process: started from a config, scraped while hot threads spin, reloaded, signalled, watched by a notify socket."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from appliance.runtime.cpu import format_cpulist
from tests.conftest import ROOT
from tests.support import wait_for

pytestmark = pytest.mark.process

BASE = """
[process]
name = "under-test"
[runtime]
layout = "{layout}"
idle = "{idle}"
[synthetic]
rate = 200000
[control]
port = 0
fault_injection = true
[health]
heartbeat_timeout_ms = 300
status_interval_s = 0.2
"""


def config(layout="split", idle="yield", extra=""):
    return BASE.format(layout=layout, idle=idle) + extra


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text, matching labels in any order."""
    want = dict(re.findall(r'(\w+)="([^"]*)"', labels))
    for m in re.finditer(rf"^{re.escape(name)}(?:{{(.*?)}})? (\S+)$", text, re.M):
        if dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or "")) == want:
            return float(m.group(2))
    raise AssertionError(f"{name}{labels} not in /metrics")


def test_metrics_keep_answering_while_hot_threads_spin_and_sigterm_exits_0_within_5s(appliance):
    # Three busy-polling hot threads on this 2-core machine: the control plane still answers.
    a = appliance(config(layout="split", idle="spin")).wait_ready()
    beats = []
    for _ in range(10):
        t0 = time.monotonic()
        status, body = a.get("/metrics", timeout=5)
        assert status == 200, body
        assert time.monotonic() - t0 < 5
        beats.append(metric(body, "appliance_hot_thread_heartbeats_total", '{thread="strategy"}'))
        assert metric(body, "appliance_hot_thread_state", '{thread="gateway",state="running"}') == 1
    assert beats == sorted(beats) and beats[-1] > beats[0], "heartbeats must advance between scrapes"
    assert metric(body, "appliance_events_received_total", '{agent="gateway"}') > 0
    assert metric(body, "appliance_sequence_errors_total", '{agent="gateway"}') == 0
    assert metric(body, "appliance_ring_hop_latency_seconds_bucket", '{ring="feed_to_strategy",le="+Inf"}') > 0
    assert "appliance_pipeline_latency_seconds_count" in body
    assert sum(metric(body, "appliance_arena_mode", f'{{mode="{m}"}}') for m in ("hugetlb", "transparent", "normal")) == 1

    t0 = time.monotonic()
    a.signal(signal.SIGTERM)
    assert a.wait_exit(timeout=5) == 0, a.log()
    assert time.monotonic() - t0 < 5
    assert "stopped cleanly" in a.log()


def test_status_reports_verified_placement_and_health(appliance):
    a = appliance(config(layout="fused")).wait_ready()
    status, body = a.get("/status")
    assert status == 200
    st = json.loads(body)
    assert st["ready"] and st["healthy"] and st["layout"] == "fused"
    (t,) = st["threads"]
    assert t["thread"] == "fused" and t["verified"] and t["proc"]["cpus_allowed"] == str(t["core"])
    assert t["proc"]["name"] == "fused"
    assert st["arena"]["mode"] in ("hugetlb", "transparent", "normal")
    assert a.get("/healthz")[0] == 200 and a.get("/readyz")[0] == 200
    assert a.get("/nope")[0] == 404
    assert re.search(r"hot thread fused\s+tid \d+ pinned to core \d+ \(kernel says cpus \d+", a.log())
    # Every other thread (main, executor, resolver pool) is confined to the control cores, off the hot one.
    place = st["placement"]
    assert place["control_verified"], place["control_threads"]
    main = next(x for x in place["control_threads"] if x["tid"] == st["pid"])
    assert main["cpus_allowed"] == format_cpulist(place["control"])
    if len(os.sched_getaffinity(0)) >= 2:
        assert t["core"] not in place["control"]
    a.signal(signal.SIGINT)
    assert a.wait_exit(timeout=5) == 0


def test_sighup_applies_reloadable_keys_and_names_the_ones_needing_restart(appliance):
    a = appliance(config(layout="fused")).wait_ready()
    text = a.config_path.read_text().replace("rate = 200000", "rate = 50000").replace('layout = "fused"', 'layout = "split"')
    a.config_path.write_text(text + '\n[log]\nlevel = "debug"\n')
    a.signal(signal.SIGHUP)
    line = a.wait_log(r"config reloaded from .*: applied (.*); changed but need a restart: (.*)$", 10)
    assert set(line.group(1).split(", ")) == {"log.level", "synthetic.rate"}
    assert line.group(2) == "runtime.layout"
    st = json.loads(a.get("/status")[1])
    assert st["layout"] == "fused" and st["control"]["reloads_applied"] == 1
    # The new rate reaches the hot loop: the source's event rate falls to about 50k/s.
    c0, t0 = st["counters"]["feed"]["events_out"], time.monotonic()
    wait_for(lambda: time.monotonic() - t0 > 1.0, 3)
    c1 = json.loads(a.get("/status")[1])["counters"]["feed"]["events_out"]
    rate = (c1 - c0) / (time.monotonic() - t0)
    assert 20_000 < rate < 80_000, rate

    a.config_path.write_text(text.replace("rate = 50000", "rate = -1"))
    a.signal(signal.SIGHUP)
    a.wait_log(r"reload of .* rejected; the running config stays in force", 10)
    a.wait_log(r"synthetic\.rate: ", 10)
    assert a.get("/readyz")[0] == 200
    a.signal(signal.SIGTERM)
    assert a.wait_exit(timeout=5) == 0


def _notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(0.05)
    return s, path


def _drain(sock, messages):
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except (socket.timeout, BlockingIOError):
            return messages


def test_sd_notify_ready_status_watchdog_and_watchdog_withheld_while_a_hot_thread_stalls(appliance, tmp_path):
    sock, path = _notify_socket(tmp_path)
    token = "t0ken-for-tests"
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "APPLIANCE_ADMIN_TOKEN": token}
    a = appliance(config(layout="split"), extra_env=env).wait_ready()
    msgs = []
    wait_for(lambda: any("READY=1" in m for m in _drain(sock, msgs)), 30, what="READY=1")
    wait_for(lambda: sum("WATCHDOG=1" in m for m in _drain(sock, msgs)) >= 3, 5, what="watchdog pings")
    assert any(m.startswith("STATUS=") for m in msgs)

    auth = {"Authorization": f"Bearer {token}"}
    assert a.request("POST", "/admin/stall?thread=strategy&on=1")[0] == 401  # no token
    assert a.request("POST", "/admin/stall?thread=strategy&on=1", headers=auth)[0] == 200
    a.wait_log(r"withholding the watchdog: strategy: heartbeat silent", 5)
    assert a.get("/healthz")[0] == 503 and a.get("/readyz")[0] == 503
    # Once the stall is detected, no WATCHDOG=1 may arrive for well over the 100 ms ping period.
    msgs.clear()
    _drain(sock, msgs)
    msgs.clear()
    quiet_until = time.monotonic() + 0.8
    while time.monotonic() < quiet_until:
        _drain(sock, msgs)
    assert not any("WATCHDOG=1" in m for m in msgs), msgs

    assert a.request("POST", "/admin/stall?thread=strategy&on=0", headers=auth)[0] == 200
    wait_for(lambda: any("WATCHDOG=1" in m for m in _drain(sock, msgs)), 5, what="watchdog resumes")
    assert a.get("/healthz")[0] == 200
    a.signal(signal.SIGTERM)
    assert a.wait_exit(timeout=5) == 0
    wait_for(lambda: any("STOPPING=1" in m for m in _drain(sock, msgs)), 2, what="STOPPING=1")
    sock.close()


def test_admin_api_disabled_without_token_and_stall_needs_fault_injection(appliance):
    a = appliance(config(layout="fused").replace("fault_injection = true", "fault_injection = false"),
                  extra_env={"APPLIANCE_ADMIN_TOKEN": "abc"}).wait_ready()
    auth = {"Authorization": "Bearer abc"}
    assert a.request("POST", "/admin/stall?thread=fused", headers=auth)[0] == 403
    assert a.request("POST", "/admin/reload", headers=auth)[0] == 200
    a.signal(signal.SIGTERM)
    assert a.wait_exit(timeout=5) == 0


BAD_CONFIGS = [
    ("[runtime]\nlayot = 'split'\n", "runtime.layot"),  # unknown key
    ("[bogus]\nx = 1\n", "bogus"),  # unknown section
    ("[runtime]\nring_slots = 'many'\n", "runtime.ring_slots"),  # wrong type
    ("[memory]\nlock = 1\n", "memory.lock"),  # int for bool
    ("[runtime]\nring_slots = 1000\n", "runtime.ring_slots"),  # not a power of two
    ("[control]\nport = 70000\n", "control.port"),  # out of range
    ("[runtime]\nlayout = 'triple'\n", "runtime.layout"),  # bad choice
    ("[runtime]\nlayout = 'split'\n[cpu]\nfeed = 0\nstrategy = 0\n", "cpu.strategy"),  # two hot threads on one core
    ("[runtime]\nlayout = 'fused'\n[cpu]\nfused = 4096\n", "cpu.fused"),  # core outside the allowed CPUs
    ("[runtime\nlayout = 'split'\n", "bad.toml"),  # TOML syntax
]


@pytest.mark.parametrize("toml,path", BAD_CONFIGS, ids=[p for _, p in BAD_CONFIGS])
def test_bad_config_exits_2_naming_the_key_path_before_touching_anything(tmp_path, toml, path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    for argv in (["run", "-c", str(cfg)], ["config", "check", str(cfg)]):
        r = subprocess.run([sys.executable, "-m", "appliance", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert path in r.stderr, r.stderr
        assert "listening" not in r.stderr + r.stdout  # nothing started
        if "bad.toml" not in path:
            assert re.search(rf"^{re.escape(path)}: .*expected|^{re.escape(path)}: unknown|^{re.escape(path)}: core", r.stderr, re.M), r.stderr


def test_require_hugepages_without_pages_exits_3_with_advice(appliance):
    free = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("HugePages_Free:"):
                free = int(line.split()[1])
    # Ask for an arena larger than the free pages so the failure path runs even where CI reserved some.
    slots = 1 << 20
    needed_pages = (2 * slots * 64) // (2 << 20) + 1
    if free >= needed_pages:
        pytest.skip(f"{free} HugePages free; this test needs fewer than {needed_pages} free to see the refusal")
    text = config(layout="fused").replace('idle = "yield"', f'idle = "yield"\nring_slots = {slots}')
    text += "\n[memory]\nrequire_hugepages = true\n"
    b = appliance(text)
    assert b.wait_exit(timeout=60) == 3, b.log()
    log = b.log()
    assert "memory.require_hugepages is true" in log and "nr_hugepages" in log and "hugepages-2Mi" in log


def test_hugepages_arena_for_real_when_pages_are_reserved(appliance):
    with open("/proc/meminfo") as f:
        info = {l.split(":")[0]: int(l.split()[1]) for l in f if l.startswith("HugePages_")}
    if info.get("HugePages_Free", 0) < 1:
        pytest.skip("no 2 MiB HugePages free: the hugetlb arena needs 1; reserve with `echo 8 > /proc/sys/vm/nr_hugepages` as root (.ci/run does)")
    a = appliance(config(layout="fused") + "\n[memory]\nrequire_hugepages = true\n").wait_ready()
    st = json.loads(a.get("/status")[1])
    assert st["arena"]["mode"] == "hugetlb" and st["arena"]["huge_bytes"] == st["arena"]["size_bytes"]
    body = a.get("/metrics")[1]
    assert metric(body, "appliance_arena_mode", '{mode="hugetlb"}') == 1
    assert re.search(r"arena: \d+ KiB in hugetlb pages", a.log())
    a.signal(signal.SIGTERM)
    assert a.wait_exit(timeout=5) == 0
