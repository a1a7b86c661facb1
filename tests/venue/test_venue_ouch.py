"""A scripted OUCH 5.0 session over SoupBinTCP 4.x against the venue, over real TCP on loopback.

Each step sends what a client sends and asserts the venue's answer: login rejected and accepted,
heartbeats, Enter / Replace / Cancel Order with Accepted / Replaced / Canceled / Executed / Rejected
(and the specification's reasons), a fill against another participant, a dropped connection and the
replay of what was sent meanwhile from the sequence number the client asks for, and End of Session.
"""

import socket
import time

import pytest

from appliance.config.schema import VenueConfig
from appliance.gateway import ouch_descriptor as ouch
from appliance.gateway.soupbin_session import (
    EndOfSession, Heartbeat, LoginAccepted, LoginRejected, SequencedData, SoupClientSession,
)
from appliance.venue.server import Venue
from tests.support import free_udp_port, wait_for


class OuchClient:
    """A SoupBinTCP client over a socket; `expect` reads until a predicate matches (bounded by time)."""

    def __init__(self, addr, username="APPL01", password="secret", next_sequence=1):
        self.sock = socket.create_connection(addr, timeout=5)
        self.sock.settimeout(0.05)
        self.sess = SoupClientSession(username, password, next_sequence=next_sequence)
        self.sess.connect()
        self.flush()
        self.events = []
        self.eof = False

    def flush(self):
        data = self.sess.data_to_send()
        if data:
            self.sock.sendall(data)

    def read(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.eof:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                beat = self.sess.on_timer()
                if beat:
                    self.sock.sendall(beat)
                continue
            if not data:
                self.eof = True
                break
            self.events += self.sess.on_bytes(data)
            self.flush()

    def expect(self, predicate, what, timeout=10.0):
        """The first unread event matching `predicate` (events before it are dropped)."""
        def found():
            for i, ev in enumerate(self.events):
                if predicate(ev):
                    del self.events[:i + 1]
                    return ev
            self.read(0.05)
            return None
        return wait_for(found, timeout, what=what)

    def expect_ouch(self, mtype, timeout=10.0, **fields):
        """The next sequenced OUCH message of `mtype` whose fields include `fields`; returns (seq, decoded)."""
        def match(ev):
            if not isinstance(ev, SequencedData):
                return False
            msg = ouch.decode_outbound(ev.payload)
            return msg["type"] == mtype and all(msg.get(k) == v for k, v in fields.items())
        ev = self.expect(match, f"OUCH {mtype} {fields}", timeout)
        return ev.sequence, ouch.decode_outbound(ev.payload)

    def send(self, mtype, **fields):
        self.sess.send_unsequenced(ouch.encode_inbound(mtype, **fields))
        self.flush()

    def enter(self, urn, side, qty, symbol, price, tif="0", display="Y"):
        self.send("O", user_ref_num=urn, side=side, quantity=qty, symbol=symbol, price=price, time_in_force=tif,
                  display=display, capacity="A", intermarket_sweep_eligibility="N", cross_type="N",
                  cl_ord_id=f"c{urn}")

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    cfg = VenueConfig(symbols=("AAA", "BBB"), rate=0, feed_port=free_udp_port(), retransmit_port=0, ouch_port=0,
                      fix_port=0, state_dir=str(tmp_path_factory.mktemp("venue")))
    v = Venue(cfg).start()
    yield v
    v.stop()


def test_login_with_a_wrong_password_is_rejected_and_closed(venue):
    c = OuchClient(venue.ouch_address, password="wrong")
    ev = c.expect(lambda e: isinstance(e, LoginRejected), "Login Rejected")
    assert ev.reason == "A"  # not authorized
    wait_for(lambda: c.read(0.05) or c.eof, 5, what="the venue to close the socket")
    c.close()


def test_scripted_session(venue):
    c = OuchClient(venue.ouch_address)
    acc = c.expect(lambda e: isinstance(e, LoginAccepted), "Login Accepted")
    assert acc.session == "VENUE00001" and acc.sequence == 1

    # Enter Order -> Order Accepted, with the venue's order reference
    c.enter(1, "B", 100, "AAA", 10_0000)
    _, a = c.expect_ouch("A", user_ref_num=1)
    assert (a["side"], a["quantity"], a["symbol"], a["price"], a["order_state"]) == ("B", 100, "AAA", 10_0000, "L")
    assert a["order_reference_number"] > 0

    # UserRefNum must increase: a repeat is rejected ('other'), an unknown symbol is rejected ('invalid symbol')
    c.enter(1, "B", 100, "AAA", 10_0000)
    _, j = c.expect_ouch("J", user_ref_num=1)
    assert j["reason"] == ouch.REJECT_OTHER
    c.enter(2, "B", 100, "ZZZZ", 10_0000)
    _, j = c.expect_ouch("J", user_ref_num=2)
    assert j["reason"] == ouch.REJECT_INVALID_SYMBOL
    c.enter(3, "B", 0, "AAA", 10_0000)
    _, j = c.expect_ouch("J", user_ref_num=3)
    assert j["reason"] == ouch.REJECT_INVALID_QUANTITY

    # Replace Order -> Order Replaced (new UserRefNum, new size and price, new reference)
    c.send("U", orig_user_ref_num=1, user_ref_num=4, quantity=300, price=10_0100, time_in_force="0", display="Y",
           intermarket_sweep_eligibility="N", cl_ord_id="c4")
    _, u = c.expect_ouch("U", user_ref_num=4)
    assert (u["orig_user_ref_num"], u["quantity"], u["price"]) == (1, 300, 10_0100)
    assert u["order_reference_number"] != a["order_reference_number"]

    # Cancel Order to a smaller size -> Order Canceled for the difference
    c.send("X", user_ref_num=4, quantity=200)
    _, x = c.expect_ouch("C", user_ref_num=4)
    assert (x["quantity"], x["reason"]) == (100, "U")

    # A sell that crosses: both sides execute at the resting price, with the same match number
    c.enter(5, "S", 50, "AAA", 10_0000)
    _, e_rest = c.expect_ouch("E", user_ref_num=4)
    _, e_take = c.expect_ouch("E", user_ref_num=5)
    assert e_rest["quantity"] == e_take["quantity"] == 50
    assert e_rest["price"] == e_take["price"] == 10_0100
    assert (e_rest["liquidity_flag"], e_take["liquidity_flag"]) == ("A", "R")
    assert e_rest["match_number"] == e_take["match_number"]

    # An IOC that finds nothing is canceled at once with reason 'I'
    c.enter(6, "S", 10, "BBB", 5_0000, tif="3")
    c.expect_ouch("A", user_ref_num=6)
    _, x = c.expect_ouch("C", user_ref_num=6)
    assert x["reason"] == "I"

    # Cancel of everything left
    c.send("X", user_ref_num=4, quantity=0)
    _, x = c.expect_ouch("C", user_ref_num=4)
    assert x["quantity"] == 150

    # Quiet for over a second: the venue heartbeats
    c.expect(lambda e: isinstance(e, Heartbeat), "a server heartbeat", timeout=5)

    # A resting order; then the connection drops
    c.enter(7, "B", 100, "BBB", 20_0000)
    seq7, _ = c.expect_ouch("A", user_ref_num=7)
    c.close()
    wait_for(lambda: venue.ouch_accounts["APPL01"].connection is None, 5, what="the venue to see the disconnect")

    # While nobody is connected another participant sells into the order: the venue numbers and keeps the fill
    venue.participant_order("BBB", "S", 40, 20_0000)
    wait_for(lambda: venue.ouch_accounts["APPL01"].store.next_sequence > seq7 + 1, 5, what="the stored fill")

    # Reconnect asking for everything after the last message seen: the fill is replayed with its number
    c3 = OuchClient(venue.ouch_address, next_sequence=seq7 + 1)
    acc = c3.expect(lambda e: isinstance(e, LoginAccepted), "Login Accepted after reconnect")
    assert acc.sequence == seq7 + 1
    seq, fill = c3.expect_ouch("E", user_ref_num=7)
    assert seq == seq7 + 1 and fill["quantity"] == 40 and fill["liquidity_flag"] == "A"

    # A later reconnect may ask for the whole day again: the same stream, with the same numbers
    c3.close()
    wait_for(lambda: venue.ouch_accounts["APPL01"].connection is None, 5, what="the venue to see the disconnect")
    c3 = OuchClient(venue.ouch_address, next_sequence=1)
    assert c3.expect(lambda e: isinstance(e, LoginAccepted), "Login Accepted with replay").sequence == 1
    first, replayed = c3.expect_ouch("A", user_ref_num=1)
    assert first == 1 and replayed["order_reference_number"] == a["order_reference_number"]
    seq, _ = c3.expect_ouch("E", user_ref_num=7)
    assert seq == seq7 + 1

    # Logout: the venue closes the connection
    c3.sess.logout()
    c3.flush()
    wait_for(lambda: c3.read(0.05) or c3.eof, 5, what="the venue to close after Logout Request")
    c3.close()


def test_end_of_session_reaches_a_logged_in_client(tmp_path):
    cfg = VenueConfig(symbols=("AAA",), rate=0, feed_port=free_udp_port(), retransmit_port=0, ouch_port=0,
                      fix_port=0, state_dir=str(tmp_path))
    v = Venue(cfg).start()
    try:
        c = OuchClient(v.ouch_address)
        c.expect(lambda e: isinstance(e, LoginAccepted), "Login Accepted")
    finally:
        v.stop()
    c.expect(lambda e: isinstance(e, EndOfSession), "End of Session")
    c.close()
