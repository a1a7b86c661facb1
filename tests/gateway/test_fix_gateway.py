"""The FIX 4.4 gateway session on the hot agent.

Against the real venue on loopback: orders, replaces, fills and cancels agree with the venue's record; a
restart from the journal recovers the fills it missed through the venue's resend, with sequence numbers
that agree; an order lost in a disconnect is gap-filled, written off and never sent again.

Against a scripted venue on a socket pair (the test writes the venue's messages byte for byte and reads
what the gateway answers, as QuickFIX's acceptance scripts do): TestRequest, ResendRequest, gap
detection and recovery with PossDup, garbled messages, a MsgSeqNum too low, SequenceReset and Logout.
"""

import socket
import time

import pytest

from appliance.config.schema import VenueConfig
from appliance.gateway import fix44 as fx
from appliance.gateway import fix_gateway as fg
from appliance.gateway import orders as go
from appliance.venue.server import Venue
from tests.gateway.harness import DOLLAR, GatewayHarness
from tests.support import free_udp_port, wait_for

SYMBOLS = ("AAA", "BBB")
BID = 10 * DOLLAR - 100


@pytest.fixture
def venue(tmp_path):
    v = Venue(VenueConfig(symbols=SYMBOLS, rate=0, max_orders=4096, history_messages=4096,
                          feed_port=free_udp_port(), retransmit_port=0, ouch_port=0, fix_port=0,
                          state_dir=str(tmp_path / "venue-state"))).start()
    yield v
    v.stop()


def _agree(h, venue):
    """The gateway's positions, open orders and both sequence numbers equal the venue's record (else None)."""
    h.step()
    rec = venue.fix_record()
    snap = go.snapshot(h.gw, list(SYMBOLS))
    mine = {u: {k: o[k] for k in ("symbol", "side", "price", "leaves")} for u, o in snap["open_orders"].items()}
    same = (mine == rec["open_orders"]
            and {s: p for s, p in snap["positions"].items() if p} == {s: p for s, p in rec["positions"].items() if p}
            and int(h.gw.w[go.W_NEXT_EXPECTED]) == rec["next_sender_seq"]
            and int(h.fx.w[fg.FX_TX_SEQ]) == rec["next_target_seq"])
    return rec if same else None


def test_orders_replaces_fills_and_cancels_agree_with_the_venue(venue, tmp_path):
    h = GatewayHarness(venue, SYMBOLS, tmp_path / "orders.journal", protocol="fix")
    try:
        u = h.new("AAA", 0, BID, 100)
        assert h.outcome(u) == "new"
        u2 = h.replace("AAA", u, BID - 100, 60)
        h.pump(lambda: h.state_of(u2) == "new", what="the replace acknowledged")
        assert h.state_of(u) == "replaced"
        venue.participant_order("AAA", "S", 25, BID - 100)
        h.pump(lambda: h.gw.pos[0] == 25, what="the fill")
        assert h.state_of(u2) == "partially_filled"
        ask = h.new("BBB", 1, 10 * DOLLAR + 200, 40)
        assert h.outcome(ask) == "new"
        h.cancel("AAA", u2)
        h.pump(lambda: h.state_of(u2) == "canceled", what="the cancel")
        rec = wait_for(lambda: _agree(h, venue), 10, what="agreement with the venue")
        assert rec["positions"] == {"AAA": 25}
        assert list(rec["open_orders"]) == [ask] and rec["open_orders"][ask]["leaves"] == 40
        assert rec["duplicate_cl_ord_ids"] == 0
        assert int(h.gw.w[go.W_FILLS]) == rec["executions"] == 1
    finally:
        h.close()


