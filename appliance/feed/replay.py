"""Day-file replay: every message of an ITCH 5.0 day file through the live feed's decode and book code.

At full speed the file is applied in chunks as fast as the book goes; with a speed factor the messages
are released on the ITCH timestamps' schedule (speed 1 = real time, 10 = ten times faster), the wait
done in numba for short gaps and in Python (sleeping) for long ones. `appliance replay FILE` is the CLI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from ..book import l3
from ..runtime.atomics import cpu_pause, rdtsc
from ..runtime.clock import calibrate, read_tsc
from ..runtime.event import EVENT_DTYPE
from ..runtime.wire import get_u48
from . import itch_descriptor as d
from .dayfile import read_dayfile

CHUNK_BYTES = 4 << 20  # progress granularity at full speed
EVENT_SLOTS = 4096
HORIZON_NS = 2_000_000  # waits longer than this are slept in Python, shorter ones spun in numba


@njit(nogil=True, cache=True)
def replay_paced(bk, buf, start, end, seq, out, out_mask, pos, t0, ns_per_cycle, ts0, speed, horizon_ns):
    """Apply frames from buf[start:end] on the ITCH timestamps' schedule, started at TSC t0 for timestamp ts0.

    Returns (offset, seq, pos, wait_ns): wait_ns > 0 when the next frame is due later than the horizon.
    """
    off = start
    while off + 2 <= end:
        ln = (np.int64(buf[off]) << 8) | buf[off + 1]
        if off + 2 + ln > end:
            break
        if ln >= d.HEADER_SIZE:
            due = (get_u48(buf, off + 2 + d.OFF_TIMESTAMP) - ts0) / speed
            now = (rdtsc() - t0) * ns_per_cycle
            if due - now > horizon_ns:
                return off, seq, pos, np.int64(due - now)
            while now < due:
                cpu_pause()
                now = (rdtsc() - t0) * ns_per_cycle
        pos += l3.book_apply(bk, buf, off + 2, ln, seq, rdtsc(), out, out_mask, pos)
        seq += 1
        off += 2 + ln
    return off, seq, pos, np.int64(0)


@dataclass
class ReplayResult:
    """What a replay did: counts, the books' state, and how fast it went."""

    path: str
    bytes: int
    seconds: float
    truncated_bytes: int
    stats: dict
    bbo: dict = field(repr=False)

    def to_dict(self, top: int = 10) -> dict:
        n = self.stats["messages"]
        return {
            "file": self.path, "bytes": self.bytes, "messages": n, "seconds": round(self.seconds, 3),
            "messages_per_second": round(n / self.seconds) if self.seconds > 0 else None,
            "mb_per_second": round(self.bytes / self.seconds / 1e6, 1) if self.seconds > 0 else None,
            "by_type": {d.NAMES[t]: c for t, c in sorted(self.stats["by_type"].items(), key=lambda kv: -kv[1])},
            "book": {"symbols": self.stats["symbols"], "live_orders": self.stats["live_orders"],
                     "bbo_events": self.stats["bbo_events"], "trades": self.stats["trades"],
                     "filtered_messages": self.stats["filtered"],
                     "top": {s: {"bid": _px(b), "bid_size": bs, "ask": _px(a), "ask_size": as_}
                             for s, (b, bs, a, as_) in list(self.bbo.items())[:top]}},
            "malformed": {k: v for k, v in self.stats["malformed"].items() if v},
            "truncated_tail_bytes": self.truncated_bytes,
        }


def _px(p: int) -> float | None:
    return p / 10_000 if p else None


def replay(buf: np.ndarray, *, speed: float | None = None, symbols: tuple[str, ...] = (),
           max_orders: int = 1 << 22, levels: int = 256, max_symbols: int = 12000,
           progress=None, path: str = "") -> ReplayResult:
    """Replay a day file held in memory; `progress(done_bytes, total_bytes, messages)` is called per chunk."""
    bk = l3.make_book(max_orders=max_orders, levels=levels, max_symbols=max_symbols, symbols=symbols)
    out = np.zeros(EVENT_SLOTS, dtype=EVENT_DTYPE)
    total = len(buf)
    off, seq, pos = 0, 1, 0
    started = time.perf_counter()
    if speed is None:
        while off < total:
            end = min(total, off + CHUNK_BYTES)
            nxt, seq, pos = l3.book_replay(bk, buf, off, end, seq, 0, out, EVENT_SLOTS - 1, pos)
            if nxt == off:  # a frame straddles the chunk end: take the rest of the file, or stop at a bad tail
                if end == total:
                    break
                nxt, seq, pos = l3.book_replay(bk, buf, off, min(total, off + 2 * CHUNK_BYTES), seq, 0, out,
                                               EVENT_SLOTS - 1, pos)
                if nxt == off:
                    break
            off = nxt
            if progress:
                progress(off, total, int(bk.stats[l3.ST_MESSAGES]))
    else:
        cal = calibrate()
        ts0 = _first_timestamp(buf)
        t0 = int(read_tsc())
        last_progress = 0.0
        while off < total:
            off, seq, pos, wait = replay_paced(bk, buf, off, total, seq, out, EVENT_SLOTS - 1, pos, t0,
                                               1e9 / cal.hz, ts0, float(speed), HORIZON_NS)
            if wait == 0:
                break
            time.sleep(min(wait / 1e9, 0.1))
            if progress and time.perf_counter() - last_progress > 0.1:
                last_progress = time.perf_counter()
                progress(off, total, int(bk.stats[l3.ST_MESSAGES]))
        if progress:
            progress(off, total, int(bk.stats[l3.ST_MESSAGES]))
    elapsed = time.perf_counter() - started
    if off < total:
        l3.record_fault(bk, l3.ST_TRUNCATED, seq, 0, 0, total - off)
    return ReplayResult(path=path, bytes=off, seconds=elapsed, truncated_bytes=total - off,
                        stats=l3.stats(bk), bbo=l3.bbo(bk))


