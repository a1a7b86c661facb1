"""MoldUDP64 publisher and retransmission server over real UDP on loopback, and the receiver end to end."""

import socket
import threading
import time

import numpy as np
import pytest
from numba import njit

from appliance.feed import itch_descriptor as itch
from appliance.feed import mold_session as ms
from appliance.feed import moldudp64_descriptor as mold
from appliance.runtime import net
from appliance.venue.publisher import Faults, MoldPublisher, index_dayfile
from tests.support import wait_for

SESSION = "VENUETEST1"


def dayfile(n: int) -> np.ndarray:
    """n ITCH messages in day-file form, repeating Add, Add, Add, Delete (36, 36, 36 and 19 bytes), each with
    its sequence number in the order reference so every message is distinct."""
    assert n % 4 == 0
    rows = n // 4
    seq = np.arange(1, n + 1, dtype=">u8").reshape(rows, 4)

    def block(template: bytes, refs) -> np.ndarray:
        b = np.tile(np.frombuffer(len(template).to_bytes(2, "big") + template, np.uint8), (rows, 1))
        b[:, 2 + itch.ADD_REF:2 + itch.ADD_REF + 8] = refs.reshape(rows, 1).view(np.uint8).reshape(rows, 8)
        return b

    add = itch.encode("A", locate=7, timestamp=34_200_000_000_000, side="B", shares=100, stock="AAPL",
                      price=1_500_000)
    delete = itch.encode("D", locate=7, timestamp=34_200_000_000_000)
    parts = [block(add, seq[:, 0].copy()), block(add, seq[:, 1].copy()), block(add, seq[:, 2].copy()),
             block(delete, seq[:, 3].copy())]
    return np.ascontiguousarray(np.concatenate(parts, axis=1)).reshape(-1)


@njit(nogil=True, inline="always")
def append(out, pos, src, off, length):
    """Write one message back in day-file form (length prefix, bytes)."""
    out[pos] = length >> 8
    out[pos + 1] = length & 0xFF
    net.copy_bytes(out, pos + 2, src, off, length)
    return pos + 2 + length


# Not cached: numba keys a cached kernel on its own file only, so a cached receive loop would keep running
# the mold_session it was first compiled against after that module changed.
@njit(nogil=True)
def receive(fd, sess, pkt, d_off, d_len, d_seq, retrans_addr, out, ts, deadline_ns):
    """A feed-loop stand-in: recv, mold_on_packet or mold_poll, copy every delivery back into day-file form,
    send the re-requests. Returns (bytes written, 1 complete / 0 deadline / -1 out of room)."""
    pos = 0
    while True:
        now = net.monotonic_ns(ts)
        if now > deadline_ns:
            return pos, 0
        n = net.sock_recv(fd, pkt, 0, pkt.shape[0])
        if n > 0:
            k = ms.mold_on_packet(sess, pkt, n, now, d_off, d_len, d_seq)
        else:
            k = ms.mold_poll(sess, now, d_off, d_len, d_seq)
        for i in range(k):
            off = d_off[i]
            if pos + 2 + d_len[i] > out.shape[0]:
                return pos, -1
            if off >= 0:
                pos = append(out, pos, pkt, off, d_len[i])
            else:
                pos = append(out, pos, sess.gap, ~off, d_len[i])
        while ms.mold_take_request(sess):
            net.sock_sendto(fd, sess.request, 0, mold.REQUEST_SIZE, retrans_addr)
        if ms.mold_complete(sess):
            return pos, 1


@njit(nogil=True)
def receive_mmsg(fd, sess, batch, d_off, d_len, d_seq, retrans_addr, out, ts, deadline_ns):
    """`receive` reading up to a batch of datagrams per system call (recvmmsg)."""
    pos = 0
    while True:
        now = net.monotonic_ns(ts)
        if now > deadline_ns:
            return pos, 0
        m = net.sock_recvmmsg(fd, batch)
        if m <= 0:
            k = ms.mold_poll(sess, now, d_off, d_len, d_seq)
            for i in range(k):
                if pos + 2 + d_len[i] > out.shape[0]:
                    return pos, -1
                pos = append(out, pos, sess.gap, ~d_off[i], d_len[i])
        for j in range(m):
            pkt = batch.bufs[j]
            k = ms.mold_on_packet(sess, pkt, net.mmsg_len(batch, j), now, d_off, d_len, d_seq)
            for i in range(k):
                off = d_off[i]
                if pos + 2 + d_len[i] > out.shape[0]:
                    return pos, -1
                if off >= 0:
                    pos = append(out, pos, pkt, off, d_len[i])
                else:
                    pos = append(out, pos, sess.gap, ~off, d_len[i])
        while ms.mold_take_request(sess):
            net.sock_sendto(fd, sess.request, 0, mold.REQUEST_SIZE, retrans_addr)
        if ms.mold_complete(sess):
            return pos, 1


