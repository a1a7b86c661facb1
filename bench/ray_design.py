"""The common Ray design, the peer the tick-to-trade benchmark measures beside the appliance.

A plain Python process receives MoldUDP64 / ITCH 5.0 datagrams on loopback UDP and, for every
packet (a tick), asks a Ray actor for the decision with `ray.get(actor.on_tick.remote(packet))`,
then sends the OUCH 5.0 Enter Order itself over loopback TCP in a SoupBinTCP Unsequenced Data
packet. Timed per order: from `recvfrom` returning to `send` returning, as the appliance is timed.

```
 sender thread --UDP 127.0.0.1--> driver: recvfrom, t_in --ray.get--> actor (worker process):
   (paced packets)                                                     decode, book, decide
                                  driver: <-- (side, stock, price, qty) or None
                                  driver: send 50-byte U+O --TCP 127.0.0.1--> sink thread
                                          t_out; record t_out - t_in
```

The driver passes the raw packet bytes: the actor does all the work a strategy process would
(MoldUDP64 framing, ITCH decode, a per-symbol book of resting orders, the decision), so the driver
is pure I/O, which is how this design is usually built. The decision is a market maker's join of
the touch: on every `order_every`-th packet it quotes `qty` shares on the symbol of the packet's
last book message, buying at its best bid and selling at its best ask on alternate orders (the
other side when one side is empty). Malformed input is counted by kind and skipped.

Run alone: `.venv/bin/python bench/ray_design.py --ticks 300 --pace 500` prints one JSON line.
Ray facts (DESIGN.md): `ray.init` takes 2-3 s; `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` and
`RAY_USAGE_STATS_ENABLED=0` keep every Ray socket on 127.0.0.1, so they are set before ray is imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from appliance.feed import itch_descriptor as itch  # noqa: E402
from appliance.feed import moldudp64_descriptor as mold  # noqa: E402
from appliance.gateway import ouch_descriptor as ouch  # noqa: E402
from appliance.gateway import soupbintcp_descriptor as sbt  # noqa: E402

DESIGN = "ray actor per tick (ray.get)"
RAY_PIP = "ray==2.60.0"
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
ORDER_QTY = 100
WARM_CALLS = 20  # round trips to the actor before the first timed tick (the appliance warms its kernels too)
RCVBUF = 4 << 20

# The order as it leaves: SoupBinTCP header (length counts the type byte and payload) + OUCH 'O'.
ORDER_HEADER = (ouch.EO_SIZE + 1).to_bytes(2, "big") + bytes((sbt.PKT_UNSEQUENCED,))
ORDER_SIZE = sbt.HEADER_SIZE + ouch.EO_SIZE
assert ORDER_SIZE == 50, "SoupBinTCP Unsequenced Data with an OUCH Enter Order is 50 bytes"
_pack_enter = ouch.packer("in", "O")

# Actor counters, by kind.
COUNT_KINDS = ("packets", "messages", "orders", "no_quote", "short_packet", "bad_block", "bad_length",
               "unknown_type", "bad_side", "unknown_ref", "duplicate_ref", "end_of_session")
_BUY, _SELL = ord("B"), ord("S")


def order_packet(user_ref: int, side: bytes, stock: bytes, price: int, qty: int) -> bytes:
    """One 50-byte SoupBinTCP Unsequenced Data packet carrying an OUCH 5.0 Enter Order (day, visible, principal)."""
    cl_ord_id = b"R%013d" % user_ref
    return ORDER_HEADER + _pack_enter(user_ref, side, qty, stock, price, b"0", b"Y", b"P", b"N", b"N", cl_ord_id)


class TouchMaker:
    """The strategy the Ray actor runs: a book of resting orders per symbol and a touch-joining quote."""

    def __init__(self, order_every: int = 1, qty: int = ORDER_QTY):
        self.order_every = order_every
        self.qty = qty
        self.orders: dict[int, list] = {}        # ref -> [locate, is_buy, price, shares]
        self.levels: dict[int, dict] = {}        # locate * 2 + is_buy -> {price: shares}
        self.best: dict[int, int] = {}           # locate * 2 + is_buy -> best price (absent: side empty)
        self.names: dict[int, bytes] = {}        # locate -> stock (8 bytes, space-padded)
        self.counts = dict.fromkeys(COUNT_KINDS, 0)
        # Built here, not at module level: Ray pickles the class by value when it lives in __main__,
        # and struct.Struct objects cannot be pickled.
        self._u16 = struct.Struct(">H").unpack_from
        self._u32 = struct.Struct(">I").unpack_from
        self._u64 = struct.Struct(">Q").unpack_from
        self._length = itch.MSG_LENGTH.tolist()  # indexing a numpy array from Python costs more than the parse

    def ready(self) -> bool:
        return True

    def stats(self) -> dict:
        return dict(self.counts)

    def bbo(self, locate: int) -> tuple[int | None, int | None]:
        """(best bid, best ask) of one symbol, None for an empty side."""
        return self.best.get(locate * 2 + 1), self.best.get(locate * 2)

    # ---- book --------------------------------------------------------------------------------------
    def _add(self, ref, locate, is_buy, price, shares):
        if ref in self.orders:
            self.counts["duplicate_ref"] += 1
            return
        self.orders[ref] = [locate, is_buy, price, shares]
        key = locate * 2 + is_buy
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = {}
        level[price] = level.get(price, 0) + shares
        best = self.best.get(key)
        if best is None or (price > best if is_buy else price < best):
            self.best[key] = price

    def _reduce(self, ref, shares):
        """Take `shares` (None: all) off an order; returns the order's [locate, is_buy, price, left] or None."""
        order = self.orders.get(ref)
        if order is None:
            self.counts["unknown_ref"] += 1
            return None
        locate, is_buy, price, left = order
        take = left if shares is None or shares > left else shares
        order[3] = left - take
        key = locate * 2 + is_buy
        level = self.levels[key]
        rest = level[price] - take
        if rest > 0:
            level[price] = rest
        else:
            del level[price]
            if self.best.get(key) == price:
                if level:
                    self.best[key] = max(level) if is_buy else min(level)
                else:
                    del self.best[key]
        if order[3] == 0:
            del self.orders[ref]
        return order

    # ---- one tick ----------------------------------------------------------------------------------
    def on_tick(self, packet: bytes):
        """Apply one MoldUDP64 packet; on every order_every-th packet return (side, stock, price, qty) or None."""
        c, u16, u32, u64, length = self.counts, self._u16, self._u32, self._u64, self._length
        c["packets"] += 1
        n = len(packet)
        if n < mold.HEADER_SIZE:
            c["short_packet"] += 1
            return None
        count = u16(packet, mold.OFF_COUNT)[0]
        if count == mold.COUNT_END_OF_SESSION:
            c["end_of_session"] += 1
            count = 0
        off, touched = mold.HEADER_SIZE, []
        for _ in range(count):
            if off + mold.BLOCK_LEN_SIZE > n:
                c["bad_block"] += 1
                break
            size = u16(packet, off)[0]
            off += mold.BLOCK_LEN_SIZE
            if size == 0 or off + size > n:
                c["bad_block"] += 1
                break
            m, off = off, off + size
            mtype = packet[m]
            if length[mtype] != size:
                c["unknown_type" if length[mtype] == 0 else "bad_length"] += 1
                continue
            c["messages"] += 1
            locate = u16(packet, m + itch.OFF_LOCATE)[0]
            if mtype == itch.MSG_ADD or mtype == itch.MSG_ADD_MPID:
                side = packet[m + itch.ADD_SIDE]
                if side != _BUY and side != _SELL:
                    c["bad_side"] += 1
                    continue
                self.names[locate] = packet[m + itch.ADD_STOCK:m + itch.ADD_STOCK + 8]
                self._add(u64(packet, m + itch.ADD_REF)[0], locate, 1 if side == _BUY else 0,
                          u32(packet, m + itch.ADD_PRICE)[0],
                          u32(packet, m + itch.ADD_SHARES)[0])
            elif mtype == itch.MSG_EXECUTED or mtype == itch.MSG_EXECUTED_PRICE:
                self._reduce(u64(packet, m + itch.EXE_REF)[0],
                             u32(packet, m + itch.EXE_SHARES)[0])
            elif mtype == itch.MSG_CANCEL:
                self._reduce(u64(packet, m + itch.CXL_REF)[0],
                             u32(packet, m + itch.CXL_SHARES)[0])
            elif mtype == itch.MSG_DELETE:
                self._reduce(u64(packet, m + itch.DEL_REF)[0], None)
            elif mtype == itch.MSG_REPLACE:
                old = self._reduce(u64(packet, m + itch.REP_OLD_REF)[0], None)
                if old is None:
                    continue
                # The replace message carries neither symbol nor side: the new order keeps the old one's.
                self._add(u64(packet, m + itch.REP_NEW_REF)[0], old[0], old[1],
                          u32(packet, m + itch.REP_PRICE)[0],
                          u32(packet, m + itch.REP_SHARES)[0])
            elif mtype == itch.MSG_STOCK_DIRECTORY:
                self.names[locate] = packet[m + itch.DIR_STOCK:m + itch.DIR_STOCK + 8]
                continue
            else:
                continue
            touched.append(locate)
        if c["packets"] % self.order_every:
            return None
        # The symbol of the packet's last book message that still has a quote to join.
        while touched and (touched[-1] not in self.names or self.bbo(touched[-1]) == (None, None)):
            touched.pop()
        if not touched:
            c["no_quote"] += 1
            return None
        last = touched[-1]
        bid, ask = self.bbo(last)
        buy = c["orders"] % 2 == 0
        if (buy and bid is None) or (not buy and ask is None):
            buy = not buy
        c["orders"] += 1
        return (b"B" if buy else b"S", self.names[last], bid if buy else ask, self.qty)


