"""The live ITCH feed agent: MoldUDP64 datagrams from a socket, in sequence, through the L3 book, into the ring.

Per unit of work the feed thread reads up to a batch of datagrams (non-blocking recv), hands each to the
MoldUDP64 session (which orders, parks and re-requests), applies the messages it delivers to the books,
and publishes the resulting book events to the strategy ring. Book events are snapshots (a BBO event
carries the whole touch), so when the strategy falls behind and the ring is full the feed keeps the
books exact and counts the events it could not publish (C_BACKPRESSURE) rather than stop reading the
socket and lose packets.
"""

from __future__ import annotations

import logging
from collections import namedtuple

import numpy as np
from numba import njit

from ..book import l3
from ..runtime.atomics import load_relaxed, rdtsc, store_relaxed
from ..runtime.clock import cycles_to_ns
from ..runtime.event import EVENT_DTYPE
from ..runtime.histogram import HIST_WORDS, hist_record
from ..runtime.layout import C_BACKPRESSURE, C_EVENTS_OUT, H_FEED_BOOK, H_FEED_DECODE, HISTOGRAMS
from ..runtime.net import SOCKADDR_IN_SIZE, is_multicast, sock_recv, sock_sendto, sockaddr_in, udp_receiver
from ..runtime.ring import ring_available, ring_free, ring_publish_stamped, ring_release, ring_tail
from . import mold_session as ms
from .moldudp64_descriptor import MAX_DATAGRAM

log = logging.getLogger("appliance.feed")

RECV_BATCH = 64  # datagrams read per unit of work before the loop looks at its stop flag again

FeedIO = namedtuple("FeedIO", "fd pkt raddr d_off d_len d_seq scratch words hist")
FeedIO.__doc__ = """The feed thread's I/O arrays: socket fd, datagram buffer, the re-request server's
sockaddr (all zero: no recovery), delivery arrays, a scratch event array for events the ring had no room
for, words (W_*) the control plane reads, and the latency histograms (the arena's, when in the engine)."""

W_LAST_PACKET_TSC = 0  # TSC of the last datagram read
W_RECV_ERRORS = 1  # recv failures other than "nothing to read"
W_SEND_ERRORS = 2  # re-request sends that failed
W_HALTED = 3  # 1 once the session halted on an unrecoverable gap
W_WORDS = 8


@njit(nogil=True, cache=True, _nrt=False)
def _apply_delivered(io, sess, bk, k, t_in, out_hdr, out_slots, counters):
    """Apply k delivered messages to the books and publish their events; returns events published."""
    cap = out_slots.shape[0]
    mask = cap - 1
    free = ring_free(out_hdr, cap)
    pos = ring_tail(out_hdr)
    table_mask = bk.meta[l3.M_MASK]
    w = 0
    dropped = 0
    for i in range(k):
        off = io.d_off[i]
        if free - w < 2:
            if w:
                _publish(out_hdr, out_slots, pos, w, mask)
                pos += w
                w = 0
            free = ring_free(out_hdr, cap)
        if off >= 0:
            src = io.pkt
        else:
            src = sess.gap
            off = ~off
        # Overlap the next message's order-table miss with this message's work.
        if i + 1 < k and io.d_len[i + 1] >= l3.PREFETCH_BYTES:
            nxt = io.d_off[i + 1]
            if nxt >= 0:
                l3.prefetch_order(bk.orders, table_mask, io.pkt, nxt)
            else:
                l3.prefetch_order(bk.orders, table_mask, sess.gap, ~nxt)
        # A real call, not book_apply_inline: inlining the whole handler here as well made the hot
        # loops' cold compile several times longer (over two minutes on this VM).
        if free - w >= 2:
            w += l3.book_apply(bk, src, off, io.d_len[i], io.d_seq[i], t_in, out_slots, mask, pos + w)
        else:  # the strategy is behind: apply to the book, count the events it will not see
            dropped += l3.book_apply(bk, src, off, io.d_len[i], io.d_seq[i], t_in, io.scratch, 1, 0)
    if w:
        _publish(out_hdr, out_slots, pos, w, mask)
    if dropped:
        store_relaxed(counters, C_BACKPRESSURE, load_relaxed(counters, C_BACKPRESSURE) + dropped)
    return w