class Rx:
    """A receive socket and session, running `receive` on its own thread."""

    def __init__(self, size, rcvbuf=32 << 20, mmsg=0, **session_kw):
        self.sock = net.udp_receiver("127.0.0.1", 0, rcvbuf=rcvbuf)
        self.mmsg = net.make_mmsg_batch(mmsg, 2048) if mmsg else None
        self.sess = ms.make_session(**session_kw)
        self.pkt = np.zeros(mold.MAX_DATAGRAM, dtype=np.uint8)
        self.d = ms.make_delivery(self.sess)
        self.out = np.zeros(size, dtype=np.uint8)
        self.result = None
        self.thread = None

    @property
    def address(self):
        return self.sock.getsockname()

    def start(self, retrans, deadline_s):
        kernel = receive if self.mmsg is None else receive_mmsg
        args = (self.sock.fileno(), self.sess, self.pkt if self.mmsg is None else self.mmsg, *self.d,
                net.sockaddr_in(*retrans), self.out, np.zeros(2, np.int64),
                time.monotonic_ns() + int(deadline_s * 1e9))
        kernel(*args[:-1], 0)  # compile or load here, not on the clock (returns at once: deadline passed)
        self.thread = threading.Thread(target=self._run, args=(kernel, *args), daemon=True)
        self.thread.start()

    def _run(self, kernel, *args):
        self.result = kernel(*args)

    def close(self):
        self.sock.close()


