"""FIX 4.4 tag=value codec: tag and MsgType constants, required tags, encoder, stream framer, validator.

Used by the session layer (fix_session.py) on both sides: the built-in venue (acceptor) and the
appliance's gateway (initiator). The gateway's hot path encodes orders with fix_hot.py instead; its
output is byte-identical to `encode` here for the same field values.

```
 8=FIX.4.4|9=LEN|35=T|49=SENDER|56=TARGET|34=SEQ|52=YYYYMMDD-HH:MM:SS.sss|[43=Y|122=ORIG|] body... |10=CCC|
 <-- begin ----><---------------------------- BodyLength bytes -------------------------------><trailer>
```
`|` is SOH (0x01). BodyLength counts the bytes after the SOH that ends `9=LEN` up to and including
the SOH before `10=`; CheckSum is the sum of every byte before `10=`, modulo 256, as three digits.

Framing (FIX 4.4 Vol. 2, "What constitutes a garbled message"): BeginString first, BodyLength second,
MsgType third, CheckSum last and correct. A garbled message is dropped without a reply and without
consuming a sequence number (the next good message then shows the gap and a ResendRequest recovers
it); `FixStreamParser` counts garbled input by kind and resynchronises on the next `8=FIX`.
Anything that frames correctly but breaks a rule is reported by `validate` as a `FixValidationError`
carrying the SessionRejectReason(373) and RefTagID(371) the session puts in its Reject(3).
"""

from __future__ import annotations

import re
import time

SOH = b"\x01"
BEGIN_STRING = b"FIX.4.4"

# ---- tags -----------------------------------------------------------------------------------------
TAG_ACCOUNT = 1
TAG_AVG_PX = 6
TAG_BEGIN_SEQ_NO = 7
TAG_BEGIN_STRING = 8
TAG_BODY_LENGTH = 9
TAG_CHECKSUM = 10
TAG_CL_ORD_ID = 11
TAG_CUM_QTY = 14
TAG_END_SEQ_NO = 16
TAG_EXEC_ID = 17
TAG_LAST_PX = 31
TAG_LAST_QTY = 32
TAG_MSG_SEQ_NUM = 34
TAG_MSG_TYPE = 35
TAG_NEW_SEQ_NO = 36
TAG_ORDER_ID = 37
TAG_ORDER_QTY = 38
TAG_ORD_STATUS = 39
TAG_ORD_TYPE = 40
TAG_ORIG_CL_ORD_ID = 41
TAG_POSS_DUP_FLAG = 43
TAG_PRICE = 44
TAG_REF_SEQ_NUM = 45
TAG_SENDER_COMP_ID = 49
TAG_SENDING_TIME = 52
TAG_SIDE = 54
TAG_SYMBOL = 55
TAG_TARGET_COMP_ID = 56
TAG_TEXT = 58
TAG_TIME_IN_FORCE = 59
TAG_TRANSACT_TIME = 60
TAG_POSS_RESEND = 97
TAG_ENCRYPT_METHOD = 98
TAG_CXL_REJ_REASON = 102
TAG_ORD_REJ_REASON = 103
TAG_HEART_BT_INT = 108
TAG_TEST_REQ_ID = 112
TAG_ORIG_SENDING_TIME = 122
TAG_GAP_FILL_FLAG = 123
TAG_RESET_SEQ_NUM_FLAG = 141
TAG_EXEC_TYPE = 150
TAG_LEAVES_QTY = 151
TAG_REF_TAG_ID = 371
TAG_REF_MSG_TYPE = 372
TAG_SESSION_REJECT_REASON = 373
TAG_BUSINESS_REJECT_REF_ID = 379
TAG_BUSINESS_REJECT_REASON = 380
TAG_CXL_REJ_RESPONSE_TO = 434

# ---- MsgType(35) ----------------------------------------------------------------------------------
MSG_HEARTBEAT = b"0"
MSG_TEST_REQUEST = b"1"
MSG_RESEND_REQUEST = b"2"
MSG_REJECT = b"3"
MSG_SEQUENCE_RESET = b"4"
MSG_LOGOUT = b"5"
MSG_EXECUTION_REPORT = b"8"
MSG_ORDER_CANCEL_REJECT = b"9"
MSG_LOGON = b"A"
MSG_NEW_ORDER_SINGLE = b"D"
MSG_ORDER_CANCEL_REQUEST = b"F"
MSG_ORDER_CANCEL_REPLACE_REQUEST = b"G"
MSG_BUSINESS_MESSAGE_REJECT = b"j"

