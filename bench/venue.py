"""Venue benchmark: the live venue's ITCH feed rate while its matching engine serves an OUCH order flow.

Run from the repository root with `python3 build.py bench venue` (or `python bench/venue.py [--seconds S]`).
The venue runs in this process as it does for `appliance venue`: synthetic participants at `--rate`
operations per second through the matching engine, every book change published as ITCH 5.0 over
MoldUDP64 on loopback UDP (1472-byte payloads), plus OUCH 5.0 order entry. A client thread logs in over
SoupBinTCP and sends `--orders` Enter Order messages per second (each cancelled again), timing each
Accepted. A numba receiver thread reads the stream with recvmmsg and counts messages and sequence gaps
(it does not re-request: gaps here are datagrams the kernel dropped). The feed rate is messages
received divided by the measuring window, after a one-second warm-up. The last line is one JSON object.
"""

import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import threading
import time

import numpy as np
from numba import njit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Before any kernel module is imported: numba checks a cached kernel against its own file only, so
# without the package's source-fingerprinted cache a bench kernel would keep stale inlined callees
# (a ring edit would go unmeasured).
from appliance.runtime import cache  # noqa: E402

cache.configure()

from appliance.config.schema import VenueConfig  # noqa: E402
from appliance.gateway import ouch_descriptor as ouch  # noqa: E402
from appliance.gateway.soupbin_session import LoginAccepted, SequencedData, SoupClientSession  # noqa: E402
from appliance.runtime import net  # noqa: E402
from appliance.runtime.atomics import load_acquire  # noqa: E402
from appliance.runtime.libc import set_thread_name, usleep  # noqa: E402
from appliance.venue.server import Venue  # noqa: E402

TARGET_MPS = 3.0
# counters of the receiver (int64 words)
R_STOP, R_MESSAGES, R_PACKETS, R_GAPS, R_LOST, R_NEXT, R_HEARTBEATS = 0, 8, 9, 10, 11, 12, 13


@njit(nogil=True, cache=True)
def receive_loop(fd, batch, ctr):
    """Count MoldUDP64 messages and sequence gaps until ctr[R_STOP] is set."""
    while load_acquire(ctr, R_STOP) == 0:
        n = net.sock_recvmmsg(fd, batch)
        if n <= 0:
            usleep(20)  # leave the cores to the venue (2 vCPUs): datagrams wait in the socket buffer
            continue
        for i in range(n):
            if net.mmsg_len(batch, i) < 20:
                continue
            b = batch.bufs[i]
            seq = np.int64(0)
            for k in range(10, 18):
                seq = (seq << 8) | np.int64(b[k])
            count = (np.int64(b[18]) << 8) | np.int64(b[19])
            ctr[R_PACKETS] += 1
            if count == 0 or count == 0xFFFF:
                ctr[R_HEARTBEATS] += 1
                continue
            nxt = ctr[R_NEXT]
            if nxt > 0 and seq > nxt:
                ctr[R_GAPS] += 1
                ctr[R_LOST] += seq - nxt
            if seq + count > nxt:
                ctr[R_MESSAGES] += seq + count - max(seq, nxt) if nxt > 0 else count
                ctr[R_NEXT] = seq + count