@njit(nogil=True, cache=True, inline="always")
def _publish(out_hdr, out_slots, pos, n, mask):
    ring_publish_stamped(out_hdr, out_slots, pos, n)


@njit(nogil=True, cache=True)
def itch_feed_work(io, sess, bk, counters, out_hdr, out_slots, mult, max_packets):
    """One unit of work: read and apply up to max_packets datagrams, send a due re-request; returns datagrams read.

    The split layout's feed thread reads RECV_BATCH at a time; the fused thread reads one, so the strategy and
    the gateway act on a packet before the next is read (run to completion)."""
    got = 0
    published = 0
    for _ in range(max_packets):
        n = sock_recv(io.fd, io.pkt, 0, io.pkt.shape[0])
        if n < 0:
            if n != -11:  # -EAGAIN: nothing to read
                io.words[W_RECV_ERRORS] += 1
            break
        t_in = rdtsc()
        io.words[W_LAST_PACKET_TSC] = t_in
        got += 1
        k = ms.mold_on_packet(sess, io.pkt, n, cycles_to_ns(t_in, mult), io.d_off, io.d_len, io.d_seq)
        t_dec = rdtsc()
        hist_record(io.hist[H_FEED_DECODE], cycles_to_ns(t_dec - t_in, mult))
        if k:
            published += _apply_delivered(io, sess, bk, k, t_in, out_hdr, out_slots, counters)
            hist_record(io.hist[H_FEED_BOOK], cycles_to_ns(rdtsc() - t_dec, mult))
        _send_request(io, sess)
    if got == 0 and sess.state[ms.S_EXPECTED] < sess.state[ms.S_HIGH]:
        now = rdtsc()
        k = ms.mold_poll(sess, cycles_to_ns(now, mult), io.d_off, io.d_len, io.d_seq)
        if k:
            published += _apply_delivered(io, sess, bk, k, now, out_hdr, out_slots, counters)
        _send_request(io, sess)
    if published:
        store_relaxed(counters, C_EVENTS_OUT, load_relaxed(counters, C_EVENTS_OUT) + published)
    if sess.state[ms.S_FLAGS] & ms.F_HALTED:
        io.words[W_HALTED] = 1
    return got


@njit(nogil=True, cache=True, inline="always")
def _send_request(io, sess):
    while True:  # several gaps may each have a request queued
        size = ms.mold_take_request(sess)
        if size == 0:
            break
        if io.raddr[0] != 0 and sock_sendto(io.fd, sess.request, 0, size, io.raddr) < 0:
            io.words[W_SEND_ERRORS] += 1


@njit(nogil=True, cache=True)
def drive_feed(io, sess, bk, counters, out_hdr, out_slots, mult, deadline_tsc):
    """Run the feed agent with a null consumer on its ring until the session ends (or the deadline).

    For benchmarks and tests that exercise the live feed without the rest of the appliance. Returns
    the TSC of the first and of the last datagram read.
    """
    first = np.int64(0)
    while True:
        got = itch_feed_work(io, sess, bk, counters, out_hdr, out_slots, mult, RECV_BATCH)
        if got and first == 0:
            first = io.words[W_LAST_PACKET_TSC]
        n = ring_available(out_hdr)
        if n:
            ring_release(out_hdr, n)
        if ms.mold_complete(sess) or io.words[W_HALTED] != 0 or rdtsc() > deadline_tsc:
            break
    return first, io.words[W_LAST_PACKET_TSC]


