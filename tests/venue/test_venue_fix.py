"""The venue's FIX 4.4 acceptor over real TCP on loopback, scripted like a QuickFIX acceptance test.

The client side is raw FIX from `fix44.encode` with every MsgSeqNum chosen by the script; every message
the venue sends is framed here by its CheckSum field, parsed by the independent `simplefix` library and
checked by `check_venue_message` (BodyLength, CheckSum, header, CompIDs, required tags per MsgType) and
by the client's sequence tracking (one up per message; PossDup resends only for numbers already passed).
"""

import re
import socket
import time

import pytest
import simplefix

from appliance.config.schema import VenueConfig
from appliance.gateway import fix44 as fx
from appliance.gateway import ouch_descriptor as ouch
from appliance.gateway.soupbin_session import LoginAccepted, SequencedData, SoupClientSession
from appliance.venue.server import Venue
from tests.support import free_udp_port, wait_for

VENUE = "VENUE"
CLIENT = "APPLIANCE"
TIMEOUT = 5.0  # seconds to wait for any one answer from the venue
MAX_READS = 10_000  # recv calls per wait, whatever the deadline says

# What the venue must put in each MsgType it sends (body tags; the header is checked for all).
REQUIRED_TAGS = {
    "8": (37, 11, 17, 150, 39, 55, 54, 151, 14, 6),
    "9": (37, 11, 41, 39, 434),
    "j": (45, 372, 380),
    "3": (45,),
    "A": (98, 108),
    "5": (),
    "0": (),
    "1": (112,),
    "2": (7, 16),
    "4": (36,),
}
HEADER = {8, 9, 35, 49, 56, 34, 52, 43, 97, 122}
UTC_TIMESTAMP = re.compile(r"\d{8}-\d{2}:\d{2}:\d{2}(\.\d{3,9})?")


# ---- what the venue sends -------------------------------------------------------------------------
class Msg:
    """One message from the venue as simplefix parsed it: fields by tag (str values), the raw bytes."""

    def __init__(self, raw: bytes, parsed: simplefix.FixMessage):
        self.raw = raw
        self.pairs = [(int(t), v.decode("latin-1")) for t, v in parsed.pairs]
        self.fields = dict(reversed(self.pairs))

    @property
    def type(self) -> str:
        return self.fields[35]

    @property
    def seq(self) -> int:
        return int(self.fields[34])

    @property
    def poss_dup(self) -> bool:
        return self.fields.get(43) == "Y"

    def get(self, tag: int):
        return self.fields.get(tag)

    def __getitem__(self, tag: int) -> str:
        return self.fields[tag]

    def body(self) -> list[tuple[int, str]]:
        """The fields outside the standard header and trailer (what a resend must repeat unchanged)."""
        return [(t, v) for t, v in self.pairs if t not in HEADER and t != 10]

    def __repr__(self):
        return "|".join(f"{t}={v}" for t, v in self.pairs)


def check_venue_message(raw: bytes, target: str = CLIENT) -> Msg:
    """Validate one framed message from the venue independently of the appliance's codec; return it parsed."""
    parser = simplefix.FixParser()
    parser.append_buffer(raw)
    parsed = parser.get_message()
    assert parsed is not None, f"simplefix found no message in {raw!r}"
    assert parser.get_message() is None, f"more than one message in {raw!r}"
    msg = Msg(raw, parsed)
    tags = [t for t, _ in msg.pairs]
    assert tags[:3] == [8, 9, 35] and tags[-1] == 10, f"header/trailer order wrong: {msg}"
    assert len(set(tags)) == len(tags), f"a tag repeats: {msg}"
    assert msg[8] == "FIX.4.4", msg
    # BodyLength: the bytes after the SOH ending 9=, up to and including the SOH before 10=.
    body_start = raw.index(b"\x019=") + 1
    body_start = raw.index(b"\x01", body_start) + 1
    trailer = raw.rindex(b"\x0110=") + 1
    assert int(msg[9]) == trailer - body_start, f"BodyLength {msg[9]} but the body is {trailer - body_start}: {msg}"
    assert re.fullmatch(r"\d{3}", msg[10]), msg
    assert int(msg[10]) == sum(raw[:trailer]) % 256, f"CheckSum {msg[10]} wrong: {msg}"
    assert parsed.encode() == raw, "simplefix re-encodes (its own 9 and 10) to different bytes"
    assert msg.get(49) == VENUE and msg.get(56) == target, f"CompIDs: {msg}"
    assert (msg.get(34) or "").isdigit() and int(msg[34]) >= 1, msg
    assert UTC_TIMESTAMP.fullmatch(msg.get(52) or ""), f"SendingTime: {msg}"
    if msg.poss_dup:
        assert UTC_TIMESTAMP.fullmatch(msg.get(122) or ""), f"PossDup without OrigSendingTime: {msg}"
        assert msg[122] <= msg[52], f"OrigSendingTime after SendingTime: {msg}"
    assert msg.type in REQUIRED_TAGS, f"the venue sent an unexpected MsgType: {msg}"
    missing = [t for t in REQUIRED_TAGS[msg.type] if msg.get(t) is None]
    assert not missing, f"MsgType {msg.type} lacks tags {missing}: {msg}"
    return msg