ADMIN_MSG_TYPES = frozenset({MSG_HEARTBEAT, MSG_TEST_REQUEST, MSG_RESEND_REQUEST, MSG_REJECT,
                             MSG_SEQUENCE_RESET, MSG_LOGOUT, MSG_LOGON})

# Every MsgType FIX 4.4 defines: anything else is "Invalid MsgType" (373=11); a defined type this
# side does not handle gets a BusinessMessageReject (380=3) instead.
FIX44_MSG_TYPES = frozenset(
    [bytes([c]) for c in b"0123456789ABCDEFGHJKLMNPQRSTVWXYZabcdefghijklmnopqrstuvwxyz"]
    + [b"A" + bytes([c]) for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    + [b"B" + bytes([c]) for c in b"ABCDEFGH"]
)

# ---- SessionRejectReason(373) ---------------------------------------------------------------------
REJ_INVALID_TAG_NUMBER = 0
REJ_REQUIRED_TAG_MISSING = 1
REJ_TAG_NOT_DEFINED_FOR_MSG_TYPE = 2
REJ_UNDEFINED_TAG = 3
REJ_TAG_WITHOUT_VALUE = 4
REJ_VALUE_INCORRECT = 5
REJ_INCORRECT_DATA_FORMAT = 6
REJ_COMP_ID_PROBLEM = 9
REJ_SENDING_TIME_ACCURACY = 10
REJ_INVALID_MSG_TYPE = 11
REJ_TAG_APPEARS_MORE_THAN_ONCE = 13
REJ_TAG_OUT_OF_ORDER = 14
REJ_OTHER = 99

# ---- BusinessRejectReason(380) --------------------------------------------------------------------
BREJ_OTHER = 0
BREJ_UNKNOWN_ID = 1
BREJ_UNSUPPORTED_MSG_TYPE = 3
BREJ_CONDITIONALLY_REQUIRED_FIELD_MISSING = 5

# ---- required tags --------------------------------------------------------------------------------
HEADER_REQUIRED = (TAG_SENDER_COMP_ID, TAG_TARGET_COMP_ID, TAG_MSG_SEQ_NUM, TAG_SENDING_TIME)
HEADER_TAGS = frozenset({TAG_BEGIN_STRING, TAG_BODY_LENGTH, TAG_MSG_TYPE, TAG_SENDER_COMP_ID,
                         TAG_TARGET_COMP_ID, TAG_MSG_SEQ_NUM, TAG_SENDING_TIME, TAG_POSS_DUP_FLAG,
                         TAG_POSS_RESEND, TAG_ORIG_SENDING_TIME})

# Body tags FIX 4.4 requires per message type (Instrument's Symbol and OrderQtyData's OrderQty are
# required here for orders: this appliance trades single equities by quantity).
REQUIRED: dict[bytes, tuple[int, ...]] = {
    MSG_HEARTBEAT: (),
    MSG_TEST_REQUEST: (TAG_TEST_REQ_ID,),
    MSG_RESEND_REQUEST: (TAG_BEGIN_SEQ_NO, TAG_END_SEQ_NO),
    MSG_REJECT: (TAG_REF_SEQ_NUM,),
    MSG_SEQUENCE_RESET: (TAG_NEW_SEQ_NO,),
    MSG_LOGOUT: (),
    MSG_LOGON: (TAG_ENCRYPT_METHOD, TAG_HEART_BT_INT),
    MSG_NEW_ORDER_SINGLE: (TAG_CL_ORD_ID, TAG_SYMBOL, TAG_SIDE, TAG_TRANSACT_TIME, TAG_ORDER_QTY,
                           TAG_ORD_TYPE),
    MSG_ORDER_CANCEL_REQUEST: (TAG_ORIG_CL_ORD_ID, TAG_CL_ORD_ID, TAG_SYMBOL, TAG_SIDE,
                               TAG_TRANSACT_TIME),
    MSG_ORDER_CANCEL_REPLACE_REQUEST: (TAG_ORIG_CL_ORD_ID, TAG_CL_ORD_ID, TAG_SYMBOL, TAG_SIDE,
                                       TAG_TRANSACT_TIME, TAG_ORDER_QTY, TAG_ORD_TYPE),
    MSG_EXECUTION_REPORT: (TAG_ORDER_ID, TAG_EXEC_ID, TAG_EXEC_TYPE, TAG_ORD_STATUS, TAG_SYMBOL,
                           TAG_SIDE, TAG_LEAVES_QTY, TAG_CUM_QTY, TAG_AVG_PX),
    MSG_ORDER_CANCEL_REJECT: (TAG_ORDER_ID, TAG_CL_ORD_ID, TAG_ORIG_CL_ORD_ID, TAG_ORD_STATUS,
                              TAG_CXL_REJ_RESPONSE_TO),
    MSG_BUSINESS_MESSAGE_REJECT: (TAG_REF_MSG_TYPE, TAG_BUSINESS_REJECT_REASON),
}

# Field formats checked by validate (373=6 when malformed): ints, decimals (Qty/Price/Amt), UTC timestamps.
INT_TAGS = frozenset({TAG_BEGIN_SEQ_NO, TAG_END_SEQ_NO, TAG_MSG_SEQ_NUM, TAG_NEW_SEQ_NO, TAG_REF_SEQ_NUM,
                      TAG_ENCRYPT_METHOD, TAG_HEART_BT_INT, TAG_REF_TAG_ID, TAG_SESSION_REJECT_REASON,
                      TAG_BUSINESS_REJECT_REASON, TAG_CXL_REJ_REASON, TAG_ORD_REJ_REASON})
FLOAT_TAGS = frozenset({TAG_AVG_PX, TAG_CUM_QTY, TAG_LAST_PX, TAG_LAST_QTY, TAG_ORDER_QTY, TAG_PRICE,
                        TAG_LEAVES_QTY})
TIME_TAGS = frozenset({TAG_SENDING_TIME, TAG_ORIG_SENDING_TIME, TAG_TRANSACT_TIME})
# Enumerated fields and the values FIX 4.4 allows (373=5 otherwise).
ENUMS: dict[int, frozenset[bytes]] = {
    TAG_POSS_DUP_FLAG: frozenset({b"Y", b"N"}),
    TAG_POSS_RESEND: frozenset({b"Y", b"N"}),
    TAG_GAP_FILL_FLAG: frozenset({b"Y", b"N"}),
    TAG_RESET_SEQ_NUM_FLAG: frozenset({b"Y", b"N"}),
    TAG_ENCRYPT_METHOD: frozenset({b"0", b"1", b"2", b"3", b"4", b"5", b"6"}),
    TAG_SIDE: frozenset(list(map(bytes, zip(b"123456789ABCDEFG")))),
    TAG_ORD_TYPE: frozenset(list(map(bytes, zip(b"123456789ABCDEGHIJKLMNPQ")))),
    TAG_TIME_IN_FORCE: frozenset(list(map(bytes, zip(b"01234567")))),
    TAG_EXEC_TYPE: frozenset(list(map(bytes, zip(b"03456789ABCDEFGHI")))),
    TAG_ORD_STATUS: frozenset(list(map(bytes, zip(b"0123456789ABCDE")))),
    TAG_CXL_REJ_RESPONSE_TO: frozenset({b"1", b"2"}),
}

MAX_MESSAGE_SIZE = 65536  # a declared BodyLength above this is garbage, not a message to wait for


class FixValidationError(Exception):
    """A framed message that breaks a FIX rule: what the session's Reject(3) says about it."""

    def __init__(self, reason: int, ref_tag: int | None, text: str,
                 ref_seq: int | None = None, ref_msg_type: bytes | None = None):
        super().__init__(text)
        self.reason = reason          # SessionRejectReason(373)
        self.ref_tag = ref_tag        # RefTagID(371), None when no single tag is at fault
        self.text = text              # Text(58)
        self.ref_seq = ref_seq        # RefSeqNum(45): MsgSeqNum of the offending message
        self.ref_msg_type = ref_msg_type  # RefMsgType(372)


class GarbledError(ValueError):
    """Bytes that are not a FIX message (bad framing, BodyLength or CheckSum): dropped, never answered."""

    def __init__(self, kind: str, text: str):
        super().__init__(text)
        self.kind = kind


class GarbledMessage:
    """What the stream framer yields for input it dropped: the kind of damage and the bytes."""

    __slots__ = ("kind", "raw")

    def __init__(self, kind: str, raw: bytes):
        self.kind = kind
        self.raw = raw

    def __repr__(self):
        return f"GarbledMessage({self.kind!r}, {self.raw[:40]!r})"


class FixMessage:
    """One framed FIX message: its fields in wire order, first-occurrence lookup by tag, the raw bytes."""

    __slots__ = ("raw", "fields", "_map", "_dups", "problem")

    def __init__(self, fields: list[tuple[int, bytes]], raw: bytes = b"",
                 problem: FixValidationError | None = None):
        self.raw = raw
        self.fields = fields
        # First occurrence wins; reversed() makes dict() keep it (C speed, no Python loop).
        m = dict(reversed(fields))
        self._map = m
        self._dups = None
        if len(m) != len(fields):
            seen = set()
            self._dups = [t for t, _ in fields if t in seen or seen.add(t)]
        self.problem = problem  # the first field-level fault found while splitting, if any

    @property
    def msg_type(self) -> bytes:
        return self._map.get(TAG_MSG_TYPE, b"")

    @property
    def seq_num(self) -> int | None:
        v = self._map.get(TAG_MSG_SEQ_NUM)
        return int(v) if v is not None and v.isdigit() else None

    @property
    def poss_dup(self) -> bool:
        return self._map.get(TAG_POSS_DUP_FLAG) == b"Y"

    @property
    def duplicate_tags(self) -> tuple[int, ...]:
        return tuple(self._dups or ())

    def get(self, tag: int, default=None):
        return self._map.get(tag, default)

    def get_str(self, tag: int, default=None):
        v = self._map.get(tag)
        return default if v is None else v.decode("latin-1")

    def get_int(self, tag: int, default=None):
        v = self._map.get(tag)
        return default if v is None else int(v)

    def __getitem__(self, tag: int) -> bytes:
        return self._map[tag]

    def __contains__(self, tag: int) -> bool:
        return tag in self._map

    def body_fields(self) -> list[tuple[int, bytes]]:
        """The fields outside the standard header and trailer, in wire order (what a resend re-sends)."""
        return [(t, v) for t, v in self.fields if t not in HEADER_TAGS and t != TAG_CHECKSUM]

    def __repr__(self):
        return "FixMessage(" + "|".join(f"{t}={v.decode('latin-1')}" for t, v in self.fields) + ")"


# ---- timestamps -----------------------------------------------------------------------------------

def format_utc_timestamp_ns(ns: int) -> bytes:
    """UTCTimestamp with milliseconds, YYYYMMDD-HH:MM:SS.sss, from nanoseconds since the epoch."""
    ms_total = ns // 1_000_000
    secs, ms = divmod(ms_total, 1000)
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(secs)).encode() + b".%03d" % ms