def _first_timestamp(buf: np.ndarray) -> int:
    off = 0
    while off + 2 <= len(buf):
        ln = int(buf[off]) << 8 | int(buf[off + 1])
        if ln >= d.HEADER_SIZE and off + 2 + ln <= len(buf):
            return int.from_bytes(bytes(buf[off + 2 + d.OFF_TIMESTAMP:off + 2 + d.HEADER_SIZE]), "big")
        off += 2 + ln
    return 0


class ProgressBar:
    """A one-line progress bar on a terminal's stderr; silent when stderr is not a terminal."""

    def __init__(self, stream=sys.stderr, width: int = 30):
        self.stream, self.width = stream, width
        self.enabled = stream.isatty()
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int, messages: int) -> None:
        if not self.enabled or total == 0:
            return
        frac = done / total
        rate = messages / max(time.perf_counter() - self.started, 1e-9)
        bar = "#" * int(frac * self.width)
        self.stream.write(f"\r[{bar:<{self.width}}] {frac:6.1%}  {messages:,} msgs  {rate / 1e6:.1f} M msgs/s")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def render(res: dict) -> str:
    """The human-readable replay report."""
    lines = [f"{res['file']}: {res['messages']:,} messages, {res['bytes'] / 1e6:.1f} MB in {res['seconds']:.2f} s"
             + (f" ({res['messages_per_second'] / 1e6:.2f} M msgs/s, {res['mb_per_second']} MB/s)"
                if res["messages_per_second"] else ""), "", "messages by type:"]
    for name, n in res["by_type"].items():
        lines.append(f"  {name:<22} {n:>14,}")
    b = res["book"]
    lines += ["", f"books: {b['symbols']:,} symbols, {b['live_orders']:,} live orders, "
                  f"{b['bbo_events']:,} BBO changes, {b['trades']:,} trades"
              + (f", {b['filtered_messages']:,} messages for other symbols" if b["filtered_messages"] else "")]
    if b["top"]:
        lines.append(f"  {'symbol':<9}{'bid size':>10} {'bid':>11} {'ask':>11} {'ask size':>10}")
        for s, q in b["top"].items():
            bid = f"{q['bid']:.4f}" if q["bid"] else "-"
            ask = f"{q['ask']:.4f}" if q["ask"] else "-"
            lines.append(f"  {s:<9}{q['bid_size']:>10,} {bid:>11} {ask:>11} {q['ask_size']:>10,}")
    if res["malformed"]:
        lines += ["", "malformed or inconsistent input (counted and skipped):"]
        lines += [f"  {k:<22} {v:>14,}" for k, v in res["malformed"].items()]
    if res["truncated_tail_bytes"]:
        lines.append(f"  the file ends in a truncated message ({res['truncated_tail_bytes']} bytes)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="appliance replay",
                                 description="Replay an ITCH 5.0 day file (raw or gzipped, NASDAQ's 2-byte "
                                             "length-prefixed format) through the feed's decoder and L3 book.")
    ap.add_argument("file", help="day file, e.g. 01302020.NASDAQ_ITCH50.gz")
    ap.add_argument("--speed", type=float, default=None,
                    help="pace by the ITCH timestamps, this many times faster than real time (default: full speed)")
    ap.add_argument("--symbols", default="", help="comma-separated stocks to book (default: every symbol)")
    ap.add_argument("--top", type=int, default=10, help="symbols shown in the book summary (default 10)")
    ap.add_argument("--max-orders", type=int, default=1 << 22, help="order table capacity (default 4194304)")
    ap.add_argument("--levels", type=int, default=256, help="price levels per symbol and side (default 256)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the report")
    args = ap.parse_args(argv)
    if args.speed is not None and args.speed <= 0:
        ap.error("--speed must be > 0")
    if not os.path.isfile(args.file):
        print(f"appliance replay: {args.file}: no such file", file=sys.stderr)
        return 2
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
    buf = read_dayfile(args.file)
    bar = ProgressBar()
    try:
        res = replay(buf, speed=args.speed, symbols=symbols, max_orders=args.max_orders, levels=args.levels,
                     progress=bar, path=args.file)
    except KeyboardInterrupt:
        bar.close()
        return 130
    bar.close()
    out = res.to_dict(top=args.top)
    print(json.dumps(out) if args.json else render(out))
    return 0
