"""Fuzz: random and mutated MoldUDP64 packets into the feed's decoder and book never raise or stop it.

150,000 packets, seeded: a third pure noise, a third valid packets with bytes flipped, lengths
corrupted or tails cut, a third valid. They go through the same kernels as the live feed
(mold_on_packet + book_apply) in one numba loop; afterwards every packet and message is accounted
for by a counter, and the feed still applies a clean packet correctly.
"""

import random

import numpy as np
from numba import njit

from appliance.book import l3
from appliance.feed import itch_descriptor as d
from appliance.feed import mold_session as ms
from appliance.feed import moldudp64_descriptor as mold
from appliance.runtime.event import EVENT_DTYPE
from appliance.venue.generator import GeneratorParams, generate

PACKETS = 150_000
SESSION = "FUZZSESS01"


@njit(nogil=True)
def run(sess, bk, pkts, offs, lens, d_off, d_len, d_seq, out):
    """Feed every packet as the live loop does; returns messages applied."""
    applied = 0
    for p in range(offs.shape[0] - 1):
        start = offs[p]
        n = lens[p]
        pkt = pkts[start:start + n]
        k = ms.mold_on_packet(sess, pkt, n, p * 1000, d_off, d_len, d_seq)
        for i in range(k):
            off = d_off[i]
            if off >= 0:
                l3.book_apply(bk, pkt, off, d_len[i], d_seq[i], 0, out, 63, 0)
            else:
                l3.book_apply(bk, sess.gap, ~off, d_len[i], d_seq[i], 0, out, 63, 0)
            applied += 1
        ms.mold_take_request(sess)
    return applied


def mutated_packets(rng, messages):
    """Valid packets in sequence, then the same stream mutated, plus noise; returns the list of datagrams."""
    out = []
    seq = 1
    i = 0
    while len(out) < PACKETS:
        kind = rng.random()
        if kind < 1 / 3:
            out.append(rng.randbytes(rng.randrange(0, 200)))
            continue
        batch = messages[i:i + rng.randrange(1, 12)] or messages[:3]
        i = (i + len(batch)) % len(messages)
        pkt = bytearray(mold.encode_packet(SESSION, seq, batch))
        if kind < 2 / 3:
            what = rng.randrange(5)
            if what == 0:  # flip bytes in the message blocks
                for _ in range(rng.randrange(1, 6)):
                    pkt[rng.randrange(20, len(pkt))] = rng.randrange(256)
            elif what == 4:  # damage the session name (a damaged sequence number would end the stream)
                pkt[rng.randrange(10)] ^= 1 + rng.randrange(255)
            elif what == 1:  # corrupt a block length
                pos = 20 + rng.randrange(0, max(1, len(pkt) - 21))
                pkt[pos:pos + 2] = rng.randrange(65536).to_bytes(2, "big")
            elif what == 2:  # cut the tail
                pkt = pkt[: rng.randrange(0, len(pkt))]
            else:  # a message's type byte or body scrambled
                body = 22 + rng.randrange(0, max(1, len(pkt) - 22))
                pkt[body] = rng.randrange(256)
        else:
            seq += len(batch)
        out.append(bytes(pkt))
    return out


def test_fuzzed_packets_are_counted_and_never_stop_the_feed():
    rng = random.Random(20261122)
    day, _ = generate(GeneratorParams(seed=4, messages=20_000, symbols=20))
    messages = []
    off = 0
    while off < len(day):
        ln = int(day[off]) << 8 | int(day[off + 1])
        messages.append(bytes(day[off + 2:off + 2 + ln]))
        off += 2 + ln
    packets = mutated_packets(rng, messages)
    assert len(packets) >= 100_000
    lens = np.array([len(p) for p in packets], dtype=np.int64)
    offs = np.zeros(len(packets) + 1, dtype=np.int64)
    offs[1:] = np.cumsum(lens)
    flat = np.frombuffer(b"".join(packets) + b"\0", dtype=np.uint8).copy()

    sess = ms.make_session(gap_buffer_messages=1024, session=SESSION, recovery=False)
    bk = l3.make_book(max_orders=1 << 16, levels=16, max_symbols=65536)  # room for every garbage locate
    d_off, d_len, d_seq = ms.make_delivery(sess, 2048)
    out = np.zeros(64, dtype=EVENT_DTYPE)
    applied = run(sess, bk, flat, offs, lens, d_off, d_len, d_seq, out)

    c = ms.counters_dict(sess)
    st = l3.stats(bk)
    assert c["packets"] == len(packets)
    rejected = c["bad_truncated"] + c["bad_overrun"] + c["bad_session"]
    assert rejected > 30_000  # the noise and most header damage
    assert applied == c["messages"] == st["messages"] + sum(st["malformed"][k] for k in
                                                           ("bad_length", "unknown_type", "zero_length"))
    # every packet ended somewhere: rejected, a duplicate/late copy, a heartbeat/end marker, or data
    assert c["packets"] >= rejected + c["dup_packets"]
    assert sum(st["malformed"].values()) > 0 and st["messages"] > 10_000

    # and the feed still works: a clean packet with the next sequence is applied
    nxt = int(sess.state[ms.S_EXPECTED])
    clean = np.frombuffer(mold.encode_packet(SESSION, nxt, [
        d.encode("R", locate=65001, stock="ZZZZ"),
        d.encode("A", locate=65001, ref=1 << 50, side="B", shares=5, stock="ZZZZ", price=10_0000)]),
        dtype=np.uint8).copy()
    k = ms.mold_on_packet(sess, clean, len(clean), 10**12, d_off, d_len, d_seq)
    assert k == 2
    for i in range(k):
        l3.book_apply(bk, clean, d_off[i], d_len[i], d_seq[i], 0, out, 63, 0)
    assert l3.depth(bk, "ZZZZ") == {"bid": [(10_0000, 5, 1)], "ask": []}
