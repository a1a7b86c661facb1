"""FIX 4.4 session layer, as scripts of messages in the style of the QuickFIX acceptance tests:
"I" is a message the counterparty sends (written by hand here, framed independently), "E" a message
the session must send next, "EV" an event it must report, "T" time passing. Each script ends with
nothing left unexpected. Then two sessions (venue acceptor, gateway initiator) run against each
other in memory, across restarts on the same store. Every byte a session writes is parsed by
simplefix, whose recomputed BodyLength and CheckSum must equal ours, and validated."""

import os
import time
from collections import deque

import pytest
import simplefix

from appliance.gateway import fix44 as F
from appliance.gateway import fix_hot as H
from appliance.gateway.fix_session import (
    ACCEPTOR, INITIATOR, Deliver, Disconnect, FixSession, Garbled, LoggedOn, LoggedOut, PeerReject, Send,
    SequenceStore, SessionState, outgoing,
)
from appliance.runtime.wire import alpha_to_int

T0 = 1_709_214_301.25  # 2024-02-29 13:45:01.250 UTC


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


def stamp(t: float) -> str:
    """UTCTimestamp with ms, written independently of the codec."""
    ms = int(round(t * 1000)) % 1000
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(int(t))) + ".%03d" % ms


def frame(pairs) -> bytes:
    """A message from (tag, value) pairs after BeginString, framed by simplefix (BodyLength, CheckSum)."""
    m = simplefix.FixMessage()
    begin = "FIX.4.4"
    for t, v in pairs:
        if t == "8":
            begin = v
    m.append_pair(8, begin, header=True)
    for t, v in pairs:
        if t != "8":
            m.append_pair(t, v)
    return m.encode()


def check_wire(data: bytes) -> list:
    """Every message in `data`: simplefix's BodyLength and CheckSum equal ours, and it validates."""
    p = simplefix.FixParser()
    p.append_buffer(data)
    out = []
    rest = data
    while (m := p.get_message()) is not None:
        raw = m.encode()
        assert rest.startswith(raw), (rest[:80], raw[:80])
        rest = rest[len(raw):]
        msg = F.parse(raw)
        F.validate(msg)
        out.append(msg)
    assert rest == b"" and out
    return out


def spec_pairs(spec: str, clock: Clock, sender="CLIENT", target="VENUE"):
    """'35=D|34=2|11=X' -> pairs with the header filled in; <T> is now, <T-600> ten minutes ago."""
    pairs = []
    for item in spec.split("|"):
        t, _, v = item.partition("=")
        if v.startswith("<T") and v.endswith(">"):
            v = stamp(clock.t + float(v[2:-1] or 0))
        pairs.append((t, v))
    tags = {t for t, _ in pairs}
    head = [p for p in (("49", sender), ("56", target), ("52", stamp(clock.t))) if p[0] not in tags]
    mt = [p for p in pairs if p[0] in ("8", "35")]
    return mt + head + [p for p in pairs if p[0] not in ("8", "35")]


class Script:
    """Drives one session against a counterparty whose messages are written by hand."""

    def __init__(self, session: FixSession, clock: Clock, peer=("CLIENT", "VENUE")):
        self.s = session
        self.clock = clock
        self.peer = peer
        self.sent: deque = deque()
        self.events: deque = deque()
        self.log: list = []

    def _take(self, events):
        for i, e in enumerate(events):
            if isinstance(e, Send):
                (msg,) = check_wire(e.data)
                assert (msg.msg_type, msg.seq_num) == (e.msg_type, e.seq)
                self.sent.append(msg)
            else:
                if isinstance(e, Disconnect):
                    assert i == len(events) - 1, "nothing may follow a Disconnect"
                self.events.append(e)

    def run(self, *steps):
        for step in steps:
            op, arg = step[0], step[1] if len(step) > 1 else None
            if op == "connect":
                self._take(self.s.connect())
            elif op == "I":
                self._take(self.s.on_bytes(frame(spec_pairs(arg, self.clock, *self.peer))))
            elif op == "raw":
                self._take(self.s.on_bytes(arg))
            elif op == "T":
                self.clock.t += arg
                self._take(self.s.on_timer())
            elif op == "call":
                self._take(arg(self.s))
            elif op == "E":
                assert self.sent, f"expected {arg!r}, the session sent nothing"
                self.expect(self.sent.popleft(), arg)
            elif op == "EV":
                assert self.events, f"expected event {arg}, got none"
                e = self.events.popleft()
                cls, want = (arg, {}) if isinstance(arg, type) else (arg[0], arg[1])
                assert isinstance(e, cls), (e, cls)
                for k, v in want.items():
                    got = getattr(e, k)
                    if k == "message":
                        self.expect(got, v, header=False)
                    elif isinstance(v, str) and isinstance(got, str):
                        assert v in got, (got, v)
                    else:
                        assert got == v, (k, got, v)
            else:
                raise ValueError(op)
        assert not self.sent, f"unexpected messages: {list(self.sent)}"
        assert not self.events, f"unexpected events: {list(self.events)}"

    def expect(self, msg, spec, header=True):
        self.log.append(msg)
        if header:
            assert msg[49] == self.peer[1].encode() and msg[56] == self.peer[0].encode(), msg
        for item in spec.split("|"):
            if item.startswith("!"):
                assert int(item[1:]) not in msg, (item, msg)
                continue
            t, _, v = item.partition("=")
            if v == "*":
                assert int(t) in msg, (item, msg)
            else:
                if v.startswith("<T") and v.endswith(">"):
                    v = stamp(self.clock.t + float(v[2:-1] or 0))
                assert msg.get(int(t)) == v.encode(), (item, msg)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def venue(tmp_path, clock):
    s = FixSession(ACCEPTOR, "VENUE", "CLIENT", tmp_path / "venue", clock=clock)
    yield s
    s.close()