def format_utc_timestamp(seconds: float) -> bytes:
    """UTCTimestamp with milliseconds from (float) seconds since the epoch."""
    return format_utc_timestamp_ns(int(seconds * 1000) * 1_000_000)


def _days_from_civil(y: int, m: int, d: int) -> int:
    # Proleptic Gregorian calendar date to days since 1970-01-01 (exact integer arithmetic).
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_MDAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


_TIMESTAMP = re.compile(rb"(\d{4})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])-([01]\d|2[0-3]):([0-5]\d):([0-5]\d|60)"
                        rb"(?:\.(\d{1,9}))?")


def _valid_day(value: bytes) -> bool:
    y, mo, d = int(value[:4]), int(value[4:6]), int(value[6:8])
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    return d <= (_MDAYS[mo - 1] if mo != 2 else 28 + leap)


def parse_utc_timestamp(value: bytes) -> float:
    """Seconds since the epoch from YYYYMMDD-HH:MM:SS[.s{1,9}]; ValueError when malformed."""
    m = _TIMESTAMP.fullmatch(value)
    if m is None:
        raise ValueError(f"not a UTCTimestamp: {value!r}")
    y, mo, d, h, mi, s, frac = m.groups()
    y, mo, d, h, mi, s = int(y), int(mo), int(d), int(h), int(mi), int(s)
    if d > 28 and not _valid_day(value):
        raise ValueError(f"UTCTimestamp out of range: {value!r}")
    t = _days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s
    return t + int(frac) / 10 ** len(frac) if frac else float(t)


