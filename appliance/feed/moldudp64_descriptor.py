"""MoldUDP64 1.00 packet layouts: downstream packets, message blocks and re-request packets.

All integers are big-endian. Sequence numbers count messages, from 1, within one session.

```
 downstream packet (publisher -> listeners, and retransmission server -> requester)
 0                               10                              18      20
 +-------------------------------+-------------------------------+-------+----------------- ...
 | session: 10 ASCII bytes       | sequence: u64, seq of the     | count | message blocks
 | (space-padded)                | first message in the packet   | u16   |
 +-------------------------------+-------------------------------+-------+----------------- ...
   count 0      = heartbeat: sequence is the next sequence the publisher will use
   count 0xFFFF = end of session: sequence is one past the last message; no blocks follow

 message block (count of them, back to back)
 0       2
 +-------+---------------------------+
 | len   | message: len bytes (ITCH) |
 | u16   |                           |
 +-------+---------------------------+

 request packet (listener -> retransmission server; answered with downstream packets)
 0                               10                              18      20
 +-------------------------------+-------------------------------+-------+
 | session                       | first sequence wanted: u64    | count |
 +-------------------------------+-------------------------------+-------+
```

A packet should fit one Ethernet frame unfragmented: MAX_PAYLOAD (1472 = 1500 - 20 IP - 8 UDP) is the
default UDP payload a sender fills; each sender may configure its own (loopback and jumbo frames
carry more). `*_nb` functions are the numba versions for hot loops; the rest is the cold path.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from ..runtime.wire import get_u16, get_u64, put_u16, put_u64

# ---- downstream header --------------------------------------------------------------------------
OFF_SESSION = 0
SESSION_SIZE = 10
OFF_SEQUENCE = 10
OFF_COUNT = 18
HEADER_SIZE = 20

# ---- message block ------------------------------------------------------------------------------
BLOCK_LEN_SIZE = 2
MAX_MESSAGE_SIZE = 0xFFFF

# ---- request packet -----------------------------------------------------------------------------
REQ_OFF_SESSION = 0
REQ_OFF_SEQUENCE = 10
REQ_OFF_COUNT = 18
REQUEST_SIZE = 20

# ---- special counts and limits --------------------------------------------------------------------
COUNT_HEARTBEAT = 0
COUNT_END_OF_SESSION = 0xFFFF
MAX_COUNT = 0xFFFE  # largest message count a data packet may carry
MAX_PAYLOAD = 1472  # default UDP payload per packet: one 1500-byte Ethernet MTU, unfragmented
MAX_DATAGRAM = 65507  # largest IPv4 UDP payload


# ---- hot path (numba) -----------------------------------------------------------------------------
@njit(nogil=True, cache=True, inline="always")
def put_header_nb(buf, off, session, seq, count):
    """Write a downstream header at buf[off:]; `session` is uint8[10]."""
    for i in range(SESSION_SIZE):
        buf[off + OFF_SESSION + i] = session[i]
    put_u64(buf, off + OFF_SEQUENCE, seq)
    put_u16(buf, off + OFF_COUNT, count)


@njit(nogil=True, cache=True, inline="always")
def put_count_nb(buf, off, count):
    """Patch the message count of a header written before its blocks were known."""
    put_u16(buf, off + OFF_COUNT, count)


@njit(nogil=True, cache=True, inline="always")
def header_sequence_nb(buf, off):
    """The header's sequence number (as int64)."""
    return get_u64(buf, off + OFF_SEQUENCE)


@njit(nogil=True, cache=True, inline="always")
def header_count_nb(buf, off):
    """The header's message count (0 heartbeat, 0xFFFF end of session)."""
    return np.int64(get_u16(buf, off + OFF_COUNT))


@njit(nogil=True, cache=True, inline="always")
def block_length_nb(buf, off):
    """The length field of the message block at buf[off:].

    As int64: wire.get_u16 yields uint64 under numba, and uint64 mixed with int64 arithmetic turns float.
    """
    return np.int64(get_u16(buf, off))


