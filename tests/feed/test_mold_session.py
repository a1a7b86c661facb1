"""MoldUDP64 receiver state machine, driven by hand-built packets: order, duplicates, gaps, recovery, loss."""

import numpy as np
import pytest

from appliance.feed import itch_descriptor as itch
from appliance.feed import mold_session as ms
from appliance.feed import moldudp64_descriptor as mold

SESSION = "TESTSESS01"
MS = 1_000_000


def message(i: int) -> bytes:
    """A distinct 36-byte ITCH Add Order per sequence number."""
    return itch.encode("A", locate=1, tracking=i & 0xFFFF, timestamp=i, ref=i, side="B", shares=100,
                       stock="AAPL", price=1_000_000 + i)


def data(seq: int, count: int, session: str = SESSION) -> bytes:
    return mold.encode_packet(session, seq, [message(s) for s in range(seq, seq + count)])


class Receiver:
    """A session with its delivery arrays; returns what each call delivers as (seq, bytes)."""

    def __init__(self, **kw):
        kw.setdefault("request_timeout_ns", 10 * MS)
        self.sess = ms.make_session(**kw)
        self.d = ms.make_delivery(self.sess)
        self.now = 0

    def feed(self, raw: bytes, now: int | None = None):
        self.now = self.now if now is None else now
        pkt = np.frombuffer(raw, dtype=np.uint8).copy()
        k = ms.mold_on_packet(self.sess, pkt, len(raw), self.now, *self.d)
        return ms.delivered_messages(self.sess, pkt, k, *self.d)

    def poll(self, now: int):
        self.now = now
        k = ms.mold_poll(self.sess, now, *self.d)
        return ms.delivered_messages(self.sess, np.zeros(1, np.uint8), k, *self.d)

    def request(self):
        """The queued re-request as (seq, count), or None."""
        if not ms.mold_take_request(self.sess):
            return None
        session, seq, count = mold.decode_request(self.sess.request)
        assert session == mold.session_bytes(SESSION)
        return seq, count

    @property
    def c(self):
        return ms.counters_dict(self.sess)

    @property
    def flags(self):
        return int(self.sess.state[ms.S_FLAGS])

    @property
    def expected(self):
        return int(self.sess.state[ms.S_EXPECTED])


def seqs(delivered):
    for seq, raw in delivered:
        assert raw == message(seq), f"message {seq} delivered with the wrong bytes"
    return [seq for seq, _ in delivered]


def test_in_order_packets_are_delivered_from_the_packet_itself():
    r = Receiver()
    assert seqs(r.feed(data(1, 3))) == [1, 2, 3]
    assert seqs(r.feed(data(4, 40))) == list(range(4, 44))
    assert r.request() is None
    assert r.expected == 44
    assert (r.d[0][:40] >= 0).all(), "in-order messages must point into the packet, not be copied"
    c = r.c
    assert (c["packets"], c["messages"], c["gaps"], c["requests"], c["parked"]) == (2, 43, 0, 0, 0)
    assert c["bytes"] == len(data(1, 3)) + len(data(4, 40))


def test_duplicate_and_late_packets_are_counted_and_ignored():
    r = Receiver()
    r.feed(data(1, 5))
    assert r.feed(data(1, 5)) == []
    assert r.feed(data(2, 2)) == []
    c = r.c
    assert (c["dup_packets"], c["dup_messages"], c["messages"]) == (2, 7, 5)


def test_partial_overlap_delivers_only_the_new_messages():
    r = Receiver()
    r.feed(data(1, 5))
    assert seqs(r.feed(data(3, 6))) == [6, 7, 8]
    assert r.c["dup_messages"] == 3 and r.c["dup_packets"] == 0


