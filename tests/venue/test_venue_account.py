"""The venue's record of an OUCH account and the OUCH 5.0 Account Query, against a real venue on loopback.

A SoupBinTCP client enters, cancels and replaces orders and a synthetic participant trades against them;
`Venue.account_record` must then show exactly the orders resting in the engine, the position and the
counts, and an Account Query sent behind a burst of requests must be answered with the next UserRefNum
and numbered after every answer to that burst.
"""

import socket
import time

import pytest

from appliance.config.schema import VenueConfig
from appliance.gateway import ouch_descriptor as ouch
from appliance.gateway.soupbin_session import LoginAccepted, SequencedData, SoupClientSession
from appliance.venue.server import PACK_ACCOUNT_QUERY, Venue
from tests.support import free_udp_port, wait_for

USER = "APPL01"


class Client:
    """A logged-in SoupBinTCP client that keeps every OUCH message the venue sent, by sequence number."""

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=5)
        self.sock.settimeout(0.05)
        self.sess = SoupClientSession(USER, "secret", next_sequence=1)
        self.sess.connect()
        self.flush()
        self.logged_in = False
        self.seen: list[tuple[int, dict]] = []  # (sequence, decoded OUCH) in arrival order
        wait_for(lambda: self.read() or self.logged_in, 10, what="Login Accepted")

    def flush(self):
        data = self.sess.data_to_send()
        if data:
            self.sock.sendall(data)

    def read(self):
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        assert data, "the venue closed the connection"
        for ev in self.sess.on_bytes(data):
            if isinstance(ev, LoginAccepted):
                self.logged_in = True
            elif isinstance(ev, SequencedData):
                self.seen.append((ev.sequence, ouch.decode_outbound(ev.payload)))
        self.flush()

    def wait(self, mtype, what=None, **fields):
        """The first message seen of `mtype` with these fields: (sequence, message); waits up to 10 s."""
        def found():
            for seq, msg in self.seen:
                if msg["type"] == mtype and all(msg[k] == v for k, v in fields.items()):
                    return seq, msg
            self.read()
            return None
        return wait_for(found, 10, what=what or f"OUCH {mtype} {fields}")

    def send(self, mtype, flush=True, **fields):
        self.sess.send_unsequenced(ouch.encode_inbound(mtype, **fields))
        if flush:
            self.flush()

    def enter(self, urn, side, qty, symbol, price, flush=True):
        self.send("O", flush, user_ref_num=urn, side=side, quantity=qty, symbol=symbol, price=price,
                  time_in_force="0", display="Y", capacity="A", intermarket_sweep_eligibility="N", cross_type="N",
                  cl_ord_id=f"c{urn}")

    def replace(self, orig, urn, qty, price, flush=True):
        self.send("U", flush, orig_user_ref_num=orig, user_ref_num=urn, quantity=qty, price=price,
                  time_in_force="0", display="Y", intermarket_sweep_eligibility="N", cl_ord_id=f"c{urn}")

    def close(self):
        self.sock.close()


def start_venue(state_dir) -> Venue:
    # rate 0: no synthetic flow, so every message on the account's stream is an answer the test caused
    cfg = VenueConfig(symbols=("AAA", "BBB"), rate=0, max_orders=4096, history_messages=4096,
                      feed_port=free_udp_port(), retransmit_port=0, ouch_port=0, fix_port=0, state_dir=str(state_dir))
    return Venue(cfg).start()


@pytest.fixture
def venue(tmp_path):
    v = start_venue(tmp_path)
    yield v
    v.stop()


def test_account_query_response_packer_matches_the_descriptor():
    assert PACK_ACCOUNT_QUERY(123_456_789, 42) == ouch.encode_outbound("Q", timestamp=123_456_789,
                                                                       next_user_ref_num=42)
    assert len(PACK_ACCOUNT_QUERY(0, 1)) == 13  # no Appendage Length: optional on 'Q'