def test_restart_from_the_journal_recovers_missed_fills_through_the_resend(venue, tmp_path):
    journal = tmp_path / "orders.journal"
    h = GatewayHarness(venue, SYMBOLS, journal, protocol="fix")
    bid = h.new("AAA", 0, BID, 100)
    ask = h.new("BBB", 1, 10 * DOLLAR + 100, 100)
    assert h.outcome(bid) == "new" and h.outcome(ask) == "new"
    venue.participant_order("AAA", "S", 30, BID)
    h.pump(lambda: h.gw.pos[0] == 30, what="a first fill")
    h.crash()
    # while the gateway is down: more fills, and one order filled in full
    venue.participant_order("AAA", "S", 20, BID)
    venue.participant_order("BBB", "B", 100, 10 * DOLLAR + 100)

    h2 = GatewayHarness(venue, SYMBOLS, journal, protocol="fix", recover_journal=True)
    try:
        assert h2.recovered["sent"] == 2 and h2.recovered["last_sent_seq"] >= 3
        rec = wait_for(lambda: _agree(h2, venue), 10, what="the restarted gateway agreeing with the venue")
        assert rec["positions"] == {"AAA": 50, "BBB": -100}
        assert list(rec["open_orders"]) == [bid] and rec["open_orders"][bid]["leaves"] == 50
        assert h2.state_of(ask) == "filled"
        assert int(h2.gw.w[go.W_FILLS]) == rec["executions"] == 3  # each fill applied once
        assert fg.counters(h2.fx)["resend_requests_sent"] >= 1
        assert rec["duplicate_cl_ord_ids"] == 0
        nxt = h2.new("BBB", 0, BID, 10)  # numbering goes on above the journal's
        assert nxt > ask and h2.outcome(nxt) == "new"
    finally:
        h2.close()


def test_an_order_lost_in_a_disconnect_is_gap_filled_and_written_off(venue, tmp_path):
    h = GatewayHarness(venue, SYMBOLS, tmp_path / "orders.journal", protocol="fix")
    try:
        kept = h.new("AAA", 0, BID, 100)
        assert h.outcome(kept) == "new"
        h.link.sock.shutdown(socket.SHUT_WR)  # the next send() fails: the order is journaled, never delivered
        lost = h.new("AAA", 0, BID - 100, 100)
        h.pump(lambda: h.link.sock is None, what="the gateway giving the dead link back")
        assert h.state_of(lost) == "pending_new"

        def relogin():
            try:
                h.link.login()
                return True
            except (OSError, fg.LogonRefused):
                return False  # the venue has not yet seen the old connection go
        wait_for(relogin, 10, what="a new logon")
        h.pump(lambda: h.gw.w[go.W_RECONCILED], what="reconciliation after the venue's ResendRequest")
        i = go.slot_of(h.gw, lost)
        assert h.state_of(lost) == "rejected" and int(h.gw.o_reason[i]) == go.REASON_LOST
        assert fg.counters(h.fx)["resend_requests_answered"] >= 1
        rec = wait_for(lambda: _agree(h, venue), 10, what="agreement with the venue")
        assert list(rec["open_orders"]) == [kept]
        again = h.new("AAA", 0, BID - 100, 100)
        assert h.outcome(again) == "new"
        assert venue.fix_record()["duplicate_cl_ord_ids"] == 0
    finally:
        h.close()


# ---- scripted venue --------------------------------------------------------------------------------

class Peer:
    """The venue's end of a socket pair: writes numbered messages, reads what the gateway sends."""

    def __init__(self, h, sock):
        self.h = h
        self.sock = sock
        self.sock.setblocking(False)
        self.seq = 1
        self.parser = fx.FixStreamParser()
        self.got: list = []

    def send(self, msg_type, fields=(), seq=None, poss_dup=False):
        if seq is None:
            seq = self.seq
            self.seq += 1
        stamp = fx.format_utc_timestamp(time.time())
        self.sock.sendall(fx.encode(msg_type, list(fields), "VENUE", "APPLIANCE", seq, stamp, poss_dup=poss_dup,
                                    orig_sending_time=stamp if poss_dup else None))

    def raw(self, data: bytes):
        self.sock.sendall(data)

    def expect(self, msg_type, timeout=5.0, where=None):
        """Pump the gateway until it sends a message of this type (and `where(msg)` holds); that message."""
        def seen():
            self.h.step()
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                data = b""
            self.got += [m for m in self.parser.feed(data) if isinstance(m, fx.FixMessage)]
            for k, m in enumerate(self.got):
                if m.msg_type == msg_type and (where is None or where(m)):
                    del self.got[:k + 1]
                    return m
            return None
        return wait_for(seen, timeout, interval=0.001, what=f"the gateway sending MsgType {msg_type!r}")