def take_frame(buf: bytes):
    """(one complete message, the rest) from the front of `buf`, framed by the CheckSum field; None if short."""
    if not buf:
        return None
    assert buf.startswith(b"8=FIX.4.4\x01"[:len(buf)]), f"junk from the venue: {buf[:80]!r}"
    i = buf.find(b"\x0110=")
    if i < 0 or len(buf) < i + 8:
        return None
    end = i + 8  # SOH, "10=", three digits, SOH
    assert buf[end - 1:end] == b"\x01", f"CheckSum field malformed: {buf[:end + 8]!r}"
    return buf[:end], buf[end:]


# ---- the client -----------------------------------------------------------------------------------
class FixClient:
    """The initiator, by hand: sends raw FIX with the next (or a chosen) MsgSeqNum and reads the venue's
    messages with a deadline. Sequence state lives here, across connections, like a real session's store."""

    def __init__(self, address, sender: str = CLIENT):
        self.address = address
        self.sender = sender
        self.next_seq = 1  # the MsgSeqNum of our next message
        self.venue_seq = 0  # the venue's last in-sequence MsgSeqNum seen
        self.sock: socket.socket | None = None
        self.buf = b""
        self.received: list[Msg] = []
        self.by_seq: dict[int, Msg] = {}  # first (non-resent) copy of each venue message

    def connect(self) -> "FixClient":
        self.sock = socket.create_connection(self.address, timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        return self

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, msg_type: str, fields=(), *, seq: int | None = None, poss_dup: bool = False,
             orig_sending_time: bytes | None = None) -> int:
        """Write one message; returns its MsgSeqNum (the next one unless `seq` is given)."""
        seq = self.next_seq if seq is None else seq
        raw = fx.encode(msg_type.encode(), list(fields), self.sender, VENUE, seq, time.time(), poss_dup=poss_dup,
                        orig_sending_time=orig_sending_time)
        self.sock.sendall(raw)
        self.next_seq = max(self.next_seq, seq + 1)
        return seq

    def _read(self, deadline: float) -> bytes:
        """Bytes from the socket before `deadline` (b"" once the venue has closed)."""
        remaining = deadline - time.monotonic()
        if remaining > 0:
            self.sock.settimeout(remaining)
            try:
                return self.sock.recv(65536)
            except socket.timeout:
                pass
        pytest.fail(f"the venue sent nothing more (and did not close) in time; last seen: {self.received[-1:]}")

    def recv(self, *, gap: bool = False, timeout: float = TIMEOUT) -> Msg:
        """The next message, validated. Its MsgSeqNum must be one above the last unless it is a PossDup
        resend of a number already passed, or `gap` says a jump is expected (then it must be a jump)."""
        deadline = time.monotonic() + timeout
        for _ in range(MAX_READS):
            framed = take_frame(self.buf)
            if framed is not None:
                raw, self.buf = framed
                return self._accept(check_venue_message(raw, self.sender), gap)
            data = self._read(deadline)
            if not data:
                pytest.fail(f"the venue closed the connection (pending {self.buf!r})")
            self.buf += data
        pytest.fail("too many reads without a complete message")

    def _accept(self, msg: Msg, gap: bool) -> Msg:
        if msg.poss_dup:
            assert msg.seq <= self.venue_seq, f"PossDup message {msg.seq} beyond anything sent ({self.venue_seq})"
        elif gap:
            assert msg.seq > self.venue_seq + 1, f"expected a sequence gap after {self.venue_seq}: {msg}"
            self.venue_seq = msg.seq
        else:
            assert msg.seq == self.venue_seq + 1, f"MsgSeqNum {msg.seq}, expected {self.venue_seq + 1}: {msg}"
            self.venue_seq = msg.seq
        if not msg.poss_dup:
            self.by_seq.setdefault(msg.seq, msg)
        self.received.append(msg)
        return msg

    def expect(self, msg_type: str, tags: dict | None = None, **kw) -> Msg:
        """The next message must be `msg_type` carrying these tag values (str(value) compared)."""
        msg = self.recv(**kw)
        assert msg.type == msg_type, f"expected 35={msg_type}, got {msg}"
        for tag, value in (tags or {}).items():
            assert msg.get(tag) == str(value), f"expected {tag}={value}, got {tag}={msg.get(tag)}: {msg}"
        return msg

    def expect_closed(self, timeout: float = TIMEOUT) -> list[Msg]:
        """Read until the venue closes the socket; returns any (validated) messages that came first."""
        deadline = time.monotonic() + timeout
        got = []
        for _ in range(MAX_READS):
            framed = take_frame(self.buf)
            if framed is not None:
                raw, self.buf = framed
                got.append(check_venue_message(raw, self.sender))
                continue
            if not self._read_or_eof(deadline):
                assert not self.buf, f"partial message before close: {self.buf!r}"
                return got
        pytest.fail("too many reads waiting for the close")

    def _read_or_eof(self, deadline) -> bool:
        data = self._read(deadline)
        self.buf += data
        return bool(data)

    def logon(self, *, gap: bool = False) -> Msg:
        self.send("A", [(98, 0), (108, 30)])
        return self.expect("A", {98: 0, 108: 30}, gap=gap)