@njit(nogil=True, cache=True, inline="always")
def session_matches_nb(buf, off, session):
    """True when the 10 session bytes at buf[off:] equal `session` (uint8[10])."""
    for i in range(SESSION_SIZE):
        if buf[off + i] != session[i]:
            return False
    return True


@njit(nogil=True, cache=True, inline="always")
def put_block_nb(buf, off, src, src_off, length):
    """Append one message block (length prefix, then src[src_off:src_off+length]) at buf[off:]; returns the end."""
    put_u16(buf, off, length)
    off += BLOCK_LEN_SIZE
    for i in range(length):
        buf[off + i] = src[src_off + i]
    return off + length


@njit(nogil=True, cache=True, inline="always")
def put_request_nb(buf, off, session, seq, count):
    """Write a request packet (REQUEST_SIZE bytes) at buf[off:]."""
    for i in range(SESSION_SIZE):
        buf[off + REQ_OFF_SESSION + i] = session[i]
    put_u64(buf, off + REQ_OFF_SEQUENCE, seq)
    put_u16(buf, off + REQ_OFF_COUNT, count)


@njit(nogil=True, cache=True, inline="always")
def request_sequence_nb(buf, off):
    return get_u64(buf, off + REQ_OFF_SEQUENCE)


@njit(nogil=True, cache=True, inline="always")
def request_count_nb(buf, off):
    return np.int64(get_u16(buf, off + REQ_OFF_COUNT))


# ---- cold path ------------------------------------------------------------------------------------
def session_bytes(name: str | bytes) -> bytes:
    """A session name as its 10 wire bytes: ASCII, space-padded on the right."""
    raw = name.encode("ascii") if isinstance(name, str) else bytes(name)
    if len(raw) > SESSION_SIZE:
        raise ValueError(f"MoldUDP64 session {raw!r} is longer than {SESSION_SIZE} bytes")
    if any(b < 0x20 or b > 0x7E for b in raw):
        raise ValueError(f"MoldUDP64 session {raw!r} is not printable ASCII")
    return raw.ljust(SESSION_SIZE, b" ")


def session_array(name: str | bytes) -> np.ndarray:
    """A session name as uint8[10], the form the numba functions take."""
    return np.frombuffer(session_bytes(name), dtype=np.uint8).copy()


def encode_header(session: str | bytes, seq: int, count: int) -> bytes:
    """A downstream header alone (a heartbeat or end-of-session packet is exactly this)."""
    if not 0 <= count <= 0xFFFF:
        raise ValueError(f"message count {count} outside 0..65535")
    if not 0 <= seq < 1 << 64:
        raise ValueError(f"sequence {seq} outside u64")
    return session_bytes(session) + seq.to_bytes(8, "big") + count.to_bytes(2, "big")


def encode_heartbeat(session: str | bytes, next_seq: int) -> bytes:
    return encode_header(session, next_seq, COUNT_HEARTBEAT)


def encode_end_of_session(session: str | bytes, next_seq: int) -> bytes:
    return encode_header(session, next_seq, COUNT_END_OF_SESSION)


def encode_packet(session: str | bytes, seq: int, messages, max_payload: int = MAX_DATAGRAM) -> bytes:
    """A downstream packet carrying `messages` (a sequence of bytes-like), the first numbered `seq`."""
    messages = [bytes(m) for m in messages]
    if not messages:
        raise ValueError("a data packet needs at least one message (use encode_heartbeat)")
    if len(messages) > MAX_COUNT:
        raise ValueError(f"{len(messages)} messages exceed the {MAX_COUNT} a packet can count")
    parts = [encode_header(session, seq, len(messages))]
    for m in messages:
        if len(m) > MAX_MESSAGE_SIZE:
            raise ValueError(f"message of {len(m)} bytes exceeds {MAX_MESSAGE_SIZE}")
        parts.append(len(m).to_bytes(2, "big") + m)
    out = b"".join(parts)
    if len(out) > max_payload:
        raise ValueError(f"packet of {len(out)} bytes exceeds max_payload {max_payload}")
    return out