# ---- the sample feed for running alone ------------------------------------------------------------------
def make_packets(n: int, *, symbols: int = 8, seed: int = 1, session: str = "RAYDESIGN1") -> list[bytes]:
    """`n` MoldUDP64 packets of 1-4 ITCH messages each, numbered from sequence 1 (deterministic): cancels,
    executions, replaces and deletes of resting orders, each packet ending with an add around a random walk."""
    rng = random.Random(seed)
    names = [f"SYM{i:03d}" for i in range(symbols)]
    mid = [rng.randrange(100_000, 2_000_000, 100) for _ in range(symbols)]
    live: list[list] = []  # [ref, locate, side, shares, price]
    next_ref, seq, ts, packets = 1, 1, 9 * 3600 * 10**9, []
    for _ in range(n):
        msgs, count = [], rng.randint(1, 4)
        for k in range(count):
            ts += rng.randrange(1_000, 100_000)
            # The last message is an add, so every packet leaves its symbol with a touch to join.
            kind = rng.random() if live and k < count - 1 else 0.0
            if kind < 0.55:
                s = rng.randrange(symbols)
                mid[s] = max(10_000, mid[s] + rng.choice((-100, 0, 100)))
                side = rng.choice("BS")
                price = mid[s] - 100 * rng.randint(1, 5) if side == "B" else mid[s] + 100 * rng.randint(1, 5)
                shares = 100 * rng.randint(1, 10)
                msgs.append(itch.encode("A", locate=s + 1, timestamp=ts, ref=next_ref, side=side, shares=shares,
                                        stock=names[s], price=price))
                live.append([next_ref, s + 1, side, shares, price])
                next_ref += 1
                continue
            i = rng.randrange(len(live))
            ref, locate, side, shares, price = live[i]
            if kind < 0.70 and shares > 100:
                live[i][3] -= 100
                msgs.append(itch.encode("X", locate=locate, timestamp=ts, ref=ref, shares=100))
            elif kind < 0.80:
                take = min(shares, 100)
                live[i][3] -= take
                msgs.append(itch.encode("E", locate=locate, timestamp=ts, ref=ref, shares=take, match=seq))
                if live[i][3] == 0:
                    live.pop(i)
            elif kind < 0.90:
                price += 100 if side == "B" else -100
                msgs.append(itch.encode("U", locate=locate, timestamp=ts, ref=ref, new_ref=next_ref,
                                        shares=shares, price=price))
                live[i] = [next_ref, locate, side, shares, price]
                next_ref += 1
            else:
                msgs.append(itch.encode("D", locate=locate, timestamp=ts, ref=ref))
                live.pop(i)
        packets.append(mold.encode_packet(session, seq, msgs))
        seq += len(msgs)
    return packets