def transact_time() -> bytes:
    return fx.format_utc_timestamp(time.time())


def new_order(cl, side, qty, price="10.00", symbol="AAA", ord_type="2", tif="0"):
    fields = [(11, cl), (55, symbol), (54, side), (60, transact_time()), (38, qty), (40, ord_type)]
    if price is not None:
        fields.append((44, price))
    return fields + [(59, tif)]


def replace(orig, cl, qty, price, side="1", symbol="AAA"):
    return [(41, orig), (11, cl), (55, symbol), (54, side), (60, transact_time()), (38, qty), (40, "2"),
            (44, price), (59, "0")]


def cancel(orig, cl, side="1", symbol="AAA"):
    return [(41, orig), (11, cl), (55, symbol), (54, side), (60, transact_time())]


# ---- an OUCH counterparty -------------------------------------------------------------------------
class OuchCounterparty:
    """A SoupBinTCP/OUCH 5.0 client on the venue's OUCH port that enters orders against the FIX client."""

    def __init__(self, address):
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.sess = SoupClientSession("APPL01", "secret")
        self.sess.connect()
        self.sock.sendall(self.sess.data_to_send())
        self.next_ref = 1
        self.pending: list = []
        ev = self._next_event(lambda e: isinstance(e, LoginAccepted))
        assert isinstance(ev, LoginAccepted)

    def _next_event(self, want, timeout: float = TIMEOUT):
        deadline = time.monotonic() + timeout
        for _ in range(MAX_READS):
            while self.pending:
                ev = self.pending.pop(0)
                if want(ev):
                    return ev
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            assert data, f"OUCH connection closed: {self.sess.close_reason}"
            self.pending += self.sess.on_bytes(data)
        pytest.fail(f"no expected OUCH event within {timeout} s")

    def enter(self, side: str, quantity: int, price: int, symbol: str = "AAA") -> int:
        ref = self.next_ref
        self.next_ref += 1
        self.sess.send_unsequenced(ouch.encode_inbound(
            "O", user_ref_num=ref, side=side, quantity=quantity, symbol=symbol, price=price, time_in_force="0",
            display="Y", capacity="A", intermarket_sweep_eligibility="N", cross_type="N", cl_ord_id=f"x{ref}"))
        self.sock.sendall(self.sess.data_to_send())
        return ref

    def expect(self, mtype: str, ref: int) -> dict:
        """The next OUCH report of type `mtype` for order `ref` (other reports are skipped)."""
        ev = self._next_event(lambda e: isinstance(e, SequencedData)
                              and ouch.decode_outbound(e.payload)["type"] == mtype
                              and ouch.decode_outbound(e.payload).get("user_ref_num") == ref)
        return ouch.decode_outbound(ev.payload)

    def close(self):
        self.sock.close()


