"""MoldUDP64 receiver: sequence tracking, gap detection, re-requests and in-order delivery, for the feed loop.

All state lives in numpy arrays bundled in a `MoldSession` namedtuple, so the whole machine runs inside
a numba nogil hot loop with no allocation. The caller owns the socket:

    n = sock_recv(fd, pkt, 0, pkt.size)                       # one datagram
    k = mold_on_packet(sess, pkt, n, now, d_off, d_len, d_seq) if n > 0 else \
        mold_poll(sess, now, d_off, d_len, d_seq)             # timeouts when nothing arrived
    for i in range(k):                                        # k messages, in sequence order
        off = d_off[i]                                        # >= 0: in the packet; < 0: gap buffer
        if off >= 0:
            apply(pkt, off, d_len[i])                         # message number d_seq[i]
        else:
            apply(sess.gap, ~off, d_len[i])
    while mold_take_request(sess):                            # re-requests due (or one per packet)
        sock_sendto(fd, sess.request, 0, REQUEST_SIZE, retrans_addr)

Deliveries stay valid until the next mold_on_packet/mold_poll call (and while `pkt` is not overwritten).
In the common in-order case they point into the packet itself, nothing is copied. Messages that arrive
beyond a gap are copied into a bounded gap buffer (one 64-byte slot per message, indexed by
sequence) and delivered from there once the gap is filled by retransmission, or declared lost.

Every hole is re-requested as soon as it is seen (up to `max_request` messages), so many holes cost
one round trip. The first missing run is then tracked: re-sent after `request_timeout_ns` (judged by
mold_poll, when the socket is empty) up to `max_retries` times, and then declared unrecoverable: its
messages are counted lost, skipped, the parked messages after it are delivered, and F_LOSS is raised
for the caller. With on_loss="halt" the session instead stops
delivering anything (F_HALTED) until it is recreated. A gap wider than the gap buffer is handled
the same way at once (F_OVERFLOW).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from ..runtime.net import copy_bytes
from .moldudp64_descriptor import (
    BLOCK_LEN_SIZE,
    COUNT_END_OF_SESSION,
    COUNT_HEARTBEAT,
    HEADER_SIZE,
    MAX_DATAGRAM,
    OFF_SESSION,
    REQUEST_SIZE,
    SESSION_SIZE,
    block_length_nb,
    header_count_nb,
    header_sequence_nb,
    put_request_nb,
    session_array,
    session_matches_nb,
)

# ---- state words (sess.state, int64) ---------------------------------------------------------------
S_EXPECTED = 0  # next sequence number to deliver
S_HIGH = 1  # one past the highest sequence known to exist (from data, heartbeats, end of session)
S_STARTED = 2  # 1 once the first packet fixed the session and the starting sequence
S_FLAGS = 3  # F_* bits
S_PARKED = 4  # messages held in the gap buffer
S_REQ_OUT = 5  # 1 while a re-request is outstanding
S_REQ_SEQ = 6  # first sequence of the outstanding request
S_REQ_END = 7  # one past its last sequence
S_REQ_DEADLINE = 8  # when it times out (ns, caller's clock)
S_REQ_TRIES = 9  # times the current missing run has been requested
S_REQ_FROM = 10  # S_EXPECTED when the request was sent (progress check on timeout)
S_RQ_HEAD = 11  # request packets handed to the caller (mold_take_request)
S_END_SEQ = 12  # sequence carried by the end-of-session packet
S_LAST_NS = 13  # time of the last packet accepted from the session (for staleness checks)
S_RQ_TAIL = 14  # request packets queued
S_HOLE_HEAD = 15  # hole records retired
S_HOLE_TAIL = 16  # hole records written
N_STATE = 24

# ---- flag bits (S_FLAGS) ---------------------------------------------------------------------------
F_LOSS = 1  # messages were declared unrecoverable (sticky until mold_clear_loss)
F_END_OF_SESSION = 2  # the publisher announced the end of the session
F_HALTED = 4  # on_loss="halt" and a loss happened: nothing is delivered any more
F_OVERFLOW = 8  # a loss was forced by the gap buffer filling up

# ---- configuration words (sess.config, int64) -------------------------------------------------------
P_CAPACITY = 0  # gap buffer slots (power of two)
P_MASK = 1
P_SLOT_SIZE = 2  # bytes per gap slot: the longest message that can be parked
P_MAX_REQUEST = 3  # most messages asked for in one re-request
P_TIMEOUT_NS = 4
P_MAX_RETRIES = 5  # re-sends of a request before its run is declared lost
P_START_SEQ = 6  # first expected sequence; 0 = take it from the first packet (late join)
P_ON_LOSS = 7  # ON_LOSS_CONTINUE or ON_LOSS_HALT
P_SESSION_FIXED = 8  # 1 when the session name was configured, 0 to learn it from the first packet
P_RECOVERY = 9  # 1: re-request gaps; 0: no retransmission server, every gap is lost at once
P_REQ_QUEUE = 10  # request packets that can wait for the caller (power of two)
P_HOLES = 11  # holes remembered as requested on sight (power of two)
N_CONFIG = 16

ON_LOSS_CONTINUE = 0
ON_LOSS_HALT = 1
ON_LOSS = {"continue": ON_LOSS_CONTINUE, "halt": ON_LOSS_HALT}

# ---- counters (sess.counters, int64; single writer: the feed thread) ----------------------------------
C_PACKETS = 0  # datagrams handed to mold_on_packet
C_BYTES = 1  # their bytes
C_MESSAGES = 2  # messages delivered
C_HEARTBEATS = 3
C_END_PACKETS = 4  # end-of-session packets
C_DUP_PACKETS = 5  # data packets entirely below the expected sequence (duplicates, late copies)
C_DUP_MESSAGES = 6  # messages already delivered or already parked
C_GAPS = 7  # times a packet or heartbeat revealed messages never seen before it
C_GAP_MESSAGES = 8  # messages those gaps spanned
C_PARKED = 9  # messages copied into the gap buffer
C_REQUESTS = 10  # re-request packets queued for sending
C_RETRIES = 11  # of which re-sends after a timeout without progress
C_TIMEOUTS = 12  # request timeouts
C_RECOVERED = 13  # messages that filled a known gap (retransmitted, or late out of order)
C_UNRECOVERABLE = 14  # messages declared lost
C_LOSS_EVENTS = 15  # times messages were declared lost
C_OVERFLOWS = 16  # losses forced by a full gap buffer
C_BAD_TRUNCATED = 17  # malformed: shorter than the header
C_BAD_OVERRUN = 18  # malformed: a block (length field or message) runs past the datagram
C_BAD_SESSION = 19  # packets of another session
C_OVERSIZE = 20  # messages too long for a gap slot (not parked; requested again later)
C_HALTED = 21  # packets ignored because the session halted
C_QUEUE_FULL = 22  # requests not queued because the caller was not taking them
N_COUNTERS = 24

COUNTER_NAMES = (
    "packets", "bytes", "messages", "heartbeats", "end_packets", "dup_packets", "dup_messages", "gaps",
    "gap_messages", "parked", "requests", "retries", "timeouts", "recovered", "unrecoverable",
    "loss_events", "overflows", "bad_truncated", "bad_overrun", "bad_session", "oversize", "halted",
    "queue_full",
)

MoldSession = namedtuple("MoldSession", ["state", "config", "counters", "session", "gap", "gap_seq",
                                         "gap_len", "request", "request_queue", "holes"])
MoldSession.__doc__ = """A MoldUDP64 receiver's arrays: state words, configuration, counters, the 10 session
bytes, the gap buffer (capacity x slot bytes, flat) with the sequence (-1: free) and length of each slot,
the request packet the caller sends when mold_take_request says so, the queue of request packets
behind it, and the holes requested on sight (start, end, time sent)."""


def make_session(*, gap_buffer_messages: int = 65536, slot_size: int = 64, max_request: int = 1024,
                 request_timeout_ns: int = 10_000_000, max_retries: int = 3, start_seq: int = 1,
                 session: str | bytes | None = None, on_loss: str = "continue", recovery: bool = True,
                 request_queue: int = 64, holes: int = 256, counters: np.ndarray | None = None) -> MoldSession:
    """A receiver session. `session` None learns the name from the first packet; `start_seq` 0 takes the
    first packet's sequence (joining late), else messages from `start_seq` on are required. Without
    `recovery` (no retransmission server) every gap is declared lost as soon as it is seen.
    `counters` may be an int64 view into shared memory (N_COUNTERS words) for the control plane."""
    cap = int(gap_buffer_messages)
    if cap < 2 or cap & (cap - 1):
        raise ValueError(f"gap_buffer_messages must be a power of two >= 2, got {cap}")
    if not 1 <= max_request <= 0xFFFF:
        raise ValueError(f"max_request must be 1..65535 (a u16 count), got {max_request}")
    if slot_size < 1:
        raise ValueError(f"slot_size must be >= 1, got {slot_size}")
    if request_timeout_ns <= 0 or max_retries < 0 or start_seq < 0:
        raise ValueError("request_timeout_ns must be > 0, max_retries and start_seq >= 0")
    for name, v in (("request_queue", request_queue), ("holes", holes)):
        if v < 1 or v & (v - 1):
            raise ValueError(f"{name} must be a power of two >= 1, got {v}")
    if on_loss not in ON_LOSS:
        raise ValueError(f"on_loss must be one of {sorted(ON_LOSS)}, got {on_loss!r}")
    if counters is None:
        counters = np.zeros(N_COUNTERS, dtype=np.int64)
    elif counters.dtype != np.int64 or counters.ndim != 1 or counters.shape[0] < N_COUNTERS:
        raise ValueError(f"counters must be int64[>= {N_COUNTERS}]")
    config = np.zeros(N_CONFIG, dtype=np.int64)
    config[P_CAPACITY] = cap
    config[P_MASK] = cap - 1
    config[P_SLOT_SIZE] = slot_size
    config[P_MAX_REQUEST] = max_request
    config[P_TIMEOUT_NS] = request_timeout_ns
    config[P_MAX_RETRIES] = max_retries
    config[P_START_SEQ] = start_seq
    config[P_ON_LOSS] = ON_LOSS[on_loss]
    config[P_SESSION_FIXED] = 0 if session is None else 1
    config[P_RECOVERY] = 1 if recovery else 0
    config[P_REQ_QUEUE] = request_queue
    config[P_HOLES] = holes
    return MoldSession(
        state=np.zeros(N_STATE, dtype=np.int64),
        config=config,
        counters=counters,
        session=session_array(session) if session is not None else np.zeros(SESSION_SIZE, dtype=np.uint8),
        gap=np.zeros(cap * slot_size, dtype=np.uint8),
        gap_seq=np.full(cap, -1, dtype=np.int64),
        gap_len=np.zeros(cap, dtype=np.int64),
        request=np.zeros(REQUEST_SIZE, dtype=np.uint8),
        request_queue=np.zeros(request_queue * REQUEST_SIZE, dtype=np.uint8),
        holes=np.zeros(holes * 3, dtype=np.int64),
    )


def make_delivery(sess: MoldSession, max_packet_bytes: int = MAX_DATAGRAM):
    """(d_off, d_len, d_seq) arrays big enough for any one call: a full packet of empty messages plus
    every parked message."""
    size = int(sess.config[P_CAPACITY]) + max_packet_bytes // BLOCK_LEN_SIZE + 1
    return (np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64))


def counters_dict(sess: MoldSession) -> dict[str, int]:
    """The counters by name (a racy but safe read from another thread)."""
    return {name: int(sess.counters[i]) for i, name in enumerate(COUNTER_NAMES)}


# ---- hot path ---------------------------------------------------------------------------------------
# The kernels are compiled without numba's reference counting (_nrt=False): they never allocate, and
# NRT's incref/decref of every array argument on each call cost about 20 ns apiece here, 350 of the
# 375 ns that a one-message packet took (measured: 24 ns without). Deliveries are plain offsets for the
# same reason: handing back "the packet or the gap buffer" as an array costs a refcount pair per message.
_HOT = dict(nogil=True, cache=True, _nrt=False)


@njit(**_HOT)
def mold_take_request(sess):
    """REQUEST_SIZE when a re-request is due: it is now in sess.request for the caller to send; else 0.
    Several may be queued: call it until it returns 0, or once per packet."""
    st = sess.state
    h = st[S_RQ_HEAD]
    if h >= st[S_RQ_TAIL]:
        return 0
    base = (h & (sess.config[P_REQ_QUEUE] - 1)) * REQUEST_SIZE
    for i in range(REQUEST_SIZE):
        sess.request[i] = sess.request_queue[base + i]
    st[S_RQ_HEAD] = h + 1
    return REQUEST_SIZE


@njit(nogil=True, cache=True, inline="always")
def mold_complete(sess):
    """True once the end of session was announced and every message up to it was delivered or declared lost."""
    st = sess.state
    return (st[S_FLAGS] & F_END_OF_SESSION) != 0 and st[S_EXPECTED] >= st[S_END_SEQ]


@njit(nogil=True, cache=True, inline="always")
def mold_clear_loss(sess):
    """Acknowledge F_LOSS / F_OVERFLOW (the counters keep the history)."""
    sess.state[S_FLAGS] &= ~(F_LOSS | F_OVERFLOW)


@njit(nogil=True, cache=True, inline="always")
def _drain(sess, d_off, d_len, d_seq, k):
    """Deliver parked messages that are now next in sequence."""
    st = sess.state
    mask = sess.config[P_MASK]
    slot_size = sess.config[P_SLOT_SIZE]
    expected = st[S_EXPECTED]
    while st[S_PARKED] > 0:
        slot = expected & mask
        if sess.gap_seq[slot] != expected:
            break
        sess.gap_seq[slot] = -1
        st[S_PARKED] -= 1
        d_off[k] = ~(slot * slot_size)
        d_len[k] = sess.gap_len[slot]
        d_seq[k] = expected
        k += 1
        expected += 1
    st[S_EXPECTED] = expected
    return k


@njit(**_HOT)
def _skip_to(sess, target, d_off, d_len, d_seq, k):
    """Declare every missing message below `target` lost; deliver the parked ones (or halt)."""
    st = sess.state
    cfg = sess.config
    ctr = sess.counters
    mask = cfg[P_MASK]
    slot_size = cfg[P_SLOT_SIZE]
    halt = cfg[P_ON_LOSS] == ON_LOSS_HALT
    expected = st[S_EXPECTED]
    limit = min(target, expected + cfg[P_CAPACITY])  # parked sequences all lie below expected + capacity
    lost = 0
    for s in range(expected, limit):
        slot = s & mask
        if sess.gap_seq[slot] == s and not halt:
            sess.gap_seq[slot] = -1
            st[S_PARKED] -= 1
            d_off[k] = ~(slot * slot_size)
            d_len[k] = sess.gap_len[slot]
            d_seq[k] = s
            k += 1
        else:
            lost += 1
    lost += target - limit
    ctr[C_UNRECOVERABLE] += lost
    ctr[C_LOSS_EVENTS] += 1
    st[S_FLAGS] |= F_LOSS
    st[S_EXPECTED] = target
    if target > st[S_HIGH]:
        st[S_HIGH] = target
    st[S_REQ_OUT] = 0
    st[S_REQ_TRIES] = 0
    if halt:
        st[S_RQ_HEAD] = st[S_RQ_TAIL]
        st[S_FLAGS] |= F_HALTED
        return k
    return _drain(sess, d_off, d_len, d_seq, k)


@njit(nogil=True, cache=True, inline="always")
def _run_end(sess, expected, limit):
    """One past the missing run that starts at `expected`: the first parked sequence, or `limit`."""
    mask = sess.config[P_MASK]
    e = expected + 1
    while e < limit and sess.gap_seq[e & mask] != e:
        e += 1
    return e


@njit(**_HOT)
def _queue_request(sess, seq, count):
    """Put a request packet in the queue for the caller; False when the caller is not taking them."""
    st = sess.state
    t = st[S_RQ_TAIL]
    qsize = sess.config[P_REQ_QUEUE]
    if t - st[S_RQ_HEAD] >= qsize:
        sess.counters[C_QUEUE_FULL] += 1
        return False
    put_request_nb(sess.request_queue, (t & (qsize - 1)) * REQUEST_SIZE, sess.session, seq, count)
    st[S_RQ_TAIL] = t + 1
    sess.counters[C_REQUESTS] += 1
    return True


@njit(**_HOT)
def _request_hole(sess, lo, hi, now_ns):
    """A hole was just seen: ask for it at once, whatever older hole is still being recovered, so that
    recovering many holes costs one round trip, not one each. Remembered so it is not asked twice."""
    st = sess.state
    cfg = sess.config
    if cfg[P_RECOVERY] == 0 or (st[S_FLAGS] & F_HALTED) != 0:
        return
    hi = min(hi, lo + cfg[P_MAX_REQUEST])
    if not _queue_request(sess, lo, hi - lo):
        return
    t = st[S_HOLE_TAIL]
    if t - st[S_HOLE_HEAD] >= cfg[P_HOLES]:
        st[S_HOLE_HEAD] = t - cfg[P_HOLES] + 1  # forget the oldest: at worst it is asked again
    base = (t & (cfg[P_HOLES] - 1)) * 3
    sess.holes[base] = lo
    sess.holes[base + 1] = hi
    sess.holes[base + 2] = now_ns
    st[S_HOLE_TAIL] = t + 1


@njit(**_HOT)
def _issue(sess, now_ns, resend):
    """Make the missing run at the expected sequence the tracked request: ask for it, unless (and not
    `resend`) it was asked for on sight less than a timeout ago, in which case wait for that answer."""
    st = sess.state
    cfg = sess.config
    expected = st[S_EXPECTED]
    end = _run_end(sess, expected, min(st[S_HIGH], expected + cfg[P_MAX_REQUEST]))
    deadline = now_ns + cfg[P_TIMEOUT_NS]
    ask = True
    hmask = cfg[P_HOLES] - 1
    h = st[S_HOLE_HEAD]
    while h < st[S_HOLE_TAIL] and sess.holes[(h & hmask) * 3 + 1] <= expected:
        h += 1
    st[S_HOLE_HEAD] = h
    if not resend and h < st[S_HOLE_TAIL]:
        base = (h & hmask) * 3
        if sess.holes[base] <= expected and now_ns < sess.holes[base + 2] + cfg[P_TIMEOUT_NS]:
            ask = False
            end = min(end, sess.holes[base + 1])
            deadline = sess.holes[base + 2] + cfg[P_TIMEOUT_NS]
    if ask:
        _queue_request(sess, expected, end - expected)
    st[S_REQ_OUT] = 1
    st[S_REQ_SEQ] = expected
    st[S_REQ_END] = end
    st[S_REQ_FROM] = expected
    st[S_REQ_DEADLINE] = deadline
    st[S_REQ_TRIES] += 1


@njit(**_HOT)
def _maintain(sess, now_ns, d_off, d_len, d_seq, k, idle):
    """After any change or on a poll: request the first missing run; when `idle` (the caller found its
    socket empty), also re-send a timed-out request and give up after the retries."""
    st = sess.state
    ctr = sess.counters
    if st[S_FLAGS] & F_HALTED:
        return k
    expected = st[S_EXPECTED]
    if expected >= st[S_HIGH]:
        st[S_REQ_OUT] = 0
        st[S_REQ_TRIES] = 0
        st[S_RQ_HEAD] = st[S_RQ_TAIL]  # the gap closed (reordering): requests not yet sent are moot
        return k
    if sess.config[P_RECOVERY] == 0:
        while (st[S_FLAGS] & F_HALTED) == 0 and st[S_EXPECTED] < st[S_HIGH]:
            k = _skip_to(sess, _run_end(sess, st[S_EXPECTED], st[S_HIGH]), d_off, d_len, d_seq, k)
        return k
    if st[S_REQ_OUT] == 0:
        _issue(sess, now_ns, False)
    elif expected >= st[S_REQ_END]:  # answered in full: go after the next missing run
        st[S_REQ_TRIES] = 0
        _issue(sess, now_ns, False)
    elif idle and now_ns >= st[S_REQ_DEADLINE]:
        ctr[C_TIMEOUTS] += 1
        if expected > st[S_REQ_FROM]:  # partly answered (a capped reply): ask for the rest, no retry spent
            st[S_REQ_TRIES] = 0
        if st[S_REQ_TRIES] > sess.config[P_MAX_RETRIES]:
            target = _run_end(sess, expected, min(st[S_REQ_END], st[S_HIGH]))
            k = _skip_to(sess, target, d_off, d_len, d_seq, k)
            if (st[S_FLAGS] & F_HALTED) == 0 and st[S_EXPECTED] < st[S_HIGH]:
                _issue(sess, now_ns, False)
        else:
            if st[S_REQ_TRIES] > 0:
                ctr[C_RETRIES] += 1
            _issue(sess, now_ns, True)
    return k


@njit(**_HOT)
def _start(sess, pkt, seq):
    st = sess.state
    if sess.config[P_SESSION_FIXED] == 0:
        for i in range(SESSION_SIZE):
            sess.session[i] = pkt[OFF_SESSION + i]
    start = sess.config[P_START_SEQ]
    if start <= 0:
        start = seq
    st[S_EXPECTED] = start
    st[S_HIGH] = start
    st[S_STARTED] = 1


@njit(**_HOT)
def _slow_path(sess, pkt, seq, count, now_ns, d_off, d_len, d_seq):
    """A validated data packet that is not simply the next one: duplicates, overlap, gaps, fills."""
    st = sess.state
    cfg = sess.config
    ctr = sess.counters
    cap = cfg[P_CAPACITY]
    mask = cfg[P_MASK]
    slot_size = cfg[P_SLOT_SIZE]
    expected = st[S_EXPECTED]
    if seq + count <= expected:
        ctr[C_DUP_PACKETS] += 1
        ctr[C_DUP_MESSAGES] += count
        return 0
    old_high = st[S_HIGH]
    if seq > old_high:
        ctr[C_GAPS] += 1
        ctr[C_GAP_MESSAGES] += seq - old_high
        _request_hole(sess, old_high, seq, now_ns)
    if seq + count > old_high:
        st[S_HIGH] = seq + count
    k = 0
    off = HEADER_SIZE
    for i in range(count):
        length = block_length_nb(pkt, off)
        moff = off + BLOCK_LEN_SIZE
        off = moff + length
        s = seq + i
        expected = st[S_EXPECTED]
        if s < expected:
            ctr[C_DUP_MESSAGES] += 1
            continue
        if s > expected:
            if s - expected < cap:
                slot = s & mask
                if sess.gap_seq[slot] == s:
                    ctr[C_DUP_MESSAGES] += 1
                elif length > slot_size:
                    ctr[C_OVERSIZE] += 1
                else:
                    copy_bytes(sess.gap, slot * slot_size, pkt, moff, length)
                    sess.gap_seq[slot] = s
                    sess.gap_len[slot] = length
                    st[S_PARKED] += 1
                    ctr[C_PARKED] += 1
                    if s < old_high:
                        ctr[C_RECOVERED] += 1
                continue
            # The gap is wider than the buffer: everything missing below s is lost. Skipping all the way
            # to s (not just far enough to park it) means nothing is parked after a delivery in this
            # call, so no slot handed out above can be overwritten before the caller reads it.
            ctr[C_OVERFLOWS] += 1
            st[S_FLAGS] |= F_OVERFLOW
            k = _skip_to(sess, s, d_off, d_len, d_seq, k)
            if st[S_FLAGS] & F_HALTED:
                break
        d_off[k] = moff
        d_len[k] = length
        d_seq[k] = s
        k += 1
        if s < old_high:
            ctr[C_RECOVERED] += 1
        st[S_EXPECTED] = s + 1
        if st[S_PARKED] > 0:
            k = _drain(sess, d_off, d_len, d_seq, k)
    k = _maintain(sess, now_ns, d_off, d_len, d_seq, k, False)
    ctr[C_MESSAGES] += k
    return k


@njit(**_HOT)
def mold_on_packet(sess, pkt, n, now_ns, d_off, d_len, d_seq):
    """Take one datagram of `n` bytes in `pkt`; returns how many messages to deliver now, in sequence order,
    as (d_off[i], d_len[i], d_seq[i]): d_off >= 0 is an offset into `pkt`, d_off < 0 is ~offset into
    sess.gap. Malformed packets are counted and skipped."""
    st = sess.state
    ctr = sess.counters
    ctr[C_PACKETS] += 1
    ctr[C_BYTES] += n
    if n < HEADER_SIZE:
        ctr[C_BAD_TRUNCATED] += 1
        return 0
    if st[S_FLAGS] & F_HALTED:
        ctr[C_HALTED] += 1
        return 0
    started = st[S_STARTED] != 0
    if (started or sess.config[P_SESSION_FIXED] != 0) and not session_matches_nb(pkt, OFF_SESSION, sess.session):
        ctr[C_BAD_SESSION] += 1
        return 0
    seq = header_sequence_nb(pkt, 0)
    count = header_count_nb(pkt, 0)

    if count == COUNT_HEARTBEAT or count == COUNT_END_OF_SESSION:
        if not started:
            _start(sess, pkt, seq)
        if count == COUNT_HEARTBEAT:
            ctr[C_HEARTBEATS] += 1
        else:
            ctr[C_END_PACKETS] += 1
            st[S_FLAGS] |= F_END_OF_SESSION
            st[S_END_SEQ] = seq
        st[S_LAST_NS] = now_ns
        if seq > st[S_HIGH]:  # the publisher is further on than anything seen: a trailing gap
            ctr[C_GAPS] += 1
            ctr[C_GAP_MESSAGES] += seq - st[S_HIGH]
            _request_hole(sess, st[S_HIGH], seq, now_ns)
            st[S_HIGH] = seq
        if st[S_HIGH] <= st[S_EXPECTED]:
            return 0
        k = _maintain(sess, now_ns, d_off, d_len, d_seq, 0, False)
        ctr[C_MESSAGES] += k
        return k

    expected = st[S_EXPECTED]
    if started and seq == expected and st[S_HIGH] == expected:
        # The common case: the next packet, no gap open. Deliver straight from the packet, validating
        # as we go; nothing is committed unless every block fits.
        off = HEADER_SIZE
        for i in range(count):
            if off + BLOCK_LEN_SIZE > n:
                ctr[C_BAD_OVERRUN] += 1
                return 0
            length = block_length_nb(pkt, off)
            off += BLOCK_LEN_SIZE
            if off + length > n:
                ctr[C_BAD_OVERRUN] += 1
                return 0
            d_off[i] = off
            d_len[i] = length
            d_seq[i] = seq + i
            off += length
        st[S_EXPECTED] = seq + count
        st[S_HIGH] = seq + count
        st[S_LAST_NS] = now_ns
        ctr[C_MESSAGES] += count
        return count

    off = HEADER_SIZE
    for i in range(count):
        if off + BLOCK_LEN_SIZE > n:
            ctr[C_BAD_OVERRUN] += 1
            return 0
        off += BLOCK_LEN_SIZE + block_length_nb(pkt, off)
        if off > n:
            ctr[C_BAD_OVERRUN] += 1
            return 0
    if not started:
        _start(sess, pkt, seq)
    st[S_LAST_NS] = now_ns
    return _slow_path(sess, pkt, seq, count, now_ns, d_off, d_len, d_seq)


@njit(**_HOT)
def mold_poll(sess, now_ns, d_off, d_len, d_seq):
    """Call when the socket had nothing to read: re-sends a timed-out request, or declares its run lost after
    the retries; returns messages to deliver (parked ones released by a loss), like mold_on_packet.

    Timeouts are judged only here, with the socket drained: after the receiver itself stalled, the answer
    may be waiting in the socket behind a backlog, and that must not use up the retries. Costs two
    compares when no gap is open."""
    st = sess.state
    if st[S_EXPECTED] >= st[S_HIGH] or st[S_STARTED] == 0:
        return 0
    if st[S_REQ_OUT] != 0 and now_ns < st[S_REQ_DEADLINE]:
        return 0
    k = _maintain(sess, now_ns, d_off, d_len, d_seq, 0, True)
    sess.counters[C_MESSAGES] += k
    return k


def delivered_messages(sess: MoldSession, pkt: np.ndarray, k: int, d_off, d_len, d_seq) -> list[tuple[int, bytes]]:
    """Cold path (tests, tools): the k delivered messages as (seq, bytes); d_off < 0 means sess.gap at ~d_off."""
    out = []
    for i in range(k):
        off = int(d_off[i])
        buf, start = (pkt, off) if off >= 0 else (sess.gap, ~off)
        out.append((int(d_seq[i]), bytes(buf[start:start + int(d_len[i])])))
    return out
