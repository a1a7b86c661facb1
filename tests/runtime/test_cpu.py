"""CPU placement: cpulist parsing, plan() on hand-made topologies, and what /proc says about real threads."""

import os
import threading

import pytest

from appliance.config import parse_config
from appliance.runtime import libc
from appliance.runtime.cpu import PlacementError, Topology, format_cpulist, inspect_thread, parse_cpulist, plan

SPLIT = ("feed", "strategy", "gateway")


def topo(allowed, isolated=()):
    return Topology(allowed=frozenset(allowed), isolated=frozenset(isolated), nohz_full=frozenset(), numa={})


def cfg(text, allowed):
    return parse_config(text, allowed_cpus=set(allowed))


@pytest.mark.parametrize(
    "text, cpus",
    [
        ("0-3,8,10-11", {0, 1, 2, 3, 8, 10, 11}),
        ("0", {0}),
        ("5-5", {5}),
        ("0,2,4,6", {0, 2, 4, 6}),
        ("1-2,4-7,9", {1, 2, 4, 5, 6, 7, 9}),
        ("0-127", set(range(128))),
    ],
)
def test_cpulist_round_trip(text, cpus):
    assert parse_cpulist(text) == cpus
    canonical = format_cpulist(cpus)
    assert parse_cpulist(canonical) == cpus
    assert format_cpulist(parse_cpulist(canonical)) == canonical


def test_cpulist_canonical_forms():
    assert format_cpulist({0, 1, 2, 3, 8, 10, 11}) == "0-3,8,10-11"
    assert format_cpulist([11, 10, 8, 3, 2, 1, 0]) == "0-3,8,10-11"
    assert format_cpulist({0, 1, 2, 5}) == "0-2,5"
    assert format_cpulist(set()) == "" and parse_cpulist("") == set() and parse_cpulist("\n") == set()
    assert parse_cpulist("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert format_cpulist(parse_cpulist("5-5")) == "5"


def test_split_on_eight_cores_with_four_isolated():
    allowed = range(8)
    p = plan(cfg("", allowed).cpu, SPLIT, topo(allowed, {4, 5, 6, 7}), idle="spin")
    hot = list(p.hot.values())
    assert list(p.hot) == list(SPLIT)
    assert len(set(hot)) == 3 and set(hot) <= {4, 5, 6, 7}
    assert p.control and not set(p.control) & set(hot)
    assert set(p.control) <= set(allowed)
    assert not p.shared
    assert p.problems == ()
    assert not any("share" in msg for msg in p.problems)


def test_split_on_four_plain_cores_leaves_core_zero_to_control():
    allowed = range(4)
    p = plan(cfg("", allowed).cpu, SPLIT, topo(allowed), idle="spin")
    assert sorted(p.hot.values()) == [1, 2, 3] and p.control == (0,)
    assert not p.shared
    assert all("not isolated" in msg for msg in p.problems) and len(p.problems) == 3


def test_split_on_two_cores_reports_sharing():
    allowed = (0, 1)
    p = plan(cfg("", allowed).cpu, SPLIT, topo(allowed), idle="spin")
    assert set(p.hot.values()) <= {0, 1}
    assert p.shared
    text = "\n".join(p.problems)
    assert "hot threads share cores" in text
    assert "control plane shares" in text
    assert 'runtime.idle = "spin"' in text  # spinning threads on one core starve each other
    yielding = plan(cfg("", allowed).cpu, SPLIT, topo(allowed), idle="yield")
    assert "hot threads share cores" in "\n".join(yielding.problems)
    assert not any("runtime.idle" in msg for msg in yielding.problems)


def test_fused_on_two_cores():
    allowed = (0, 1)
    c = cfg('[runtime]\nlayout = "fused"\n', allowed)
    p = plan(c.cpu, c.hot_threads(), topo(allowed), idle="spin")
    assert p.hot == {"fused": 1}
    assert p.control == (0,)
    assert not p.shared
    assert not any("share" in msg for msg in p.problems)
    assert any("cpu.fused: core 1 is not isolated" in msg for msg in p.problems)


def test_explicit_cores_are_honoured():
    allowed = range(8)
    c = cfg("[cpu]\nfeed = 2\nstrategy = 5\ngateway = 3\ncontrol = [0, 1]\n", allowed)
    p = plan(c.cpu, SPLIT, topo(allowed, {4, 5, 6, 7}), idle="spin")
    assert p.hot == {"feed": 2, "strategy": 5, "gateway": 3}
    assert p.control == (0, 1)
    assert not p.shared


def test_partly_explicit_cores_fill_the_rest_from_isolated():
    allowed = range(8)
    c = cfg("[cpu]\nfeed = 6\n", allowed)
    p = plan(c.cpu, SPLIT, topo(allowed, {4, 5, 6, 7}), idle="spin")
    assert p.hot["feed"] == 6
    assert {p.hot["strategy"], p.hot["gateway"]} <= {4, 5, 7}
    assert len(set(p.hot.values())) == 3
    assert not set(p.control) & set(p.hot.values())
    assert p.problems == ()


def test_strict_refuses_non_isolated_cores():
    allowed = range(4)
    c = cfg("[cpu]\nstrict = true\n", allowed)
    with pytest.raises(PlacementError, match="not isolated"):
        plan(c.cpu, SPLIT, topo(allowed), idle="spin")
    # the same strict config is fine when every hot core is isolated and dedicated
    ok = plan(c.cpu, SPLIT, topo(range(8), {4, 5, 6, 7}), idle="spin")
    assert ok.problems == ()


def test_strict_refuses_too_few_cores():
    c = cfg("[cpu]\nstrict = true\n", (0, 1))
    with pytest.raises(PlacementError, match="share"):
        plan(c.cpu, SPLIT, topo((0, 1), {0, 1}), idle="yield")


def test_inspect_current_thread():
    tid = threading.get_native_id()
    info = inspect_thread(tid)
    assert info["tid"] == tid
    assert info["cpus_allowed"] and parse_cpulist(info["cpus_allowed"]) == os.sched_getaffinity(0)
    with open(f"/proc/self/task/{tid}/comm") as f:
        assert info["name"] == f.read().strip() != ""
    assert info["last_cpu"] in os.sched_getaffinity(0)
    assert info["policy"] == "other"


def test_inspect_a_pinned_thread():
    if 1 not in os.sched_getaffinity(0):
        pytest.skip(f"needs CPU 1 in this process's affinity (have {format_cpulist(os.sched_getaffinity(0))})")
    ready, release = threading.Event(), threading.Event()
    box = {}

    def body():
        try:
            libc.set_thread_name("rt-probe")
            os.sched_setaffinity(0, {1})
            box["tid"] = threading.get_native_id()
        finally:
            ready.set()
        release.wait(10)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    try:
        assert ready.wait(5), "probe thread did not start"
        info = inspect_thread(box["tid"])
        assert info["cpus_allowed"] == "1"
        assert info["name"] == "rt-probe"
        assert info["tid"] == box["tid"] != threading.get_native_id()
        # pinning the thread left the main thread's affinity alone
        assert inspect_thread(threading.get_native_id())["cpus_allowed"] != "1" or os.sched_getaffinity(0) == {1}
    finally:
        release.set()
        t.join(5)
    assert not t.is_alive()


def test_topology_read_matches_the_process():
    t = Topology.read()
    assert t.allowed == frozenset(os.sched_getaffinity(0))
    assert t.describe()["allowed"] == format_cpulist(os.sched_getaffinity(0))