def test_gap_requests_the_missing_run_and_the_retransmission_releases_parked_messages_in_order():
    r = Receiver()
    assert seqs(r.feed(data(1, 3))) == [1, 2, 3]
    assert r.feed(data(7, 3)) == []
    assert r.request() == (4, 3)
    assert bytes(r.sess.request) == mold.encode_request(SESSION, 4, 3)
    assert r.request() is None, "a request is handed out once"
    c = r.c
    assert (c["gaps"], c["gap_messages"], c["parked"], c["requests"]) == (1, 3, 3, 1)
    got = r.feed(data(4, 3))
    assert seqs(got) == [4, 5, 6, 7, 8, 9]
    assert (r.d[0][:3] >= 0).all() and (r.d[0][3:6] < 0).all(), "4-6 from the packet, 7-9 from the gap buffer"
    assert r.request() is None
    assert r.c["recovered"] == 3 and r.c["unrecoverable"] == 0
    assert seqs(r.feed(data(10, 2))) == [10, 11]  # back on the fast path
    assert int(r.sess.state[ms.S_PARKED]) == 0


def test_reordered_packets_fill_the_gap_without_waiting_for_the_request():
    r = Receiver()
    r.feed(data(1, 2))
    assert r.feed(data(5, 2)) == []
    assert r.feed(data(3, 2)) and r.expected == 7
    assert r.c["recovered"] == 2


def test_every_hole_is_requested_when_seen_and_not_asked_twice():
    r = Receiver()
    r.feed(data(1, 1))
    r.feed(data(3, 1))
    r.feed(data(6, 1))
    assert r.request() == (2, 1)
    assert r.request() == (4, 2), "the second hole is asked for at once, not after the first is filled"
    assert r.request() is None
    assert seqs(r.feed(data(2, 1))) == [2, 3]
    assert r.request() is None, "the run now at the front was already asked for"
    assert seqs(r.feed(data(4, 2))) == [4, 5, 6]
    assert r.request() is None and r.c["requests"] == 2


def test_hole_asked_on_sight_is_asked_again_after_the_timeout():
    r = Receiver(request_timeout_ns=10 * MS)
    r.feed(data(1, 1), now=0)
    r.feed(data(3, 1), now=0)
    r.feed(data(6, 1), now=0)
    assert (r.request(), r.request()) == ((2, 1), (4, 2))
    r.feed(data(2, 1), now=5 * MS)
    assert r.request() is None
    assert r.poll(9 * MS) == [] and r.request() is None
    assert r.poll(10 * MS) == [] and r.request() == (4, 2), "its on-sight request timed out"
    assert r.c["retries"] == 1
    r2 = Receiver(request_timeout_ns=10 * MS)
    r2.feed(data(1, 1), now=0)
    r2.feed(data(3, 1), now=0)
    r2.feed(data(6, 1), now=0)
    r2.request(), r2.request()
    r2.feed(data(2, 1), now=12 * MS)
    assert r2.request() == (4, 2), "reaching a hole asked for too long ago asks again at once"


def test_requests_the_caller_does_not_take_are_bounded():
    r = Receiver(request_queue=2)
    r.feed(data(1, 1))
    for s in (3, 5, 7, 9):
        r.feed(data(s, 1))
    assert r.c["queue_full"] == 2 and r.c["requests"] == 2
    assert (r.request(), r.request(), r.request()) == ((2, 1), (4, 1), None)


def test_requests_not_yet_sent_are_dropped_when_reordering_closes_the_gap():
    r = Receiver()
    r.feed(data(1, 1))
    r.feed(data(3, 1))
    r.feed(data(2, 1))
    assert r.request() is None and r.c["requests"] == 1


def test_request_size_is_bounded():
    r = Receiver(max_request=10)
    r.feed(data(1, 1))
    r.feed(data(101, 1))
    assert r.request() == (2, 10)


def test_duplicate_of_a_parked_message_is_counted():
    r = Receiver()
    r.feed(data(1, 1))
    r.feed(data(3, 2))
    r.feed(data(3, 2))
    assert r.c["dup_messages"] == 2 and r.c["parked"] == 2