# ---- the run ----------------------------------------------------------------------------------------------
class _Sink:
    """The venue stand-in: accepts one loopback TCP connection and reads and discards what arrives."""

    def __init__(self, deadline: float):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(0.2)
        self.address = self.listener.getsockname()
        self.deadline = deadline
        self.received = 0
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, name="ray-design-sink", daemon=True)
        self.thread.start()

    def _run(self):
        conn = None
        try:
            while conn is None and time.monotonic() < self.deadline:
                try:
                    conn, _ = self.listener.accept()
                except socket.timeout:
                    continue
            if conn is None:
                self.error = "no connection before the deadline"
                return
            conn.settimeout(0.2)
            buf = bytearray(1 << 16)
            while time.monotonic() < self.deadline:
                try:
                    n = conn.recv_into(buf)
                except socket.timeout:
                    continue
                if n == 0:
                    return
                self.received += n
            self.error = "the order connection was still open at the deadline"
        except OSError as e:
            self.error = f"sink: {e}"
        finally:
            if conn is not None:
                conn.close()
            self.listener.close()


def _send_paced(sock, dest, packets, count, pace_per_s, stop, sent):
    """Send packets[0:count] to dest, packet k at start + k / pace_per_s, until done or stop is set."""
    gap = 1.0 / pace_per_s
    start = time.perf_counter()
    for k in range(count):
        delay = start + k * gap - time.perf_counter()
        if delay > 0 and stop.wait(delay):
            return
        if stop.is_set():
            return
        sock.sendto(packets[k], dest)
        sent[0] += 1


