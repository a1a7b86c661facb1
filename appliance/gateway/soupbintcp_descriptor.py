"""NASDAQ SoupBinTCP 4.x packet layouts, Python codecs and a stream framer (numba and Python) for both sides.

Every logical packet is a big-endian u16 length that counts the type byte and the payload (not
itself), one type byte, and the payload. TCP may split or merge packets, so a reader frames the
byte stream by those lengths. Alpha fields are ASCII, left-justified and padded on the right with
spaces; numeric fields are ASCII digits, right-justified and padded on the left with spaces. The
spec marks the Login Accepted session as "left padded with spaces" too, so it is right-justified
there (the Login Request carries it as an ordinary left-justified alpha field).

```
 0               2       3
 +---------------+-------+----------------------------- ...
 | length (u16)  | type  | payload (length - 1 bytes)
 +---------------+-------+----------------------------- ...

 server -> client                                  client -> server
 '+' Debug            text (any length)            '+' Debug              text
 'A' Login Accepted   (length 31)                  'L' Login Request      (length 47)
 'J' Login Rejected   reason @3 (length 2)         'U' Unsequenced Data   message (any length)
 'S' Sequenced Data   message (any length)         'R' Client Heartbeat   (length 1)
 'H' Server Heartbeat (length 1)                   'O' Logout Request     (length 1)
 'Z' End of Session   (length 1)

 A  Login Accepted
 3                                       13                                                      33
 +---------------------------------------+-------------------------------------------------------+
 | session alpha10 (right-justified)     | sequence number numeric20: next Sequenced Data to come |
 +---------------------------------------+-------------------------------------------------------+

 L  Login Request
 3                  9                    19                   29                                   49
 +------------------+--------------------+--------------------+------------------------------------+
 | username alpha6  | password alpha10   | req. session a10   | req. sequence numeric20 (0 = next) |
 +------------------+--------------------+--------------------+------------------------------------+
```
Login Rejected reasons: 'A' not authorized (bad username/password), 'S' session not available.
Sequenced Data carries no number on the wire: both sides count, starting at 1 per session.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from appliance.runtime.wire import get_u16, put_u16

# ---- packet header ----------------------------------------------------------------------------
OFF_LENGTH = 0
OFF_TYPE = 2
HEADER_SIZE = 3          # the length field plus the type byte
MAX_PACKET = 2 + 0xFFFF  # the largest packet a u16 length can describe

# ---- packet types -----------------------------------------------------------------------------
PKT_DEBUG = ord("+")
PKT_LOGIN_ACCEPTED = ord("A")
PKT_LOGIN_REJECTED = ord("J")
PKT_SEQUENCED = ord("S")
PKT_SERVER_HEARTBEAT = ord("H")
PKT_END_OF_SESSION = ord("Z")
PKT_LOGIN_REQUEST = ord("L")
PKT_UNSEQUENCED = ord("U")
PKT_CLIENT_HEARTBEAT = ord("R")
PKT_LOGOUT_REQUEST = ord("O")

# ---- payload offsets (from the start of the packet) and field widths ---------------------------
LACC_SESSION = 3
LACC_SEQUENCE = 13
LACC_SIZE = 33           # whole packet
LREJ_REASON = 3
LREJ_SIZE = 4
LREQ_USERNAME = 3
LREQ_PASSWORD = 9
LREQ_SESSION = 19
LREQ_SEQUENCE = 29
LREQ_SIZE = 49
PAYLOAD_OFF = 3          # Debug / Sequenced / Unsequenced payloads

USERNAME_WIDTH = 6
PASSWORD_WIDTH = 10
SESSION_WIDTH = 10
SEQUENCE_WIDTH = 20

REJECT_NOT_AUTHORIZED = "A"
REJECT_SESSION_NOT_AVAILABLE = "S"
REJECT_REASONS = {REJECT_NOT_AUTHORIZED: "not authorized", REJECT_SESSION_NOT_AVAILABLE: "session not available"}

# The length field each type must carry: a positive number for fixed-size packets, VARIABLE for
# packets whose payload is free-form. Indexed by type byte, one table per sending side; 0 marks a
# type that side never sends (the framer counts it as unknown).
VARIABLE = -1
FROM_SERVER = np.zeros(256, dtype=np.int32)
FROM_CLIENT = np.zeros(256, dtype=np.int32)
for _t, _n in ((PKT_DEBUG, VARIABLE), (PKT_LOGIN_ACCEPTED, LACC_SIZE - 2), (PKT_LOGIN_REJECTED, LREJ_SIZE - 2),
               (PKT_SEQUENCED, VARIABLE), (PKT_SERVER_HEARTBEAT, 1), (PKT_END_OF_SESSION, 1)):
    FROM_SERVER[_t] = _n
for _t, _n in ((PKT_DEBUG, VARIABLE), (PKT_LOGIN_REQUEST, LREQ_SIZE - 2), (PKT_UNSEQUENCED, VARIABLE),
               (PKT_CLIENT_HEARTBEAT, 1), (PKT_LOGOUT_REQUEST, 1)):
    FROM_CLIENT[_t] = _n

assert (FROM_SERVER[PKT_LOGIN_ACCEPTED], FROM_CLIENT[PKT_LOGIN_REQUEST]) == (31, 47), "layout drifted from SoupBinTCP 4"

# ---- framer counters (indices into the counters array the numba framer updates) ---------------
FC_PACKETS = 0           # well-formed packets handed out
FC_BAD_LENGTH = 1        # length 0, or a fixed-size type with the wrong length (skipped by its length)
FC_UNKNOWN_TYPE = 2      # a type byte this side never sends (skipped by its length)
FC_TRUNCATED = 3         # bytes left over when the stream ended mid-packet (Python framer's close())
FC_WORDS = 4
COUNTER_NAMES = ("packets", "bad_length", "unknown_type", "truncated")


# ---- field helpers (cold path) -------------------------------------------------------------------
def pack_alpha(text: str | bytes, width: int) -> bytes:
    """Left-justify and space-pad an ASCII alpha field; longer text is an error."""
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    if len(raw) > width:
        raise ValueError(f"{raw!r} is longer than the {width}-byte field")
    return raw.ljust(width, b" ")


def pack_alpha_right(text: str | bytes, width: int) -> bytes:
    """Right-justify (left-pad with spaces) an alpha field, as the Login Accepted session is sent."""
    return pack_alpha(text, width).strip(b" ").rjust(width, b" ")


def pack_numeric(value: int, width: int) -> bytes:
    """An ASCII numeric field: decimal digits right-justified, padded on the left with spaces."""
    if value < 0:
        raise ValueError(f"numeric field cannot hold {value}")
    raw = str(int(value)).encode("ascii")
    if len(raw) > width:
        raise ValueError(f"{value} does not fit a {width}-digit field")
    return raw.rjust(width, b" ")


def parse_numeric(raw: bytes) -> int:
    """Read an ASCII numeric field; all blanks read as 0, anything but digits and padding is an error."""
    text = bytes(raw).strip(b" ")
    if not text:
        return 0
    if not text.isdigit():
        raise ValueError(f"numeric field {bytes(raw)!r} holds non-digits")
    return int(text)


def alpha_text(raw: bytes) -> str:
    """An alpha field's text without its padding (either side, so both justifications read the same)."""
    return bytes(raw).decode("ascii", "replace").strip(" ")