def test_retry_after_timeout_then_unrecoverable_delivers_what_is_parked():
    r = Receiver(request_timeout_ns=10 * MS, max_retries=2)
    r.feed(data(1, 3), now=0)
    r.feed(data(7, 3), now=1 * MS)
    assert r.request() == (4, 3)
    assert r.poll(5 * MS) == [] and r.request() is None, "no re-send before the timeout"
    assert r.poll(11 * MS) == [] and r.request() == (4, 3)
    assert r.poll(22 * MS) == [] and r.request() == (4, 3)
    assert r.c["retries"] == 2 and r.flags & ms.F_LOSS == 0
    got = r.poll(33 * MS)
    assert seqs(got) == [7, 8, 9]
    assert r.flags & ms.F_LOSS and not r.flags & ms.F_HALTED
    c = r.c
    assert (c["unrecoverable"], c["loss_events"], c["timeouts"], c["requests"]) == (3, 1, 3, 3)
    assert r.request() is None and r.expected == 10
    assert seqs(r.feed(data(10, 1))) == [10]
    ms.mold_clear_loss(r.sess)
    assert r.flags & ms.F_LOSS == 0


def test_late_retransmission_after_loss_is_a_duplicate():
    r = Receiver(max_retries=0)
    r.feed(data(1, 1), now=0)
    r.feed(data(3, 1), now=0)
    r.request()
    assert seqs(r.poll(10 * MS)) == [3]
    assert r.feed(data(2, 1)) == [] and r.c["dup_packets"] == 1


def test_partial_reply_asks_for_the_rest_without_spending_a_retry():
    r = Receiver(max_retries=0)
    r.feed(data(1, 1), now=0)
    r.feed(data(12, 1), now=0)
    assert r.request() == (2, 10)
    assert seqs(r.feed(data(2, 4), now=1 * MS)) == [2, 3, 4, 5]  # a server capped at 4 per reply
    assert r.poll(10 * MS) == [] and r.request() == (6, 6)
    assert r.c["retries"] == 0 and r.c["unrecoverable"] == 0


def test_halt_on_loss_stops_delivery():
    r = Receiver(max_retries=0, on_loss="halt")
    r.feed(data(1, 1), now=0)
    r.feed(data(3, 1), now=0)
    assert r.poll(10 * MS) == []
    assert r.flags & ms.F_HALTED and r.flags & ms.F_LOSS
    assert r.feed(data(4, 1)) == [] and r.c["halted"] == 1
    assert r.request() is None


def test_gap_wider_than_the_buffer_is_unrecoverable_at_once():
    r = Receiver(gap_buffer_messages=8, max_request=4)
    r.feed(data(1, 1))
    r.feed(data(3, 2))
    r.request()
    got = r.feed(data(12, 2))  # 12 - 2 >= 8: cannot be parked
    assert seqs(got) == [3, 4, 12, 13]
    c = r.c
    assert c["overflows"] == 1 and c["unrecoverable"] == 1 + 7  # 2, and 5..11
    assert r.flags & ms.F_OVERFLOW and r.flags & ms.F_LOSS
    assert r.request() is None and r.expected == 14


def test_message_too_long_for_a_slot_is_requested_again():
    r = Receiver(slot_size=16)
    r.feed(data(1, 1))
    r.feed(data(3, 1))
    assert r.c["oversize"] == 1 and r.c["parked"] == 0
    assert r.request() == (2, 1)
    assert seqs(r.feed(data(2, 1))) == [2]
    assert r.request() == (3, 1), "the message that could not be parked is asked for again"
    assert seqs(r.feed(data(3, 1))) == [3]


def test_request_may_exceed_the_gap_buffer():
    r = Receiver(gap_buffer_messages=8, max_request=20)
    r.feed(data(1, 1))
    r.feed(data(4, 1))
    assert r.request() == (2, 2)
    r.feed(data(2, 2))
    r.feed(mold.encode_heartbeat(SESSION, 40))
    assert r.request() == (5, 20), "the retransmission arrives in order, so it need not fit the gap buffer"
    assert seqs(r.feed(data(5, 20))) == list(range(5, 25))
    assert r.request() == (25, 15)


def test_without_recovery_every_gap_is_lost_at_once():
    r = Receiver(recovery=False)
    r.feed(data(1, 1))
    assert seqs(r.feed(data(3, 1))) == [3]
    assert seqs(r.feed(data(6, 1))) == [6]
    r.feed(mold.encode_heartbeat(SESSION, 9))
    assert r.expected == 9 and r.request() is None
    c = r.c
    assert (c["unrecoverable"], c["loss_events"], c["requests"]) == (1 + 2 + 2, 3, 0)


