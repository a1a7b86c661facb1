"""Sans-IO SoupBinTCP 4.x sessions: the venue's server side and the gateway's client side.

Neither object touches a socket or a clock of its own. The I/O layer feeds received bytes to
`on_bytes(data, now)` (which returns events), calls `on_timer(now)` periodically (which returns the
bytes to write, heartbeats included), writes whatever `data_to_send()` returns after any call, and
closes the socket once `closed` is true. Time is seconds on any monotonic clock, passed explicitly.

What the spec (SoupBinTCP 4.x) asks, and how it is met here:
- A connection begins with the client's Login Request. A valid one gets Login Accepted carrying
  the number of the next Sequenced Data packet the server will send, then the server streams
  Sequenced Data from there (replaying stored messages first). A blank requested session means
  the current session; requested sequence number 0 means "start with the next new message".
- An invalid login gets Login Rejected ('A' bad username/password, 'S' session not available)
  and the server closes the socket.
- Each side sends a heartbeat when it has sent nothing for 1 second (the client only once logged
  in); a side that hears nothing for 15 seconds treats the link as dead and closes the socket.
- Logout Request: the server terminates the connection. End of Session: the session is over; the
  connection is closed after it.
The spec defines no reply to anything else arriving before a Login Request (or to a second one):
such a connection never started a session, so the server closes it. Packet types a side never
sends are counted and skipped, as are bad lengths; the framer in soupbintcp_descriptor does that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import soupbintcp_descriptor as sb

HEARTBEAT_INTERVAL = 1.0  # send a heartbeat after this long without sending anything
IDLE_TIMEOUT = 15.0       # hear nothing for this long and the link is dead


# ---- events --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoginAccepted:
    """Client: the server accepted the login; `sequence` is the next Sequenced Data number it sends."""
    session: str
    sequence: int


@dataclass(frozen=True)
class LoginRejected:
    """Client: the server refused the login ('A' not authorized, 'S' session not available)."""
    reason: str


@dataclass(frozen=True)
class SequencedData:
    """Client: one Sequenced Data payload and its sequence number in the session."""
    sequence: int
    payload: bytes


@dataclass(frozen=True)
class EndOfSession:
    """Client: the server ended the session."""


@dataclass(frozen=True)
class ClientLoggedIn:
    """Server: a client logged in; `sequence` is where its stream starts, `replayed` how many were resent."""
    username: str
    session: str
    sequence: int
    replayed: int


@dataclass(frozen=True)
class ClientRejected:
    """Server: a login was refused with the given reason code."""
    username: str
    reason: str


@dataclass(frozen=True)
class UnsequencedData:
    """Server: one Unsequenced Data payload from the client."""
    payload: bytes


@dataclass(frozen=True)
class LogoutRequested:
    """Server: the client asked to log out."""


@dataclass(frozen=True)
class Heartbeat:
    """Either side: the peer's heartbeat arrived."""


@dataclass(frozen=True)
class Debug:
    """Either side: a Debug packet's text (the spec lets receivers ignore it)."""
    text: str


@dataclass(frozen=True)
class Disconnect:
    """Either side: this session wants the socket closed (after flushing data_to_send())."""
    reason: str


# ---- shared connection plumbing ------------------------------------------------------------------
class _Endpoint:
    """Framing, outbox, heartbeat and silence timers shared by both sides."""

    def __init__(self, peer: str, heartbeat_interval: float, idle_timeout: float):
        self._peer = peer
        self.heartbeat_interval = heartbeat_interval
        self.idle_timeout = idle_timeout
        self.framer = sb.SoupFramer(sent_by=peer)
        self._out = bytearray()
        self._now = 0.0
        self.last_sent = 0.0
        self.last_received = 0.0
        self.closed = False
        self.close_reason = ""
        self.violations = 0  # well-framed packets that broke the protocol (e.g. data before login)

    @property
    def counters(self) -> dict:
        """Framing counters (packets, bad_length, unknown_type, truncated) plus protocol violations."""
        return dict(self.framer.counters, violations=self.violations)

    def _clock(self, now: float | None) -> float:
        if now is not None:
            self._now = now
        return self._now

    def _reset(self, now: float) -> None:
        self.framer = sb.SoupFramer(sent_by=self._peer)
        self._out.clear()
        self.last_sent = self.last_received = now
        self.closed = False
        self.close_reason = ""

    def _send(self, packet: bytes) -> None:
        self._out += packet
        self.last_sent = self._now

    def _close(self, reason: str, events: list | None = None) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            if events is not None:
                events.append(Disconnect(reason))

    def data_to_send(self) -> bytes:
        """Drain the bytes queued for the peer."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def connection_lost(self, now: float | None = None) -> None:
        """The socket went away (from either end); a partial packet in flight is counted as truncated."""
        self._clock(now)
        self.framer.close()
        self._close(self.close_reason or "connection lost")

    def _packets(self, data: bytes, now: float | None):
        now = self._clock(now)
        if self.closed:
            return []
        packets = self.framer.feed(data)
        if data:
            self.last_received = now
        return packets


# ---- server --------------------------------------------------------------------------------------
class SequencedStore:
    """The session's Sequenced Data payloads, numbered from 1, kept for replay after a reconnect."""

    def __init__(self):
        self._messages: list[bytes] = []

    def append(self, payload: bytes) -> int:
        self._messages.append(bytes(payload))
        return len(self._messages)

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def next_sequence(self) -> int:
        return len(self._messages) + 1

    def get(self, sequence: int) -> bytes:
        return self._messages[sequence - 1]

    def since(self, sequence: int) -> list[bytes]:
        """Every payload from `sequence` on (1-based)."""
        return self._messages[max(sequence, 1) - 1:]