# ---- packet encoders (cold path) ----------------------------------------------------------------
def encode_packet(ptype: int | str, payload: bytes = b"") -> bytes:
    """Frame one packet: length (type + payload), type byte, payload."""
    t = ord(ptype) if isinstance(ptype, str) else ptype
    if len(payload) + 1 > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit a SoupBinTCP packet")
    return (len(payload) + 1).to_bytes(2, "big") + bytes((t,)) + bytes(payload)


def login_request(username: str, password: str, session: str = "", sequence: int = 0) -> bytes:
    """'L': blank session = the current one; sequence 0 = start with the next message generated."""
    return encode_packet(PKT_LOGIN_REQUEST, pack_alpha(username, USERNAME_WIDTH) + pack_alpha(password, PASSWORD_WIDTH)
                         + pack_alpha(session, SESSION_WIDTH) + pack_numeric(sequence, SEQUENCE_WIDTH))


def login_accepted(session: str, sequence: int) -> bytes:
    """'A': the session logged into and the number of the next Sequenced Data packet to be sent."""
    return encode_packet(PKT_LOGIN_ACCEPTED, pack_alpha_right(session, SESSION_WIDTH)
                         + pack_numeric(sequence, SEQUENCE_WIDTH))


def login_rejected(reason: str) -> bytes:
    """'J' with reason 'A' (not authorized) or 'S' (session not available)."""
    if reason not in REJECT_REASONS:
        raise ValueError(f"login reject reason must be one of {sorted(REJECT_REASONS)}, not {reason!r}")
    return encode_packet(PKT_LOGIN_REJECTED, reason.encode("ascii"))


