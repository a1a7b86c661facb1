"""Book benchmark: ITCH 5.0 parse plus full L3 book for every symbol, beside itch-book (C++23) on the same bytes.

Run from the repository root with `python3 build.py bench book` (or `python bench/book.py [--messages N]`).
A generated day file is held in memory; each run starts from empty books and applies every message.
The appliance emits its book events (64-byte records) into a 4096-slot event ring; itch-book builds its
BBO table in 8 MiB chunks, as its own `Feed` does. Runs alternate between the two so both see the same
host. Human-readable lines first; the last line is one JSON object.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Before any kernel module is imported: numba checks a cached kernel against its own file only, so
# without the package's source-fingerprinted cache a bench kernel would keep stale inlined callees
# (a ring edit would go unmeasured).
from appliance.runtime import cache  # noqa: E402

cache.configure()

from appliance.book import l3  # noqa: E402
from appliance.runtime.event import EVENT_DTYPE  # noqa: E402
from appliance.venue.generator import GeneratorParams, generate  # noqa: E402

TARGET_RATIO = 1.5
CHUNK = 8 << 20  # itch-book's Feed default
PEER_ROWS = 1_000_000  # itch-book's Feed default batch size
EVENT_SLOTS = 4096


def run_appliance(buf, symbols, whole=True):
    bk = l3.make_book(max_orders=1 << 22, levels=256, max_symbols=max(16, symbols + 16))
    out = np.zeros(EVENT_SLOTS, dtype=EVENT_DTYPE)
    t0 = time.perf_counter()
    end, seq, _ = l3.book_replay(bk, buf, 0, len(buf), 1, 0, out, EVENT_SLOTS - 1, 0)
    dt = time.perf_counter() - t0
    assert end == len(buf) or not whole
    return dt, bk


def run_itch_book(buf):
    from itch_book import Session

    s = Session(tables=["bbo"], depth=0, symbols=[])
    s.reserve(PEER_ROWS + CHUNK // 21)
    last = {}
    t0 = time.perf_counter()
    for i in range(0, len(buf), CHUNK):
        s.feed(buf[i:i + CHUNK])
        if s.rows() >= PEER_ROWS:
            s.take_bbo()
    tail = s.take_bbo()
    dt = time.perf_counter() - t0
    for j in range(len(tail["locate"])):
        last[int(tail["locate"][j])] = j
    return dt, s.stats(), tail, last


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20_000_000)
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=20261122)
    args = ap.parse_args()

    import itch_book

    t0 = time.perf_counter()
    buf, counts = generate(GeneratorParams(seed=args.seed, messages=args.messages, symbols=args.symbols))
    gen_s = time.perf_counter() - t0
    n = sum(counts.values())
    print(f"day file: {n:,} messages, {len(buf) / 1e6:.0f} MB, generated in {gen_s:.1f} s")
    print("mix: " + ", ".join(f"{t} {c / n:.1%}" for t, c in sorted(counts.items(), key=lambda kv: -kv[1])
                               if c / n >= 0.001))

    t0 = time.perf_counter()
    run_appliance(buf[:4096], args.symbols, whole=False)  # compile or load the kernels outside the timing
    print(f"kernels ready in {time.perf_counter() - t0:.1f} s")

    ours, peers = [], []
    bk = peer = None
    for r in range(args.runs):
        dt, bk = run_appliance(buf, args.symbols)
        ours.append(n / dt / 1e6)
        pdt, pstats, tail, last = run_itch_book(buf)
        peers.append(n / pdt / 1e6)
        peer = (pstats, tail, last)
        print(f"run {r + 1}: appliance {ours[-1]:.1f} M msgs/s ({dt:.2f} s), itch-book {peers[-1]:.1f} M msgs/s "
              f"({pdt:.2f} s)")

    st = l3.stats(bk)
    pstats, tail, last = peer
    assert st["messages"] == n == pstats["messages"], (st["messages"], n, pstats["messages"])
    # Same final touch for every symbol, as a guard that both did the same work.
    mismatches = 0
    final = l3.bbo(bk)
    ours_bbo = {int(bk.sym_locate[slot]): final[name] for slot, name in enumerate(final)}
    for loc, j in last.items():
        theirs = (int(tail["bid_px"][j]), int(tail["bid_sz"][j]), int(tail["ask_px"][j]), int(tail["ask_sz"][j]))
        if ours_bbo.get(loc) != theirs:
            mismatches += 1
    med, pmed = statistics.median(ours), statistics.median(peers)
    ratio = med / pmed
    print(f"median: appliance {med:.1f} M msgs/s, itch-book {pmed:.1f} M msgs/s, ratio {ratio:.2f}x "
          f"(target {TARGET_RATIO}x); malformed {sum(st['malformed'].values())}, BBO mismatches at the end of "
          f"the last chunk {mismatches}")
    print(json.dumps({
        "bench": "book",
        "machine": {"nproc": os.cpu_count(), "cpu_model": platform.processor() or _cpu_model(),
                    "python": platform.python_version(), "itch_book": itch_book.__version__},
        "file": {"messages": n, "bytes": int(len(buf)), "symbols": args.symbols, "seed": args.seed,
                 "mix": {t: round(c / n, 4) for t, c in counts.items()}},
        "appliance_mps": [round(x, 2) for x in ours], "itch_book_mps": [round(x, 2) for x in peers],
        "appliance_median_mps": round(med, 2), "itch_book_median_mps": round(pmed, 2),
        "ratio": round(ratio, 3), "target_ratio": TARGET_RATIO, "events": st["events"],
        "malformed": sum(st["malformed"].values()), "final_bbo_mismatches": mismatches,
        "pass": ratio >= TARGET_RATIO and mismatches == 0,
    }))


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


if __name__ == "__main__":
    main()