class OrderClient:
    """OUCH over SoupBinTCP: enter-then-cancel pairs at a fixed rate, timing Enter -> Accepted."""

    def __init__(self, addr, symbol, rate, seconds):
        self.addr, self.symbol, self.rate, self.seconds = addr, symbol, rate, seconds
        self.latencies_us: list[float] = []
        self.accepted = self.canceled = self.rejected = 0
        self.sent = 0

    def run(self):
        set_thread_name("ouch-client")
        sock = socket.create_connection(self.addr, timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sess = SoupClientSession("APPL01", "secret")
        sess.connect()
        sock.sendall(sess.data_to_send())
        sent_at: dict[int, float] = {}
        t0 = time.perf_counter()
        urn = 0
        logged_in = False
        deadline = t0 + self.seconds
        while time.perf_counter() < deadline:
            now = time.perf_counter()
            if logged_in and urn < (now - t0) * self.rate:
                urn += 1
                sess.send_unsequenced(ouch.encode_inbound(
                    "O", user_ref_num=urn, side="B", quantity=100, symbol=self.symbol, price=1_0000,
                    time_in_force="0", display="Y", capacity="A", intermarket_sweep_eligibility="N", cross_type="N",
                    cl_ord_id=f"b{urn}"))
                sent_at[urn] = time.perf_counter()
                self.sent += 1
            data = sess.data_to_send() + sess.on_timer()
            if data:
                sock.sendall(data)
            # sleep in the kernel until an answer comes or the next order is due (no polling loop)
            wait = (urn + 1) / self.rate - (time.perf_counter() - t0) if logged_in else 0.01
            readable, _, _ = select.select([sock], [], [], max(0.0, min(wait, 0.1)))
            if not readable:
                continue
            chunk = sock.recv(65536)
            if not chunk:
                break
            for ev in sess.on_bytes(chunk):
                if isinstance(ev, LoginAccepted):
                    logged_in = True
                elif isinstance(ev, SequencedData):
                    msg = ouch.decode_outbound(ev.payload)
                    if msg["type"] == "A":
                        self.accepted += 1
                        t = sent_at.pop(msg["user_ref_num"], None)
                        if t is not None:
                            self.latencies_us.append((time.perf_counter() - t) * 1e6)
                        sess.send_unsequenced(ouch.encode_inbound("X", user_ref_num=msg["user_ref_num"], quantity=0))
                    elif msg["type"] == "C":
                        self.canceled += 1
                    elif msg["type"] == "J":
                        self.rejected += 1
        sock.close()


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each thread of this process, by thread name (summed for equal names)."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def client_main(args):
    host, port = args.client.rsplit(":", 1)
    c = OrderClient((host, int(port)), args.client_symbol, args.orders, args.seconds)
    c.run()
    lat = sorted(c.latencies_us)
    print(json.dumps({"sent": c.sent, "accepted": c.accepted, "canceled": c.canceled, "rejected": c.rejected,
                      "ack_p50_us": round(statistics.median(lat), 1) if lat else None,
                      "ack_p99_us": round(lat[int(0.99 * (len(lat) - 1))], 1) if lat else None}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring window after a 1 s warm-up")
    ap.add_argument("--rate", type=int, default=3_500_000, help="synthetic operations per second")
    ap.add_argument("--orders", type=int, default=1000, help="OUCH orders per second (each also cancelled; 0 = none)")
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--max-orders", type=int, default=1 << 18,
                    help="matching engine capacity (live orders stay near 30k; a smaller pool stays in cache)")
    ap.add_argument("--client", help=argparse.SUPPRESS)  # internal: run as the order client, HOST:PORT
    ap.add_argument("--client-symbol", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        return client_main(args)

    rx = net.udp_receiver("127.0.0.1", 0, rcvbuf=64 << 20)
    port = rx.getsockname()[1]
    cfg = VenueConfig(symbol_count=args.symbols, rate=args.rate, feed_port=port, retransmit_port=0, ouch_port=0,
                      fix_port=0, max_orders=args.max_orders, history_messages=1 << 21,
                      state_dir="/tmp/appliance-bench-venue")
    t0 = time.perf_counter()
    venue = Venue(cfg)
    print(f"venue kernels ready in {time.perf_counter() - t0:.1f} s; {args.symbols} symbols, flow {args.rate:,} ops/s, "
          f"{args.orders:,} OUCH orders/s")
    batch = net.make_mmsg_batch(64, 2048)
    ctr = np.zeros(16, dtype=np.int64)
    ctr[R_STOP] = 1
    receive_loop(rx.fileno(), batch, ctr)  # compile or load now
    ctr[:] = 0
    def receive():
        set_thread_name("bench-receiver")
        receive_loop(rx.fileno(), batch, ctr)

    th = threading.Thread(target=receive, daemon=True)
    th.start()
    venue.start()
    # The order client is another process, as the appliance is: a thread here would contend for the GIL.
    client_proc = None if args.orders <= 0 else subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--client", f"{venue.ouch_address[0]}:{venue.ouch_address[1]}",
         "--client-symbol", venue.symbols[-1], "--orders", str(args.orders), "--seconds", str(args.seconds + 2.0)],
        stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)  # warm-up: the flow reaches its pace, the client logs in
    m0, p0, t_start = int(ctr[R_MESSAGES]), venue.stats()["feed"]["messages"], time.perf_counter()
    o0 = venue.counters["orders"]
    cpu0 = thread_cpu()
    time.sleep(args.seconds)
    m1, p1, t_end = int(ctr[R_MESSAGES]), venue.stats()["feed"]["messages"], time.perf_counter()
    o1 = venue.counters["orders"]
    cpu1 = thread_cpu()
    client = {"sent": 0, "accepted": 0, "canceled": 0, "rejected": 0, "ack_p50_us": None, "ack_p99_us": None}
    if client_proc is not None:
        out, _ = client_proc.communicate(timeout=60)
        client = json.loads(out.strip().splitlines()[-1])
    stats = venue.stats()
    venue.stop()
    ctr[R_STOP] = 1  # an aligned int64 store; the loop reads it with load_acquire
    th.join(5)
    rx.close()
    window = t_end - t_start
    mps = (m1 - m0) / window / 1e6
    published = (p1 - p0) / window / 1e6
    p50, p99 = client["ack_p50_us"], client["ack_p99_us"]
    orders_ps = (o1 - o0) / window
    ok = mps >= TARGET_MPS and args.orders > 0 and orders_ps >= 0.9 * args.orders and client["rejected"] == 0
    print(f"feed: {mps:.2f} M msgs/s received ({published:.2f} M/s published), {int(ctr[R_PACKETS]):,} packets, "
          f"{int(ctr[R_GAPS])} gaps ({int(ctr[R_LOST]):,} messages lost in the kernel); flow throttled "
          f"{stats['orders']['flow_throttled']} times")
    print(f"orders: {orders_ps:,.0f} entered/s ({client['accepted']:,} accepted, {client['canceled']:,} canceled in "
          f"all), Enter -> Accepted median {p50} us, p99 {p99} us, rejected {client['rejected']}; "
          f"engine fills {stats['engine']['fills']:,}")
    busy = {name: round((cpu1.get(name, 0) - cpu0.get(name, 0)) / window, 2) for name in cpu1}
    busy = {k: v for k, v in sorted(busy.items(), key=lambda kv: -kv[1]) if v >= 0.01}
    print("CPU share by thread over the window: " + ", ".join(f"{k} {v:.0%}" for k, v in busy.items()))
    print(json.dumps({
        "bench": "venue", "machine": {"nproc": os.cpu_count()}, "symbols": args.symbols, "flow_rate": args.rate,
        "seconds": round(window, 3), "feed_mps": round(mps, 3), "published_mps": round(published, 3),
        "packets": int(ctr[R_PACKETS]), "gaps": int(ctr[R_GAPS]), "lost_messages": int(ctr[R_LOST]),
        "orders_per_s": round(orders_ps, 1), "order_ack_us": {"p50": p50, "p99": p99},
        "orders_rejected": client["rejected"], "engine": stats["engine"]["by_type"],
        "flow_throttled": stats["orders"]["flow_throttled"], "cpu_by_thread": busy, "target_mps": TARGET_MPS,
        "pass": ok,
    }))


if __name__ == "__main__":
    main()
