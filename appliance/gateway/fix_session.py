"""FIX 4.4 session layer, sans-IO: the same state machine serves the venue (acceptor) and the gateway
(initiator). It owns sequence numbers, logon/logout, heartbeats and test requests, gap detection and
recovery (ResendRequest, SequenceReset gap fill and reset, PossDup handling) and session-level rejects;
the caller owns the socket and the clock:

```
 transport connected   -> session.connect(now)          -> events
 bytes received        -> session.on_bytes(data, now)   -> events
 every ~100 ms         -> session.on_timer(now)         -> events
 application message   -> session.send(msg_type, fields, now) -> events
 transport closed      -> session.on_disconnect(now)
 events: Send(data) to write in order, Disconnect(reason) to close after writing what came before,
         Deliver(message) for in-order application messages, LoggedOn, LoggedOut, PeerReject, Garbled.
```
Behaviour follows FIX 4.4 Volume 2 (session protocol and its session-level test cases): garbled
messages (framing, BodyLength, CheckSum) are ignored without consuming a sequence number; a message
that frames but breaks a rule gets Reject(3) and consumes its number; an unsupported application
message gets BusinessMessageReject(j); a sequence number too high is queued and recovered with
ResendRequest(7=expected, 16=0); too low without PossDupFlag ends the session with a Logout saying so;
PossDup duplicates are ignored. Sequence numbers and sent application messages persist in a
`SequenceStore` so a restarted session resumes and can answer resend requests.
"""

from __future__ import annotations

import enum
import os
import re
import time
from dataclasses import dataclass

from .fix44 import (
    BEGIN_STRING, BREJ_CONDITIONALLY_REQUIRED_FIELD_MISSING, BREJ_UNSUPPORTED_MSG_TYPE, MSG_BUSINESS_MESSAGE_REJECT,
    MSG_EXECUTION_REPORT, MSG_HEARTBEAT, MSG_LOGON, MSG_LOGOUT, MSG_NEW_ORDER_SINGLE,
    MSG_ORDER_CANCEL_REJECT, MSG_ORDER_CANCEL_REPLACE_REQUEST, MSG_ORDER_CANCEL_REQUEST, MSG_REJECT,
    MSG_RESEND_REQUEST, MSG_SEQUENCE_RESET, MSG_TEST_REQUEST, ADMIN_MSG_TYPES, REQUIRED,
    REJ_COMP_ID_PROBLEM, REJ_INCORRECT_DATA_FORMAT, REJ_REQUIRED_TAG_MISSING,
    REJ_SENDING_TIME_ACCURACY, REJ_VALUE_INCORRECT, TAG_BEGIN_SEQ_NO, TAG_BEGIN_STRING,
    TAG_BUSINESS_REJECT_REASON, TAG_ENCRYPT_METHOD, TAG_END_SEQ_NO, TAG_GAP_FILL_FLAG, TAG_HEART_BT_INT,
    TAG_NEW_SEQ_NO, TAG_ORD_TYPE, TAG_ORIG_SENDING_TIME, TAG_PRICE, TAG_REF_MSG_TYPE,
    TAG_REF_SEQ_NUM, TAG_REF_TAG_ID, TAG_RESET_SEQ_NUM_FLAG, TAG_SENDER_COMP_ID, TAG_SENDING_TIME,
    TAG_SESSION_REJECT_REASON, TAG_TARGET_COMP_ID, TAG_TEST_REQ_ID, TAG_TEXT, FixMessage,
    FixStreamParser, FixValidationError, GarbledMessage, encode, format_utc_timestamp, parse,
    parse_utc_timestamp, validate,
)

ACCEPTOR = "acceptor"
_ABSENT = object()
INITIATOR = "initiator"

# Application messages each side takes by default: the venue takes orders, the gateway takes reports.
DEFAULT_APP_MSG_TYPES = {
    ACCEPTOR: frozenset({MSG_NEW_ORDER_SINGLE, MSG_ORDER_CANCEL_REQUEST, MSG_ORDER_CANCEL_REPLACE_REQUEST}),
    INITIATOR: frozenset({MSG_EXECUTION_REPORT, MSG_ORDER_CANCEL_REJECT}),
}
# OrdTypes that carry a limit price: Price(44) is conditionally required for them.
PRICED_ORD_TYPES = frozenset({b"2", b"4", b"7", b"B"})