# ---- encoding -------------------------------------------------------------------------------------

def _float(v: float) -> bytes:
    s = repr(v)
    if "e" in s or "E" in s:  # FIX floats have no exponent form
        s = format(v, ".10f").rstrip("0").rstrip(".")
    return s.encode()


def _other(v) -> bytes:
    return str(v).encode("ascii")  # Decimal and friends


_FORMAT = {bytes: bytes, str: str.encode, int: b"%d".__mod__, float: _float,
           bool: lambda v: b"Y" if v else b"N"}


def _value(v) -> bytes:
    """A field value as bytes (bytes as is, str as ASCII, int, bool as Y/N, float without exponent)."""
    return _FORMAT.get(type(v), _other)(v)


def checksum(data) -> int:
    """CheckSum(10) of the bytes before `10=`: their sum modulo 256."""
    return sum(data) & 0xFF


def encode(msg_type: bytes, fields, sender: bytes | str, target: bytes | str, seq: int | bytes,
           sending_time: bytes | float, *, poss_dup: bool = False,
           orig_sending_time: bytes | None = None, poss_resend: bool = False,
           begin_string: bytes = BEGIN_STRING) -> bytes:
    """One complete message: standard header (35, 49, 56, 34, 52, then 43/97/122 when set), `fields`
    as (tag, value) pairs in the order given, and the trailer; BodyLength and CheckSum computed.

    Values may be bytes, str, int, bool (Y/N) or float; `seq` and `sending_time` may be pre-formatted
    bytes (the hot encoder pads MsgSeqNum to a fixed width), `sending_time` else seconds since the epoch.
    """
    fmt = _FORMAT.get
    parts = [b"35=", msg_type, b"\x0149=", fmt(type(sender), _other)(sender), b"\x0156=",
             fmt(type(target), _other)(target), b"\x0134=", seq if type(seq) is bytes else b"%d" % seq,
             b"\x0152=", sending_time if type(sending_time) is bytes else format_utc_timestamp(sending_time),
             SOH]
    if poss_dup:
        parts.append(b"43=Y\x01")
    if poss_resend:
        parts.append(b"97=Y\x01")
    if orig_sending_time is not None:
        parts += (b"122=", orig_sending_time, SOH)
    nfields = 5 + poss_dup + poss_resend + (orig_sending_time is not None)
    for tag, v in fields:
        parts += (_TAG_PREFIX.get(tag) or _tag_prefix(tag), fmt(type(v), _other)(v), SOH)
        nfields += 1
    body = b"".join(parts)
    # One scan instead of a check per value: a value holding SOH adds a field; an empty one adds "=SOH".
    if body.count(SOH) != nfields or b"=\x01" in body:
        _check_values(msg_type, sender, target, fields)
    head = b"8=" + begin_string + b"\x019=%d\x01" % len(body)
    return b"%s%s10=%03d\x01" % (head, body, (sum(head) + sum(body)) & 0xFF)