LOGON = [
    ("connect",),
    ("I", "35=A|34=1|98=0|108=30"),
    ("E", "35=A|34=1|98=0|108=30|!141"),
    ("EV", LoggedOn),
]
ER = [(37, "V1"), (11, "C1"), (17, "E1"), (150, "0"), (39, "0"), (55, "AAPL"), (54, "1"), (151, 100),
      (14, 0), (6, 0)]
NOS = "11=C1|55=AAPL|54=1|60=<T>|38=100|40=2|44=187.25|59=0"


# ---- logon ----------------------------------------------------------------------------------------

def test_logon_is_answered_with_the_initiators_heartbeat_interval(venue, clock):
    sc = Script(venue, clock)
    sc.run(("connect",), ("I", "35=A|34=1|98=0|108=17"), ("E", "35=A|34=1|98=0|108=17"),
           ("EV", (LoggedOn, {"heartbeat_s": 17, "reset": False})))
    assert venue.logged_on and venue.heartbeat_s == 17
    assert (venue.next_sender_seq, venue.next_target_seq) == (2, 2)


def test_first_message_not_a_logon_is_disconnected_without_a_word(venue, clock):
    Script(venue, clock).run(("connect",), ("I", "35=0|34=1"), ("EV", (Disconnect, {"reason": "not a Logon"})))
    assert venue.state is SessionState.DISCONNECTED and venue.next_sender_seq == 1


@pytest.mark.parametrize("spec, text", [
    ("35=A|34=1|98=0", "Required tag missing: 108"),
    ("35=A|34=1|98=2|108=30", "EncryptMethod"),
    ("35=A|34=1|98=0|108=30|52=<T-600>", "SendingTime accuracy"),
])
def test_invalid_logon_gets_a_logout_saying_why(venue, clock, spec, text):
    Script(venue, clock).run(("connect",), ("I", spec), ("E", "35=5|34=1"), ("EV", (Disconnect, {"reason": text})))


def test_logon_from_the_wrong_counterparty_is_dropped(venue, clock):
    Script(venue, clock).run(("connect",), ("I", "35=A|34=1|98=0|108=30|49=INTRUDER"),
                             ("EV", (Disconnect, {"reason": "CompIDs"})))
    assert venue.next_sender_seq == 1


def test_no_logon_within_the_timeout(venue, clock):
    Script(venue, clock).run(("connect",), ("T", 9), ("T", 1), ("EV", (Disconnect, {"reason": "no Logon"})))


def test_logon_with_sequence_number_too_low_is_logged_out(tmp_path, clock):
    store = SequenceStore(tmp_path / "venue", "VENUE", "CLIENT")
    store.set_next_target(10)
    store.close()
    s = FixSession(ACCEPTOR, "VENUE", "CLIENT", tmp_path / "venue", clock=clock)
    Script(s, clock).run(("connect",), ("I", "35=A|34=3|98=0|108=30"),
                         ("E", "35=5|34=1|58=MsgSeqNum too low, expecting 10 but received 3"),
                         ("EV", Disconnect))
    s.close()


def test_logon_with_sequence_number_too_high_requests_a_resend(venue, clock):
    Script(venue, clock).run(
        ("connect",),
        ("I", "35=A|34=5|98=0|108=30"),
        ("E", "35=A|34=1"),
        ("E", "35=2|34=2|7=1|16=0"),
        ("EV", LoggedOn),
        # The client gap-fills 1..4 (its earlier admin messages); the Logon at 5 is then consumed.
        ("I", "35=4|34=1|43=Y|122=<T>|123=Y|36=5"),
        ("I", "35=0|34=6"),
    )
    assert venue.next_target_seq == 7