def test_heartbeat_beyond_expected_reveals_a_trailing_gap():
    r = Receiver()
    r.feed(data(1, 3))
    assert r.feed(mold.encode_heartbeat(SESSION, 4)) == [] and r.request() is None
    assert r.feed(mold.encode_heartbeat(SESSION, 6)) == []
    assert r.request() == (4, 2)
    assert (r.c["heartbeats"], r.c["gaps"], r.c["gap_messages"]) == (2, 1, 2)
    assert seqs(r.feed(data(4, 2))) == [4, 5]


def test_end_of_session_completes_only_when_everything_is_in():
    r = Receiver()
    r.feed(data(1, 3))
    r.feed(mold.encode_end_of_session(SESSION, 6))
    assert r.flags & ms.F_END_OF_SESSION and not ms.mold_complete(r.sess)
    assert r.request() == (4, 2)
    r.feed(data(4, 2))
    assert ms.mold_complete(r.sess) and r.c["end_packets"] == 1


def test_start_sequence_one_requests_what_came_before_the_first_packet():
    r = Receiver()
    assert r.feed(data(5, 2)) == []
    assert r.request() == (1, 4)


def test_late_join_takes_the_first_packet_sequence():
    r = Receiver(start_seq=0)
    assert seqs(r.feed(data(100, 2))) == [100, 101]
    assert r.request() is None and r.c["gaps"] == 0


@pytest.mark.parametrize("raw, counter", [
    (data(1, 2)[:mold.HEADER_SIZE - 1], "bad_truncated"),
    (b"", "bad_truncated"),
    (data(1, 2)[:mold.HEADER_SIZE + 1], "bad_overrun"),  # the length field is cut
    (data(1, 2)[:-1], "bad_overrun"),  # the last message is cut
    (data(1, 2, session="OTHERSESS1"), "bad_session"),
])
def test_malformed_packets_are_counted_and_change_nothing(raw, counter):
    r = Receiver()
    r.feed(data(1, 1))
    state = r.sess.state.copy()
    assert r.feed(raw) == []
    assert r.c[counter] == 1
    assert (r.sess.state == state).all()
    assert seqs(r.feed(data(2, 1))) == [2]


def test_malformed_packet_in_a_gap_changes_nothing():
    r = Receiver()
    r.feed(data(1, 1))
    assert r.feed(data(5, 2)[:-3]) == [] and r.c["bad_overrun"] == 1
    assert r.request() is None and r.c["gaps"] == 0


def test_malformed_first_packet_does_not_start_the_session():
    r = Receiver(start_seq=0)
    r.feed(data(50, 2)[:-1])
    assert int(r.sess.state[ms.S_STARTED]) == 0
    assert seqs(r.feed(data(7, 1))) == [7]


def test_configured_session_rejects_other_sessions_from_the_first_packet():
    r = Receiver(session=SESSION)
    assert r.feed(data(1, 1, session="OTHERSESS1")) == [] and r.c["bad_session"] == 1
    assert seqs(r.feed(data(1, 1))) == [1]


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="power of two"):
        ms.make_session(gap_buffer_messages=1000)
    with pytest.raises(ValueError, match="max_request"):
        ms.make_session(max_request=70000)
    with pytest.raises(ValueError, match="request_queue"):
        ms.make_session(request_queue=3)
    with pytest.raises(ValueError, match="on_loss"):
        ms.make_session(on_loss="panic")
    with pytest.raises(ValueError, match="longer than 10"):
        ms.make_session(session="ELEVENCHARS")


def test_timeouts_are_judged_only_when_the_socket_is_drained():
    """After the receiver itself stalled, the answer may sit behind a backlog: packets alone spend no retry."""
    r = Receiver(max_retries=0)
    r.feed(data(1, 1), now=0)
    r.feed(data(3, 1), now=0)
    assert r.request() == (2, 1)
    assert r.feed(data(4, 1), now=50 * MS) == [] and r.c["timeouts"] == 0 and r.c["unrecoverable"] == 0
    assert seqs(r.feed(data(2, 1), now=51 * MS)) == [2, 3, 4]
    assert r.c["unrecoverable"] == 0
