"""SoupBinTCP sessions, scripted message by message with time driven explicitly (no sockets, no sleeping)."""

import pytest

from appliance.gateway import ouch_descriptor as ou
from appliance.gateway import soupbintcp_descriptor as sb
from appliance.gateway.soupbin_session import (
    ClientLoggedIn, ClientRejected, Debug, Disconnect, EndOfSession, Heartbeat, LoginAccepted, LoginRejected,
    LogoutRequested, SequencedData, SoupClientSession, SoupServerSession, UnsequencedData,
)

CREDS = {"ALICE": "secret", "BOB": "hunter2"}


def new_server(**kw):
    srv = SoupServerSession("SESS1", CREDS, **kw)
    srv.connection_made(now=0.0)
    return srv


def login(srv, cli, now=0.0):
    """Connect the client, carry the login both ways; returns (server events, client events)."""
    cli.connect(now)
    srv_events = srv.on_bytes(cli.data_to_send(), now)
    return srv_events, cli.on_bytes(srv.data_to_send(), now)


def test_login_accepted_then_sequenced_data_is_numbered_from_one():
    srv, cli = new_server(), SoupClientSession("ALICE", "secret")
    cli.connect(0.0)
    request = cli.data_to_send()
    assert request == sb.login_request("ALICE", "secret", "", 1)
    assert srv.on_bytes(request, 0.0) == [ClientLoggedIn("ALICE", "SESS1", 1, 0)]
    reply = srv.data_to_send()
    assert reply == sb.login_accepted("SESS1", 1)
    assert cli.on_bytes(reply, 0.0) == [LoginAccepted("SESS1", 1)]
    assert (srv.state, cli.state, cli.session) == ("established", "logged_in", "SESS1")

    assert [srv.send_sequenced(m, 0.1) for m in (b"m1", b"m2", b"m3")] == [1, 2, 3]
    wire = srv.data_to_send()
    assert wire == sb.sequenced(b"m1") + sb.sequenced(b"m2") + sb.sequenced(b"m3")
    assert cli.on_bytes(wire[:7], 0.1) == [SequencedData(1, b"m1")]          # TCP splits packets anywhere
    assert cli.on_bytes(wire[7:], 0.1) == [SequencedData(2, b"m2"), SequencedData(3, b"m3")]
    assert cli.next_sequence == 4 and srv.next_sequence == 4


@pytest.mark.parametrize("username, password, session, reason", [
    ("ALICE", "wrong", "", "A"),                         # bad password
    ("MALLOY", "secret", "", "A"),                       # unknown user
    ("ALICE", "secret", "OTHER", "S"),                   # unknown session
])
def test_login_rejected_with_the_spec_reason_then_closed(username, password, session, reason):
    srv, cli = new_server(), SoupClientSession(username, password, session=session)
    srv_events, cli_events = login(srv, cli)
    label = sb.REJECT_REASONS[reason]
    assert srv_events == [ClientRejected(username, reason), Disconnect(f"login rejected ({label})")]
    assert cli_events == [LoginRejected(reason), Disconnect(f"login rejected ({label})")]
    assert srv.closed and cli.closed and srv.state == "closed"
    assert srv.data_to_send() == b""


def test_credentials_may_be_a_callback():
    seen = []
    srv = SoupServerSession("SESS1", lambda u, p: seen.append((u, p)) or p == u.lower())
    srv.connection_made(0.0)
    srv_events, _ = login(srv, SoupClientSession("CAROL", "carol"))
    assert seen == [("CAROL", "carol")] and srv_events[0] == ClientLoggedIn("CAROL", "SESS1", 1, 0)


def test_heartbeats_both_ways_only_after_a_second_of_silence():
    srv, cli = new_server(), SoupClientSession("ALICE", "secret")
    assert srv.on_timer(5.0) == b""                      # no heartbeats before login
    srv.connection_made(10.0)
    login(srv, cli, now=10.0)
    assert srv.on_timer(10.5) == b"" and cli.on_timer(10.5) == b""
    assert srv.on_timer(11.0) == sb.server_heartbeat()
    assert cli.on_timer(11.0) == sb.client_heartbeat()
    assert srv.on_timer(11.5) == b""                     # the heartbeat itself was sending
    srv.send_sequenced(b"x", 11.8)                       # so is data
    srv.data_to_send()
    assert srv.on_timer(12.5) == b"" and srv.on_timer(12.8) == sb.server_heartbeat()
    assert srv.on_bytes(sb.client_heartbeat(), 12.9) == [Heartbeat()]
    assert cli.on_bytes(sb.server_heartbeat(), 12.9) == [Heartbeat()]


