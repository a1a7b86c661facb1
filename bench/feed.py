"""Feed benchmark: ITCH 5.0 over MoldUDP64 on loopback UDP into the appliance's feed agent and L3 book.

Run from the repository root with `python3 build.py bench feed` (or `python bench/feed.py [--messages N]`).
The venue's MoldUDP64 publisher sends a generated day file paced at `--rate` messages per second
(default 3.5 M/s; 0 = as fast as it can; 1472-byte payloads, one Ethernet MTU) from a thread pinned
to one core; the appliance's feed agent (MoldUDP64 session, gap
recovery through the publisher's retransmission server, L3 book for every symbol, book events into a
ring drained by a null consumer) runs on a thread pinned to the other. The rate is messages applied
divided by the time from the first datagram read to the last. A second run drops 1% of the packets at
the sender to show recovery at speed. The last line is one JSON object.
"""

import argparse
import json
import os
import socket
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Before any kernel module is imported: numba checks a cached kernel against its own file only, so
# without the package's source-fingerprinted cache a bench kernel would keep stale inlined callees
# (a ring edit would go unmeasured).
from appliance.runtime import cache  # noqa: E402

cache.configure()

from appliance.book import l3  # noqa: E402
from appliance.config.loader import parse_config  # noqa: E402
from appliance.feed import mold_session as ms  # noqa: E402
from appliance.feed.itch_feed import ItchFeed, drive_feed  # noqa: E402
from appliance.runtime.clock import calibrate, read_tsc  # noqa: E402
from appliance.runtime.event import EVENT_DTYPE  # noqa: E402
from appliance.runtime.layout import C_BACKPRESSURE, RING_HDR_WORDS  # noqa: E402
from appliance.venue.generator import GeneratorParams, generate  # noqa: E402
from appliance.venue.publisher import Faults, MoldPublisher  # noqa: E402

TARGET_MPS = 3.0
LIMIT_S = 60.0


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(day, n, symbols, faults, cores, cal, rate):
    port = free_udp_port()
    pub = MoldPublisher(day, ("127.0.0.1", port), count=n, rate=rate, faults=faults, sndbuf=8 << 20)
    cfg = parse_config(f"""
[feed]
source = "moldudp64"
port = {port}
retransmit_port = {pub.retrans_address[1]}
receive_buffer = 134217728
[book]
max_symbols = {symbols + 16}
""")
    feed = ItchFeed(cfg)
    io, sess, bk = feed.kernel_args()
    hdr, slots, counters = np.zeros(RING_HDR_WORDS, np.int64), np.zeros(4096, EVENT_DTYPE), np.zeros(8, np.int64)
    drive_feed(io, sess, bk, counters, hdr, slots, cal.mult, 0)  # compile or load before the stream
    span = {}

    def receive():
        if cores:
            os.sched_setaffinity(0, {cores[1]})
        span["tsc"] = drive_feed(io, sess, bk, counters, hdr, slots, cal.mult, read_tsc() + int(LIMIT_S * cal.hz))

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    if cores:
        os.sched_setaffinity(0, {cores[0]})  # the publisher's thread inherits this core
    pub.start()
    t.join(LIMIT_S + 10)
    if cores:
        os.sched_setaffinity(0, set(cores))
    sent = pub.counters()
    pub.close()
    feed.close()
    st = feed.stats()
    first, last = span.get("tsc", (0, 0))
    secs = (last - first) / cal.hz if last > first else float("nan")
    mold = st["mold"]
    return {
        "messages": mold["messages"], "complete": bool(ms.mold_complete(sess)) and mold["messages"] == n,
        "seconds": round(secs, 3), "mps": round(mold["messages"] / secs / 1e6, 3) if secs == secs else 0,
        "packets": mold["packets"], "gaps": mold["gaps"], "requests": mold["requests"],
        "recovered": mold["recovered"], "unrecoverable": mold["unrecoverable"],
        "duplicates": mold["dup_packets"], "malformed": sum(st["book"]["malformed"].values()),
        "book_events_dropped": int(counters[C_BACKPRESSURE]), "sender_dropped_packets": sent["dropped_packets"],
        "retransmitted_messages": sent["retrans_messages"], "live_orders": st["book"]["live_orders"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10_000_000)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=3_500_000,
                    help="publisher pacing in messages/s (0 = unpaced: then the sender can overrun the receiver "
                         "and whole socket buffers are lost)")
    args = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))[:2]
    cores = cores if len(cores) == 2 else None
    t0 = time.perf_counter()
    day, counts = generate(GeneratorParams(seed=20261122, messages=args.messages, symbols=args.symbols))
    n = sum(counts.values())
    print(f"day file: {n:,} messages, {len(day) / 1e6:.0f} MB, generated in {time.perf_counter() - t0:.1f} s; "
          f"publisher on core {cores[0] if cores else '?'}, feed on core {cores[1] if cores else '?'}")
    cal = calibrate()
    clean = []
    for r in range(args.runs):
        res = run(day, n, args.symbols, Faults(), cores, cal, args.rate)
        clean.append(res)
        print(f"lossless run {r + 1}: {res['mps']:.2f} M msgs/s over {res['seconds']:.2f} s, "
              f"{res['packets']:,} packets, gaps {res['gaps']} (recovered {res['recovered']:,}, "
              f"unrecoverable {res['unrecoverable']}), complete {res['complete']}")
    lossy = run(day, n, args.symbols, Faults(drop=0.01, seed=7), cores, cal, args.rate)
    print(f"1% dropped at the sender: {lossy['mps']:.2f} M msgs/s, {lossy['sender_dropped_packets']:,} packets "
          f"dropped, gaps {lossy['gaps']:,}, re-requests {lossy['requests']:,}, recovered {lossy['recovered']:,}, "
          f"unrecoverable {lossy['unrecoverable']}, complete {lossy['complete']}")
    rates = sorted(r["mps"] for r in clean)
    med = rates[len(rates) // 2]
    ok = med >= TARGET_MPS and all(r["unrecoverable"] == 0 and r["complete"] for r in clean)
    print(f"median {med:.2f} M msgs/s (target {TARGET_MPS}), unrecovered gaps "
          f"{sum(r['unrecoverable'] for r in clean)}")
    print(json.dumps({
        "bench": "feed", "machine": {"nproc": os.cpu_count(), "cores": cores, "tsc_hz": round(cal.hz)},
        "file": {"messages": n, "bytes": int(len(day)), "symbols": args.symbols},
        "payload_bytes": 1472, "publisher_rate": args.rate, "runs": clean, "median_mps": med, "target_mps": TARGET_MPS,
        "lossy_1pct": lossy, "pass": ok,
    }))


if __name__ == "__main__":
    main()