def test_reset_seq_num_flag_restarts_both_directions_at_one(tmp_path, clock):
    store = SequenceStore(tmp_path / "venue", "VENUE", "CLIENT")
    store.set_next_sender(50)
    store.set_next_target(60)
    store.close()
    s = FixSession(ACCEPTOR, "VENUE", "CLIENT", tmp_path / "venue", clock=clock)
    Script(s, clock).run(("connect",), ("I", "35=A|34=1|98=0|108=30|141=Y"), ("E", "35=A|34=1|141=Y"),
                         ("EV", (LoggedOn, {"reset": True})))
    assert (s.next_sender_seq, s.next_target_seq) == (2, 2)
    s.close()


@pytest.fixture
def gateway(tmp_path, clock):
    s = FixSession(INITIATOR, "GW", "VENUE", tmp_path / "gw", 20, clock=clock, logon_fields=[(553, "trader")])
    yield s
    s.close()


def test_initiator_logon_and_a_too_high_answer(gateway, clock):
    Script(gateway, clock, peer=("VENUE", "GW")).run(
        ("connect",), ("E", "35=A|34=1|98=0|108=20|553=trader|!141"),
        ("I", "35=A|34=3|98=0|108=20"), ("EV", LoggedOn),
        ("E", "35=2|34=2|7=1|16=0"),
        ("I", "35=4|34=1|43=Y|122=<T>|123=Y|36=4"),
    )
    assert gateway.logged_on and gateway.next_target_seq == 4


def test_initiator_with_reset_on_logon(tmp_path, clock):
    s = FixSession(INITIATOR, "GW", "VENUE", tmp_path / "gw", 20, clock=clock, reset_on_logon=True)
    s.store.set_next_sender(40)
    Script(s, clock, peer=("VENUE", "GW")).run(
        ("connect",), ("E", "35=A|34=1|141=Y"),
        ("I", "35=A|34=1|98=0|108=20|141=Y"), ("EV", (LoggedOn, {"reset": True})))
    assert (s.next_sender_seq, s.next_target_seq) == (2, 2)
    s.close()


def test_initiator_logon_refused_with_a_logout(gateway, clock):
    Script(gateway, clock, peer=("VENUE", "GW")).run(
        ("connect",), ("E", "35=A|34=1"),
        ("I", "35=5|34=7|58=MsgSeqNum too low, expecting 9 but received 1"),
        ("EV", (LoggedOut, {"text": "too low"})), ("EV", (Disconnect, {"reason": "Logon refused"})))


def test_initiator_first_answer_not_a_logon(gateway, clock):
    Script(gateway, clock, peer=("VENUE", "GW")).run(
        ("connect",), ("E", "35=A|34=1"),
        ("I", "35=0|34=1"), ("E", "35=5|34=2|58=first message not a Logon"), ("EV", Disconnect))


def test_messages_sent_before_logon_are_stored_not_written(gateway, clock):
    Script(gateway, clock, peer=("VENUE", "GW")).run(
        ("call", lambda s: s.send(b"D", [(t, v) for t, v in order(1)])),
        ("connect",), ("E", "35=A|34=2"),
    )
    assert gateway.store.get(1) is not None and gateway.next_sender_seq == 3


# ---- heartbeats and test requests -----------------------------------------------------------------

def test_test_request_is_answered_with_its_id(venue, clock):
    Script(venue, clock).run(*LOGON, ("I", "35=1|34=2|112=HELLO"), ("E", "35=0|34=2|112=HELLO"))


def test_heartbeat_test_request_and_disconnect_on_silence(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("T", 29),
        ("T", 1), ("E", "35=0|34=2|!112"),           # 30 s without sending: Heartbeat
        ("T", 6), ("E", "35=1|34=3|112=TEST1"),      # 36 s = 1.2 x 30 without hearing: TestRequest
        ("T", 30), ("E", "35=0|34=4"),               # still sending heartbeats meanwhile
        ("T", 5),
        ("T", 1), ("EV", LoggedOut), ("EV", (Disconnect, {"reason": "TestRequest"})),  # another 36 s
    )
    assert venue.counters["test_request_timeouts"] == 1


def test_an_answer_to_the_test_request_keeps_the_session(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("T", 36), ("E", "35=1|34=2|112=TEST1"),
        ("T", 4), ("I", "35=0|34=2|112=TEST1"),
        ("T", 32), ("E", "35=0|34=3"),               # 30 s after the TestRequest went out
        ("T", 3),                                    # 72 s after logon: no timeout, the peer answered
    )
    assert venue.logged_on


def test_heartbeat_interval_zero_sends_nothing(venue, clock):
    Script(venue, clock).run(("connect",), ("I", "35=A|34=1|98=0|108=0"), ("E", "35=A|34=1|108=0"),
                             ("EV", LoggedOn), ("T", 1000))


# ---- resend requests ------------------------------------------------------------------------------

