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


def _print_placement(w, r: dict) -> None:
    placed = ", ".join(f"{t}->core {p['core']}" for t, p in r["placement"].items())
    w(f"   placement: {placed}\n")
    for p in r["placement_problems"]:
        w(f"   note: {p}\n")


def print_report(report: dict, out=sys.stdout) -> None:
    w = out.write
    w(f"\nappliance demo: synthetic events, source -> pass-through -> sink, rate {report['rate']:,}/s\n")
    for r in report["layouts"]:
        w(f"\n== layout {r['layout']} (idle {r['idle']}), {r['seconds']} s, arena {r['arena']['mode']} pages"
          f"{', locked' if r['arena']['locked'] else ''}, kernels ready in {r['compile_seconds']} s\n")
        _print_placement(w, r)
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


# ---- the trading demo: the venue and the appliance on loopback ------------------------------------

PERCENTILES = (50, 90, 99, 99.9, 99.99)
STAGE_LABELS = (("feed_decode", "feed decode"), ("feed_book", "book update"), ("strategy_decide", "strategy"),
                ("risk_check", "risk check"), ("tick_to_send", "to send() call"), ("send_call", "send()"),
                ("tick_to_trade", "tick-to-trade"), ("order_ack", "order ack"))


def _wired(cfg, layout: str, workdir: str):
    """The demo's config with fresh loopback ports shared by the venue and the appliance, and its own files."""
    import os

    from .runtime.net import free_port

    feed, retrans, ouch = free_port("udp"), free_port("udp"), free_port("tcp")
    r = dataclasses.replace
    return r(cfg,
             runtime=r(cfg.runtime, layout=layout),
             feed=r(cfg.feed, address="127.0.0.1", port=feed, retransmit_host="127.0.0.1", retransmit_port=retrans),
             gateway=r(cfg.gateway, host="127.0.0.1", port=ouch),
             journal=r(cfg.journal, path=os.path.join(workdir, f"orders-{layout}.journal")),
             venue=r(cfg.venue, feed_address="127.0.0.1", feed_port=feed, retransmit_host="127.0.0.1",
                     retransmit_port=retrans, ouch_host="127.0.0.1", ouch_port=ouch, fix_port=0,
                     state_dir=os.path.join(workdir, f"venue-{layout}")))


def run_trading_layout(cfg, seconds: float) -> dict:
    """Start a fresh venue and the appliance in one layout, trade for `seconds`, stop both; what happened."""
    from .runtime.engine import Engine
    from .venue.server import Venue

    engine = Engine(cfg)
    compile_s = engine.compile()  # before the venue starts, so the feed is there from its first packet
    venue = Venue(cfg.venue).start()
    try:
        engine.start()
        logged_in = engine.trading.wait_logged_in(30)
        before = engine.histograms()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds and all(t.alive for t in engine.threads):
            time.sleep(0.05)
        after = engine.histograms()
        elapsed = time.monotonic() - t0
        status = engine.trading.status()
        feed = engine.feed.stats()
        placement = {t["thread"]: {"core": t["core"], "verified": t["verified"]} for t in engine.thread_report()}
        kill_t0 = time.monotonic()
        stopped = engine.stop(cfg.runtime.stop_timeout_s)
        stop_s = time.monotonic() - kill_t0
        record = venue.account_record()
    finally:
        venue.stop()
    hist = {name: after[name] - before[name] for name in after}
    t2t = hist["tick_to_trade"]
    final = engine.trading.status()
    agree = {s: p for s, p in final["positions"].items() if p} == {s: p for s, p in record["positions"].items() if p}
    return {
        "layout": cfg.runtime.layout, "idle": cfg.runtime.idle, "seconds": round(elapsed, 2),
        "compile_seconds": round(compile_s, 2), "logged_in": logged_in, "placement": placement,
        "placement_problems": list(engine.placement.problems),
        "market_data": {"messages": feed["mold"]["messages"], "packets": feed["mold"]["packets"],
                        "gaps": feed["mold"]["gaps"], "recovered": feed["mold"]["recovered"],
                        "bbo_events": feed["book"]["bbo_events"]},
        "orders": status["orders"], "risk_rejects": {k: v for k, v in status["risk_rejects"].items() if v},
        "positions": final["positions"], "pnl": final["pnl"], "strategy": status["strategy"],
        "tick_to_trade_ns": {f"p{p:g}": t2t.percentile(p) if t2t.count else None for p in PERCENTILES}
        | {"count": t2t.count, "max": t2t.max_ns if t2t.count else None},
        "stages_ns": {label: {"p50": hist[name].percentile(50) if hist[name].count else None,
                              "p99": hist[name].percentile(99) if hist[name].count else None}
                      for name, label in STAGE_LABELS},
        "shutdown": {"stopped_cleanly": stopped, "seconds": round(stop_s, 3), "kill_switch": final["kill_switch"]["last"],
                     "open_at_venue_after": len(record["open_orders"])},
        "venue_agrees": agree and not record["open_orders"] and record["duplicate_user_refs"] == 0,
    }