def sequenced(message: bytes) -> bytes:
    return encode_packet(PKT_SEQUENCED, message)


def unsequenced(message: bytes) -> bytes:
    return encode_packet(PKT_UNSEQUENCED, message)


def debug(text: str | bytes) -> bytes:
    return encode_packet(PKT_DEBUG, text.encode("ascii") if isinstance(text, str) else text)


def server_heartbeat() -> bytes:
    return encode_packet(PKT_SERVER_HEARTBEAT)


def client_heartbeat() -> bytes:
    return encode_packet(PKT_CLIENT_HEARTBEAT)


def end_of_session() -> bytes:
    return encode_packet(PKT_END_OF_SESSION)


def logout_request() -> bytes:
    return encode_packet(PKT_LOGOUT_REQUEST)


def decode_packet(packet: bytes) -> dict:
    """Decode one whole packet (length field included) into a dict; raises ValueError on a bad one."""
    raw = bytes(packet)
    if len(raw) < HEADER_SIZE:
        raise ValueError(f"a SoupBinTCP packet has at least {HEADER_SIZE} bytes, got {len(raw)}")
    length = int.from_bytes(raw[:2], "big")
    if length + 2 != len(raw):
        raise ValueError(f"length field says {length} + 2 bytes, packet has {len(raw)}")
    t = raw[OFF_TYPE]
    fixed = int(FROM_SERVER[t]) or int(FROM_CLIENT[t])  # a type both sides send has one size
    if fixed == 0:
        raise ValueError(f"unknown SoupBinTCP packet type {t:#04x}")
    if fixed > 0 and fixed != length:
        raise ValueError(f"SoupBinTCP {chr(t)!r} has length {fixed}, got {length}")
    out: dict = {"type": chr(t)}
    if t == PKT_LOGIN_ACCEPTED:
        out["session"] = alpha_text(raw[LACC_SESSION:LACC_SEQUENCE])
        out["sequence"] = parse_numeric(raw[LACC_SEQUENCE:LACC_SIZE])
    elif t == PKT_LOGIN_REJECTED:
        out["reason"] = chr(raw[LREJ_REASON])
    elif t == PKT_LOGIN_REQUEST:
        out["username"] = alpha_text(raw[LREQ_USERNAME:LREQ_PASSWORD])
        out["password"] = alpha_text(raw[LREQ_PASSWORD:LREQ_SESSION])
        out["session"] = alpha_text(raw[LREQ_SESSION:LREQ_SEQUENCE])
        out["sequence"] = parse_numeric(raw[LREQ_SEQUENCE:LREQ_SIZE])
    elif t in (PKT_DEBUG, PKT_SEQUENCED, PKT_UNSEQUENCED):
        out["payload"] = raw[PAYLOAD_OFF:]
    return out


