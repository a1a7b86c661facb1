"""The live feed under loss: the venue drops, duplicates and reorders packets; the books end exactly as lossless.

Real UDP on loopback: the venue's MoldUDP64 publisher (with its retransmission server) sends a generated
day file; the appliance's feed agent (MoldUDP64 session + L3 book) receives it on another thread. The
books are then compared, symbol by symbol and level by level, with a lossless replay of the same file.
"""

import threading

import numpy as np
import pytest

from appliance.book import l3
from appliance.config.loader import parse_config
from appliance.feed import mold_session as ms
from appliance.feed.itch_feed import ItchFeed, drive_feed
from appliance.runtime.clock import calibrate, read_tsc
from appliance.runtime.event import EVENT_DTYPE
from appliance.runtime.layout import RING_HDR_WORDS
from appliance.venue.generator import GeneratorParams, generate
from appliance.venue.publisher import Faults, MoldPublisher
from tests.support import free_udp_port

DEADLINE_S = 60


@pytest.fixture(scope="module")
def day():
    buf, _ = generate(GeneratorParams(seed=3, messages=300_000, symbols=80))
    return buf


def book_state(bk):
    """Everything a strategy could read: per-type counts, live orders, and every level of every symbol."""
    st = l3.stats(bk)
    depth = {s: l3.depth(bk, s, levels=10_000) for s in l3.bbo(bk)}
    return st["by_type"], st["live_orders"], depth


def run_live(day, faults, rate=1_000_000, count=None, recovery=True):
    """Publish `day` (or its first `count` messages) to a live feed agent; returns (feed, sender counters)."""
    port = free_udp_port()
    pub = MoldPublisher(day, ("127.0.0.1", port), count=count, rate=rate, faults=faults)
    retransmit = f"retransmit_port = {pub.retrans_address[1]}" if recovery else ""
    cfg = parse_config(f"""
[feed]
source = "moldudp64"
port = {port}
{retransmit}
request_timeout_ms = 50
[book]
max_orders = 262144
max_symbols = 128
levels = 1024
""")
    feed = ItchFeed(cfg)
    hdr = np.zeros(RING_HDR_WORDS, dtype=np.int64)
    slots = np.zeros(1024, dtype=EVENT_DTYPE)
    counters = np.zeros(8, dtype=np.int64)
    cal = calibrate()
    io, sess, bk = feed.kernel_args()

    def receive():  # the deadline starts with the stream, not with the compile below
        drive_feed(io, sess, bk, counters, hdr, slots, cal.mult, read_tsc() + int(DEADLINE_S * cal.hz))

    t = threading.Thread(target=receive, daemon=True)
    try:
        drive_feed(io, sess, bk, counters, hdr, slots, cal.mult, 0)  # compile before the stream starts
        t.start()
        pub.start()
        t.join(DEADLINE_S + 10)
        assert not t.is_alive(), "feed thread did not finish"
        assert pub.done
    finally:
        pub.close()
        feed.close()
    assert ms.mold_complete(sess), f"session not complete: {feed.stats()['mold']}"
    return feed, pub.counters()


def test_one_percent_loss_duplicates_and_reordering_recover_to_the_lossless_books(day):
    want = l3.make_book(max_orders=262144, max_symbols=128, levels=1024)
    end, _, _ = l3.book_replay(want, day, 0, len(day), 1, 0, np.zeros(1024, dtype=EVENT_DTYPE), 1023, 0)
    assert end == len(day)

    feed, sent = run_live(day, Faults(drop=0.01, duplicate=0.005, reorder=0.01, seed=5))
    mold = feed.stats()["mold"]
    assert sent["dropped_packets"] > 20 and sent["duplicated"] > 5 and sent["reordered"] > 5, sent
    assert mold["gaps"] > 0 and mold["recovered"] > 0 and mold["dup_packets"] > 0
    assert mold["unrecoverable"] == 0 and mold["messages"] == l3.stats(want)["messages"]
    assert book_state(feed.book) == book_state(want)
    assert sum(l3.stats(feed.book)["malformed"].values()) == 0


def test_without_a_retransmission_server_loss_is_counted_and_the_feed_goes_on(day):
    count = 100_000
    feed, _ = run_live(day, Faults(drop=0.02, seed=9), count=count, recovery=False)
    st = feed.stats()
    assert st["loss"] and st["mold"]["unrecoverable"] > 0 and st["mold"]["requests"] == 0
    # every message was either applied or declared lost; lost adds make later references unknown
    # (counted, never fatal)
    assert st["mold"]["messages"] + st["mold"]["unrecoverable"] == count
    assert st["book"]["messages"] == st["mold"]["messages"] and st["book"]["malformed"]["unknown_order"] > 0
    assert feed.healthy()