def print_trading_report(report: dict, out=sys.stdout) -> None:
    w = out.write
    w(f"\nappliance demo: market maker on {', '.join(report['symbols'])} against the built-in venue on loopback "
      f"({report['venue_rate']:,} participant ops/s)\n")
    for r in report["layouts"]:
        md, o = r["market_data"], r["orders"]
        w(f"\n== layout {r['layout']} (idle {r['idle']}), traded {r['seconds']} s, kernels ready in "
          f"{r['compile_seconds']} s\n")
        _print_placement(w, r)
        w(f"   market data: {md['messages']:,} ITCH messages in {md['packets']:,} packets, {md['bbo_events']:,} "
          f"touch changes, {md['gaps']} gaps ({md['recovered']} messages recovered)\n")
        w(f"   orders: {o['sent']:,} new, {o['replaces']:,} replaces, {o['cancels']:,} cancels; {o['accepted']:,} "
          f"accepted, {o['fills']:,} fills ({o['filled_shares']:,} shares), {o['venue_rejects']} rejected by the venue\n")
        rej = ", ".join(f"{k} {v}" for k, v in r["risk_rejects"].items()) or "none"
        w(f"   refused by risk: {rej}\n")
        pos = ", ".join(f"{s} {p:+,}" for s, p in r["positions"].items())
        w(f"   position: {pos}; P&L ${r['pnl']['total']:,.2f} (cash + position at mid)\n")
        t = r["tick_to_trade_ns"]
        w(f"   tick-to-trade ({t['count']:,} orders):  " + "  ".join(
            f"p{p:g} {_fmt(t[f'p{p:g}'])}" for p in (50, 90, 99, 99.9)) + f"  max {_fmt(t['max'])}\n")
        w("   stages (p50 / p99): " + ", ".join(f"{k} {_fmt(v['p50'])} / {_fmt(v['p99'])}"
                                              for k, v in r["stages_ns"].items() if k != "tick-to-trade") + "\n")
        w("   (to send() call: from the packet's arrival to the order's bytes handed to send())\n")
        s = r["shutdown"]
        k = s["kill_switch"] or {}
        w(f"   clean stop: {s['seconds']} s, {k.get('cancels', 0)} cancels (last sent "
          f"{k.get('trigger_to_last_cancel_sent_us', '-')} us after the trigger), {s['open_at_venue_after']} orders "
          f"left at the venue; venue's record agrees: {'yes' if r['venue_agrees'] else 'NO'}\n")
    if report.get("png"):
        w(f"\nlatency plot: {report['png']}\n")
    w("\nOn a shared VM the medians mean something; the tails mostly measure the host.\n")


def trading_demo(cfg, seconds: float, layouts: tuple, as_json: bool, png: str | None) -> int:
    """`appliance demo` on the trading path: each layout trades against its own fresh venue for an equal share
    of `seconds`; prints the report and writes the latency plot."""
    import os
    import tempfile

    from .control.plot import latency_png

    per_layout = seconds / len(layouts)
    report = {"symbols": list(cfg.strategy.symbols), "venue_rate": cfg.venue.rate, "layouts": []}
    with tempfile.TemporaryDirectory(prefix="appliance-demo-") as work:
        for layout in layouts:
            log.info("trading in the %s layout for %.1f s", layout, per_layout)
            report["layouts"].append(run_trading_layout(_wired(cfg, layout, work), per_layout))
    if png:
        curves = {r["layout"]: [(p, r["tick_to_trade_ns"][f"p{p:g}"]) for p in PERCENTILES] for r in report["layouts"]}
        last = report["layouts"][-1]
        stages = {k: v for k, v in last["stages_ns"].items()}
        latency_png(png, f"tick-to-trade, packet in to send() returned (stages: {last['layout']})", curves, stages)
        report["png"] = os.path.abspath(png)
    if as_json:
        print(json.dumps(report))
    else:
        print_trading_report(report)
    ok = all(r["logged_in"] and r["shutdown"]["stopped_cleanly"] and r["orders"]["sent"] > 0 and r["venue_agrees"]
             for r in report["layouts"])
    return 0 if ok else 1
