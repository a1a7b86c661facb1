"""The engine in-process: compile, start, events flow, placement verified, stall injection, clean stop."""

import time

import pytest

from appliance.config import parse_config
from appliance.runtime.engine import Engine

from rt_support import wait_until

BASE = '[runtime]\nlayout = "{layout}"\nidle = "yield"\n[synthetic]\nrate = 100000\n'


@pytest.fixture
def make_engine():
    """Build engines that are always stopped afterwards, even when a test fails half-way."""
    engines = []

    def make(layout):
        engine = Engine(parse_config(BASE.format(layout=layout)))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        if engine.threads:
            for name in engine.names:
                engine.set_stall(name, False)
            assert engine.stop(5.0), "hot threads did not stop"


def _steady_beats(engine, name, gap=0.1):
    """Two heartbeat reads of thread `name`, `gap` seconds apart, are equal (the thread is not advancing)."""
    first = engine.beats()[name]
    time.sleep(gap)
    return first == engine.beats()[name]


def _check_running(engine):
    report = engine.thread_report()
    assert [t["thread"] for t in report] == list(engine.names)
    for t in report:
        assert t["alive"] and t["error"] is None, t
        assert t["state"] == "running", t
        assert t["verified"], f"{t['thread']} not pinned to core {t['core']}: {t['proc']}"
        assert t["proc"]["cpus_allowed"] == str(t["core"]) and t["proc"]["name"] == t["thread"]
        assert t["heartbeats"] > 0
    return report


def _check_counters(engine, stopped=False):
    c = engine.counters()
    assert all(agent["sequence_errors"] == 0 for agent in c.values()), c
    if stopped:  # while running, counters read one after another are not a consistent cut
        assert c["feed"]["events_out"] >= c["strategy"]["events_in"] >= c["strategy"]["events_out"] >= c["gateway"]["events_in"]
        in_flight = sum(r["depth"] for r in engine.rings().values())
        assert c["feed"]["events_out"] - c["gateway"]["events_in"] == in_flight, (c, engine.rings())
    return c


def test_fused_runs_stalls_and_stops(make_engine):
    engine = make_engine("fused")
    assert engine.names == ("fused",)
    assert engine.compile() >= 0
    engine.start()
    wait_until(lambda: engine.counters()["gateway"]["events_in"] > 10_000, 10.0, what="10,000 events through the pipeline")
    _check_counters(engine)
    _check_running(engine)
    hist = engine.histograms()
    assert hist["pipeline"].count > 0 and hist["pipeline"].max_ns > 0

    engine.set_stall("fused", True)
    wait_until(lambda: engine.thread_report()[0]["state"] == "stalled", 5.0, what="state stalled")
    wait_until(lambda: _steady_beats(engine, "fused"), 5.0, interval=0, what="heartbeats to stop advancing")
    report = engine.thread_report()[0]
    assert report["state"] == "stalled" and report["stalls_injected"] >= 1
    stalled_events = engine.counters()["gateway"]["events_in"]
    held = engine.beats()["fused"]

    engine.set_stall("fused", False)
    wait_until(lambda: engine.beats()["fused"] > held, 5.0, what="heartbeats to advance after release")
    wait_until(lambda: engine.counters()["gateway"]["events_in"] > stalled_events, 5.0, what="events after release")
    _check_running(engine)
    _check_counters(engine)

    assert engine.stop(2.0) is True
    report = engine.thread_report()[0]
    assert report["state"] == "stopped" and not report["alive"] and report["error"] is None
    _check_counters(engine, stopped=True)


def test_split_moves_events_through_all_three_agents(make_engine):
    engine = make_engine("split")
    assert engine.names == ("feed", "strategy", "gateway")
    engine.compile()
    engine.start()
    wait_until(lambda: engine.counters()["gateway"]["events_in"] > 10_000, 15.0, what="10,000 events through three threads")
    c = _check_counters(engine)
    assert c["feed"]["events_out"] > 10_000 and c["strategy"]["events_out"] > 10_000
    _check_running(engine)
    hist = engine.histograms()
    for name in ("hop_feed_to_strategy", "hop_strategy_to_gateway", "pipeline"):
        assert hist[name].count > 0, name
    rings = engine.rings()
    assert all(0 <= r["depth"] <= r["capacity"] == engine.layout.ring_slots for r in rings.values())

    engine.set_stall("strategy", True)
    wait_until(lambda: engine.thread_report()[1]["state"] == "stalled", 5.0, what="strategy stalled")
    wait_until(lambda: _steady_beats(engine, "strategy"), 5.0, interval=0, what="the strategy heartbeat to stop advancing")
    beats = engine.beats()
    wait_until(lambda: engine.beats()["feed"] > beats["feed"], 5.0, what="feed heartbeat to keep advancing")
    engine.set_stall("strategy", False)
    wait_until(lambda: engine.beats()["strategy"] > beats["strategy"], 5.0, what="strategy heartbeat after release")

    # a thread held in a stall still honours the stop flag
    engine.set_stall("gateway", True)
    wait_until(lambda: engine.thread_report()[2]["state"] == "stalled", 5.0, what="gateway stalled")
    assert engine.stop(2.0) is True
    assert [t["state"] for t in engine.thread_report()] == ["stopped"] * 3
    _check_counters(engine, stopped=True)