def pack_messages(session: str | bytes, seq: int, messages, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """Greedily pack `messages` into as few packets of at most `max_payload` bytes as possible."""
    packets, batch, size = [], [], HEADER_SIZE
    for m in messages:
        need = BLOCK_LEN_SIZE + len(m)
        if HEADER_SIZE + need > max_payload:
            raise ValueError(f"a {len(m)}-byte message cannot fit a {max_payload}-byte packet")
        if size + need > max_payload or len(batch) == MAX_COUNT:
            packets.append(encode_packet(session, seq, batch, max_payload))
            seq += len(batch)
            batch, size = [], HEADER_SIZE
        batch.append(m)
        size += need
    if batch:
        packets.append(encode_packet(session, seq, batch, max_payload))
    return packets


class Packet(NamedTuple):
    """A decoded downstream packet."""

    session: bytes
    seq: int
    count: int
    messages: list[bytes]

    @property
    def is_heartbeat(self) -> bool:
        return self.count == COUNT_HEARTBEAT

    @property
    def is_end_of_session(self) -> bool:
        return self.count == COUNT_END_OF_SESSION


def decode_packet(data) -> Packet:
    """Decode a downstream packet; raises ValueError naming what is wrong with a malformed one."""
    raw = bytes(data)
    if len(raw) < HEADER_SIZE:
        raise ValueError(f"MoldUDP64 packet of {len(raw)} bytes is shorter than the {HEADER_SIZE}-byte header")
    session = raw[OFF_SESSION:OFF_SESSION + SESSION_SIZE]
    seq = int.from_bytes(raw[OFF_SEQUENCE:OFF_SEQUENCE + 8], "big")
    count = int.from_bytes(raw[OFF_COUNT:OFF_COUNT + 2], "big")
    messages = []
    if count not in (COUNT_HEARTBEAT, COUNT_END_OF_SESSION):
        off = HEADER_SIZE
        for i in range(count):
            if off + BLOCK_LEN_SIZE > len(raw):
                raise ValueError(f"block {i} of {count}: length field runs past the {len(raw)}-byte packet")
            n = int.from_bytes(raw[off:off + 2], "big")
            off += BLOCK_LEN_SIZE
            if off + n > len(raw):
                raise ValueError(f"block {i} of {count}: {n}-byte message runs past the {len(raw)}-byte packet")
            messages.append(raw[off:off + n])
            off += n
    return Packet(session, seq, count, messages)


def encode_request(session: str | bytes, seq: int, count: int) -> bytes:
    """A re-request for `count` messages starting at `seq`."""
    if not 0 <= count <= 0xFFFF:
        raise ValueError(f"requested count {count} outside 0..65535")
    return session_bytes(session) + seq.to_bytes(8, "big") + count.to_bytes(2, "big")


def decode_request(data) -> tuple[bytes, int, int]:
    """(session, seq, count) of a request packet; raises ValueError when it is not REQUEST_SIZE bytes."""
    raw = bytes(data)
    if len(raw) != REQUEST_SIZE:
        raise ValueError(f"MoldUDP64 request is {REQUEST_SIZE} bytes, got {len(raw)}")
    return (raw[:SESSION_SIZE], int.from_bytes(raw[REQ_OFF_SEQUENCE:REQ_OFF_SEQUENCE + 8], "big"),
            int.from_bytes(raw[REQ_OFF_COUNT:REQ_OFF_COUNT + 2], "big"))


def messages_per_packet(message_size: int, max_payload: int = MAX_PAYLOAD) -> int:
    """How many messages of one size fit a packet."""
    return min(MAX_COUNT, (max_payload - HEADER_SIZE) // (BLOCK_LEN_SIZE + message_size))