_TAG_PREFIX = {t: b"%d=" % t for t in range(1, 1000) if t not in (TAG_BEGIN_STRING, TAG_BODY_LENGTH, TAG_CHECKSUM)}


def _tag_prefix(tag) -> bytes:
    if type(tag) is not int or tag <= 0 or tag in (TAG_BEGIN_STRING, TAG_BODY_LENGTH, TAG_CHECKSUM):
        raise ValueError(f"tag {tag!r} cannot be set by the caller")
    return b"%d=" % tag


def _check_values(msg_type, sender, target, fields):
    for tag, v in [(TAG_MSG_TYPE, msg_type), (TAG_SENDER_COMP_ID, sender), (TAG_TARGET_COMP_ID, target),
                   *fields]:
        b = _value(v)
        if not b or SOH in b:
            raise ValueError(f"value {v!r} of tag {tag} is empty or contains SOH")


# ---- decoding -------------------------------------------------------------------------------------

_TAG_CACHE = {b"%d" % t: t for t in range(1, 1000)}


def split_fields(raw: bytes) -> FixMessage:
    """Fields of one framed message (trailing SOH included). Field faults do not raise: the first one
    is kept as `problem` for validate, so a Reject can still quote the message's MsgSeqNum."""
    get = _TAG_CACHE.get
    fields = []
    append = fields.append
    for f in raw.split(SOH)[:-1]:
        t, _, v = f.partition(b"=")
        tag = get(t)
        if tag is None or not v:
            return _split_slow(raw)
        append((tag, v))
    return FixMessage(fields, raw)


