"""Tick-to-trade: from an ITCH packet's arrival in user space to the OUCH order's send() returning.

The same MoldUDP64/ITCH packets (`touch_packets`: every packet deletes one symbol's best order and adds one a
tick away, so every packet moves a touch) are sent at a steady pace over loopback UDP to, in turn:
  - the appliance in the fused layout (one hot thread: feed, book, market maker, risk, OUCH gateway),
  - the appliance in the split layout (three hot threads; on 2 cores they share),
  - the common Ray design: a Python loop receives each packet and calls a Ray actor with ray.get for the
    decision, then sends the OUCH order itself (bench/ray_design.py).
The appliance's figure is its own tick_to_trade histogram (TSC at recv() return -> TSC after send()
returns), over every order a tick caused; the orders go to the built-in venue over SoupBinTCP. The last
line is one JSON object.

    python3 build.py bench tick-to-trade [--packets 20000] [--pace 2000] [--ray-ticks 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from appliance.runtime import cache  # noqa: E402

cache.configure()

import ray_design  # noqa: E402

from appliance.config.loader import parse_config  # noqa: E402
from appliance.runtime.net import free_port  # noqa: E402

PERCENTILES = (50, 90, 99, 99.9)
SYMBOLS = 8


def touch_packets(n: int, symbols: int = SYMBOLS, seed: int = 7, session: str = "TICKTRADE1") -> list[bytes]:
    """`n` MoldUDP64 packets in which every packet moves one symbol's touch: the best order on one side is
    deleted and a new one added one tick better or worse (a random walk of the touch), so every packet is a
    tick the market maker acts on. The first packet seeds a two-sided book for every symbol."""
    import random

    from appliance.feed import itch_descriptor as itch
    from appliance.feed import moldudp64_descriptor as mold

    rng = random.Random(seed)
    names = [f"SYM{i:03d}" for i in range(symbols)]
    ts, seq, ref = 9 * 3600 * 10**9, 1, 1
    best = {}  # (symbol, side) -> (ref, price)
    first = []
    for s in range(symbols):
        mid = rng.randrange(200_000, 1_000_000, 100)
        for side, px in (("B", mid - 100), ("S", mid + 100)):
            first.append(itch.encode("A", locate=s + 1, timestamp=ts, ref=ref, side=side, shares=100,
                                     stock=names[s], price=px))
            best[(s, side)] = (ref, px)
            ref += 1
    packets = [mold.encode_packet(session, seq, first)]
    seq += len(first)
    for _ in range(n - 1):
        ts += 1000
        s = rng.randrange(symbols)
        side = rng.choice("BS")
        old_ref, px = best[(s, side)]
        other = best[(s, "S" if side == "B" else "B")][1]
        step = rng.choice((-100, 100))
        new_px = px + step
        if (side == "B" and new_px >= other) or (side == "S" and new_px <= other) or new_px < 10_000:
            new_px = px - step
        msgs = [itch.encode("D", locate=s + 1, timestamp=ts, ref=old_ref),
                itch.encode("A", locate=s + 1, timestamp=ts, ref=ref, side=side, shares=100, stock=names[s],
                            price=new_px)]
        best[(s, side)] = (ref, new_px)
        ref += 1
        packets.append(mold.encode_packet(session, seq, msgs))
        seq += len(msgs)
    return packets


def _config(layout: str, idle: str, feed: int, ouch: int, journal: str):
    names = [f"SYM{i:03d}" for i in range(SYMBOLS)]
    return parse_config(f"""
[runtime]
layout = "{layout}"
idle = "{idle}"
batch = 32
[feed]
source = "moldudp64"
port = {feed}
[book]
# Sized for this feed (a few live orders on 8 symbols): a 24 MB order table would make every message a
# cache miss at this packet rate, which measures the table size, not the path.
max_orders = 65536
max_symbols = 64
[strategy]
kind = "market_maker"
symbols = {json.dumps(names)}
# Quote at the touch and follow every move: as many ticks as possible lead to an order.
half_spread = 0
vol_multiplier = 0.0
skew_per_share = 0.0
refresh_us = 0
[risk]
order_rate = 1000000
order_burst = 100000
max_open_orders = 10000
max_position = 1000000
max_gross_position = 100000000
price_collar_bps = 10000
kill_on_feed_loss_ms = 0
[gateway]
protocol = "ouch"
port = {ouch}
[journal]
path = "{journal}"
fsync = "none"
[venue]
symbols = {json.dumps(names)}
rate = 0
max_orders = 1048576
feed_port = {free_port("udp")}
retransmit_port = 0
ouch_port = {ouch}
fix_port = 0
state_dir = "{journal}.venue"
""")


def _send(packets, port: int, pace: float) -> float:
    """Send the packets to the appliance at `pace` per second; returns the seconds it took."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dest = ("127.0.0.1", port)
    gap = 1.0 / pace
    t0 = time.perf_counter()
    for i, p in enumerate(packets):
        due = t0 + i * gap
        while True:
            left = due - time.perf_counter()
            if left <= 0:
                break
            if left > 0.0005:
                time.sleep(left - 0.0004)
        sock.sendto(p, dest)
    sock.close()
    return time.perf_counter() - t0