class ItchFeed:
    """The cold side of the live feed: socket, MoldUDP64 session, books and the arrays the hot loop uses."""

    def __init__(self, cfg, hist=None):
        f, b = cfg.feed, cfg.book
        self.cfg = cfg
        self.sock = udp_receiver(f.address, f.port, interface=f.interface, rcvbuf=f.receive_buffer)
        self.bound = self.sock.getsockname()
        recovery = f.retransmit_port != 0
        raddr = sockaddr_in(f.retransmit_host, f.retransmit_port) if recovery else np.zeros(SOCKADDR_IN_SIZE,
                                                                                            dtype=np.uint8)
        self.sess = ms.make_session(
            gap_buffer_messages=f.gap_buffer, max_request=f.max_request,
            request_timeout_ns=f.request_timeout_ms * 1_000_000, max_retries=f.max_retries, start_seq=1,
            session=f.session or None, on_loss=f.on_unrecoverable_gap, recovery=recovery)
        self.book = l3.make_book(max_orders=b.max_orders, levels=b.levels, max_symbols=b.max_symbols,
                                 symbols=tuple(f.symbols))
        d_off, d_len, d_seq = ms.make_delivery(self.sess, MAX_DATAGRAM)
        self.io = FeedIO(fd=self.sock.fileno(), pkt=np.zeros(MAX_DATAGRAM, dtype=np.uint8), raddr=raddr,
                         d_off=d_off, d_len=d_len, d_seq=d_seq, scratch=np.zeros(2, dtype=EVENT_DTYPE),
                         words=np.zeros(W_WORDS, dtype=np.int64),
                         hist=hist if hist is not None else np.zeros((len(HISTOGRAMS), HIST_WORDS), dtype=np.int64))
        self._logged_examples: set = set()
        self._logged_counts: dict = {}
        log.info("feed: MoldUDP64 on %s:%d%s, re-requests to %s, books for %s", self.bound[0], self.bound[1],
                 f" (multicast via {f.interface})" if is_multicast(f.address) else "",
                 f"{f.retransmit_host}:{f.retransmit_port}" if recovery else "nowhere (recovery off)",
                 ", ".join(f.symbols) if f.symbols else "every symbol")

    def kernel_args(self):
        """(io, session, book): the arguments itch_feed_work takes besides counters and the ring."""
        return self.io, self.sess, self.book

    def stats(self) -> dict:
        """Feed and book counters (racy reads of single-writer words: fine for monitoring)."""
        st = l3.stats(self.book)
        mold = ms.counters_dict(self.sess)
        flags = int(self.sess.state[ms.S_FLAGS])
        return {
            "mold": mold, "book": st,
            "expected_seq": int(self.sess.state[ms.S_EXPECTED]),
            "loss": bool(flags & ms.F_LOSS), "halted": bool(flags & ms.F_HALTED),
            "end_of_session": bool(flags & ms.F_END_OF_SESSION),
            "recv_errors": int(self.io.words[W_RECV_ERRORS]), "send_errors": int(self.io.words[W_SEND_ERRORS]),
        }

    def new_problems(self) -> list[str]:
        """Log lines for bad input seen since the last call: the kept examples once, then counts per kind.

        Bounded: at most `examples` lines per kind ever, plus one summary line per call while counts grow.
        """
        lines = []
        seen = self._logged_examples
        for ex in l3.examples(self.book):
            key = (ex["kind"], ex["seq"])
            if key not in seen:
                seen.add(key)
                lines.append(f"{ex['kind']} at sequence {ex['seq']}: type {ex['type']}, stock locate {ex['locate']}, "
                             f"ref/length {ex['ref']}")
        st = self.stats()
        counts = {**{k: v for k, v in st["book"]["malformed"].items() if v},
                  **{k: st["mold"][k] for k in ("bad_truncated", "bad_overrun", "bad_session", "oversize",
                                                "unrecoverable") if st["mold"][k]}}
        grown = {k: v - self._logged_counts.get(k, 0) for k, v in counts.items() if v != self._logged_counts.get(k, 0)}
        if grown:
            lines.append("bad or lost input since last report: " + ", ".join(f"{k} +{v}" for k, v in grown.items())
                         + " (counted in appliance_feed_malformed_total / appliance_feed_unrecoverable_messages_total)")
        self._logged_counts = counts
        return lines

    def healthy(self) -> bool:
        """False once the feed halted on an unrecoverable gap (on_unrecoverable_gap = "halt")."""
        return not (int(self.sess.state[ms.S_FLAGS]) & ms.F_HALTED)

    def close(self) -> None:
        self.sock.close()