def test_resend_request_gets_app_messages_again_and_gap_fills_for_the_rest(venue, clock):
    sent_at = stamp(clock.t)
    sc = Script(venue, clock)
    sc.run(
        *LOGON,
        ("call", lambda s: s.send(b"8", ER)), ("E", "35=8|34=2"),
        ("call", lambda s: s.send(b"8", ER + [(58, "second")])), ("E", "35=8|34=3|58=second"),
        ("T", 30), ("E", "35=0|34=4"),
        ("call", lambda s: s.send(b"8", ER + [(58, "third")])), ("E", "35=8|34=5|58=third"),
        ("I", "35=2|34=2|7=1|16=0"),
        ("E", "35=4|34=1|43=Y|122=<T>|52=<T>|123=Y|36=2"),
        ("E", f"35=8|34=2|43=Y|122={sent_at}|52=<T>|37=V1|!58"),
        ("E", f"35=8|34=3|43=Y|122={sent_at}|58=second"),
        ("E", "35=4|34=4|43=Y|123=Y|36=5"),
        ("E", "35=8|34=5|43=Y|58=third"),
    )
    # A resent message repeats the original body exactly.
    originals = [m for m in sc.log[1:] if m.msg_type == b"8" and not m.poss_dup]
    resent = [m for m in sc.log if m.msg_type == b"8" and m.poss_dup]
    assert [m.body_fields() for m in originals] == [m.body_fields() for m in resent]
    assert venue.next_sender_seq == 6  # a resend does not consume new numbers


def test_resend_request_for_a_bounded_range(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("call", lambda s: s.send(b"8", ER)), ("E", "35=8|34=2"),
        ("call", lambda s: s.send(b"8", ER)), ("E", "35=8|34=3"),
        ("call", lambda s: s.send(b"8", ER)), ("E", "35=8|34=4"),
        ("I", "35=2|34=2|7=3|16=3"),
        ("E", "35=8|34=3|43=Y"),
    )


def test_invalid_resend_range_is_rejected(venue, clock):
    Script(venue, clock).run(*LOGON, ("I", "35=2|34=2|7=5|16=3"), ("E", "35=3|34=2|45=2|371=16|372=2|373=5"))
    assert venue.next_target_seq == 3


def test_resend_request_that_arrives_above_a_gap_is_answered_and_the_gap_requested(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("I", "35=2|34=4|7=1|16=0"),
        ("E", "35=4|34=1|43=Y|123=Y|36=2"),          # our answer first
        ("E", "35=2|34=2|7=2|16=0"),                 # then our own request for 2..
        ("I", "35=4|34=2|43=Y|122=<T>|123=Y|36=4"),
        ("I", "35=0|34=5"),
    )
    assert venue.next_target_seq == 6


# ---- sequence numbers -----------------------------------------------------------------------------

def test_too_high_messages_are_queued_until_the_gap_is_filled(venue, clock):
    sc = Script(venue, clock)
    sc.run(
        *LOGON,
        ("I", "35=D|34=4|" + NOS.replace("C1", "C4")),
        ("E", "35=2|34=2|7=2|16=0"),
        ("I", "35=D|34=5|" + NOS.replace("C1", "C5")),  # no second ResendRequest while one is pending
        ("I", "35=4|34=2|43=Y|122=<T>|123=Y|36=3"),
        ("I", "35=D|34=3|43=Y|122=<T>|" + NOS.replace("C1", "C3")),
        ("EV", (Deliver, {"message": "35=D|34=3|11=C3|43=Y"})),
        ("EV", (Deliver, {"message": "35=D|34=4|11=C4"})),
        ("EV", (Deliver, {"message": "35=D|34=5|11=C5"})),
        # The peer goes on resending what we already queued: PossDup duplicates are ignored.
        ("I", "35=D|34=4|43=Y|122=<T>|" + NOS.replace("C1", "C4")),
        ("I", "35=D|34=5|43=Y|122=<T>|" + NOS.replace("C1", "C5")),
        ("I", "35=D|34=6|" + NOS.replace("C1", "C6")),
        ("EV", (Deliver, {"message": "35=D|34=6|11=C6"})),
    )
    assert venue.counters["possdup_ignored"] == 2 and venue.counters["resend_requests_sent"] == 1


def test_too_low_without_possdup_is_a_logout(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("I", "35=0|34=2"),
        ("I", "35=0|34=2"),
        ("E", "35=5|34=2|58=MsgSeqNum too low, expecting 3 but received 2"),
        ("EV", LoggedOut), ("EV", Disconnect),
    )


def test_possdup_duplicate_is_ignored(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("I", "35=D|34=2|" + NOS), ("EV", Deliver),
        ("I", "35=D|34=2|43=Y|122=<T-1>|" + NOS),
    )
    assert venue.next_target_seq == 3 and venue.counters["possdup_ignored"] == 1


def test_possdup_without_orig_sending_time_is_rejected(venue, clock):
    Script(venue, clock).run(*LOGON, ("I", "35=D|34=2|43=Y|" + NOS), ("E", "35=3|34=2|45=2|371=122|372=D|373=1"))
    assert venue.next_target_seq == 3