def run_appliance(packets, layout: str, idle: str, pace: float, workdir: str) -> dict:
    from appliance.runtime.engine import Engine
    from appliance.venue.server import Venue

    feed, ouch = free_port("udp"), free_port("tcp")
    cfg = _config(layout, idle, feed, ouch, os.path.join(workdir, f"orders-{layout}.journal"))
    engine = Engine(cfg)
    compile_s = engine.compile()
    venue = Venue(cfg.venue).start()
    try:
        engine.start()
        if not engine.trading.wait_logged_in(30):
            raise RuntimeError("the appliance did not log in to the venue")
        before = engine.histograms()
        took = _send(packets, feed, pace)
        deadline = time.monotonic() + 30
        while engine.feed.stats()["mold"]["packets"] < len(packets) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the last orders' send() returns
        after = engine.histograms()
        status = engine.trading.status()
        feed_stats = engine.feed.stats()
        placement = {t["thread"]: t["core"] for t in engine.thread_report()}
        engine.stop(5.0)
    finally:
        venue.stop()
    t2t = after["tick_to_trade"] - before["tick_to_trade"]
    stages = {name: (after[name] - before[name]) for name in ("feed_decode", "feed_book", "strategy_decide",
                                                             "risk_check", "send_call")}
    out = {"layout": layout, "idle": idle, "placement": placement, "compile_s": round(compile_s, 2),
           "packets": feed_stats["mold"]["packets"], "messages": feed_stats["mold"]["messages"],
           "send_seconds": round(took, 2), "orders_timed": t2t.count,
           "orders": status["orders"], "strategy": status["strategy"], "risk_rejects": {k: v for k, v in status["risk_rejects"].items() if v},
           "stages_p50_ns": {k: v.percentile(50) for k, v in stages.items() if v.count}}
    for p in PERCENTILES:
        out[f"p{p:g}_ns"] = t2t.percentile(p) if t2t.count else None
    out["max_ns"] = t2t.max_ns if t2t.count else None
    t2s = after["tick_to_send"] - before["tick_to_send"]
    out["to_send_call_ns"] = {f"p{p:g}": t2s.percentile(p) if t2s.count else None for p in PERCENTILES}
    out["send_call_ns"] = {f"p{p:g}": stages["send_call"].percentile(p) if stages["send_call"].count else None
                           for p in (50, 99)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=20000, help="packets sent to each appliance layout")
    ap.add_argument("--pace", type=float, default=2000.0, help="packets per second")
    ap.add_argument("--ray-ticks", type=int, default=1000, help="packets sent to the Ray design (about 1 ms each)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray design")
    ap.add_argument("--layouts", default="fused,split")
    args = ap.parse_args(argv)

    import tempfile

    packets = touch_packets(args.packets)
    result = {"bench": "tick-to-trade", "packets": args.packets, "pace_per_s": args.pace,
              "machine": f"{os.cpu_count()} CPUs", "target_fused_p50_ns": 10_000, "appliance": {}}
    with tempfile.TemporaryDirectory(prefix="t2t-") as work:
        for layout in args.layouts.split(","):
            idle = "spin" if layout == "fused" else "yield"  # three spinning threads on 2 cores starve each other
            r = run_appliance(packets, layout, idle, args.pace, work)
            result["appliance"][layout] = r
            print(f"appliance {layout:5s} ({idle}): {r['orders_timed']:,} orders, tick-to-trade p50 "
                  f"{r['p50_ns'] / 1000:.2f} us  p90 {r['p90_ns'] / 1000:.2f} us  p99 {r['p99_ns'] / 1000:.2f} us  "
                  f"p99.9 {r['p99.9_ns'] / 1000:.2f} us; up to the send() call p50 {r['to_send_call_ns']['p50'] / 1000:.2f} us; "
                  f"stages p50 {r['stages_p50_ns']}", flush=True)
    if not args.no_ray:
        ray = ray_design.run_ray_design(packets, ticks=min(args.ray_ticks, len(packets)), pace_per_s=min(args.pace,
                                                                                                           500))
        result["ray"] = ray
        print(f"ray actor per tick: {ray['orders']:,} orders, p50 {ray['p50_ns'] / 1000:.1f} us  p99 "
              f"{ray['p99_ns'] / 1000:.1f} us  p99.9 {ray['p99_9_ns'] / 1000:.1f} us (ray.init {ray['ray_init_s']} s)",
              flush=True)
        fused = result["appliance"].get("fused")
        if fused and fused["p50_ns"]:
            result["ray_over_fused_p50"] = round(ray["p50_ns"] / fused["p50_ns"], 1)
    fused = result["appliance"].get("fused")
    result["fused_p50_within_target"] = bool(fused and fused["p50_ns"] and fused["p50_ns"] <= 10_000)
    print(json.dumps(result, default=lambda o: dataclasses.asdict(o) if dataclasses.is_dataclass(o) else str(o)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