# ---- fixtures -------------------------------------------------------------------------------------
class Venues:
    """Starts venues (symbols AAA and BBB, no synthetic flow) and stops each exactly once."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.running: list[Venue] = []

    def start(self, state_dir=None) -> Venue:
        cfg = VenueConfig(symbols=("AAA", "BBB"), rate=0, ouch_port=0, fix_port=0, retransmit_port=0,
                          feed_port=free_udp_port(), state_dir=str(state_dir or self.tmp_path / "venue"),
                          fix_comp_id=VENUE, fix_client_comp_id=CLIENT)
        v = Venue(cfg)
        self.running.append(v)
        return v.start()

    def stop(self, v: Venue) -> None:
        self.running.remove(v)
        v.stop()


@pytest.fixture
def venues(tmp_path):
    vs = Venues(tmp_path)
    try:
        yield vs
    finally:
        for v in list(vs.running):
            vs.stop(v)


@pytest.fixture
def venue(venues):
    return venues.start()


@pytest.fixture
def client(venue):
    c = FixClient(venue.fix_address).connect()
    try:
        yield c
    finally:
        c.close()


def session_gone(venue) -> bool:
    """The venue has seen the FIX connection close (its session is free for the next Logon)."""
    return not venue.fix_owner_conn


# ---- the scripts ----------------------------------------------------------------------------------
def test_order_entry_session_script(venue, client):
    """Logon, test request, orders (new, rejects, replace, fill by an OUCH counterparty, cancel, cancel
    reject), an unsupported message, a resend of old messages and the logout, each answered as FIX 4.4 says."""
    c = client
    # 1. Logon -> Logon.
    assert c.logon().seq == 1
    # 2. TestRequest -> Heartbeat echoing the TestReqID; a Heartbeat from us is taken silently (the next
    #    message is the answer to the order after it, one MsgSeqNum up).
    c.send("1", [(112, "X1")])
    c.expect("0", {112: "X1"})
    c.send("0")
    # 3. NewOrderSingle -> ER New; the same ClOrdID again, an unknown symbol and a stop order -> ER Rejected.
    c.send("D", new_order("O1", "1", 100, "10.00"))
    new = c.expect("8", {34: 3, 11: "O1", 150: 0, 39: 0, 55: "AAA", 54: 1, 38: 100, 44: "10.0000", 151: 100, 14: 0})
    assert new[37] != "NONE"
    c.send("D", new_order("O1", "1", 100, "10.00"))
    c.expect("8", {11: "O1", 150: 8, 39: 8, 103: 6, 151: 0, 14: 0})
    c.send("D", new_order("O3", "1", 100, "10.00", symbol="ZZZZ"))
    rej = c.expect("8", {11: "O3", 150: 8, 39: 8, 55: "ZZZZ", 103: 1})
    assert rej.get(58), rej
    c.send("D", new_order("O4", "1", 100, None, ord_type="3") + [(99, "9.50")])
    rej = c.expect("8", {11: "O4", 150: 8, 39: 8, 103: 99})
    assert "OrdType" in (rej.get(58) or ""), rej
    # 4. OrderCancelReplaceRequest: 200 @ 10.01 -> ER Replaced.
    c.send("G", replace("O1", "O2", 200, "10.01"))
    # OrdStatus is the order's state (0 New): FIX 4.4 marks 5 (Replaced) "no longer used" there.
    replaced = c.expect("8", {11: "O2", 41: "O1", 150: 5, 39: 0, 38: 200, 44: "10.0100", 151: 200, 14: 0})
    assert replaced[37] == new[37]  # OrderID stays the same through a replace
    # 5. An OUCH sell of 50 @ 10.01 trades against the replaced buy -> ER Trade, partially filled.
    ouch_cp = OuchCounterparty(venue.ouch_address)
    try:
        ref = ouch_cp.enter("S", 50, 100100)
        fill = c.expect("8", {11: "O2", 150: "F", 39: 1, 32: 50, 31: "10.0100", 14: 50, 151: 150, 6: "10.0100"})
        assert fill[37] == replaced[37] and fill[17] not in (new[17], replaced[17])
        assert ouch_cp.expect("E", ref)["quantity"] == 50
    finally:
        ouch_cp.close()
    # 6. OrderCancelRequest -> ER Canceled; a cancel of an unknown ClOrdID -> OrderCancelReject.
    c.send("F", cancel("O2", "C1"))
    c.expect("8", {11: "C1", 41: "O2", 150: 4, 39: 4, 151: 0, 14: 50})
    c.send("F", cancel("NOPE", "C2"))
    c.expect("9", {11: "C2", 41: "NOPE", 434: 1, 102: 1})
    # 7. An application message the venue does not take -> BusinessMessageReject (or a session Reject).
    seq = c.send("R", [(131, "Q1"), (146, 1), (55, "AAA")])
    rej = c.recv()
    assert rej.type in ("j", "3") and rej[45] == str(seq), rej
    if rej.type == "j":
        assert rej[372] == "R" and rej[380] == "3", rej
    # 10. ResendRequest 2..4: the Heartbeat (admin) is gap-filled, the two ERs come again with PossDupFlag,
    #     OrigSendingTime = their first SendingTime, and the same body.
    assert c.venue_seq == 11
    c.send("2", [(7, 2), (16, 4)])
    c.expect("4", {34: 2, 123: "Y", 36: 3, 43: "Y"})
    for s in (3, 4):
        again = c.expect("8", {34: s, 43: "Y", 122: c.by_seq[s][52]})
        assert again.body() == c.by_seq[s].body(), (again, c.by_seq[s])
    c.send("1", [(112, "X2")])
    c.expect("0", {112: "X2", 34: 12})  # the resend did not move the venue's numbers
    # 11. Logout -> Logout; we close our side and the venue closes the connection and frees the session.
    c.send("5")
    c.expect("5")
    c.sock.shutdown(socket.SHUT_WR)
    assert c.expect_closed() == []
    wait_for(lambda: session_gone(venue), TIMEOUT, what="the venue to drop the FIX connection")


def test_unknown_sender_comp_id_gets_a_logout_and_the_socket_closes(venue):
    """A Logon from a SenderCompID the venue does not know is answered with a Logout saying so, then closed."""
    c = FixClient(venue.fix_address, sender="INTRUDER").connect()
    try:
        c.send("A", [(98, 0), (108, 30)])
        got = c.expect_closed()
        assert [m.type for m in got] == ["5"], got
        assert "unknown SenderCompID" in got[0].get(58), got
    finally:
        c.close()


def test_second_connection_for_a_logged_on_session_is_refused(venue, client):
    """While APPLIANCE is logged on, a second connection logging on as APPLIANCE gets a Logout and is
    closed; the first session carries on undisturbed."""
    client.logon()
    other = FixClient(venue.fix_address).connect()
    try:
        other.send("A", [(98, 0), (108, 30)])
        got = other.expect_closed()
        assert [m.type for m in got] == ["5"] and "already connected" in got[0].get(58), got
    finally:
        other.close()
    client.send("1", [(112, "STILL")])
    client.expect("0", {112: "STILL", 34: 2})


def test_sequence_gap_from_the_client_is_recovered_by_gap_fill(venue, client):
    """A message two above the expected MsgSeqNum makes the venue ask for a resend from the expected one;
    a SequenceReset-GapFill answers it, the queued message is then processed, and the session continues."""
    c = client
    c.logon()
    expected = c.next_seq
    c.send("1", [(112, "G1")], seq=expected + 2)
    c.expect("2", {7: expected, 16: 0})
    stamp = fx.format_utc_timestamp(time.time())
    c.send("4", [(123, "Y"), (36, expected + 2)], seq=expected, poss_dup=True, orig_sending_time=stamp)
    c.expect("0", {112: "G1"})  # the queued TestRequest, processed once the gap is filled
    # A PossDup copy of a number already passed is ignored without a word.
    c.send("1", [(112, "DUP")], seq=expected + 1, poss_dup=True, orig_sending_time=stamp)
    assert c.next_seq == expected + 3
    c.send("1", [(112, "G2")])
    c.expect("0", {112: "G2"})


def test_fill_while_disconnected_is_replayed_once_after_reconnect(venue, client):
    """A fill made while the FIX client is away is numbered and stored; after the next Logon shows the gap,
    a ResendRequest brings the missed ER (PossDupFlag, OrigSendingTime) exactly once and gap-fills the Logon."""
    c = client
    c.logon()
    c.send("D", new_order("B1", "1", 100, "10.00"))
    c.expect("8", {11: "B1", 150: 0, 39: 0, 151: 100})
    assert venue.disconnect_all() >= 1
    assert c.expect_closed() == []
    c.close()
    wait_for(lambda: session_gone(venue), TIMEOUT, what="the venue to see the FIX connection close")
    ouch_cp = OuchCounterparty(venue.ouch_address)
    try:
        ref = ouch_cp.enter("S", 40, 100000)
        assert ouch_cp.expect("E", ref)["quantity"] == 40  # the FIX side's ER is made in the same step
    finally:
        ouch_cp.close()
    missed = c.venue_seq + 1
    c.connect()
    logon = c.logon(gap=True)
    assert logon.seq == missed + 1, logon  # exactly one message was sent while we were away
    c.send("2", [(7, missed), (16, 0)])
    fill = c.expect("8", {34: missed, 43: "Y", 11: "B1", 150: "F", 39: 1, 32: 40, 31: "10.0000", 14: 40,
                          151: 60})
    assert fill[122] <= logon[52]
    c.expect("4", {34: missed + 1, 123: "Y", 36: missed + 2, 43: "Y"})  # the Logon is not resent
    c.send("1", [(112, "R1")])
    c.expect("0", {112: "R1", 34: missed + 2})
    fills = [m for m in c.received if m.type == "8" and m.get(150) == "F"]
    assert len(fills) == 1 and len({m[17] for m in fills}) == 1, fills


def test_a_new_venue_on_the_same_state_dir_resumes_the_sequence_numbers(venues, tmp_path):
    """Sequence numbers and sent messages persist in state_dir: a restarted venue continues the numbering
    in both directions and can still resend the ER its predecessor sent."""
    first = venues.start(tmp_path / "state")
    c = FixClient(first.fix_address).connect()
    try:
        c.logon()
        c.send("D", new_order("P1", "2", 10, "11.00", symbol="BBB"))
        er = c.expect("8", {11: "P1", 150: 0, 55: "BBB", 54: 2})
        c.send("5")
        c.expect("5")
        c.close()
        wait_for(lambda: session_gone(first), TIMEOUT, what="the first venue to drop the FIX connection")
        venues.stop(first)
        second = venues.start(tmp_path / "state")
        c.address = second.fix_address
        c.connect()
        assert c.logon().seq == 4  # Logon 1, ER 2, Logout 3 went out from the first venue
        c.send("2", [(7, 2), (16, 2)])
        again = c.expect("8", {34: 2, 43: "Y", 122: er[52]})
        assert again.body() == er.body()
        c.send("1", [(112, "P")])
        c.expect("0", {112: "P", 34: 5})
    finally:
        c.close()