def test_orig_sending_time_after_sending_time_is_rejected(venue, clock):
    Script(venue, clock).run(*LOGON, ("I", "35=D|34=2|43=Y|122=<T+5>|" + NOS),
                             ("E", "35=3|34=2|45=2|371=122|373=10"))
    assert venue.next_target_seq == 3


def test_sequence_reset_gap_fill(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("I", "35=4|34=2|123=Y|36=10"),
        ("I", "35=0|34=10"),
        ("I", "35=4|34=11|123=Y|36=11"),            # NewSeqNo must move forward
        ("E", "35=3|34=2|45=11|371=36|373=5"),
    )
    assert venue.next_target_seq == 12


def test_sequence_reset_reset_ignores_msgseqnum_but_never_goes_back(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("I", "35=4|34=99|36=20"),
        ("I", "35=4|34=1|36=5"),
        ("E", "35=3|34=2|45=1|371=36|372=4|373=5"),
        ("I", "35=0|34=20"),
    )
    assert venue.next_target_seq == 21 and venue.counters["sequence_resets"] == 1


def test_garbled_message_is_ignored_and_does_not_consume_its_number(venue, clock):
    good = frame(spec_pairs("35=0|34=2", clock))
    bad = good[:-4] + b"%03d\x01" % ((int(good[-4:-1]) + 7) % 256)
    Script(venue, clock).run(
        *LOGON,
        ("raw", bad), ("EV", (Garbled, {"kind": "checksum"})),
        ("I", "35=0|34=3"),                          # the next good one shows the gap
        ("E", "35=2|34=2|7=2|16=0"),
    )
    assert venue.next_target_seq == 2 and venue.counters["garbled_checksum"] == 1


def test_wrong_begin_string_is_a_logout(venue, clock):
    Script(venue, clock).run(*LOGON, ("I", "8=FIX.4.2|35=0|34=2"), ("E", "35=5|34=2|58=Incorrect BeginString"),
                             ("EV", LoggedOut), ("EV", Disconnect))


def test_missing_msgseqnum_is_a_logout(venue, clock):
    Script(venue, clock).run(*LOGON, ("I", "35=0"), ("E", "35=5|34=2"), ("EV", LoggedOut), ("EV", Disconnect))


# ---- rejects --------------------------------------------------------------------------------------

def test_missing_required_tag_is_rejected_and_consumes_the_number(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("I", "35=D|34=2|" + NOS.replace("|38=100", "")),
        ("E", "35=3|34=2|45=2|371=38|372=D|373=1|58=Required tag missing: 38"),
        ("I", "35=0|34=3"),
    )
    assert venue.next_target_seq == 4


def test_invalid_msg_type_is_rejected(venue, clock):
    Script(venue, clock).run(*LOGON, ("I", "35=ZZ|34=2"), ("E", "35=3|34=2|45=2|372=ZZ|373=11"))


def test_unsupported_application_message_gets_a_business_reject(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("I", "35=8|34=2|37=O|17=E|150=0|39=0|55=AAPL|54=1|151=1|14=0|6=0"),
        ("E", "35=j|34=2|45=2|372=8|380=3"),
        ("I", "35=H|34=3|11=C1"),                    # OrderStatusRequest: defined, not handled here
        ("E", "35=j|34=3|45=3|372=H|380=3"),
    )
    assert venue.next_target_seq == 4


def test_limit_order_without_price_gets_a_business_reject(venue, clock):
    Script(venue, clock).run(*LOGON, ("I", "35=D|34=2|" + NOS.replace("|44=187.25", "")),
                             ("E", "35=j|34=2|45=2|372=D|380=5"))


def test_wrong_comp_id_is_rejected_then_logged_out(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("I", "35=0|34=2|56=ELSEWHERE"),
        ("E", "35=3|34=2|45=2|371=56|373=9"),
        ("E", "35=5|34=3|58=CompID problem"),
        ("EV", LoggedOut), ("EV", Disconnect),
    )
    assert venue.next_target_seq == 3


def test_sending_time_out_of_range_is_rejected_then_logged_out(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("I", "35=0|34=2|52=<T-600>"),
        ("E", "35=3|34=2|45=2|371=52|373=10"),
        ("E", "35=5|34=3|58=SendingTime accuracy problem"),
        ("EV", LoggedOut), ("EV", Disconnect),
    )


def test_peer_reject_is_reported(venue, clock):
    Script(venue, clock).run(*LOGON, ("I", "35=3|34=2|45=1|373=99|58=no"),
                             ("EV", (PeerReject, {"message": "35=3|45=1|58=no"})))
    assert venue.next_target_seq == 3


# ---- logout ---------------------------------------------------------------------------------------

def test_logout_started_by_the_peer(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("I", "35=5|34=2|58=done"), ("E", "35=5|34=2"), ("EV", (LoggedOut, {"text": "done"})),
        ("T", 9),
        ("T", 1), ("EV", (Disconnect, {"reason": "did not disconnect"})),
    )