def test_fifteen_seconds_of_silence_is_a_dead_link_on_either_side():
    srv, cli = new_server(), SoupClientSession("ALICE", "secret")
    login(srv, cli)
    t = 0.0
    for _ in range(120):                                 # 30 s of a healthy link, heartbeats both ways
        t += 0.25
        srv.on_bytes(cli.on_timer(t), t)
        cli.on_bytes(srv.on_timer(t), t)
    assert not srv.closed and not cli.closed
    srv.on_timer(t + 14.9)
    assert not srv.closed
    srv.on_timer(t + 15.0)
    assert srv.closed and srv.close_reason == "client silent"
    cli.on_timer(t + 15.0)
    assert cli.closed and cli.close_reason == "server silent"


def test_no_login_request_within_the_timeout_closes():
    srv = new_server()
    srv.on_timer(14.9)
    assert not srv.closed
    srv.on_timer(15.0)
    assert srv.closed and srv.close_reason == "no login request"


def test_reconnect_requests_the_next_number_and_gets_exactly_the_missed_messages():
    srv, cli = new_server(), SoupClientSession("ALICE", "secret")
    login(srv, cli)
    for m in (b"m1", b"m2", b"m3"):
        srv.send_sequenced(m, 1.0)
    assert [e.sequence for e in cli.on_bytes(srv.data_to_send(), 1.0)] == [1, 2, 3]

    srv.send_sequenced(b"m4", 2.0)
    srv.send_sequenced(b"m5", 2.0)
    srv.data_to_send()                                   # written, but the link died: the client never sees them
    srv.connection_lost(2.5)
    cli.connection_lost(2.5)
    assert srv.send_sequenced(b"m6", 3.0) == 6           # stored while nobody is connected
    assert srv.data_to_send() == b""

    srv.connection_made(4.0)
    cli.connect(4.0)
    request = cli.data_to_send()
    assert request == sb.login_request("ALICE", "secret", "SESS1", 4)
    assert srv.on_bytes(request, 4.0) == [ClientLoggedIn("ALICE", "SESS1", 4, 3)]
    reply = srv.data_to_send()
    assert reply == sb.login_accepted("SESS1", 4) + sb.sequenced(b"m4") + sb.sequenced(b"m5") + sb.sequenced(b"m6")
    assert cli.on_bytes(reply, 4.1) == [
        LoginAccepted("SESS1", 4), SequencedData(4, b"m4"), SequencedData(5, b"m5"), SequencedData(6, b"m6")]
    assert srv.send_sequenced(b"m7", 4.2) == 7
    assert cli.on_bytes(srv.data_to_send(), 4.2) == [SequencedData(7, b"m7")]
    assert cli.next_sequence == 8


@pytest.mark.parametrize("requested, start, replayed", [(0, 4, 0), (1, 1, 3), (3, 3, 1), (4, 4, 0), (99, 4, 0)])
def test_requested_sequence_number_chooses_the_replay(requested, start, replayed):
    srv = new_server()
    for m in (b"a", b"b", b"c"):
        srv.send_sequenced(m, 0.0)
    assert srv.on_bytes(sb.login_request("BOB", "hunter2", "", requested), 0.0) == [
        ClientLoggedIn("BOB", "SESS1", start, replayed)]
    assert srv.data_to_send() == sb.login_accepted("SESS1", start) + b"".join(
        sb.sequenced(m) for m in (b"a", b"b", b"c")[start - 1:])


