"""`appliance demo`: runs the runtime in each layout on synthetic events and reports hop and pipeline latency."""

import dataclasses
import json
import logging
import sys
import time

log = logging.getLogger("appliance.demo")


def run_layout(cfg, seconds: float) -> dict:
    """Run one layout for `seconds` and return what it measured."""
    from .runtime.engine import Engine

    engine = Engine(cfg)
    compile_s = engine.compile()
    engine.start()
    before = engine.histograms()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and all(t.alive for t in engine.threads):
        time.sleep(0.05)
    after = engine.histograms()
    threads = engine.thread_report()
    elapsed = time.monotonic() - engine.started_at
    stopped = engine.stop(cfg.runtime.stop_timeout_s)
    counters = engine.counters()
    arena = engine.arena.describe()
    arena.pop("regions")
    return {
        "layout": cfg.runtime.layout,
        "idle": cfg.runtime.idle,
        "seconds": round(elapsed, 2),
        "compile_seconds": round(compile_s, 2),
        "events": counters["gateway"]["events_in"],
        "events_per_second": round(counters["gateway"]["events_in"] / elapsed),
        "sequence_errors": counters["gateway"]["sequence_errors"],
        "backpressure": {a: c["backpressure"] for a, c in counters.items()},
        "arena": arena,
        "placement": {t["thread"]: {"core": t["core"], "verified": t["verified"]} for t in threads},
        "placement_problems": list(engine.placement.problems),
        "latency_ns": {name: (after[name] - before[name]).summary() for name in after},
        "stopped_cleanly": stopped,
    }


def _fmt(ns):
    if ns is None:
        return "-"
    return f"{ns:,.0f} ns" if ns < 10_000 else f"{ns / 1000:,.1f} us"


def print_report(report: dict, out=sys.stdout) -> None:
    w = out.write
    w(f"\nappliance demo: synthetic events, source -> pass-through -> sink, rate {report['rate']:,}/s\n")
    for r in report["layouts"]:
        w(f"\n== layout {r['layout']} (idle {r['idle']}), {r['seconds']} s, arena {r['arena']['mode']} pages"
          f"{', locked' if r['arena']['locked'] else ''}, kernels ready in {r['compile_seconds']} s\n")
        placed = ", ".join(f"{t}->core {p['core']}" for t, p in r["placement"].items())
        w(f"   placement: {placed}\n")
        for p in r["placement_problems"]:
            w(f"   note: {p}\n")
        w(f"   events: {r['events']:,} ({r['events_per_second']:,}/s), sequence errors {r['sequence_errors']}\n")
        w(f"   {'latency':<26}{'p50':>11}{'p90':>11}{'p99':>11}{'p99.9':>11}{'max':>11}\n")
        for name, s in r["latency_ns"].items():
            w(f"   {name:<26}{_fmt(s['p50_ns']):>11}{_fmt(s['p90_ns']):>11}{_fmt(s['p99_ns']):>11}"
              f"{_fmt(s['p99_9_ns']):>11}{_fmt(s['max_ns']):>11}\n")
    w("\nOn a shared VM the medians mean something; the tails mostly measure the host.\n")


def demo(cfg, seconds: float, layouts: tuple, as_json: bool) -> int:
    report = {"rate": cfg.synthetic.rate, "layouts": []}
    for layout in layouts:
        phase = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, layout=layout))
        log.info("running the %s layout for %.1f s", layout, seconds)
        report["layouts"].append(run_layout(phase, seconds))
    if as_json:
        print(json.dumps(report))
    else:
        print_report(report)
    ok = all(r["stopped_cleanly"] and r["sequence_errors"] == 0 and r["events"] > 0 for r in report["layouts"])
    return 0 if ok else 1