Credentials = Mapping[str, str] | Callable[[str, str], bool]


class SoupServerSession:
    """The venue side of one SoupBinTCP session: logins, the sequenced stream and its replay, heartbeats.

    The session (its id and its numbered messages) outlives TCP connections: call
    `connection_made(now)` for each new connection, then drive it with on_bytes/on_timer.
    `credentials` is a {username: password} mapping or a callable(username, password) -> bool.
    """

    def __init__(self, session_id: str, credentials: Credentials, *, heartbeat_interval: float = HEARTBEAT_INTERVAL,
                 idle_timeout: float = IDLE_TIMEOUT, login_timeout: float = IDLE_TIMEOUT,
                 store: SequencedStore | None = None):
        sb.pack_alpha(session_id, sb.SESSION_WIDTH)  # fits the field, or raises
        self.session_id = session_id.strip(" ")
        self.credentials = credentials
        self.login_timeout = login_timeout
        self.store = store if store is not None else SequencedStore()
        self.ended = False
        self.state = "idle"  # idle -> awaiting_login -> established -> closed
        self.username = ""
        self._conn = _Endpoint("client", heartbeat_interval, idle_timeout)
        self._conn.closed = True
        self._connected_at = 0.0

    # -- delegated connection state --
    @property
    def closed(self) -> bool:
        return self._conn.closed

    @property
    def close_reason(self) -> str:
        return self._conn.close_reason

    @property
    def counters(self) -> dict:
        return self._conn.counters

    @property
    def next_sequence(self) -> int:
        """The number the next send_sequenced() will get."""
        return self.store.next_sequence

    def data_to_send(self) -> bytes:
        return self._conn.data_to_send()

    def connection_made(self, now: float | None = None) -> None:
        """A client connected: wait for its Login Request."""
        now = self._conn._clock(now)
        self._conn._reset(now)
        self._connected_at = now
        self.state = "awaiting_login"
        self.username = ""

    def connection_lost(self, now: float | None = None) -> None:
        self._conn.connection_lost(now)
        self.state = "closed"

    def _disconnect(self, reason: str, events: list) -> None:
        self._conn._close(reason, events)
        self.state = "closed"

    def _authorized(self, username: str, password: str) -> bool:
        if callable(self.credentials):
            return bool(self.credentials(username, password))
        expected = self.credentials.get(username)
        return expected is not None and expected == password

    def _login(self, payload: bytes, events: list) -> None:
        pkt = sb.LREQ_SIZE - sb.HEADER_SIZE
        raw = b"\x00" * sb.HEADER_SIZE + payload[:pkt]
        username = sb.alpha_text(raw[sb.LREQ_USERNAME:sb.LREQ_PASSWORD])
        password = sb.alpha_text(raw[sb.LREQ_PASSWORD:sb.LREQ_SESSION])
        session = sb.alpha_text(raw[sb.LREQ_SESSION:sb.LREQ_SEQUENCE])
        try:
            requested = sb.parse_numeric(raw[sb.LREQ_SEQUENCE:sb.LREQ_SIZE])
        except ValueError:
            self._conn.violations += 1
            self._disconnect("malformed login request", events)
            return
        if not self._authorized(username, password):
            reason = sb.REJECT_NOT_AUTHORIZED
        elif self.ended or (session and session != self.session_id):
            reason = sb.REJECT_SESSION_NOT_AVAILABLE
        else:
            reason = ""
        if reason:
            self._conn._send(sb.login_rejected(reason))
            events.append(ClientRejected(username, reason))
            self._disconnect(f"login rejected ({sb.REJECT_REASONS[reason]})", events)
            return
        # 0 asks for the next new message; a number past the end of the stream cannot be served
        # either, so it starts there too, and Login Accepted tells the client where it stands.
        nxt = self.store.next_sequence
        start = nxt if requested == 0 or requested > nxt else requested
        self._conn._send(sb.login_accepted(self.session_id, start))
        replay = self.store.since(start)
        for message in replay:
            self._conn._send(sb.sequenced(message))
        self.state = "established"
        self.username = username
        events.append(ClientLoggedIn(username, self.session_id, start, len(replay)))

    def on_bytes(self, data: bytes, now: float | None = None) -> list:
        """Feed bytes from the client; returns the events they caused."""
        events: list = []
        for t, payload in self._conn._packets(data, now):
            if self._conn.closed:
                break
            if t == sb.PKT_DEBUG:
                events.append(Debug(payload.decode("ascii", "replace")))
            elif self.state == "awaiting_login":
                if t == sb.PKT_LOGIN_REQUEST:
                    self._login(payload, events)
                else:
                    self._conn.violations += 1
                    self._disconnect("data before login", events)
            elif t == sb.PKT_UNSEQUENCED:
                events.append(UnsequencedData(payload))
            elif t == sb.PKT_CLIENT_HEARTBEAT:
                events.append(Heartbeat())
            elif t == sb.PKT_LOGOUT_REQUEST:
                events.append(LogoutRequested())
                self._disconnect("logout", events)
            else:  # a second Login Request on a live session
                self._conn.violations += 1
                self._disconnect("login request on an established session", events)
        return events

    def on_timer(self, now: float | None = None) -> bytes:
        """Heartbeat if quiet for a second; close on 15 s of client silence or no login. Returns bytes to send."""
        c = self._conn
        now = c._clock(now)
        if not c.closed:
            if self.state == "awaiting_login" and now - self._connected_at >= self.login_timeout:
                self._disconnect("no login request", [])
            elif self.state == "established":
                if now - c.last_received >= c.idle_timeout:
                    self._disconnect("client silent", [])
                elif now - c.last_sent >= c.heartbeat_interval:
                    c._send(sb.server_heartbeat())
        return c.data_to_send()

    def send_sequenced(self, payload: bytes, now: float | None = None) -> int:
        """Append a message to the session's stream (sent now if a client is logged in); returns its number."""
        self._conn._clock(now)
        seq = self.store.append(payload)
        if self.state == "established" and not self._conn.closed:
            self._conn._send(sb.sequenced(payload))
        return seq

    def send_debug(self, text: str, now: float | None = None) -> None:
        self._conn._clock(now)
        if not self._conn.closed:
            self._conn._send(sb.debug(text))

    def end_session(self, now: float | None = None) -> None:
        """End the session: End of Session to a logged-in client, then close; later logins get 'S'."""
        self._conn._clock(now)
        self.ended = True
        if not self._conn.closed:
            if self.state == "established":
                self._conn._send(sb.end_of_session())
            self._disconnect("end of session", [])