def test_logout_started_by_us(venue, clock):
    Script(venue, clock).run(
        *LOGON,
        ("call", lambda s: s.logout("end of day")), ("E", "35=5|34=2|58=end of day"),
        ("I", "35=0|34=2"),                          # still read while waiting
        ("I", "35=5|34=3"), ("EV", LoggedOut), ("EV", (Disconnect, {"reason": "logout complete"})),
    )
    assert venue.next_target_seq == 4


def test_logout_answer_that_never_comes(venue, clock):
    Script(venue, clock).run(*LOGON, ("call", lambda s: s.logout()), ("E", "35=5|34=2|!58"), ("T", 10),
                             ("EV", LoggedOut), ("EV", (Disconnect, {"reason": "no answer"})))


# ---- two sessions in memory -----------------------------------------------------------------------

class Wire:
    """Connects an initiator and an acceptor in memory; logs every message that crosses."""

    def __init__(self, ini: FixSession, acc: FixSession, clock: Clock):
        self.ini, self.acc, self.clock = ini, acc, clock
        self.peer = {id(ini): acc, id(acc): ini}
        self.log: list[str] = []
        self.delivered: dict[str, list] = {ini.sender: [], acc.sender: []}
        self.events: dict[str, list] = {ini.sender: [], acc.sender: []}
        self.up = False
        self.drop = lambda msg: False  # messages that get lost in flight

    def connect(self):
        self.up = True
        self.pump(self.acc, self.acc.connect())
        self.pump(self.ini, self.ini.connect())

    def tick(self, dt):
        self.clock.t += dt
        self.pump(self.ini, self.ini.on_timer())
        self.pump(self.acc, self.acc.on_timer())

    def pump(self, side, events):
        work = deque([(side, events)])
        for _ in range(10_000):
            if not work:
                return
            side, events = work.popleft()
            peer = self.peer[id(side)]
            for e in events:
                if isinstance(e, Send):
                    (msg,) = check_wire(e.data)
                    lost = self.drop(msg)
                    self.log.append(f"{side.sender} {msg.msg_type.decode()} {msg.seq_num}"
                                    + (" PD" if msg.poss_dup else "") + (" LOST" if lost else ""))
                    if self.up and not lost:
                        work.append((peer, peer.on_bytes(e.data)))
                elif isinstance(e, Disconnect):
                    if self.up:
                        self.up = False
                        self.events[side.sender].append(e)
                        work.append((peer, peer.on_disconnect()))
                elif isinstance(e, Deliver):
                    self.delivered[side.sender].append(e.message)
                else:
                    self.events[side.sender].append(e)
        pytest.fail("messages kept bouncing between the sessions")

    def send(self, side, msg_type, fields):
        self.pump(side, side.send(msg_type, fields))

    def cut(self):
        """The connection drops under both sides."""
        self.up = False
        self.pump(self.ini, self.ini.on_disconnect())
        self.pump(self.acc, self.acc.on_disconnect())


def order(i):
    return [(11, "C%d" % i), (55, "AAPL"), (54, "1"), (60, stamp(T0)), (38, 100), (40, "2"), (44, "10.5")]


def report(i):
    return [(37, "V%d" % i), (11, "C%d" % i), (17, "E%d" % i), (150, "0"), (39, "0"), (55, "AAPL"),
            (54, "1"), (151, 100), (14, 0), (6, 0)]


def make_pair(tmp_path, clock, **ini_kw):
    ini = FixSession(INITIATOR, "GW", "VENUE", tmp_path / "gw", 30, clock=clock, **ini_kw)
    acc = FixSession(ACCEPTOR, "VENUE", "GW", tmp_path / "venue", clock=clock)
    return Wire(ini, acc, clock)


def test_pair_logon_orders_reports_heartbeats_and_logout(tmp_path, clock):
    w = make_pair(tmp_path, clock)
    w.connect()
    assert w.log == ["GW A 1", "VENUE A 1"]
    assert w.ini.logged_on and w.acc.logged_on and w.acc.heartbeat_s == 30
    w.send(w.ini, b"D", order(1))
    w.send(w.acc, b"8", report(1))
    assert [m[11] for m in w.delivered["VENUE"]] == [b"C1"]
    assert [m[37] for m in w.delivered["GW"]] == [b"V1"]
    w.tick(30)  # both sides idle for a heartbeat interval
    assert w.log[-2:] == ["GW 0 3", "VENUE 0 3"]
    w.pump(w.ini, w.ini.logout("bye"))
    assert w.log[-2:] == ["GW 5 4", "VENUE 5 4"]
    assert not w.up and w.ini.state is SessionState.DISCONNECTED and w.acc.state is SessionState.DISCONNECTED
    assert isinstance(w.events["GW"][-1], Disconnect)
    assert [type(e) for e in w.events["VENUE"]] == [LoggedOn, LoggedOut]