def _split_slow(raw: bytes) -> FixMessage:
    fields = []
    problem = None
    for f in raw.split(SOH)[:-1]:
        t, sep, v = f.partition(b"=")
        if not sep or not t.isdigit() or t[0] == 48:  # 48: "0", no leading zeros in tag numbers
            if problem is None:
                problem = FixValidationError(REJ_INVALID_TAG_NUMBER, None, f"Invalid tag number: {f[:20]!r}")
            continue
        tag = int(t)
        if not v and problem is None:
            problem = FixValidationError(REJ_TAG_WITHOUT_VALUE, tag, f"Tag specified without a value: {tag}")
        fields.append((tag, v))
    return FixMessage(fields, raw, problem)


def parse(raw: bytes) -> FixMessage:
    """Parse exactly one complete message, checking framing, BodyLength and CheckSum (GarbledError)."""
    p = FixStreamParser()
    out = p.feed(raw)
    if p.pending:
        raise GarbledError("incomplete", f"{p.pending} bytes left over after the message")
    if len(out) != 1:
        raise GarbledError("incomplete", "no complete message")
    if isinstance(out[0], GarbledMessage):
        raise GarbledError(out[0].kind, f"garbled message ({out[0].kind})")
    return out[0]


_START = b"8=FIX"
_RESYNC = b"\x018=FIX"