# ---- client --------------------------------------------------------------------------------------
class SoupClientSession:
    """The gateway side of a SoupBinTCP session: login (and re-login with the next expected number), heartbeats.

    `next_sequence` is the number of the next Sequenced Data packet expected; logging in asks for
    it, so a reconnect replays exactly the messages missed. `session` starts blank (= current) and
    becomes the server's session id once a login is accepted.
    """

    def __init__(self, username: str, password: str, *, session: str = "", next_sequence: int = 1,
                 heartbeat_interval: float = HEARTBEAT_INTERVAL, idle_timeout: float = IDLE_TIMEOUT):
        sb.pack_alpha(username, sb.USERNAME_WIDTH)
        sb.pack_alpha(password, sb.PASSWORD_WIDTH)
        sb.pack_alpha(session, sb.SESSION_WIDTH)
        self.username = username
        self.password = password
        self.session = session.strip(" ")
        self.next_sequence = next_sequence
        self.state = "disconnected"  # disconnected -> logging_in -> logged_in -> closed
        self._conn = _Endpoint("server", heartbeat_interval, idle_timeout)
        self._conn.closed = True

    @property
    def closed(self) -> bool:
        return self._conn.closed

    @property
    def close_reason(self) -> str:
        return self._conn.close_reason

    @property
    def counters(self) -> dict:
        return self._conn.counters

    def data_to_send(self) -> bytes:
        return self._conn.data_to_send()

    def connect(self, now: float | None = None) -> None:
        """A new TCP connection is up: queue the Login Request for the known session and next number."""
        now = self._conn._clock(now)
        self._conn._reset(now)
        self.state = "logging_in"
        self._conn._send(sb.login_request(self.username, self.password, self.session, self.next_sequence))

    def connection_lost(self, now: float | None = None) -> None:
        """The socket is gone; session and next_sequence are kept for the next connect()."""
        self._conn.connection_lost(now)
        self.state = "disconnected"

    def _disconnect(self, reason: str, events: list, state: str = "closed") -> None:
        self._conn._close(reason, events)
        self.state = state

    def on_bytes(self, data: bytes, now: float | None = None) -> list:
        """Feed bytes from the server; returns the events they caused."""
        events: list = []
        for t, payload in self._conn._packets(data, now):
            if self._conn.closed:
                break
            if t == sb.PKT_DEBUG:
                events.append(Debug(payload.decode("ascii", "replace")))
            elif t == sb.PKT_SERVER_HEARTBEAT:
                events.append(Heartbeat())
            elif self.state == "logging_in":
                if t == sb.PKT_LOGIN_ACCEPTED:
                    raw = b"\x00" * sb.HEADER_SIZE + payload
                    try:
                        seq = sb.parse_numeric(raw[sb.LACC_SEQUENCE:sb.LACC_SIZE])
                    except ValueError:
                        self._conn.violations += 1
                        self._disconnect("malformed login accepted", events)
                        continue
                    self.session = sb.alpha_text(raw[sb.LACC_SESSION:sb.LACC_SEQUENCE])
                    self.next_sequence = seq
                    self.state = "logged_in"
                    events.append(LoginAccepted(self.session, seq))
                elif t == sb.PKT_LOGIN_REJECTED:
                    reason = chr(payload[0])
                    events.append(LoginRejected(reason))
                    self._disconnect(f"login rejected ({sb.REJECT_REASONS.get(reason, repr(reason))})", events)
                else:
                    self._conn.violations += 1
                    self._disconnect("data before login accepted", events)
            elif t == sb.PKT_SEQUENCED:
                events.append(SequencedData(self.next_sequence, payload))
                self.next_sequence += 1
            elif t == sb.PKT_END_OF_SESSION:
                events.append(EndOfSession())
                self._disconnect("end of session", events)
            else:  # a second Login Accepted / Rejected
                self._conn.violations += 1
                self._disconnect("login reply on an established session", events)
        return events

    def on_timer(self, now: float | None = None) -> bytes:
        """Heartbeat if logged in and quiet for a second; close on 15 s of server silence. Returns bytes to send."""
        c = self._conn
        now = c._clock(now)
        if not c.closed:
            if now - c.last_received >= c.idle_timeout:
                self._disconnect("server silent", [])
            elif self.state == "logged_in" and now - c.last_sent >= c.heartbeat_interval:
                c._send(sb.client_heartbeat())
        return c.data_to_send()

    def send_unsequenced(self, payload: bytes, now: float | None = None) -> None:
        """Queue an Unsequenced Data packet (an OUCH inbound message); only once logged in."""
        self._conn._clock(now)
        if self.state != "logged_in" or self._conn.closed:
            raise RuntimeError(f"cannot send unsequenced data while {self.state}")
        self._conn._send(sb.unsequenced(payload))

    def send_debug(self, text: str, now: float | None = None) -> None:
        self._conn._clock(now)
        if not self._conn.closed:
            self._conn._send(sb.debug(text))

    def logout(self, now: float | None = None) -> None:
        """Queue a Logout Request; the server then closes the connection."""
        self._conn._clock(now)
        if self.state == "logged_in" and not self._conn.closed:
            self._conn._send(sb.logout_request())
            self.state = "logging_out"


__all__ = [
    "SoupServerSession", "SoupClientSession", "SequencedStore", "LoginAccepted", "LoginRejected", "SequencedData",
    "EndOfSession", "ClientLoggedIn", "ClientRejected", "UnsequencedData", "LogoutRequested", "Heartbeat",
    "Debug", "Disconnect", "HEARTBEAT_INTERVAL", "IDLE_TIMEOUT",
]