def _percentile(ordered: list[int], p: float) -> int:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not ordered:
        return 0
    return ordered[min(len(ordered), max(1, math.ceil(p / 100.0 * len(ordered)))) - 1]


def _import_ray():
    for k, v in RAY_ENV.items():
        os.environ[k] = v
    try:
        import ray
    except ImportError as e:
        raise RuntimeError(f"the Ray design needs ray: pip install {RAY_PIP} ({e})") from e
    return ray


def run_ray_design(packets: list[bytes], *, ticks: int, pace_per_s: float, order_every: int = 1,
                   timeout_s: float = 120) -> dict:
    """Measure the common Ray design on `packets` (MoldUDP64 datagrams): the first `ticks` of them,
    sent at `pace_per_s`, an order on every `order_every`-th; returns the latency figures."""
    if not packets:
        raise ValueError("run_ray_design needs at least one packet")
    if ticks < 1:
        raise ValueError(f"ticks must be >= 1, got {ticks}")
    if not pace_per_s > 0:
        raise ValueError(f"pace_per_s must be > 0, got {pace_per_s}")
    if order_every < 1:
        raise ValueError(f"order_every must be >= 1, got {order_every}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    count = min(ticks, len(packets))
    ray = _import_ray()
    deadline = time.monotonic() + timeout_s
    sink = _Sink(deadline + 5)
    socks: list[socket.socket] = []
    stop, sent, sender = threading.Event(), [0], None
    started = False
    try:
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks.append(rx)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks.append(tx)
        out = socket.create_connection(sink.address, timeout=5)
        socks.append(out)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(0.2)
        out.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out.settimeout(None)

        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
        started = True
        ray_init_s = time.perf_counter() - t0
        actor = ray.remote(num_cpus=1)(TouchMaker).remote(order_every, ORDER_QTY)
        for _ in range(WARM_CALLS):
            ray.get(actor.ready.remote(), timeout=max(1.0, deadline - time.monotonic()))

        sender = threading.Thread(target=_send_paced, name="ray-design-sender", daemon=True,
                                  args=(tx, rx.getsockname(), packets, count, pace_per_s, stop, sent))
        sender.start()
        lat: list[int] = []
        buf = bytearray(mold.MAX_DATAGRAM)
        view = memoryview(buf)
        received = orders = 0
        user_ref = 1
        while received < count and time.monotonic() < deadline:
            try:
                n = rx.recv_into(buf)
            except socket.timeout:
                if not sender.is_alive() and sent[0] == received:
                    break  # the sender gave up or finished and nothing is in flight
                continue
            t_in = time.perf_counter_ns()
            received += 1
            decision = ray.get(actor.on_tick.remote(bytes(view[:n])), timeout=max(0.1, deadline - time.monotonic()))
            if decision is None:
                continue
            side, stock, price, qty = decision
            out.sendall(order_packet(user_ref, side, stock, price, qty))
            t_out = time.perf_counter_ns()
            lat.append(t_out - t_in)
            user_ref += 1
            orders += 1
        timed_out = received < count and time.monotonic() >= deadline
        counts = ray.get(actor.stats.remote(), timeout=10)
    except ray.exceptions.RayError as e:
        raise RuntimeError(f"the Ray design failed: {type(e).__name__}: {e}") from e
    finally:
        stop.set()
        if sender is not None:
            sender.join(5)
        for sock in socks:
            sock.close()
        if started:
            ray.shutdown()
    sink.thread.join(10)
    lat.sort()
    return {
        "design": DESIGN, "ticks": received, "orders": orders,
        "p50_ns": _percentile(lat, 50), "p90_ns": _percentile(lat, 90), "p99_ns": _percentile(lat, 99),
        "p99_9_ns": _percentile(lat, 99.9), "max_ns": lat[-1] if lat else 0,
        "ray_init_s": round(ray_init_s, 3), "ray_version": ray.__version__,
        "actor_input": "raw MoldUDP64 packet bytes", "order_every": order_every, "pace_per_s": pace_per_s,
        "sent": sent[0], "lost": sent[0] - received, "timed_out": timed_out,
        "sink_bytes": sink.received, "sink_error": sink.error, "actor_counts": counts,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Measure the common Ray design (ray.get per tick) on loopback.")
    ap.add_argument("--ticks", type=int, default=300, help="packets to send (each is a tick)")
    ap.add_argument("--pace", type=float, default=500.0, help="packets per second")
    ap.add_argument("--order-every", type=int, default=1, help="an order on every Nth packet")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before the run gives up")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        packets = make_packets(args.ticks, seed=args.seed)
        result = run_ray_design(packets, ticks=args.ticks, pace_per_s=args.pace, order_every=args.order_every,
                                timeout_s=args.timeout)
    except (ValueError, RuntimeError) as e:
        print(f"ray_design: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