def test_pair_test_request_when_one_side_goes_quiet(tmp_path, clock):
    w = make_pair(tmp_path, clock)
    w.connect()
    # The venue's plain heartbeats get lost; its answers to test requests (with 112) get through.
    w.drop = lambda msg: msg[49] == b"VENUE" and msg.msg_type == b"0" and 112 not in msg
    for dt in (30, 6, 30, 6):
        w.tick(dt)
    # 36 s without hearing the venue: TestRequest; its answer arrives, and its number shows the gateway
    # that the lost heartbeat left a gap, which the venue gap-fills on request.
    assert w.log[2:] == ["GW 0 2", "VENUE 0 2 LOST", "GW 1 3", "VENUE 0 3", "GW 2 4", "VENUE 4 2 PD",
                         "GW 0 5", "VENUE 0 4 LOST", "GW 1 6", "VENUE 0 5", "GW 2 7", "VENUE 4 4 PD"]
    assert w.ini.logged_on and w.acc.logged_on and w.ini.next_target_seq == 6
    # Now everything from the venue is lost: one more TestRequest, then the gateway gives up.
    w.drop = lambda msg: msg[49] == b"VENUE"
    for dt in (30, 6, 30, 6):
        w.tick(dt)
    assert w.log[14:] == ["GW 0 8", "VENUE 0 6 LOST", "GW 1 9", "VENUE 0 7 LOST", "GW 0 10", "VENUE 0 8 LOST"]
    assert [type(e) for e in w.events["GW"]] == [LoggedOn, LoggedOut, Disconnect]
    assert w.events["VENUE"][-1] == LoggedOut("connection lost")
    assert not w.up and w.ini.state is SessionState.DISCONNECTED and w.acc.state is SessionState.DISCONNECTED


def test_pair_lost_message_is_recovered_in_order(tmp_path, clock):
    w = make_pair(tmp_path, clock)
    w.connect()
    w.drop = lambda msg: msg.get(11) == b"C2" and not msg.poss_dup
    for i in (1, 2, 3, 4):
        w.send(w.ini, b"D", order(i))
    # C3 shows the venue a gap: it asks for 3.. and queues C3 until C2 is resent (C3 comes again, ignored).
    assert w.log[2:] == ["GW D 2", "GW D 3 LOST", "GW D 4", "VENUE 2 2", "GW D 3 PD", "GW D 4 PD", "GW D 5"]
    assert [m[11] for m in w.delivered["VENUE"]] == [b"C1", b"C2", b"C3", b"C4"]
    assert w.delivered["VENUE"][1].poss_dup and not w.delivered["VENUE"][2].poss_dup
    assert w.acc.counters["possdup_ignored"] == 1
    assert w.acc.next_target_seq == w.ini.next_sender_seq == 6


def test_pair_sequence_numbers_persist_across_restart(tmp_path, clock):
    w = make_pair(tmp_path, clock)
    w.connect()
    for i in range(3):
        w.send(w.ini, b"D", order(i))
        w.send(w.acc, b"8", report(i))
    w.pump(w.ini, w.ini.logout())
    gw, venue = (w.ini.next_sender_seq, w.ini.next_target_seq), (w.acc.next_sender_seq, w.acc.next_target_seq)
    assert gw == (6, 6) and venue == (6, 6)
    w.ini.close()
    w.acc.close()
    w2 = make_pair(tmp_path, clock)  # new objects, same store
    assert (w2.ini.next_sender_seq, w2.ini.next_target_seq) == gw
    assert (w2.acc.next_sender_seq, w2.acc.next_target_seq) == venue
    w2.connect()
    assert w2.log == ["GW A 6", "VENUE A 6"]
    assert w2.ini.logged_on and w2.acc.logged_on


def test_pair_reports_sent_while_the_gateway_was_away_arrive_after_reconnect(tmp_path, clock):
    w = make_pair(tmp_path, clock)
    w.connect()
    w.send(w.ini, b"D", order(1))
    w.send(w.acc, b"8", report(1))
    w.cut()
    w.send(w.acc, b"8", report(2))           # numbered and stored, not written
    w.send(w.acc, b"8", report(3))
    assert w.log[-1] == "VENUE 8 2"          # nothing crossed since
    assert w.acc.next_sender_seq == 5
    w.ini.close()
    w.acc.close()
    clock.t += 5
    w2 = make_pair(tmp_path, clock)  # both processes restarted
    w2.connect()
    # The venue's Logon (5) is above the gateway's expected 3: the gateway asks for 3.., the venue
    # resends its two stored reports with PossDupFlag and OrigSendingTime and gap-fills its Logon.
    assert w2.log == ["GW A 3", "VENUE A 5", "GW 2 4", "VENUE 8 3 PD", "VENUE 8 4 PD", "VENUE 4 5 PD"]
    assert [m[37] for m in w2.delivered["GW"]] == [b"V2", b"V3"]
    assert all(m[122] == stamp(T0).encode() for m in w2.delivered["GW"])
    assert w2.ini.next_target_seq == 6 and w2.acc.next_target_seq == 5


