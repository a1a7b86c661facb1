"""The appliance process on a live MoldUDP64 feed over loopback: books, gap recovery, malformed packets, metrics."""

import json
import socket
import threading

import pytest

from appliance.feed import itch_descriptor as d
from appliance.feed import moldudp64_descriptor as mold
from tests.control.test_process import metric
from tests.support import free_udp_port, wait_for

pytestmark = pytest.mark.process

SESSION = "TESTSESS01"


class Retransmitter(threading.Thread):
    """A minimal MoldUDP64 re-request server over a fixed history; answers on the socket the request came from."""

    def __init__(self, history):
        super().__init__(daemon=True)
        self.history = history  # seq -> message bytes
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            _, seq, count = mold.decode_request(data)
            self.requests.append((seq, count))
            msgs = [self.history[s] for s in range(seq, seq + count) if s in self.history]
            self.sock.sendto(mold.encode_packet(SESSION, seq, msgs), peer)


def test_live_feed_builds_books_recovers_a_gap_and_counts_bad_packets(appliance):
    msgs = [d.encode("S", event_code="O"), d.encode("R", locate=1, stock="AAPL"),
            d.encode("R", locate=2, stock="MSFT")]
    msgs += [d.encode("A", locate=1, ref=i, side="B" if i % 2 else "S", shares=100,
                      stock="AAPL", price=(150_0000 - i * 100) if i % 2 else (151_0000 + i * 100)) for i in range(1, 41)]
    msgs += [d.encode("A", locate=2, ref=100, side="B", shares=7, stock="MSFT", price=300_0000),
             d.encode("E", locate=1, ref=1, shares=40, match=1)]
    history = {i + 1: m for i, m in enumerate(msgs)}
    rt = Retransmitter(history)
    rt.start()
    port = free_udp_port()
    app = appliance(f"""
[runtime]
layout = "fused"
idle = "yield"
[feed]
source = "moldudp64"
address = "127.0.0.1"
port = {port}
session = "{SESSION}"
retransmit_port = {rt.port}
request_timeout_ms = 100
[book]
max_orders = 65536
max_symbols = 64
levels = 64
[control]
port = 0
[health]
status_interval_s = 0.2
""").wait_ready()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        packets = [mold.encode_packet(SESSION, 1 + i, msgs[i:i + 5]) for i in range(0, len(msgs), 5)]
        lost = packets.pop(2)  # messages 11-15 never arrive on the live stream
        assert lost
        for p in packets:
            tx.sendto(p, ("127.0.0.1", port))
        tx.sendto(b"short", ("127.0.0.1", port))  # truncated header
        tx.sendto(mold.encode_header(SESSION, 999, 3) + b"\x00\x50", ("127.0.0.1", port))  # block runs past the end
        tx.sendto(mold.encode_packet("OTHERSESS", 1, msgs[:1]), ("127.0.0.1", port))  # another session

        def fed():
            st = json.loads(app.get("/status")[1])["feed"]
            # The session counts a batch as delivered before the feed applies it to the books: wait for both.
            applied = sum(st["book"]["by_type"].values()) + sum(st["book"]["malformed"].values())
            return st if st["mold"]["messages"] == len(msgs) and applied >= len(msgs) else None

        st = wait_for(fed, 30, what="every message delivered and applied, the gap recovered")
    finally:
        tx.close()
        rt.stop.set()
    assert rt.requests and rt.requests[0] == (11, 5)
    m = st["mold"]
    assert (m["gaps"], m["recovered"], m["unrecoverable"]) == (1, 5, 0)
    assert (m["bad_truncated"], m["bad_overrun"], m["bad_session"]) == (1, 1, 1)
    book = st["book"]
    assert book["by_type"] == {"S": 1, "R": 2, "A": 41, "E": 1} and sum(book["malformed"].values()) == 0
    assert book["symbols"] == 2 and book["live_orders"] == 41
    status, text = app.get("/metrics")
    assert status == 200
    assert metric(text, "appliance_feed_messages_total") == len(msgs)
    assert metric(text, "appliance_feed_recovered_messages_total") == 5
    assert metric(text, "appliance_feed_malformed_total", 'kind="wrong_session"') == 1
    assert metric(text, "appliance_feed_itch_messages_total", 'type="A"') == 41
    # book events reached the gateway end of the pipeline
    assert metric(text, "appliance_events_received_total", 'agent="gateway"') > 0
    app.wait_log(r"feed: bad or lost input since last report: .*", 10)
    app.signal(15)
    assert app.wait_exit(10) == 0