class FixStreamParser:
    """Frames a TCP byte stream into messages by BodyLength; garbled input is dropped and counted."""

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE):
        self._buf = bytearray()
        self.max_size = max_size
        self.garbled: dict[str, int] = {}  # kind -> count

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a message."""
        return len(self._buf)

    def feed(self, data) -> list:
        """Append bytes; return every complete message (FixMessage) or dropped chunk (GarbledMessage)."""
        buf = self._buf
        buf += data
        out = []
        pos = 0
        n = len(buf)
        while pos < n:
            if not buf.startswith(_START, pos):
                i = buf.find(_START, pos)
                if i < 0:
                    # Keep a possible partial "8=FIX" at the end; the rest is junk.
                    keep = max(pos, n - 4)
                    while keep < n and not _START.startswith(bytes(buf[keep:n])):
                        keep += 1
                    if keep > pos:
                        self._drop(out, "junk", buf, pos, keep)
                    pos = keep
                    break
                self._drop(out, "junk", buf, pos, i)
                pos = i
            # BeginString, then BodyLength.
            e1 = buf.find(SOH, pos, pos + 32)
            if e1 < 0:
                if n - pos >= 32:
                    pos = self._resync(out, "begin_string", buf, pos)
                    continue
                break
            if not buf.startswith(b"9=", e1 + 1):
                if n - e1 - 1 < 2:
                    break
                pos = self._resync(out, "body_length", buf, pos)
                continue
            e2 = buf.find(SOH, e1 + 3, e1 + 12)
            if e2 < 0:
                if n - e1 >= 12:
                    pos = self._resync(out, "body_length", buf, pos)
                    continue
                break
            digits = bytes(buf[e1 + 3:e2])
            if not digits.isdigit() or int(digits) > self.max_size:
                pos = self._resync(out, "body_length", buf, pos)
                continue
            body = e2 + 1
            cs = body + int(digits)
            if n < cs + 7:
                # A new message starting inside the declared body means BodyLength is wrong:
                # drop now rather than stall the next message until enough bytes arrive.
                nxt = buf.find(_RESYNC, body, n)
                if nxt >= 0:
                    self._drop(out, "body_length", buf, pos, nxt + 1)
                    pos = nxt + 1
                    continue
                break
            if (buf[cs - 1] != 1 or not buf.startswith(b"10=", cs) or buf[cs + 6] != 1
                    or not bytes(buf[cs + 3:cs + 6]).isdigit()):
                pos = self._resync(out, "body_length", buf, pos)
                continue
            end = cs + 7
            if sum(memoryview(buf)[pos:cs]) & 0xFF != int(buf[cs + 3:cs + 6]):
                self._drop(out, "checksum", buf, pos, end)
                pos = end
                continue
            raw = bytes(buf[pos:end])
            msg = split_fields(raw)
            f = msg.fields
            if len(f) < 4 or f[2][0] != TAG_MSG_TYPE:
                self._drop(out, "msg_type", buf, pos, end)
            else:
                out.append(msg)
            pos = end
        if pos:
            del buf[:pos]
        return out

    def _drop(self, out, kind, buf, start, end):
        self.garbled[kind] = self.garbled.get(kind, 0) + 1
        out.append(GarbledMessage(kind, bytes(buf[start:end])))

    def _resync(self, out, kind, buf, start) -> int:
        """Drop a message whose header or length is broken; continue at the next BeginString."""
        nxt = buf.find(_RESYNC, start + 1)
        end = nxt + 1 if nxt >= 0 else len(buf)
        self._drop(out, kind, buf, start, end)
        return end


# ---- validation -----------------------------------------------------------------------------------

_DECIMAL = re.compile(rb"-?(?:\d+\.?\d*|\.\d+)")
_FORMAT_CHECKED = INT_TAGS | FLOAT_TAGS | TIME_TAGS | frozenset(ENUMS)


def validate(msg: FixMessage, required: dict[bytes, tuple[int, ...]] = REQUIRED) -> None:
    """Raise FixValidationError (with 373, 371, 45 and 372 filled in) if `msg` breaks a FIX 4.4 rule
    this codec checks: field syntax, header tags, MsgType, required tags, repeated tags, formats, enums."""
    m = msg._map
    mt = m.get(TAG_MSG_TYPE, b"")
    try:
        if msg.problem is not None:
            raise msg.problem
        for tag in HEADER_REQUIRED:
            if tag not in m:
                raise FixValidationError(REJ_REQUIRED_TAG_MISSING, tag, f"Required tag missing: {tag}")
        if mt not in FIX44_MSG_TYPES:
            raise FixValidationError(REJ_INVALID_MSG_TYPE, TAG_MSG_TYPE, f"Invalid MsgType: {mt.decode('latin-1')}")
        body_required = required.get(mt, ())
        for tag in body_required:
            if tag not in m:
                raise FixValidationError(REJ_REQUIRED_TAG_MISSING, tag, f"Required tag missing: {tag}")
        if msg._dups:
            # Unknown tags may legally repeat inside repeating groups; header and required ones never do.
            for tag in msg._dups:
                if tag in HEADER_TAGS or tag in body_required or tag in INT_TAGS or tag in ENUMS:
                    raise FixValidationError(REJ_TAG_APPEARS_MORE_THAN_ONCE, tag,
                                             f"Tag appears more than once: {tag}")
        # Only the tags this codec knows a format for, in tag order (the same answer every time).
        for tag in sorted(_FORMAT_CHECKED.intersection(m)):
            v = m[tag]
            if tag in INT_TAGS:
                if not (v.isdigit() or (v[:1] == b"-" and v[1:].isdigit())):
                    raise FixValidationError(REJ_INCORRECT_DATA_FORMAT, tag, f"Incorrect data format for value: {tag}")
            elif tag in FLOAT_TAGS:
                if _DECIMAL.fullmatch(v) is None:
                    raise FixValidationError(REJ_INCORRECT_DATA_FORMAT, tag, f"Incorrect data format for value: {tag}")
            elif tag in TIME_TAGS:
                # The pattern bounds every part; only days 29-31 need the calendar.
                if _TIMESTAMP.fullmatch(v) is None or (v[6:8] > b"28" and not _valid_day(v)):
                    raise FixValidationError(REJ_INCORRECT_DATA_FORMAT, tag, f"Incorrect data format for value: {tag}")
            if tag in ENUMS and v not in ENUMS[tag]:
                raise FixValidationError(REJ_VALUE_INCORRECT, tag,
                                         f"Value is incorrect (out of range) for this tag: {tag}")
    except FixValidationError as e:
        e.ref_seq = msg.seq_num
        e.ref_msg_type = mt or None
        raise