def test_record_shows_resting_orders_positions_and_counts_then_the_query_comes_after_every_answer(venue):
    c = Client(venue.ouch_address)
    empty = venue.account_record()
    assert empty == {"open_orders": {}, "positions": {}, "executions": 0, "executed_shares": 0, "entered": 0,
                     "duplicate_user_refs": 0, "last_user_ref": 0, "next_sequence": 1}

    c.enter(1, "B", 100, "AAA", 10_0000)
    c.enter(2, "B", 200, "AAA", 9_9900)
    c.enter(3, "S", 300, "BBB", 20_0000)
    c.enter(4, "S", 50, "BBB", 21_0000)
    for urn in (1, 2, 3, 4):
        c.wait("A", user_ref_num=urn)
    c.send("X", user_ref_num=2, quantity=0)
    c.wait("C", user_ref_num=2)
    c.replace(4, 5, 80, 21_0100)
    c.wait("U", user_ref_num=5)
    # other participants trade against orders 1 (the account buys 60) and 3 (it sells 100)
    venue.participant_order("AAA", "S", 60, 10_0000)
    venue.participant_order("BBB", "B", 100, 20_0000)
    c.wait("E", user_ref_num=1, quantity=60, price=10_0000)
    c.wait("E", user_ref_num=3, quantity=100, price=20_0000)

    rec = venue.account_record(USER, timeout=10)
    assert rec["open_orders"] == {
        1: {"symbol": "AAA", "side": "B", "price": 10_0000, "leaves": 40},
        3: {"symbol": "BBB", "side": "S", "price": 20_0000, "leaves": 200},
        5: {"symbol": "BBB", "side": "S", "price": 21_0100, "leaves": 80},
    }
    assert rec["positions"] == {"AAA": 60, "BBB": -100}
    assert (rec["executions"], rec["executed_shares"]) == (2, 160)
    assert (rec["entered"], rec["duplicate_user_refs"], rec["last_user_ref"]) == (4, 0, 5)
    last_seq = max(seq for seq, _ in c.seen)
    assert last_seq == 8  # A x4, C, U, E x2: nothing else on the stream
    assert rec["next_sequence"] == last_seq + 1

    # A burst in one write, the Account Query last: every answer to the burst is numbered before the response
    c.enter(6, "B", 10, "BBB", 19_0000, flush=False)
    c.send("X", flush=False, user_ref_num=1, quantity=0)
    c.enter(7, "B", 30, "BBB", 20_0000, flush=False)  # takes 30 of the account's own order 3
    c.replace(6, 8, 20, 19_0000, flush=False)
    c.send("Q", flush=False)
    c.flush()
    q_seq, q = c.wait("Q", what="Account Query Response")
    assert q["next_user_ref_num"] == 9
    answers = [c.wait("A", user_ref_num=6), c.wait("C", user_ref_num=1), c.wait("A", user_ref_num=7),
               c.wait("E", user_ref_num=3, quantity=30), c.wait("E", user_ref_num=7, quantity=30),
               c.wait("U", user_ref_num=8)]
    assert max(seq for seq, _ in answers) < q_seq
    assert q_seq == last_seq + len(answers) + 1

    rec = venue.account_record()
    assert rec["open_orders"] == {
        3: {"symbol": "BBB", "side": "S", "price": 20_0000, "leaves": 170},
        5: {"symbol": "BBB", "side": "S", "price": 21_0100, "leaves": 80},
        8: {"symbol": "BBB", "side": "B", "price": 19_0000, "leaves": 20},
    }
    # both sides of the self-match are the account's: bought 30 and sold 30 of BBB
    assert rec["positions"] == {"AAA": 60, "BBB": -100}
    assert (rec["executions"], rec["executed_shares"]) == (4, 220)
    assert (rec["entered"], rec["last_user_ref"], rec["next_sequence"]) == (6, 8, q_seq + 1)
    c.close()


def test_a_reused_user_ref_is_rejected_and_counted(venue):
    c = Client(venue.ouch_address)
    c.send("Q")
    seq, q = c.wait("Q", what="Account Query Response before any order")
    assert (seq, q["next_user_ref_num"]) == (1, 1)

    c.enter(1, "B", 100, "AAA", 10_0000)
    c.wait("A", user_ref_num=1)
    c.enter(1, "S", 100, "BBB", 10_0000)  # Enter naming a used UserRefNum
    c.wait("J", user_ref_num=1, reason=ouch.REJECT_OTHER)
    c.replace(1, 1, 50, 10_0000)  # Replace naming one
    wait_for(lambda: sum(m["type"] == "J" for _, m in c.seen) == 2 or c.read(), 10, what="the second reject")

    rec = venue.account_record()
    assert (rec["entered"], rec["duplicate_user_refs"], rec["last_user_ref"]) == (2, 2, 1)
    assert rec["open_orders"] == {1: {"symbol": "AAA", "side": "B", "price": 10_0000, "leaves": 100}}
    assert rec["next_sequence"] == 5  # Q, A, J, J

    # a participant's fill queued on the engine before the query is numbered before the response
    venue.participant_order("AAA", "S", 30, 10_0000)
    c.send("Q")
    q_seq, _ = c.wait("Q", what="the second Account Query Response", next_user_ref_num=2)
    e_seq, _ = c.wait("E", user_ref_num=1, quantity=30)
    assert e_seq < q_seq
    c.close()


def test_account_record_refuses_an_unknown_account_and_a_stopped_venue(tmp_path):
    venue = start_venue(tmp_path)
    try:
        with pytest.raises(KeyError, match="NOBODY"):
            venue.account_record("NOBODY")
    finally:
        venue.stop()
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="not running"):
        venue.account_record(timeout=5)
    assert time.monotonic() - t0 < 1