def test_pair_reset_on_logon(tmp_path, clock):
    w = make_pair(tmp_path, clock)
    w.connect()
    w.send(w.ini, b"D", order(1))
    w.pump(w.ini, w.ini.logout())
    w.ini.close()
    w.acc.close()
    w2 = make_pair(tmp_path, clock, reset_on_logon=True)
    w2.connect()
    assert w2.log == ["GW A 1", "VENUE A 1"]
    assert all(isinstance(e, LoggedOn) and e.reset for e in w2.events["VENUE"])


def test_pair_hot_encoded_orders_go_through_the_session(tmp_path, clock):
    w = make_pair(tmp_path, clock)
    w.connect()
    buf, seq_off = H.build_template(b"D", "GW", "VENUE")
    sym = alpha_to_int("MSFT")
    for i in range(3):
        seq = w.ini.next_sender_seq
        ns = int(clock.t * 1e9)
        start, end = H.encode_new_order(buf, seq_off, seq, ns, 100 + i, ord("1"), 10, ord("2"), 4_200_000,
                                        ord("0"), ns, sym)
        raw = bytes(buf[start:end])
        w.ini.record_sent(raw)
        if i != 1:  # the second one is lost on the way
            w.pump(w.acc, w.acc.on_bytes(raw))
        else:
            check_wire(raw)
    # The venue saw 2 then 4: it asked for 3.., which the gateway's session resends from its store
    # (the hot-path bytes themselves do not go through the session, so the log holds only these).
    assert w.log == ["GW A 1", "VENUE A 1", "VENUE 2 2", "GW D 3 PD", "GW D 4 PD"]
    assert [m[11] for m in w.delivered["VENUE"]] == [H.format_clordid(i) for i in (100, 101, 102)]
    assert [m[44] for m in w.delivered["VENUE"]] == [b"0000420.0000"] * 3


# ---- the store ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fsync", [False, True])
def test_store_persists_numbers_and_messages(tmp_path, fsync):
    s = SequenceStore(tmp_path, "A", "B", fsync=fsync)
    assert (s.next_sender_seq, s.next_target_seq) == (1, 1)
    for seq in (1, 2, 5):
        s.store(seq, b"message %d" % seq)
    s.set_next_sender(6)
    s.set_next_target(9)
    s.close()
    s = SequenceStore(tmp_path, "A", "B", fsync=fsync)
    assert (s.next_sender_seq, s.next_target_seq) == (6, 9)
    assert [s.get(i) for i in range(1, 7)] == [b"message 1", b"message 2", None, None, b"message 5", None]
    s.reset()
    assert (s.next_sender_seq, s.next_target_seq, s.get(1)) == (1, 1, None)
    s.close()
    s = SequenceStore(tmp_path, "A", "B")
    assert (s.next_sender_seq, s.next_target_seq, s.get(1)) == (1, 1, None)
    s.close()


def test_store_survives_a_torn_append(tmp_path):
    s = SequenceStore(tmp_path, "A", "B")
    s.store(1, b"one")
    s.store(2, b"two")
    s.set_next_sender(3)
    path = s.log_path
    s.close()
    with open(path, "ab") as f:
        f.write(b"3 100\npartial")  # the process died in the middle of the next append
    s = SequenceStore(tmp_path, "A", "B")
    assert (s.get(1), s.get(2), s.get(3)) == (b"one", b"two", None)
    s.store(3, b"three")
    s.close()
    s = SequenceStore(tmp_path, "A", "B")
    assert s.get(3) == b"three" and s.next_sender_seq == 4  # the counter follows the stored messages
    s.close()


def test_store_in_memory_and_sessions_per_counterparty(tmp_path):
    m = SequenceStore(None, "A", "B")
    m.store(1, b"x")
    m.set_next_sender(2)
    assert m.get(1) == b"x" and m.next_sender_seq == 2
    SequenceStore(tmp_path, "VENUE", "C1").set_next_target(7)
    assert SequenceStore(tmp_path, "VENUE", "C2").next_target_seq == 1
    assert sorted(os.listdir(tmp_path)) == ["VENUE-C1.messages", "VENUE-C1.seqnums",
                                           "VENUE-C2.messages", "VENUE-C2.seqnums"]


def test_send_checks_its_arguments(venue, clock):
    with pytest.raises(ValueError):
        venue.send(b"0", [])
    with pytest.raises(ValueError):
        venue.send(b"8", [(37, "x")])
    with pytest.raises(ValueError):
        FixSession("both", "A", "B", None)
    assert outgoing([Send(b"a", b"0", 1), LoggedOut("x"), Send(b"b", b"0", 2)]) == b"ab"