@pytest.fixture
def scripted(tmp_path):
    h = GatewayHarness(None, SYMBOLS, tmp_path / "orders.journal", protocol="fix")
    ours, theirs = socket.socketpair()
    h.attach(ours)
    peer = Peer(h, theirs)
    yield h, peer
    ours.close()
    theirs.close()
    h.writer.stop()


def _reconcile(h, peer):
    tr = peer.expect(fx.MSG_TEST_REQUEST)
    assert tr.get(fx.TAG_TEST_REQ_ID) == b"1"  # the fence: this logon's number
    peer.send(fx.MSG_HEARTBEAT, [(fx.TAG_TEST_REQ_ID, b"1")])
    h.pump(lambda: h.gw.w[go.W_RECONCILED], what="the fence's Heartbeat reconciling")


def _new_order(h, peer, px=BID, qty=100):
    """The strategy's order goes out as a NewOrderSingle; the venue accepts it. (UserRefNum, its ClOrdID)."""
    urn = h.new("AAA", 0, px, qty)
    d = peer.expect(fx.MSG_NEW_ORDER_SINGLE)
    cl = d.get(fx.TAG_CL_ORD_ID)
    assert int(cl) == urn and d.get(fx.TAG_SYMBOL) == b"AAA" and d.get(fx.TAG_SIDE) == b"1"
    assert int(d.get(fx.TAG_ORDER_QTY)) == qty and d.get(fx.TAG_PRICE) == b"%07d.%04d" % (px // 10000, px % 10000)
    peer.send(fx.MSG_EXECUTION_REPORT, _er(cl, b"0", leaves=qty, px=px))
    h.pump(lambda: h.state_of(urn) == "new", what="the order accepted")
    return urn, cl


def _er(cl, exec_type, leaves, px, last_qty=0, exec_id=b"E1"):
    f = [(fx.TAG_ORDER_ID, b"7"), (fx.TAG_CL_ORD_ID, cl), (fx.TAG_EXEC_ID, exec_id), (fx.TAG_EXEC_TYPE, exec_type),
         (fx.TAG_ORD_STATUS, exec_type if exec_type != b"F" else b"1"), (fx.TAG_SYMBOL, b"AAA"), (fx.TAG_SIDE, b"1"),
         (fx.TAG_ORDER_QTY, 100), (fx.TAG_PRICE, b"%d.%04d" % (px // 10000, px % 10000)), (fx.TAG_LEAVES_QTY, leaves),
         (fx.TAG_CUM_QTY, 0), (fx.TAG_AVG_PX, b"0")]
    if last_qty:
        f += [(fx.TAG_LAST_QTY, last_qty), (fx.TAG_LAST_PX, b"%d.%04d" % (px // 10000, px % 10000))]
    return f


def test_script_test_request_and_resend_request_are_answered(scripted):
    h, peer = scripted
    _reconcile(h, peer)
    peer.send(fx.MSG_TEST_REQUEST, [(fx.TAG_TEST_REQ_ID, b"TR-7")])
    hb = peer.expect(fx.MSG_HEARTBEAT, where=lambda m: fx.TAG_TEST_REQ_ID in m)
    assert hb.get(fx.TAG_TEST_REQ_ID) == b"TR-7"  # echoed byte for byte
    urn, _ = _new_order(h, peer)
    nxt = int(h.fx.w[fg.FX_TX_SEQ])
    peer.send(fx.MSG_RESEND_REQUEST, [(fx.TAG_BEGIN_SEQ_NO, 1), (fx.TAG_END_SEQ_NO, 0)])
    gf = peer.expect(fx.MSG_SEQUENCE_RESET)
    # one gap fill over everything, the order included: an order is never sent twice
    assert gf.seq_num == 1 and gf.get(fx.TAG_GAP_FILL_FLAG) == b"Y" and gf.poss_dup
    assert int(gf.get(fx.TAG_NEW_SEQ_NO)) == nxt
    assert not [m for m in peer.got if m.msg_type == fx.MSG_NEW_ORDER_SINGLE]
    assert h.state_of(urn) == "new"


def test_script_a_gap_is_recovered_with_possdup_and_applied_once(scripted):
    h, peer = scripted
    _reconcile(h, peer)
    urn, cl = _new_order(h, peer)
    first = peer.seq
    peer.seq += 1  # the venue's message `first` is lost on the way
    peer.send(fx.MSG_EXECUTION_REPORT, _er(cl, b"F", leaves=70, px=BID, last_qty=30, exec_id=b"E2"))
    rr = peer.expect(fx.MSG_RESEND_REQUEST)
    assert int(rr.get(fx.TAG_BEGIN_SEQ_NO)) == first and rr.get(fx.TAG_END_SEQ_NO) == b"0"
    assert h.gw.pos[0] == 0  # the out-of-order fill waits for the resend
    # the resend: the lost message was a Heartbeat (gap-filled), then the fill again
    peer.send(fx.MSG_SEQUENCE_RESET, [(fx.TAG_GAP_FILL_FLAG, b"Y"), (fx.TAG_NEW_SEQ_NO, first + 1)], seq=first,
              poss_dup=True)
    peer.send(fx.MSG_EXECUTION_REPORT, _er(cl, b"F", leaves=70, px=BID, last_qty=30, exec_id=b"E2"),
              seq=first + 1, poss_dup=True)
    h.pump(lambda: h.gw.pos[0] == 30, what="the resent fill applied")
    peer.send(fx.MSG_EXECUTION_REPORT, _er(cl, b"F", leaves=70, px=BID, last_qty=30, exec_id=b"E2"),
              seq=first + 1, poss_dup=True)  # a duplicate of what was applied
    h.pump(lambda: fg.counters(h.fx)["possdup_ignored"] == 1, what="the duplicate ignored")
    assert h.gw.pos[0] == 30 and int(h.gw.w[go.W_FILLS]) == 1 and h.state_of(urn) == "partially_filled"
    assert int(h.gw.w[go.W_NEXT_EXPECTED]) == peer.seq
    assert fg.counters(h.fx)["resend_requests_sent"] == 1


def test_script_garbled_is_ignored_and_a_low_msgseqnum_ends_the_session(scripted):
    h, peer = scripted
    _reconcile(h, peer)
    expected = int(h.gw.w[go.W_NEXT_EXPECTED])
    good = fx.encode(fx.MSG_HEARTBEAT, [], "VENUE", "APPLIANCE", expected, fx.format_utc_timestamp(time.time()))
    bad = good[:-4] + b"%03d\x01" % ((int(good[-4:-1]) + 1) % 256)  # CheckSum off by one
    peer.raw(bad)
    h.pump(lambda: fg.counters(h.fx)["garbled"] == 1, what="the garbled message counted")
    assert int(h.gw.w[go.W_NEXT_EXPECTED]) == expected  # it took no number
    peer.raw(good)
    h.pump(lambda: int(h.gw.w[go.W_NEXT_EXPECTED]) == expected + 1, what="the sound copy applied")
    peer.send(fx.MSG_HEARTBEAT, seq=expected - 1)  # too low, no PossDupFlag: the session cannot be trusted
    peer.expect(fx.MSG_LOGOUT)
    assert int(h.gw.w[go.W_LINK]) != go.LINK_UP and fg.counters(h.fx)["seq_too_low"] == 1


def test_script_sequence_reset_and_logout(scripted):
    h, peer = scripted
    _reconcile(h, peer)
    peer.send(fx.MSG_SEQUENCE_RESET, [(fx.TAG_NEW_SEQ_NO, 50)], seq=1)  # Reset mode: MsgSeqNum is not checked
    h.pump(lambda: int(h.gw.w[go.W_NEXT_EXPECTED]) == 50, what="the reset")
    peer.seq = 50
    peer.send(fx.MSG_LOGOUT, [(fx.TAG_TEXT, b"end of day")])
    peer.expect(fx.MSG_LOGOUT)  # answered
    assert int(h.gw.w[go.W_LINK]) != go.LINK_UP and fg.counters(h.fx)["logouts_received"] == 1
