"""The venue's MoldUDP64 publisher and retransmission server: an ITCH day file sent over UDP.

One numba nogil loop on its own thread does both jobs: it packs the day file's messages into
MoldUDP64 packets (as many as fit `max_payload`) and sends them to a unicast address or multicast
group, at full speed or paced to a rate in messages per second, and between packets it answers
re-requests arriving on the retransmission socket from the message history (the day file itself,
indexed by sequence number). Idle, it sends heartbeats; after the last message, end-of-session
packets in their place, still answering re-requests until stopped.

A day file is NASDAQ's format: each message preceded by a 2-byte big-endian length, which is also a
MoldUDP64 message block, so a packet's body is one contiguous slice of the file.

Fault injection (seeded, per run) acts on first transmissions only, so every fault stays recoverable
through the retransmission server: drop a share of data packets, duplicate a share, hold a share back
and send it after the next one (reorder), and stall once (no data, no heartbeats) at a sequence number.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from numba import njit

from ..feed.moldudp64_descriptor import (
    COUNT_END_OF_SESSION,
    COUNT_HEARTBEAT,
    HEADER_SIZE,
    MAX_COUNT,
    MAX_DATAGRAM,
    MAX_PAYLOAD,
    REQUEST_SIZE,
    put_header_nb,
    request_count_nb,
    request_sequence_nb,
    session_array,
    session_matches_nb,
)
from ..runtime import net
from ..runtime.atomics import cpu_pause, load_acquire, store_release
from ..runtime.libc import set_thread_name, usleep
from ..runtime.wire import get_u16

# ---- control words (ctl, int64; 8 words apart so writer and reader do not share a line) --------------
CTL_STOP = 0  # set by stop(): the loop returns
CTL_DONE = 8  # set by the loop: every message sent once and the first end-of-session packet is out
CTL_AVAIL = 16  # messages in the history (sequence numbers 1..CTL_AVAIL), written by the producer
CTL_END = 24  # live: 1 + the session's last sequence number once the producer ends it (0 = still open)
N_CTL = 32

# ---- configuration words (cfg, int64) -----------------------------------------------------------------
P_TOTAL = 0  # messages to publish (sequence numbers 1..P_TOTAL)
P_MAX_PAYLOAD = 1
P_RATE = 2  # messages per second; 0 = as fast as the socket takes them
P_MAX_DELAY_NS = 3  # paced: longest a due message waits for a packet to fill
P_HEARTBEAT_NS = 4
P_MAX_REPLY = 5  # most messages sent in answer to one re-request
P_DROP_PPM = 6  # fault shares, in parts per million of data packets
P_DUP_PPM = 7
P_REORDER_PPM = 8
P_STALL_SEQ = 9  # stall once when this sequence is next (0 = never)
P_STALL_NS = 10
P_SEND_RETRIES = 11  # attempts on EAGAIN/ENOBUFS before a datagram counts as a send error
P_OMASK = 12  # live history: offsets ring mask; -1 for a day file (offsets indexed directly)
P_BMASK = 13  # live history: byte ring mask; -1 for a day file
P_LIVE = 14  # 1: messages arrive while publishing (a partial packet waits up to P_MAX_DELAY_NS)
P_IDLE_US = 15  # live: sleep this long when there is nothing to send (0 = spin; a venue shares its cores)
N_CFG = 16

# ---- loop state (st, int64) -----------------------------------------------------------------------
ST_NEXT_SEQ = 0  # next sequence to send for the first time; everything below is history
ST_T0 = 1  # pacing origin (ns)
ST_LAST_SEND = 2
ST_HELD_LEN = 3  # bytes of the packet held back for reordering (0 = none)
ST_STALL_UNTIL = 4
ST_STALLED = 5  # 1 once the configured stall happened
N_ST = 8

# ---- counters (ctr, int64; written by the loop only) ---------------------------------------------------
K_PACKETS = 0  # data packets sent (first transmissions, duplicates included)
K_MESSAGES = 1  # messages published (each once, dropped ones included: they are in the history)
K_BYTES = 2  # datagram bytes sent, all kinds
K_HEARTBEATS = 3
K_END_PACKETS = 4
K_DROPPED_PACKETS = 5
K_DROPPED_MESSAGES = 6
K_DUPLICATED = 7
K_REORDERED = 8
K_STALLS = 9
K_REQUESTS = 10  # re-requests received
K_BAD_REQUESTS = 11  # wrong size, other session, or asking for messages not yet published
K_CAPPED_REQUESTS = 12  # asked for more than max_reply
K_RETRANS_PACKETS = 13
K_RETRANS_MESSAGES = 14
K_SEND_ERRORS = 15  # datagrams the kernel refused (the receiver recovers them like drops)
N_COUNTERS = 16
MAX_SEQ = 1 << 62  # "no end yet" for a live session
MAX_FRAME_PAYLOAD = 50  # the longest ITCH 5.0 message (NOII)

COUNTER_NAMES = ("packets", "messages", "bytes", "heartbeats", "end_packets", "dropped_packets",
                 "dropped_messages", "duplicated", "reordered", "stalls", "requests", "bad_requests",
                 "capped_requests", "retrans_packets", "retrans_messages", "send_errors")

PPM = 1_000_000
_XS_A = np.uint64(13)
_XS_B = np.uint64(7)
_XS_C = np.uint64(17)
_XS_OUT = np.uint64(11)


@dataclass(frozen=True)
class Faults:
    """What to break on purpose, as shares of data packets (0.01 = 1%), plus one stall."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    stall_at: int = 0  # sequence number at which the publisher stalls once (0 = never)
    stall_s: float = 0.0
    seed: int = 1

    def __post_init__(self):
        for name in ("drop", "duplicate", "reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"faults.{name} must be a share between 0 and 1, got {getattr(self, name)}")
        if self.stall_at < 0 or self.stall_s < 0:
            raise ValueError("faults.stall_at and faults.stall_s must be >= 0")


# ---- day file -------------------------------------------------------------------------------------------
@njit(nogil=True, cache=True)
def _walk(buf, offsets, limit):
    """Offsets of the first `limit` length prefixes; returns (messages found, longest, error offset or -1)."""
    off = 0
    n = 0
    longest = 0
    size = buf.shape[0]
    while n < limit and off < size:
        if off + 2 > size:
            return n, longest, off
        length = np.int64(get_u16(buf, off))
        if off + 2 + length > size:
            return n, longest, off
        offsets[n] = off
        longest = max(longest, length)
        off += 2 + length
        n += 1
    offsets[n] = off
    return n, longest, -1


def index_dayfile(buf: np.ndarray, count: int | None = None) -> tuple[np.ndarray, int]:
    """(offsets, longest message): offsets[i] is where message i+1's length prefix starts, offsets[n] the end."""
    if buf.dtype != np.uint8 or buf.ndim != 1:
        raise ValueError("the day file must be a 1-D uint8 array")
    limit = buf.shape[0] // 2 if count is None else int(count)
    offsets = np.zeros(min(limit, buf.shape[0] // 2) + 1, dtype=np.int64)
    n, longest, bad = _walk(buf, offsets, offsets.shape[0] - 1)
    if bad >= 0:
        raise ValueError(f"day file truncated: message {n + 1} at byte {bad} runs past the end ({buf.shape[0]} bytes)")
    if count is not None and n < count:
        raise ValueError(f"day file holds {n} messages, {count} asked for")
    return offsets[:n + 1].copy(), int(longest)


# ---- the loop -------------------------------------------------------------------------------------------
# Without numba's reference counting: nothing here allocates, and an incref/decref pair per array
# argument per call is a measurable share of a packet's cost (see feed/mold_session.py).
_HOT = dict(nogil=True, cache=True, _nrt=False)


@njit(nogil=True, cache=True, inline="always")
def _draw(rng):
    """xorshift64: a uniform draw in 0..PPM-1."""
    x = rng[0]
    x ^= x << _XS_A
    x ^= x >> _XS_B
    x ^= x << _XS_C
    rng[0] = x
    return np.int64(x >> _XS_OUT) % PPM


@njit(**_HOT)
def _send(fd, buf, size, addr, cfg, ctr):
    """One datagram, retried briefly while the kernel is out of buffer space."""
    for _ in range(cfg[P_SEND_RETRIES]):
        r = net.sock_sendto(fd, buf, 0, size, addr)
        if r >= 0:
            ctr[K_BYTES] += size
            return True
        if r != -net.EAGAIN and r != -net.ENOBUFS and r != -net.EINTR:
            break
        cpu_pause()
    ctr[K_SEND_ERRORS] += 1
    return False


@njit(nogil=True, cache=True, inline="always")
def _fit(offsets, omask, first, limit, room):
    """How many messages from sequence `first` (at most `limit`) fit `room` bytes of blocks.

    offsets[(s - 1) & omask] is where message s starts and offsets[s & omask] where it ends (byte
    positions that only grow); omask is -1 for a day file, whose offsets are indexed directly.
    """
    base = offsets[(first - 1) & omask]
    n = 0
    while n < limit and n < MAX_COUNT and offsets[(first + n) & omask] - base <= room:
        n += 1
    return n


@njit(nogil=True, cache=True, inline="always")
def _build(out, session, buf, bmask, offsets, omask, first, n):
    """A data packet of messages first..first+n-1: the header, then one slice of the history."""
    put_header_nb(out, 0, session, first, n)
    src = offsets[(first - 1) & omask]
    size = offsets[(first - 1 + n) & omask] - src
    at = src & bmask
    part = min(size, buf.shape[0] - at)  # a live history is a ring: the slice may wrap once
    net.copy_bytes(out, HEADER_SIZE, buf, at, part)
    if part < size:
        net.copy_bytes(out, HEADER_SIZE + part, buf, 0, size - part)
    return HEADER_SIZE + size


@njit(**_HOT)
def _serve(cfg, st, ctr, session, buf, offsets, fd, rpkt, req, src, srclen):
    """Answer the re-requests waiting on the retransmission socket (a bounded batch); returns how many."""
    served = 0
    for _ in range(16):
        r = net.sock_recvfrom(fd, req, 0, req.shape[0], src, srclen)
        if r < 0:
            break
        served += 1
        ctr[K_REQUESTS] += 1
        if r != REQUEST_SIZE or not session_matches_nb(req, 0, session):
            ctr[K_BAD_REQUESTS] += 1
            continue
        seq = request_sequence_nb(req, 0)
        count = request_count_nb(req, 0)
        history = st[ST_NEXT_SEQ]
        # a live ring keeps the last half of its capacity safe from the producer's overwrites
        oldest = 1 if cfg[P_OMASK] < 0 else max(1, history - (cfg[P_OMASK] + 1) // 2)
        if count == 0 or seq < oldest or seq >= history:
            ctr[K_BAD_REQUESTS] += 1
            continue
        if count > cfg[P_MAX_REPLY]:
            count = cfg[P_MAX_REPLY]
            ctr[K_CAPPED_REQUESTS] += 1
        end = min(seq + count, history)
        room = cfg[P_MAX_PAYLOAD] - HEADER_SIZE
        while seq < end:
            n = _fit(offsets, cfg[P_OMASK], seq, end - seq, room)
            size = _build(rpkt, session, buf, cfg[P_BMASK], offsets, cfg[P_OMASK], seq, n)
            if _send(fd, rpkt, size, src, cfg, ctr):
                ctr[K_RETRANS_PACKETS] += 1
                ctr[K_RETRANS_MESSAGES] += n
            seq += n
    return served


@njit(**_HOT)
def _send_data(cfg, st, ctr, rng, fd, dest, pkt, size, n, held):
    """First transmission of a data packet, through the fault injector."""
    if cfg[P_DROP_PPM] > 0 and _draw(rng) < cfg[P_DROP_PPM]:
        ctr[K_DROPPED_PACKETS] += 1
        ctr[K_DROPPED_MESSAGES] += n
        return
    if cfg[P_REORDER_PPM] > 0 and st[ST_HELD_LEN] == 0 and _draw(rng) < cfg[P_REORDER_PPM]:
        net.copy_bytes(held, 0, pkt, 0, size)
        st[ST_HELD_LEN] = size
        ctr[K_REORDERED] += 1
        return
    _send(fd, pkt, size, dest, cfg, ctr)
    ctr[K_PACKETS] += 1
    if cfg[P_DUP_PPM] > 0 and _draw(rng) < cfg[P_DUP_PPM]:
        _send(fd, pkt, size, dest, cfg, ctr)
        ctr[K_PACKETS] += 1
        ctr[K_DUPLICATED] += 1
    _flush_held(cfg, st, ctr, fd, dest, held)


@njit(nogil=True, cache=True, inline="always")
def _flush_held(cfg, st, ctr, fd, dest, held):
    if st[ST_HELD_LEN] > 0:
        _send(fd, held, st[ST_HELD_LEN], dest, cfg, ctr)
        ctr[K_PACKETS] += 1
        st[ST_HELD_LEN] = 0


@njit(**_HOT)
def publish_loop(ctl, cfg, st, ctr, rng, session, buf, offsets, data_fd, dest, retrans_fd,
                 pkt, held, rpkt, req, src, srclen, ts):
    """Publish until CTL_STOP: data (paced or not), re-request answers, heartbeats, end of session."""
    omask = cfg[P_OMASK]
    bmask = cfg[P_BMASK]
    live = cfg[P_LIVE] != 0
    room = cfg[P_MAX_PAYLOAD] - HEADER_SIZE
    rate = cfg[P_RATE]
    ns_per_msg = 1e9 / rate if rate > 0 else 0.0
    now = net.monotonic_ns(ts)
    st[ST_T0] = now
    st[ST_LAST_SEND] = now
    burst = 0  # data packets sent in consecutive iterations
    while load_acquire(ctl, CTL_STOP) == 0:
        now = net.monotonic_ns(ts)
        worked = False
        # While bursting, look for re-requests every 8th packet: an empty recvfrom is a system call too.
        if burst & 7 == 0:
            worked = _serve(cfg, st, ctr, session, buf, offsets, retrans_fd, rpkt, req, src, srclen) > 0
        bursting = burst
        burst = 0
        nxt = st[ST_NEXT_SEQ]
        avail = load_acquire(ctl, CTL_AVAIL)
        end_seq = load_acquire(ctl, CTL_END)
        total = (end_seq - 1 if end_seq > 0 else MAX_SEQ) if live else cfg[P_TOTAL]
        if now < st[ST_STALL_UNTIL]:
            cpu_pause()
            continue
        if nxt <= avail:
            if cfg[P_STALL_SEQ] > 0 and st[ST_STALLED] == 0 and nxt >= cfg[P_STALL_SEQ]:
                st[ST_STALLED] = 1
                st[ST_STALL_UNTIL] = now + cfg[P_STALL_NS]
                st[ST_T0] += cfg[P_STALL_NS]  # resume the pace afterwards instead of bursting to catch up
                st[ST_LAST_SEND] = now + cfg[P_STALL_NS]
                ctr[K_STALLS] += 1
                continue
            limit = avail - nxt + 1
            if rate > 0:
                elapsed = now - st[ST_T0]
                due = np.int64(elapsed / ns_per_msg) + 1 - (nxt - 1)  # message k is due at t0 + (k-1)/rate
                limit = min(limit, due)
            if limit > 0:
                n = _fit(offsets, omask, nxt, limit, room)
                full = n < limit or n == total - nxt + 1
                if live:
                    waited = now - st[ST_LAST_SEND] >= cfg[P_MAX_DELAY_NS]
                else:
                    waited = rate == 0 or now - (st[ST_T0] + np.int64((nxt - 1) * ns_per_msg)) >= cfg[P_MAX_DELAY_NS]
                if full or waited:
                    size = _build(pkt, session, buf, bmask, offsets, omask, nxt, n)
                    st[ST_NEXT_SEQ] = nxt + n
                    ctr[K_MESSAGES] += n
                    _send_data(cfg, st, ctr, rng, data_fd, dest, pkt, size, n, held)
                    st[ST_LAST_SEND] = now
                    burst = bursting + 1
                    if nxt + n > total:  # the last message is out: announce the end at once
                        _flush_held(cfg, st, ctr, data_fd, dest, held)
                        put_header_nb(pkt, 0, session, total + 1, COUNT_END_OF_SESSION)
                        _send(data_fd, pkt, HEADER_SIZE, dest, cfg, ctr)
                        ctr[K_END_PACKETS] += 1
                        store_release(ctl, CTL_DONE, 1)
                    continue
        if live and end_seq > 0 and nxt >= end_seq and load_acquire(ctl, CTL_DONE) == 0:
            _flush_held(cfg, st, ctr, data_fd, dest, held)  # ended with nothing left to send
            put_header_nb(pkt, 0, session, nxt, COUNT_END_OF_SESSION)
            _send(data_fd, pkt, HEADER_SIZE, dest, cfg, ctr)
            ctr[K_END_PACKETS] += 1
            st[ST_LAST_SEND] = now
            store_release(ctl, CTL_DONE, 1)
            continue
        if now - st[ST_LAST_SEND] >= cfg[P_HEARTBEAT_NS]:
            _flush_held(cfg, st, ctr, data_fd, dest, held)
            if nxt > total:
                put_header_nb(pkt, 0, session, nxt, COUNT_END_OF_SESSION)
                ctr[K_END_PACKETS] += 1
            else:
                put_header_nb(pkt, 0, session, nxt, COUNT_HEARTBEAT)
                ctr[K_HEARTBEATS] += 1
            _send(data_fd, pkt, HEADER_SIZE, dest, cfg, ctr)
            st[ST_LAST_SEND] = now
            continue
        if not worked:
            if live and cfg[P_IDLE_US] > 0 and nxt > avail:
                usleep(cfg[P_IDLE_US])
            else:
                cpu_pause()
    _flush_held(cfg, st, ctr, data_fd, dest, held)


@njit(**_HOT)
def history_append(ctl, cfg, st, buf, offsets, frames, nbytes):
    """Copy framed messages into the live ring and publish them to the loop; -1 if the ring lacks room."""
    omask = cfg[P_OMASK]
    bmask = cfg[P_BMASK]
    seq = ctl[CTL_AVAIL]
    # count first: all or nothing, and never past half the ring ahead of the publisher
    n = 0
    off = 0
    while off + 2 <= nbytes:
        off += 2 + get_u16(frames, off)
        n += 1
    if off != nbytes or seq + n - (load_acquire(st, ST_NEXT_SEQ) - 1) > (omask + 1) // 2:
        return -1
    # the frames are one contiguous block here and in the ring: one copy (two at the ring's end)
    pos = offsets[seq & omask]
    at = pos & bmask
    part = min(nbytes, buf.shape[0] - at)
    net.copy_bytes(buf, at, frames, 0, part)
    if part < nbytes:
        net.copy_bytes(buf, 0, frames, part, nbytes - part)
    off = 0
    while off < nbytes:
        size = 2 + get_u16(frames, off)
        pos += size
        off += size
        seq += 1
        offsets[seq & omask] = pos
    store_release(ctl, CTL_AVAIL, seq)
    return n


# ---- Python side ------------------------------------------------------------------------------------------
class MoldPublisher:
    """Publishes a day file, or a live stream appended while it runs, as a MoldUDP64 session from its own
    thread and serves re-requests for it.

    Live (`dayfile=None`): the history is a ring of `history_messages` messages (a power of two) and
    64 bytes per message; the producer calls `append` with framed ITCH and `end` to close the session.
    Re-requests are answered for the newest half of the ring.
    """

    def __init__(self, dayfile: np.ndarray | None, dest: tuple[str, int], *, session: str = "VENUE00001",
                 count: int | None = None, rate: float = 0, max_payload: int = MAX_PAYLOAD,
                 heartbeat_s: float = 1.0, max_delay_us: float = 50.0, max_reply: int = 4096,
                 retrans_bind: tuple[str, int] = ("127.0.0.1", 0), interface: str | None = None,
                 ttl: int = 1, multicast_loop: bool = True, faults: Faults = Faults(),
                 sndbuf: int = 4 << 20, send_retries: int = 1000, history_messages: int = 1 << 20,
                 idle_us: int = 20):
        """`dayfile`: uint8 array of length-prefixed ITCH messages; `count` limits how many are sent.
        `dest`: unicast address or multicast group (sent from `interface` with `ttl`)."""
        if not HEADER_SIZE + 3 <= max_payload <= MAX_DATAGRAM:
            raise ValueError(f"max_payload must be {HEADER_SIZE + 3}..{MAX_DATAGRAM}, got {max_payload}")
        if rate < 0 or heartbeat_s <= 0 or max_reply < 1 or max_delay_us < 0:
            raise ValueError("rate and max_delay_us must be >= 0, heartbeat_s > 0, max_reply >= 1")
        self.live = dayfile is None
        if self.live:
            if history_messages < 1024 or history_messages & (history_messages - 1):
                raise ValueError(f"history_messages must be a power of two >= 1024, got {history_messages}")
            if HEADER_SIZE + 2 + MAX_FRAME_PAYLOAD > max_payload:
                raise ValueError(f"max_payload {max_payload} cannot carry the longest ITCH message")
            self.offsets = np.zeros(history_messages, dtype=np.int64)
            self.buf = np.zeros(history_messages * 64, dtype=np.uint8)
            self.total = 0
        else:
            self.offsets, longest = index_dayfile(dayfile, count)
            if HEADER_SIZE + 2 + longest > max_payload:
                raise ValueError(f"a {longest}-byte message does not fit a {max_payload}-byte packet")
            self.buf = dayfile
            self.total = self.offsets.shape[0] - 1
        self.session = session_array(session)
        self.ctl = np.zeros(N_CTL, dtype=np.int64)
        self.cfg = np.zeros(N_CFG, dtype=np.int64)
        self.st = np.zeros(N_ST, dtype=np.int64)
        self.ctr = np.zeros(N_COUNTERS, dtype=np.int64)
        self.rng = np.array([(faults.seed * 0x9E3779B97F4A7C15 + 1) & 0xFFFFFFFFFFFFFFFF or 1], dtype=np.uint64)
        c = self.cfg
        c[P_TOTAL] = self.total
        c[P_MAX_PAYLOAD] = max_payload
        c[P_RATE] = int(rate)
        c[P_MAX_DELAY_NS] = int(max_delay_us * 1000)
        c[P_HEARTBEAT_NS] = int(heartbeat_s * 1e9)
        c[P_MAX_REPLY] = max_reply
        c[P_DROP_PPM] = round(faults.drop * PPM)
        c[P_DUP_PPM] = round(faults.duplicate * PPM)
        c[P_REORDER_PPM] = round(faults.reorder * PPM)
        c[P_STALL_SEQ] = faults.stall_at
        c[P_STALL_NS] = int(faults.stall_s * 1e9)
        c[P_SEND_RETRIES] = max(1, send_retries)
        c[P_OMASK] = self.offsets.shape[0] - 1 if self.live else -1
        c[P_BMASK] = self.buf.shape[0] - 1 if self.live else -1
        c[P_LIVE] = 1 if self.live else 0
        c[P_IDLE_US] = max(0, int(idle_us))
        self.ctl[CTL_AVAIL] = self.total
        self.st[ST_NEXT_SEQ] = 1
        self.dest = dest
        self._dest_addr = net.sockaddr_in(*dest)
        self._data_sock = net.udp_sender(interface=interface, ttl=ttl, multicast_loop=multicast_loop, sndbuf=sndbuf)
        self._retrans_sock = net.udp_receiver(retrans_bind[0], retrans_bind[1], rcvbuf=4 << 20)
        self._pkt = np.zeros(max_payload, dtype=np.uint8)
        self._held = np.zeros(max_payload, dtype=np.uint8)
        self._rpkt = np.zeros(max_payload, dtype=np.uint8)
        self._req = np.zeros(64, dtype=np.uint8)
        self._src = np.zeros(net.SOCKADDR_IN_SIZE, dtype=np.uint8)
        self._srclen = np.zeros(1, dtype=np.uint32)
        self._ts = np.zeros(2, dtype=np.int64)
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self._warm()

    @property
    def retrans_address(self) -> tuple[str, int]:
        """Where re-requests go."""
        return self._retrans_sock.getsockname()

    def _args(self):
        return (self.ctl, self.cfg, self.st, self.ctr, self.rng, self.session, self.buf, self.offsets,
                self._data_sock.fileno(), self._dest_addr, self._retrans_sock.fileno(), self._pkt, self._held,
                self._rpkt, self._req, self._src, self._srclen, self._ts)

    def _warm(self):
        """Compile (or load) the loop now, not on the publishing thread: it runs once and stops at once."""
        self.ctl[CTL_STOP] = 1
        publish_loop(*self._args())
        self.ctl[CTL_STOP] = 0

    def _run(self):
        set_thread_name("mold-publisher")
        try:
            publish_loop(*self._args())
        except BaseException as e:  # surfaced by join()
            self.error = e

    def start(self) -> "MoldPublisher":
        if self._thread is not None:
            raise RuntimeError("publisher already started")
        self._thread = threading.Thread(target=self._run, name="mold-publisher", daemon=True)
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        """Every message was sent once and the end of session announced (re-requests are still served)."""
        return bool(self.ctl[CTL_DONE])

    def stop(self) -> None:
        """Ask the loop to return (it sends nothing more; re-requests go unanswered)."""
        self.ctl[CTL_STOP] = 1

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the loop to return after stop(); True when it did. Re-raises an error from the loop."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
        if self.error is not None:
            raise self.error
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop, join and close the sockets."""
        self.stop()
        if not self.join(timeout):
            raise RuntimeError(f"publisher thread did not stop within {timeout} s")
        self._data_sock.close()
        self._retrans_sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def counters(self) -> dict[str, int]:
        """What was sent, by name (a racy but safe read while running)."""
        out = {name: int(self.ctr[i]) for i, name in enumerate(COUNTER_NAMES)}
        out["available"] = int(self.ctl[CTL_AVAIL])
        return out

    # -- live history (producer side; one producer thread) --
    @property
    def backlog(self) -> int:
        """Messages appended but not yet sent once."""
        return int(self.ctl[CTL_AVAIL]) - (int(self.st[ST_NEXT_SEQ]) - 1)

    @property
    def room(self) -> int:
        """Messages the producer may append now without overwriting what the publisher still needs."""
        return self.offsets.shape[0] // 2 - self.backlog

    def append(self, frames: np.ndarray, nbytes: int) -> int:
        """Append the length-prefixed ITCH messages in frames[:nbytes] to a live session; returns how many.

        Raises if the session has ended or they would overwrite messages not yet sent.
        """
        if not self.live or self.ctl[CTL_END]:
            raise RuntimeError("append needs a live session that has not ended")
        n = history_append(self.ctl, self.cfg, self.st, self.buf, self.offsets, frames, nbytes)
        if n < 0:
            raise OverflowError("live history full: the publisher is more than half a ring behind")
        return n

    def end(self) -> int:
        """End a live session after what was appended: end-of-session packets follow. Returns its last sequence."""
        last = int(self.ctl[CTL_AVAIL])
        self.ctl[CTL_END] = last + 1  # an aligned int64 store: the loop reads it with load_acquire
        return last