def test_unsequenced_data_carries_ouch_orders_to_the_server():
    srv, cli = new_server(), SoupClientSession("ALICE", "secret")
    with pytest.raises(RuntimeError, match="while disconnected"):
        cli.send_unsequenced(b"x")
    login(srv, cli)
    order = ou.encode_inbound("O", user_ref_num=1, side="B", quantity=100, symbol="AAPL", price=1_503_400,
                              time_in_force="0", display="Y", capacity="A", intermarket_sweep_eligibility="N",
                              cross_type="N", cl_ord_id="C1")
    cli.send_unsequenced(order, 0.5)
    cli.send_unsequenced(ou.encode_inbound("X", user_ref_num=1), 0.5)
    events = srv.on_bytes(cli.data_to_send(), 0.5)
    assert [ou.decode_inbound(e.payload)["type"] for e in events] == ["O", "X"]
    assert events[0] == UnsequencedData(order)


def test_logout_request_makes_the_server_close():
    srv, cli = new_server(), SoupClientSession("ALICE", "secret")
    login(srv, cli)
    cli.logout(1.0)
    assert cli.data_to_send() == sb.logout_request() and cli.state == "logging_out"
    assert srv.on_bytes(sb.logout_request(), 1.0) == [LogoutRequested(), Disconnect("logout")]
    assert srv.closed
    assert srv.on_bytes(sb.client_heartbeat(), 1.1) == []  # nothing is read after closing


def test_end_of_session_then_logins_to_it_are_refused():
    srv, cli = new_server(), SoupClientSession("ALICE", "secret")
    login(srv, cli)
    srv.end_session(5.0)
    assert srv.data_to_send() == sb.end_of_session() and srv.closed
    assert cli.on_bytes(sb.end_of_session(), 5.0) == [EndOfSession(), Disconnect("end of session")]
    srv.connection_made(6.0)
    srv_events, cli_events = login(srv, SoupClientSession("ALICE", "secret"), now=6.0)
    assert srv_events[0] == ClientRejected("ALICE", "S") and cli_events[0] == LoginRejected("S")


def test_data_before_login_closes_the_connection():
    srv = new_server()
    assert srv.on_bytes(sb.debug("hi"), 0.1) == [Debug("hi")]  # debug packets are allowed at any time
    assert srv.on_bytes(sb.unsequenced(b"order") + sb.client_heartbeat(), 0.2) == [Disconnect("data before login")]
    assert srv.data_to_send() == b"" and srv.counters["violations"] == 1


def test_second_login_on_a_live_session_closes_it():
    srv, cli = new_server(), SoupClientSession("ALICE", "secret")
    login(srv, cli)
    assert srv.on_bytes(sb.login_request("ALICE", "secret"), 1.0) == [
        Disconnect("login request on an established session")]


def test_client_refuses_data_before_login_accepted():
    cli = SoupClientSession("ALICE", "secret")
    cli.connect(0.0)
    assert cli.on_bytes(sb.sequenced(b"early"), 0.1) == [Disconnect("data before login accepted")]
    assert cli.counters["violations"] == 1


def test_malformed_streams_are_counted_and_never_raise():
    srv, cli = new_server(), SoupClientSession("ALICE", "secret")
    login(srv, cli)
    junk = (b"\x00\x00"                                  # bad length
            + b"\x00\x01H"                               # a server-only type sent by the client
            + b"\x00\x02R!"                              # heartbeat with the wrong length
            + sb.unsequenced(b"ok")
            + b"\x00\x09U12")                            # truncated by the connection dropping
    assert srv.on_bytes(junk, 1.0) == [UnsequencedData(b"ok")]
    srv.connection_lost(1.1)
    assert srv.counters == {"packets": 2, "bad_length": 2, "unknown_type": 1, "truncated": 1, "violations": 0}

    assert cli.on_bytes(sb.login_request("x", "y") + b"\x00\x03Z!!" + sb.sequenced(b"s"), 1.0) == [
        SequencedData(1, b"s")]
    assert cli.counters["unknown_type"] == 1 and cli.counters["bad_length"] == 1
    assert not cli.closed


def test_malformed_login_request_numeric_closes_without_reply():
    srv = new_server()
    bad = bytearray(sb.login_request("ALICE", "secret"))
    bad[-1] = ord("x")
    assert srv.on_bytes(bytes(bad), 0.0) == [Disconnect("malformed login request")]
    assert srv.data_to_send() == b""


def test_field_widths_are_checked_up_front():
    with pytest.raises(ValueError):
        SoupClientSession("SEVENCH", "pw")
    with pytest.raises(ValueError):
        SoupServerSession("ELEVENCHARS", CREDS)