class SessionState(enum.Enum):
    DISCONNECTED = "disconnected"
    AWAIT_LOGON = "await_logon"        # acceptor: connected, waiting for the initiator's Logon
    LOGON_SENT = "logon_sent"          # initiator: Logon sent, waiting for the answer
    ACTIVE = "active"
    LOGOUT_SENT = "logout_sent"        # waiting for the peer's Logout answer
    LOGOUT_RECEIVED = "logout_received"  # answered the peer's Logout, waiting for it to disconnect


# ---- events ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Send:
    """Bytes to write to the transport, in order."""
    data: bytes
    msg_type: bytes
    seq: int


@dataclass(frozen=True, slots=True)
class Deliver:
    """An application message, delivered exactly once and in sequence order."""
    message: FixMessage


@dataclass(frozen=True, slots=True)
class LoggedOn:
    heartbeat_s: int
    reset: bool


@dataclass(frozen=True, slots=True)
class LoggedOut:
    text: str


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close the transport once every Send before this event is written."""
    reason: str


@dataclass(frozen=True, slots=True)
class PeerReject:
    """A session-level Reject(3) from the peer about one of our messages."""
    message: FixMessage


@dataclass(frozen=True, slots=True)
class Garbled:
    """Input that was not a FIX message and was dropped (kind: junk, body_length, checksum, ...)."""
    kind: str


# ---- persistence ----------------------------------------------------------------------------------

_SEQ_RECORD = 42  # b"%020d %020d\n": next sender, next target


class SequenceStore:
    """Next sender/target sequence numbers and the sent application messages of one session.

    Files in `path`: SENDER-TARGET.seqnums (one fixed-size record, overwritten in place) and
    SENDER-TARGET.messages (append-only `seq len\\n` + raw + `\\n` records, indexed at open, a torn
    last record truncated). `fsync=True` makes every change durable before the message is sent.
    `path=None` keeps everything in memory.
    """

    def __init__(self, path: str | os.PathLike | None, sender: str, target: str, fsync: bool = False):
        self.fsync = fsync
        self._next_sender = 1
        self._next_target = 1
        self._index: dict[int, tuple[int, int]] = {}
        self._mem: dict[int, bytes] | None = None
        self._seq_fd = self._log_fd = -1
        if path is None:
            self._mem = {}
            return
        os.makedirs(path, exist_ok=True)
        base = os.path.join(os.fspath(path), _safe(sender) + "-" + _safe(target))
        self.seq_path = base + ".seqnums"
        self.log_path = base + ".messages"
        self._seq_fd = os.open(self.seq_path, os.O_RDWR | os.O_CREAT, 0o644)
        self._log_fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        rec = os.pread(self._seq_fd, _SEQ_RECORD, 0)
        if len(rec) == _SEQ_RECORD:
            a, b = rec.split()
            self._next_sender, self._next_target = int(a), int(b)
        self._load_log()
        if self._index:
            # A crash between appending a message and saving the counter leaves the counter behind.
            self._next_sender = max(self._next_sender, max(self._index) + 1)
        self._save()

    def _load_log(self):
        data = b""
        with open(self.log_path, "rb") as f:
            data = f.read()
        pos = 0
        n = len(data)
        while pos < n:
            nl = data.find(b"\n", pos, pos + 48)
            head = data[pos:nl].split() if nl > 0 else []
            if len(head) != 2 or not head[0].isdigit() or not head[1].isdigit():
                break
            seq, length = int(head[0]), int(head[1])
            start = nl + 1
            if start + length + 1 > n or data[start + length:start + length + 1] != b"\n":
                break
            self._index[seq] = (start, length)
            pos = start + length + 1
        if pos < n:
            os.ftruncate(self._log_fd, pos)  # a torn record from a crash mid-append

    @property
    def next_sender_seq(self) -> int:
        return self._next_sender

    @property
    def next_target_seq(self) -> int:
        return self._next_target

    def set_next_sender(self, seq: int) -> None:
        self._next_sender = seq
        self._save()

    def set_next_target(self, seq: int) -> None:
        self._next_target = seq
        self._save()

    def _save(self):
        if self._seq_fd < 0:
            return
        os.pwrite(self._seq_fd, b"%020d %020d\n" % (self._next_sender, self._next_target), 0)
        if self.fsync:
            os.fdatasync(self._seq_fd)

    def store(self, seq: int, raw: bytes) -> None:
        """Keep a sent message for resend."""
        if self._mem is not None:
            self._mem[seq] = raw
            return
        head = b"%d %d\n" % (seq, len(raw))
        offset = os.lseek(self._log_fd, 0, os.SEEK_END)
        os.write(self._log_fd, head + raw + b"\n")
        if self.fsync:
            os.fdatasync(self._log_fd)
        self._index[seq] = (offset + len(head), len(raw))

    def get(self, seq: int) -> bytes | None:
        """The message sent with `seq`, if it was stored."""
        if self._mem is not None:
            return self._mem.get(seq)
        where = self._index.get(seq)
        if where is None:
            return None
        return os.pread(self._log_fd, where[1], where[0])

    def reset(self) -> None:
        """Both sequence numbers back to 1 and no stored messages (ResetSeqNumFlag, a new session)."""
        self._next_sender = self._next_target = 1
        self._index.clear()
        if self._mem is not None:
            self._mem.clear()
        else:
            os.ftruncate(self._log_fd, 0)
            if self.fsync:
                os.fdatasync(self._log_fd)
        self._save()

    def close(self) -> None:
        for fd in (self._seq_fd, self._log_fd):
            if fd >= 0:
                os.close(fd)
        self._seq_fd = self._log_fd = -1


def _safe(comp_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", comp_id)


# ---- session --------------------------------------------------------------------------------------

class FixSession:
    """One FIX 4.4 session, either side, without I/O: feed it bytes and time, act on the events it returns.

    `heartbeat_s` is what an initiator asks for in its Logon; an acceptor adopts the initiator's.
    `clock()` returns seconds since the epoch and stands in for `now` wherever a call omits it.
    """

    def __init__(self, role: str, sender: str, target: str, store_path, heartbeat_s: int = 30, *,
                 reset_on_logon: bool = False, fsync: bool = False, clock=time.time,
                 max_clock_skew_s: float = 120.0, logon_timeout_s: float = 10.0,
                 logout_timeout_s: float = 10.0, test_request_factor: float = 1.2,
                 app_msg_types=None, logon_fields=(), max_queued: int = 100_000):
        if role not in (ACCEPTOR, INITIATOR):
            raise ValueError(f"role must be {ACCEPTOR!r} or {INITIATOR!r}, not {role!r}")
        if int(heartbeat_s) < 0:
            raise ValueError("heartbeat_s must be >= 0")
        self.role = role
        self.sender = sender
        self.target = target
        self._sender_b = sender.encode("ascii")
        self._target_b = target.encode("ascii")
        self.heartbeat_s = int(heartbeat_s)
        self.reset_on_logon = reset_on_logon
        self.clock = clock
        self.max_clock_skew_s = max_clock_skew_s
        self.logon_timeout_s = logon_timeout_s
        self.logout_timeout_s = logout_timeout_s
        self.test_request_factor = test_request_factor
        self.app_msg_types = frozenset(app_msg_types if app_msg_types is not None
                                       else DEFAULT_APP_MSG_TYPES[role]) | {MSG_BUSINESS_MESSAGE_REJECT}
        self.logon_fields = tuple(logon_fields)
        self.max_queued = max_queued
        self.store = SequenceStore(store_path, sender, target, fsync=fsync)
        self.state = SessionState.DISCONNECTED
        self.counters: dict[str, int] = {}
        self._parser = FixStreamParser()
        self._queue: dict[int, FixMessage | None] = {}  # too-high messages by seq; None: already handled
        self._resend_until: int | None = None  # highest seq seen above a gap while a resend is pending
        self._last_sent = self._last_recv = 0.0
        self._test_req_sent: float | None = None
        self._test_req_n = 0
        self._deadline: float | None = None
        self._reset_requested = False

    # ---- properties ---------------------------------------------------------------------------------
    @property
    def logged_on(self) -> bool:
        return self.state is SessionState.ACTIVE

    @property
    def next_sender_seq(self) -> int:
        return self.store.next_sender_seq

    @property
    def next_target_seq(self) -> int:
        return self.store.next_target_seq

    # ---- caller API ---------------------------------------------------------------------------------
    def connect(self, now: float | None = None) -> list:
        """The transport is up: an initiator sends its Logon, an acceptor waits for one."""
        now = self.clock() if now is None else now
        self._parser = FixStreamParser()
        self._queue.clear()
        self._resend_until = None
        self._test_req_sent = None
        self._last_recv = self._last_sent = now
        self._deadline = now + self.logon_timeout_s
        out: list = []
        if self.role == ACCEPTOR:
            self.state = SessionState.AWAIT_LOGON
            return out
        fields = [(TAG_ENCRYPT_METHOD, b"0"), (TAG_HEART_BT_INT, self.heartbeat_s)]
        self._reset_requested = self.reset_on_logon
        if self.reset_on_logon:
            self.store.reset()
            fields.append((TAG_RESET_SEQ_NUM_FLAG, b"Y"))
        fields += self.logon_fields
        self.state = SessionState.LOGON_SENT
        self._send(out, MSG_LOGON, fields, now)
        return out

    def on_bytes(self, data, now: float | None = None) -> list:
        """Bytes from the transport; returns the events they cause, in order."""
        now = self.clock() if now is None else now
        out: list = []
        if self.state is SessionState.DISCONNECTED:
            return out
        for item in self._parser.feed(data):
            if self.state is SessionState.DISCONNECTED:
                break  # what follows a Disconnect is not read
            if isinstance(item, GarbledMessage):
                self._count("garbled_" + item.kind)
                out.append(Garbled(item.kind))
                continue
            self._last_recv = now
            self._test_req_sent = None  # any message proves the peer is alive
            self._on_message(item, now, out)
        return out

    def on_timer(self, now: float | None = None) -> list:
        """Time passes: heartbeats, test requests, and the logon/logout/heartbeat timeouts."""
        now = self.clock() if now is None else now
        out: list = []
        st = self.state
        if st is SessionState.DISCONNECTED:
            return out
        if st in (SessionState.AWAIT_LOGON, SessionState.LOGON_SENT):
            if now >= self._deadline:
                self._disconnect(out, "no Logon within %g s" % self.logon_timeout_s)
            return out
        if st in (SessionState.LOGOUT_SENT, SessionState.LOGOUT_RECEIVED):
            if now >= self._deadline:
                self._disconnect(out, "logout: no answer within %g s" % self.logout_timeout_s
                                 if st is SessionState.LOGOUT_SENT else "logout: peer did not disconnect")
            return out
        hb = self.heartbeat_s
        if hb <= 0:
            return out
        limit = hb * self.test_request_factor
        if self._test_req_sent is not None:
            if now - self._test_req_sent >= limit:
                self._count("test_request_timeouts")
                self._disconnect(out, "no answer to TestRequest within %g s" % limit)
                return out
        elif now - self._last_recv >= limit:
            self._test_req_n += 1
            self._test_req_sent = now
            self._send(out, MSG_TEST_REQUEST, [(TAG_TEST_REQ_ID, b"TEST%d" % self._test_req_n)], now)
        if now - self._last_sent >= hb:
            self._send(out, MSG_HEARTBEAT, [], now)
        return out

    def send(self, msg_type: bytes, fields, now: float | None = None) -> list:
        """Send an application message. While not logged on it is numbered and stored, not written:
        the peer sees the gap at the next logon and its ResendRequest brings it across."""
        now = self.clock() if now is None else now
        if msg_type in ADMIN_MSG_TYPES:
            raise ValueError(f"MsgType {msg_type!r} is administrative: the session sends those itself")
        fields = list(fields)
        present = {t for t, _ in fields}
        missing = [t for t in REQUIRED.get(msg_type, ()) if t not in present]
        if missing:
            raise ValueError(f"MsgType {msg_type!r} needs tags {missing}")
        out: list = []
        transmit = self.state is SessionState.ACTIVE
        self._send(out, msg_type, fields, now, store=True, transmit=transmit)
        return out

    def logout(self, text: str = "", now: float | None = None) -> list:
        """Start the logout handshake (or just disconnect when not logged on)."""
        now = self.clock() if now is None else now
        out: list = []
        if self.state is SessionState.ACTIVE:
            self._send(out, MSG_LOGOUT, [(TAG_TEXT, text)] if text else [], now)
            self.state = SessionState.LOGOUT_SENT
            self._deadline = now + self.logout_timeout_s
        elif self.state is not SessionState.DISCONNECTED:
            self._disconnect(out, text or "logout before logon completed")
        return out

    def on_disconnect(self, now: float | None = None) -> list:
        """The transport closed (either side). Sequence numbers stay in the store for the next logon."""
        out: list = []
        if self.state in (SessionState.ACTIVE, SessionState.LOGOUT_SENT):
            out.append(LoggedOut("connection lost"))
        self.state = SessionState.DISCONNECTED
        return out

    def record_sent(self, raw: bytes) -> None:
        """Store a message written by another encoder (the hot path) so a resend can repeat it;
        the next sender sequence number moves past it."""
        msg = parse(raw)
        seq = msg.seq_num
        if msg.msg_type not in ADMIN_MSG_TYPES:
            self.store.store(seq, raw)
        if seq >= self.store.next_sender_seq:
            self.store.set_next_sender(seq + 1)

    def reset_sequences(self) -> None:
        """Start over at 1 in both directions (a new trading day); only while disconnected."""
        if self.state is not SessionState.DISCONNECTED:
            raise RuntimeError("reset_sequences while connected")
        self.store.reset()

    def close(self) -> None:
        self.store.close()

    # ---- sending ------------------------------------------------------------------------------------
    def _send(self, out, msg_type, fields, now, *, store=False, transmit=True) -> bytes:
        seq = self.store.next_sender_seq
        raw = encode(msg_type, fields, self._sender_b, self._target_b, seq, format_utc_timestamp(now))
        if store:
            self.store.store(seq, raw)
        self.store.set_next_sender(seq + 1)
        if transmit:
            self._last_sent = now
            out.append(Send(raw, msg_type, seq))
        return raw

    def _send_logout(self, out, text, now):
        self._send(out, MSG_LOGOUT, [(TAG_TEXT, text)], now)

    def _logout_and_disconnect(self, out, text, now):
        self._count("protocol_logouts")
        self._send_logout(out, text, now)
        self._disconnect(out, text)

    def _disconnect(self, out, reason):
        if self.state in (SessionState.ACTIVE, SessionState.LOGOUT_SENT):
            out.append(LoggedOut(reason))
        self.state = SessionState.DISCONNECTED
        out.append(Disconnect(reason))

    def _reject(self, out, now, seq, msg_type, reason, ref_tag, text):
        self._count("rejects_sent")
        fields = [(TAG_REF_SEQ_NUM, seq)]
        if ref_tag is not None:
            fields.append((TAG_REF_TAG_ID, ref_tag))
        if msg_type:
            fields.append((TAG_REF_MSG_TYPE, msg_type))
        fields += [(TAG_SESSION_REJECT_REASON, reason), (TAG_TEXT, text)]
        self._send(out, MSG_REJECT, fields, now)

    def _business_reject(self, out, now, seq, msg_type, reason, text):
        self._count("business_rejects_sent")
        self._send(out, MSG_BUSINESS_MESSAGE_REJECT,
                   [(TAG_REF_SEQ_NUM, seq), (TAG_REF_MSG_TYPE, msg_type),
                    (TAG_BUSINESS_REJECT_REASON, reason), (TAG_TEXT, text)], now, store=True)

    def _count(self, kind):
        self.counters[kind] = self.counters.get(kind, 0) + 1

    # ---- receiving ----------------------------------------------------------------------------------
    def _on_message(self, msg: FixMessage, now, out):
        if msg.get(TAG_BEGIN_STRING) != BEGIN_STRING:
            self._logout_and_disconnect(out, "Incorrect BeginString", now)
            return
        seq = msg.seq_num
        if seq is None:
            self._logout_and_disconnect(out, "MsgSeqNum(34) missing or not a number", now)
            return
        st = self.state
        if st is SessionState.AWAIT_LOGON or st is SessionState.LOGON_SENT:
            if msg.msg_type == MSG_LOGOUT and st is SessionState.LOGON_SENT:
                # The acceptor refused the Logon; its Text says why (e.g. MsgSeqNum too low).
                text = msg.get_str(TAG_TEXT, "")
                out.append(LoggedOut(text))
                self.state = SessionState.DISCONNECTED
                out.append(Disconnect("Logon refused: " + text))
                return
            if msg.msg_type != MSG_LOGON:
                if st is SessionState.AWAIT_LOGON:
                    self._disconnect(out, "first message not a Logon")
                else:
                    self._logout_and_disconnect(out, "first message not a Logon", now)
                return
            self._on_logon(msg, seq, now, out)
            return
        self._sequence(msg, seq, now, out)

    def _sequence(self, msg, seq, now, out):
        """Decide by MsgSeqNum whether a message is processed now, queued behind a gap, or ignored."""
        mt = msg.msg_type
        expected = self.store.next_target_seq
        if mt == MSG_SEQUENCE_RESET and msg.get(TAG_GAP_FILL_FLAG) != b"Y":
            self._on_sequence_reset(msg, seq, now, out)  # Reset mode ignores MsgSeqNum
            self._drain(now, out)
            return
        if seq < expected:
            if msg.poss_dup:
                self._count("possdup_ignored")  # already seen: a duplicate from a resend
                return
            self._logout_and_disconnect(
                out, "MsgSeqNum too low, expecting %d but received %d" % (expected, seq), now)
            return
        if seq > expected:
            if mt == MSG_LOGOUT:
                self._on_logout(msg, now, out)  # the peer is leaving: answer, no resend
                return
            later = msg
            if mt == MSG_RESEND_REQUEST:
                self._answer_resend(msg, seq, now, out)  # answer now; the gap is ours to recover
                later = None
            self._queue_too_high(seq, later, expected, now, out)
            return
        self._process(msg, seq, now, out)
        self._drain(now, out)

    def _queue_too_high(self, seq, msg, expected, now, out):
        if len(self._queue) >= self.max_queued:
            self._logout_and_disconnect(out, "too many messages queued behind a gap", now)
            return
        self._queue[seq] = msg
        if self._resend_until is None:
            self._count("resend_requests_sent")
            self._send(out, MSG_RESEND_REQUEST, [(TAG_BEGIN_SEQ_NO, expected), (TAG_END_SEQ_NO, 0)], now)
            self._resend_until = seq
        else:
            self._resend_until = max(self._resend_until, seq)

    def _drain(self, now, out):
        """Process queued messages that are now in sequence."""
        q = self._queue
        while q and self.state is not SessionState.DISCONNECTED:
            expected = self.store.next_target_seq
            msg = q.pop(expected, _ABSENT)
            if msg is _ABSENT:
                stale = [s for s in q if s < expected]  # covered by a gap fill or reset meanwhile
                if not stale:
                    break
                for s in stale:
                    del q[s]
                continue
            if msg is None:
                self.store.set_next_target(expected + 1)  # its effect was applied when it arrived
            else:
                self._process(msg, expected, now, out)
        if self._resend_until is not None and self.store.next_target_seq > self._resend_until:
            self._resend_until = None

    def _process(self, msg, seq, now, out):
        """An in-sequence message: validate, apply, and move the expected sequence number on."""
        mt = msg.msg_type
        store = self.store
        try:
            validate(msg)
        except FixValidationError as e:
            self._reject(out, now, seq, mt, e.reason, e.ref_tag, e.text)
            store.set_next_target(seq + 1)
            return
        if not self._header_ok(msg, seq, now, out):
            return
        if msg.poss_dup and mt != MSG_SEQUENCE_RESET:
            orig = msg.get(TAG_ORIG_SENDING_TIME)
            if orig is None:
                self._reject(out, now, seq, mt, REJ_REQUIRED_TAG_MISSING, TAG_ORIG_SENDING_TIME,
                             "Required tag missing: OrigSendingTime(122) with PossDupFlag=Y")
                store.set_next_target(seq + 1)
                return
            o = _timestamp(orig)
            if o is None:
                self._reject(out, now, seq, mt, REJ_INCORRECT_DATA_FORMAT, TAG_ORIG_SENDING_TIME,
                             "Incorrect data format for value: 122")
                store.set_next_target(seq + 1)
                return
            if o > _timestamp(msg[TAG_SENDING_TIME]):
                self._reject(out, now, seq, mt, REJ_SENDING_TIME_ACCURACY, TAG_ORIG_SENDING_TIME,
                             "SendingTime accuracy problem: OrigSendingTime after SendingTime")
                store.set_next_target(seq + 1)
                return
        if mt in ADMIN_MSG_TYPES:
            self._admin(msg, seq, now, out)
            return
        store.set_next_target(seq + 1)
        if mt not in self.app_msg_types:
            self._business_reject(out, now, seq, mt, BREJ_UNSUPPORTED_MSG_TYPE, "Unsupported Message Type")
            return
        if (mt in (MSG_NEW_ORDER_SINGLE, MSG_ORDER_CANCEL_REPLACE_REQUEST)
                and msg.get(TAG_ORD_TYPE) in PRICED_ORD_TYPES and TAG_PRICE not in msg):
            self._business_reject(out, now, seq, mt, BREJ_CONDITIONALLY_REQUIRED_FIELD_MISSING,
                                  "Conditionally required field missing: Price(44)")
            return
        out.append(Deliver(msg))

    def _header_ok(self, msg, seq, now, out) -> bool:
        """CompIDs and SendingTime: a failure is rejected, consumes the number and ends the session."""
        mt = msg.msg_type
        if msg[TAG_SENDER_COMP_ID] != self._target_b or msg[TAG_TARGET_COMP_ID] != self._sender_b:
            tag = TAG_SENDER_COMP_ID if msg[TAG_SENDER_COMP_ID] != self._target_b else TAG_TARGET_COMP_ID
            self._reject(out, now, seq, mt, REJ_COMP_ID_PROBLEM, tag, "CompID problem")
            self.store.set_next_target(seq + 1)
            self._logout_and_disconnect(out, "CompID problem", now)
            return False
        sent = _timestamp(msg[TAG_SENDING_TIME])
        if sent is None:
            self._reject(out, now, seq, mt, REJ_INCORRECT_DATA_FORMAT, TAG_SENDING_TIME,
                         "Incorrect data format for value: 52")
            self.store.set_next_target(seq + 1)
            return False
        if abs(sent - now) > self.max_clock_skew_s:
            self._reject(out, now, seq, mt, REJ_SENDING_TIME_ACCURACY, TAG_SENDING_TIME,
                         "SendingTime accuracy problem")
            self.store.set_next_target(seq + 1)
            self._logout_and_disconnect(out, "SendingTime accuracy problem", now)
            return False
        return True

    def _admin(self, msg, seq, now, out):
        mt = msg.msg_type
        store = self.store
        if mt == MSG_HEARTBEAT:
            store.set_next_target(seq + 1)
        elif mt == MSG_TEST_REQUEST:
            store.set_next_target(seq + 1)
            self._send(out, MSG_HEARTBEAT, [(TAG_TEST_REQ_ID, msg[TAG_TEST_REQ_ID])], now)
        elif mt == MSG_RESEND_REQUEST:
            store.set_next_target(seq + 1)
            self._answer_resend(msg, seq, now, out)
        elif mt == MSG_REJECT:
            store.set_next_target(seq + 1)
            self._count("rejects_received")
            out.append(PeerReject(msg))
        elif mt == MSG_SEQUENCE_RESET:  # gap fill (reset mode never gets here)
            new = int(msg[TAG_NEW_SEQ_NO])
            if new <= seq:
                store.set_next_target(seq + 1)
                self._reject(out, now, seq, mt, REJ_VALUE_INCORRECT, TAG_NEW_SEQ_NO,
                             "attempt to lower sequence number, invalid value NewSeqNo(36)=%d" % new)
            else:
                store.set_next_target(new)
        elif mt == MSG_LOGOUT:
            store.set_next_target(seq + 1)
            self._on_logout(msg, now, out)
        else:  # MSG_LOGON while logged on
            store.set_next_target(seq + 1)
            self._logout_and_disconnect(out, "Logon received on a logged-on session", now)

    def _on_sequence_reset(self, msg, seq, now, out):
        """SequenceReset-Reset: NewSeqNo becomes the next expected number, whatever MsgSeqNum says."""
        try:
            validate(msg)
        except FixValidationError as e:
            self._reject(out, now, seq, msg.msg_type, e.reason, e.ref_tag, e.text)
            return
        new = int(msg[TAG_NEW_SEQ_NO])
        expected = self.store.next_target_seq
        if new < expected:
            self._reject(out, now, seq, msg.msg_type, REJ_VALUE_INCORRECT, TAG_NEW_SEQ_NO,
                         "attempt to lower sequence number, invalid value NewSeqNo(36)=%d" % new)
            return
        self._count("sequence_resets")
        self.store.set_next_target(new)

    def _on_logon(self, msg, seq, now, out):
        try:
            validate(msg)
        except FixValidationError as e:
            self._logout_and_disconnect(out, "Invalid Logon: " + e.text, now)
            return
        if msg[TAG_SENDER_COMP_ID] != self._target_b or msg[TAG_TARGET_COMP_ID] != self._sender_b:
            # Not this session's counterparty: anything we sent would consume a sequence number.
            self._disconnect(out, "Logon with unexpected CompIDs")
            return
        sent = _timestamp(msg[TAG_SENDING_TIME])
        if sent is None or abs(sent - now) > self.max_clock_skew_s:
            self._logout_and_disconnect(out, "SendingTime accuracy problem", now)
            return
        if msg[TAG_ENCRYPT_METHOD] != b"0":
            self._logout_and_disconnect(out, "Unsupported EncryptMethod(98)", now)
            return
        hb = int(msg[TAG_HEART_BT_INT])
        if hb < 0:
            self._logout_and_disconnect(out, "Invalid HeartBtInt(108)", now)
            return
        reset = msg.get(TAG_RESET_SEQ_NUM_FLAG) == b"Y"
        if self.role == ACCEPTOR and reset:
            self.store.reset()
        elif self.role == INITIATOR and reset and not self._reset_requested:
            self.store.set_next_target(1)  # the acceptor restarted its numbering: follow it
        expected = self.store.next_target_seq
        if seq < expected:
            self._logout_and_disconnect(
                out, "MsgSeqNum too low, expecting %d but received %d" % (expected, seq), now)
            return
        if self.role == ACCEPTOR:
            self.heartbeat_s = hb
            fields = [(TAG_ENCRYPT_METHOD, b"0"), (TAG_HEART_BT_INT, hb)]
            if reset:
                fields.append((TAG_RESET_SEQ_NUM_FLAG, b"Y"))
            self._send(out, MSG_LOGON, fields, now)
        self.state = SessionState.ACTIVE
        self._deadline = None
        out.append(LoggedOn(self.heartbeat_s, reset))
        if seq > expected:
            self._queue_too_high(seq, None, expected, now, out)
        else:
            self.store.set_next_target(seq + 1)

    def _on_logout(self, msg, now, out):
        text = msg.get_str(TAG_TEXT, "")
        if self.state is SessionState.LOGOUT_SENT:
            out.append(LoggedOut(text))
            self.state = SessionState.DISCONNECTED
            out.append(Disconnect("logout complete"))
            return
        if self.state is SessionState.LOGOUT_RECEIVED:
            return
        self._send(out, MSG_LOGOUT, [], now)
        self.state = SessionState.LOGOUT_RECEIVED
        self._deadline = now + self.logout_timeout_s
        out.append(LoggedOut(text))

    def _answer_resend(self, msg, seq, now, out):
        """Resend stored application messages in [BeginSeqNo, EndSeqNo] with PossDupFlag=Y and
        OrigSendingTime; everything else (admin messages, gaps) becomes SequenceReset-GapFill."""
        try:
            validate(msg)
        except FixValidationError as e:
            self._reject(out, now, seq, msg.msg_type, e.reason, e.ref_tag, e.text)
            return
        begin = int(msg[TAG_BEGIN_SEQ_NO])
        end = int(msg[TAG_END_SEQ_NO])
        last = self.store.next_sender_seq - 1
        if begin < 1 or (end != 0 and end < begin):
            self._reject(out, now, seq, msg.msg_type, REJ_VALUE_INCORRECT,
                         TAG_BEGIN_SEQ_NO if begin < 1 else TAG_END_SEQ_NO, "Invalid resend range")
            return
        if end == 0 or end > last:
            end = last
        self._count("resend_requests_answered")
        stamp = format_utc_timestamp(now)
        gap_start = None
        for s in range(begin, end + 1):
            raw = self.store.get(s)
            if raw is None:
                if gap_start is None:
                    gap_start = s
                continue
            if gap_start is not None:
                self._gap_fill(out, gap_start, s, stamp, now)
                gap_start = None
            old = parse(raw)
            data = encode(old.msg_type, old.body_fields(), self._sender_b, self._target_b, s, stamp,
                          poss_dup=True, orig_sending_time=old[TAG_SENDING_TIME])
            self._last_sent = now
            out.append(Send(data, old.msg_type, s))
        if gap_start is not None:
            self._gap_fill(out, gap_start, end + 1, stamp, now)

    def _gap_fill(self, out, seq, new_seq, stamp, now):
        data = encode(MSG_SEQUENCE_RESET, [(TAG_GAP_FILL_FLAG, b"Y"), (TAG_NEW_SEQ_NO, new_seq)],
                      self._sender_b, self._target_b, seq, stamp, poss_dup=True, orig_sending_time=stamp)
        self._last_sent = now
        out.append(Send(data, MSG_SEQUENCE_RESET, seq))


def _timestamp(value: bytes) -> float | None:
    try:
        return parse_utc_timestamp(value)
    except ValueError:
        return None


def outgoing(events) -> bytes:
    """The bytes of every Send among `events`, concatenated in order."""
    return b"".join(e.data for e in events if type(e) is Send)