# ---- framing -------------------------------------------------------------------------------------
class SoupFramer:
    """Splits a TCP byte stream into whole packets, keeping a partial tail for the next feed.

    `sent_by` names the side that wrote the stream ("server" or "client"): it decides which types
    are known. Malformed packets are counted in `counters` and skipped, never raised.
    """

    def __init__(self, sent_by: str):
        if sent_by not in ("server", "client"):
            raise ValueError(f"sent_by must be 'server' or 'client', not {sent_by!r}")
        self.table = FROM_SERVER if sent_by == "server" else FROM_CLIENT
        self.buf = bytearray()
        self.counters = dict.fromkeys(COUNTER_NAMES, 0)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Append bytes; return the (type, payload) of every whole well-formed packet now complete."""
        self.buf += data
        out = []
        pos, end = 0, len(self.buf)
        while end - pos >= 2:
            length = (self.buf[pos] << 8) | self.buf[pos + 1]
            if length == 0:
                self.counters["bad_length"] += 1
                pos += 2
                continue
            if end - pos < 2 + length:
                break
            t = self.buf[pos + 2]
            want = int(self.table[t])
            if want == 0:
                self.counters["unknown_type"] += 1
            elif want > 0 and want != length:
                self.counters["bad_length"] += 1
            else:
                self.counters["packets"] += 1
                out.append((t, bytes(self.buf[pos + 3:pos + 2 + length])))
            pos += 2 + length
        del self.buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a packet."""
        return len(self.buf)

    def close(self) -> None:
        """The stream ended: a partial packet left behind is counted as truncated and dropped."""
        if self.buf:
            self.counters["truncated"] += 1
            self.buf.clear()


@njit(nogil=True, cache=True)
def frame_packets(buf, start, end, table, out_off, out_len, out_type, counters):
    """Frame whole packets in buf[start:end] into (payload offset, payload length, type) triples.

    Stops at a partial packet or when the output arrays are full; returns (packets written, the
    position to resume from). Bad lengths and unknown types are counted in `counters` and skipped.
    """
    pos = start
    n = 0
    cap = out_off.shape[0]
    while n < cap and end - pos >= 2:
        length = np.int64(get_u16(buf, pos))  # unsigned + signed would widen pos to float
        if length == 0:
            counters[FC_BAD_LENGTH] += 1
            pos += 2
            continue
        if end - pos < 2 + length:
            break
        t = buf[pos + 2]
        want = table[t]
        if want == 0:
            counters[FC_UNKNOWN_TYPE] += 1
        elif want > 0 and want != length:
            counters[FC_BAD_LENGTH] += 1
        else:
            out_off[n] = pos + 3
            out_len[n] = length - 1
            out_type[n] = t
            n += 1
            counters[FC_PACKETS] += 1
        pos += 2 + length
    return n, pos


@njit(nogil=True, cache=True)
def put_header(buf, off, ptype, payload_len):
    """Write a packet header for a payload of payload_len bytes; returns the payload's offset."""
    put_u16(buf, off, payload_len + 1)
    buf[off + 2] = ptype
    return off + HEADER_SIZE


@njit(nogil=True, cache=True)
def put_numeric(buf, off, width, value):
    """Write value as an ASCII numeric field (right-justified, space-padded); False if it does not fit."""
    v = value
    i = width - 1
    while True:
        if i < 0:
            return False
        buf[off + i] = 48 + v % 10
        v //= 10
        i -= 1
        if v == 0:
            break
    while i >= 0:
        buf[off + i] = 32
        i -= 1
    return True


@njit(nogil=True, cache=True)
def get_numeric(buf, off, width):
    """Read an ASCII numeric field (spaces around digits allowed); -1 if it holds anything else."""
    v = 0
    seen_digit = False
    trailing = False
    for i in range(width):
        c = buf[off + i]
        if c == 32:
            if seen_digit:
                trailing = True
        elif 48 <= c <= 57 and not trailing:
            v = v * 10 + (c - 48)
            seen_digit = True
        else:
            return -1
    return v


__all__ = [
    "SoupFramer", "frame_packets", "put_header", "put_numeric", "get_numeric", "encode_packet", "decode_packet",
    "login_request", "login_accepted", "login_rejected", "sequenced", "unsequenced", "debug", "server_heartbeat",
    "client_heartbeat", "end_of_session", "logout_request", "pack_alpha", "pack_alpha_right", "pack_numeric",
    "parse_numeric", "alpha_text", "FROM_SERVER", "FROM_CLIENT",
]