@pytest.fixture
def publisher():
    made = []

    def make(day, dest, **kw):
        kw.setdefault("session", SESSION)
        p = MoldPublisher(day, dest, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def recv_packets(sock, until, timeout=5.0):
    """Decoded packets from a blocking Python socket until `until(packet)` is true."""
    sock.settimeout(timeout)
    out = []
    while True:
        p = mold.decode_packet(sock.recv(65536))
        out.append(p)
        if until(p):
            return out


def messages_of(day: np.ndarray) -> list[bytes]:
    offsets, _ = index_dayfile(day)
    return [bytes(day[o + 2:offsets[i + 1]]) for i, o in enumerate(offsets[:-1])]


def test_index_dayfile_walks_length_prefixes_and_refuses_truncation():
    day = dayfile(8)
    offsets, longest = index_dayfile(day)
    assert list(offsets) == [0, 38, 76, 114, 135, 173, 211, 249, 270] and longest == 36
    assert len(index_dayfile(day, 3)[0]) == 4
    with pytest.raises(ValueError, match="truncated"):
        index_dayfile(day[:-1])
    with pytest.raises(ValueError, match="holds 8 messages, 9 asked"):
        index_dayfile(day, 9)


def test_publishes_every_message_in_full_packets_then_ends_the_session(publisher):
    day = dayfile(400)
    rx = net.udp_receiver("127.0.0.1", 0, nonblocking=False)
    p = publisher(day, rx.getsockname(), max_payload=512, heartbeat_s=0.05).start()
    packets = recv_packets(rx, lambda p: p.is_end_of_session)
    data = packets[:-1]
    assert all(pk.session == mold.session_bytes(SESSION) for pk in packets)
    assert [m for pk in data for m in pk.messages] == messages_of(day)
    assert [pk.seq for pk in data] == list(np.cumsum([1] + [pk.count for pk in data[:-1]]))
    assert all(len(mold.encode_packet(SESSION, 1, pk.messages)) <= 512 for pk in data)
    assert all(len(mold.encode_packet(SESSION, 1, pk.messages + [b"x" * 36])) > 512 for pk in data[:-1]), \
        "every packet but the last is full"
    assert packets[-1].seq == 401
    wait_for(lambda: p.done, 5, what="publisher done")
    more = recv_packets(rx, lambda p: True)  # end of session repeats in place of heartbeats
    assert more[0].is_end_of_session and more[0].seq == 401
    c = p.counters()
    assert (c["messages"], c["packets"], c["dropped_packets"]) == (400, len(data), 0)
    rx.close()


def test_heartbeats_while_idle_and_pacing(publisher):
    day = dayfile(8)
    rx = net.udp_receiver("127.0.0.1", 0, nonblocking=False)
    t0 = time.monotonic()
    publisher(day, rx.getsockname(), rate=40, max_delay_us=0, heartbeat_s=0.01).start()
    packets = recv_packets(rx, lambda p: p.is_end_of_session)
    elapsed = time.monotonic() - t0
    data = [pk for pk in packets if pk.count not in (0, 0xFFFF)]
    assert sum(pk.count for pk in data) == 8
    assert elapsed >= 7 / 40 * 0.9, f"8 messages at 40/s took only {elapsed:.3f} s"
    beats = [pk for pk in packets if pk.is_heartbeat]
    assert len(beats) >= 3
    for pk, nxt in zip(packets, packets[1:]):
        if nxt.is_heartbeat:
            assert nxt.seq == (pk.seq + pk.count if pk.count not in (0, 0xFFFF) else pk.seq)


def test_retransmission_server_answers_from_history_and_counts_bad_requests(publisher):
    day = dayfile(400)
    msgs = messages_of(day)
    rx = net.udp_receiver("127.0.0.1", 0, nonblocking=False)
    p = publisher(day, rx.getsockname(), max_reply=100, heartbeat_s=0.05).start()
    wait_for(lambda: p.done, 5, what="publisher done")
    cli = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cli.bind(("127.0.0.1", 0))
    cli.sendto(mold.encode_request(SESSION, 10, 5), p.retrans_address)
    (pk,) = recv_packets(cli, lambda p: True)
    assert (pk.seq, pk.count, pk.messages) == (10, 5, msgs[9:14])
    cli.sendto(mold.encode_request(SESSION, 201, 300), p.retrans_address)  # capped at 100
    got = recv_packets(cli, lambda p: p.seq + p.count >= 301)
    assert [m for pk in got for m in pk.messages] == msgs[200:300]
    cli.sendto(mold.encode_request(SESSION, 390, 50), p.retrans_address)  # runs past the end: trimmed
    got = recv_packets(cli, lambda p: p.seq + p.count >= 401)
    assert [m for pk in got for m in pk.messages] == msgs[389:400]
    for bad in (mold.encode_request("OTHERSESS1", 1, 1), mold.encode_request(SESSION, 401, 1),
                mold.encode_request(SESSION, 0, 1), mold.encode_request(SESSION, 5, 0), b"short"):
        cli.sendto(bad, p.retrans_address)
    cli.sendto(mold.encode_request(SESSION, 1, 1), p.retrans_address)  # still alive after the bad ones
    (pk,) = recv_packets(cli, lambda p: True)
    assert pk.messages == msgs[:1]
    # the loop counts a reply after sending it, so the counters may trail the datagrams a little
    c = wait_for(lambda: (c := p.counters())["retrans_messages"] == 5 + 100 + 11 + 1 and c, 5,
                 what="replies counted")
    assert (c["requests"], c["bad_requests"], c["capped_requests"]) == (9, 5, 1)
    cli.close()
    rx.close()


def test_faults_are_seeded_and_counted(publisher):
    day = dayfile(4000)
    counts = []
    for _ in range(2):
        rx = net.udp_receiver("127.0.0.1", 0, rcvbuf=8 << 20)
        p = publisher(day, rx.getsockname(), heartbeat_s=0.05,
                      faults=Faults(drop=0.1, duplicate=0.1, reorder=0.1, seed=7))
        p.start()
        wait_for(lambda: p.done, 5, what="publisher done")
        p.close()
        counts.append(p.counters())
        rx.close()
    assert counts[0] == counts[1], "the same seed must inject the same faults"
    c = counts[0]
    assert c["dropped_packets"] > 0 and c["duplicated"] > 0 and c["reordered"] > 0
    assert c["messages"] == 4000


def test_multicast_loopback(publisher):
    group = "239.255.77.1"
    try:
        rx = net.udp_receiver(group, 0, interface="127.0.0.1", nonblocking=False)
    except OSError as e:
        pytest.skip(f"cannot join {group} on loopback here: {e}")
    day = dayfile(40)
    publisher(day, (group, rx.getsockname()[1]), interface="127.0.0.1", heartbeat_s=0.05).start()
    try:
        packets = recv_packets(rx, lambda p: p.is_end_of_session, timeout=2.0)
    except socket.timeout:
        pytest.skip("no multicast route over loopback on this host")
    assert [m for pk in packets for m in pk.messages] == messages_of(day)
    rx.close()


@pytest.mark.parametrize("mmsg", [0, 16], ids=["recv", "recvmmsg"])
def test_end_to_end_recovery_over_loopback_is_byte_exact(publisher, mmsg):
    """200k messages with 1% drops, duplicates, reordering and a stall: the receiver rebuilds the day file."""
    n = 200_000
    day = dayfile(n)
    faults = Faults(drop=0.01, duplicate=0.005, reorder=0.01, stall_at=n // 2, stall_s=0.03, seed=11 + mmsg)
    rx = Rx(day.shape[0], mmsg=mmsg, gap_buffer_messages=1 << 18, request_timeout_ns=20_000_000, max_retries=20)
    p = publisher(day, rx.address, rate=2_000_000, heartbeat_s=0.02, faults=faults)
    rx.start(p.retrans_address, deadline_s=60)
    p.start()
    rx.thread.join(90)
    assert not rx.thread.is_alive()
    pos, status = rx.result
    c = ms.counters_dict(rx.sess)
    pc = p.counters()
    assert status == 1, f"receiver did not complete: status {status}, {c}, publisher {pc}"
    assert pos == day.shape[0]
    assert np.array_equal(rx.out, day), "delivered stream differs from the day file"
    assert c["unrecoverable"] == 0 and c["messages"] == n
    assert pc["dropped_packets"] > 0 and pc["duplicated"] > 0 and pc["reordered"] > 0 and pc["stalls"] == 1
    assert c["requests"] > 0 and c["recovered"] >= pc["dropped_messages"]
    assert pc["retrans_messages"] >= pc["dropped_messages"]
    assert c["dup_messages"] > 0
    rx.close()
