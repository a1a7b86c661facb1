"""The live venue's market data: MoldUDP64 over loopback with injected loss, recovered through its
re-request server, read by independent ITCH implementations from PyPI, and equal to its matching engine.

A plain-Python MoldUDP64 receiver (not the appliance's) collects the stream, re-requests every gap
from the venue's retransmission server, and writes the messages as a day file. Then:
- itchfeed (pure Python, ITCH_NO_CPP=1) parses it without error, with the engine's per-type counts;
- itch-book (C++23) and the appliance's L3 book both rebuild every symbol's best bid and offer equal to
  the matching engine's own books.
"""

import socket
import struct
import time

import numpy as np
import pytest

from appliance.book import l3
from appliance.config.schema import VenueConfig
from appliance.feed.dayfile import write_dayfile
from appliance.runtime.event import EVENT_DTYPE
from appliance.venue import matching as m
from appliance.venue.server import Venue
from tests.support import free_udp_port, itchfeed_counts, wait_for

SYMBOLS = 40


class MoldReceiver:
    """Collects a MoldUDP64 session by sequence number and re-requests what is missing."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.05)
        self.messages: dict[int, bytes] = {}
        self.session = b""
        self.end_seq = 0  # next sequence after the last message, from an end-of-session packet
        self.packets = 0

    def pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                pkt = self.sock.recv(65536)
            except socket.timeout:
                continue
            self.packets += 1
            self.session = pkt[:10]
            seq, count = struct.unpack(">QH", pkt[10:20])
            if count == 0xFFFF:
                self.end_seq = seq
                continue
            off = 20
            for i in range(count):
                (ln,) = struct.unpack(">H", pkt[off:off + 2])
                self.messages.setdefault(seq + i, pkt[off + 2:off + 2 + ln])
                off += 2 + ln

    def missing(self) -> list[int]:
        return [s for s in range(1, self.end_seq) if s not in self.messages]

    def rerequest(self, addr, max_rounds: int = 20) -> int:
        """Ask for every missing run until none is left (bounded); returns the requests sent."""
        sent = 0
        for _ in range(max_rounds):
            gaps = self.missing()
            if not gaps:
                break
            runs = []
            for s in gaps:
                if runs and s == runs[-1][0] + runs[-1][1]:
                    runs[-1][1] += 1
                else:
                    runs.append([s, 1])
            for first, count in runs:
                self.sock.sendto(self.session + struct.pack(">QH", first, min(count, 1000)), addr)
                sent += 1
            self.pump(0.2)
        return sent


@pytest.fixture(scope="module")
def session():
    """A venue run of about 1.5 s at 40k operations/s with 2% of packets dropped, then ended."""
    port = free_udp_port()
    rx = MoldReceiver(port)
    cfg = VenueConfig(symbol_count=SYMBOLS, rate=40_000, seed=11, feed_port=port, retransmit_port=0, ouch_port=0,
                      fix_port=0, fault_drop=0.02, heartbeat_ms=100, state_dir="/tmp/appliance-venue-feed-test")
    venue = Venue(cfg).start()
    try:
        rx.pump(1.5)
        venue.end_session()  # no more flow; end-of-session packets follow, re-requests are still served
        wait_for(lambda: rx.pump(0.05) or rx.end_seq > 0, 10, what="the end-of-session packet")
        requests = rx.rerequest(venue.retrans_address)
    finally:
        venue.stop()
    return venue, rx, requests


def _dayfile(rx: MoldReceiver) -> np.ndarray:
    raw = b"".join(len(rx.messages[s]).to_bytes(2, "big") + rx.messages[s] for s in range(1, rx.end_seq))
    return np.frombuffer(raw, dtype=np.uint8)


def test_every_dropped_packet_is_recovered_by_rerequest(session):
    venue, rx, requests = session
    feed = venue.stats()["feed"]
    assert feed["dropped_packets"] > 0, "the fault injector dropped nothing: the test would prove nothing"
    assert requests > 0 and feed["retrans_messages"] > 0
    assert rx.missing() == []
    assert rx.end_seq - 1 == feed["available"] == feed["messages"]


def test_independent_parser_reads_the_feed_with_the_engines_counts(session, tmp_path):
    venue, rx, _ = session
    path = tmp_path / "venue.itch"
    write_dayfile(path, _dayfile(rx))
    theirs = itchfeed_counts(path)
    want = dict(m.stats(venue.eng)["by_type"])
    want["S"] = 2  # start of messages, start of market hours
    want["R"] = want["H"] = SYMBOLS  # directory and trading state per symbol
    assert theirs == want
    assert theirs["E"] > 0 and theirs["A"] > 1000


def test_books_rebuilt_from_the_feed_equal_the_matching_engine(session):
    venue, rx, _ = session
    buf = _dayfile(rx)
    bk = l3.make_book(max_orders=1 << 18, levels=1024, max_symbols=SYMBOLS + 8)
    end, _, _ = l3.book_replay(bk, buf, 0, len(buf), 1, 0, np.zeros(1024, dtype=EVENT_DTYPE), 1023, 0)
    assert end == len(buf)
    assert sum(l3.stats(bk)["malformed"].values()) == 0
    ours = l3.bbo(bk)

    from itch_book import Session
    s = Session(tables=["bbo"], depth=0, symbols=[])
    s.reserve(len(buf) // 19 + 1)
    s.feed(buf)
    st = s.stats()
    assert st["malformed"] == 0 and st["missing_ref"] == 0
    t = s.take_bbo()
    peer = {}
    for j in range(len(t["locate"])):
        peer[int(t["locate"][j])] = (int(t["bid_px"][j]), int(t["bid_sz"][j]), int(t["ask_px"][j]), int(t["ask_sz"][j]))

    checked = 0
    for loc, sym in enumerate(venue.symbols, start=1):
        bid_px, bid_sz = m.best(venue.eng, loc, 0)
        ask_px, ask_sz = m.best(venue.eng, loc, 1)
        engine = (int(bid_px), int(bid_sz), int(ask_px), int(ask_sz))
        assert ours[sym] == engine, sym
        if loc in peer:  # itch-book reports symbols whose touch changed at least once
            assert peer[loc] == engine, sym
            checked += 1
    assert checked >= SYMBOLS // 2
