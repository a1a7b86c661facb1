"""MoldUDP64 descriptor: the numba and Python codecs agree, round trip, and reject malformed packets."""

import numpy as np
import pytest
from numba import njit

from appliance.feed import itch_descriptor as itch
from appliance.feed import moldudp64_descriptor as mold

SESSION = "SESSION001"


def messages(n: int) -> list[bytes]:
    return [itch.encode("A", ref=i, side="S", shares=i, stock="MSFT", price=i * 100) for i in range(n)]


@njit(cache=True)
def _build_nb(session, seq, src, offsets, lengths, out):
    """Header, then each message as a block, count patched at the end: how a sender packs."""
    mold.put_header_nb(out, 0, session, seq, 0)
    off = mold.HEADER_SIZE
    for i in range(offsets.shape[0]):
        off = mold.put_block_nb(out, off, src, offsets[i], lengths[i])
    mold.put_count_nb(out, 0, offsets.shape[0])
    return off


@njit(cache=True)
def _read_nb(buf, session):
    return (mold.header_sequence_nb(buf, 0), mold.header_count_nb(buf, 0),
            mold.session_matches_nb(buf, 0, session), mold.block_length_nb(buf, mold.HEADER_SIZE))


@njit(cache=True)
def _request_nb(out, session, seq, count):
    mold.put_request_nb(out, 0, session, seq, count)
    return mold.request_sequence_nb(out, 0), mold.request_count_nb(out, 0)


def test_layout_constants():
    assert (mold.OFF_SESSION, mold.OFF_SEQUENCE, mold.OFF_COUNT, mold.HEADER_SIZE) == (0, 10, 18, 20)
    assert (mold.REQ_OFF_SEQUENCE, mold.REQ_OFF_COUNT, mold.REQUEST_SIZE) == (10, 18, 20)
    assert mold.MAX_PAYLOAD == 1500 - 20 - 8
    assert (mold.COUNT_HEARTBEAT, mold.COUNT_END_OF_SESSION) == (0, 0xFFFF)


def test_packet_round_trip():
    msgs = messages(5)
    raw = mold.encode_packet(SESSION, 1 << 40, msgs)
    assert len(raw) == mold.HEADER_SIZE + sum(2 + len(m) for m in msgs)
    assert raw[:10] == b"SESSION001" and int.from_bytes(raw[10:18], "big") == 1 << 40
    p = mold.decode_packet(raw)
    assert (p.session, p.seq, p.count, p.messages) == (b"SESSION001", 1 << 40, 5, msgs)
    assert not p.is_heartbeat and not p.is_end_of_session


def test_heartbeat_and_end_of_session():
    hb = mold.decode_packet(mold.encode_heartbeat("S", 42))
    assert hb.is_heartbeat and hb.seq == 42 and hb.session == b"S         " and hb.messages == []
    eos = mold.decode_packet(mold.encode_end_of_session("S", 43))
    assert eos.is_end_of_session and eos.seq == 43 and len(mold.encode_end_of_session("S", 43)) == 20


def test_numba_encoder_matches_python_encoder():
    msgs = messages(7)
    src = np.frombuffer(b"".join(msgs), dtype=np.uint8)
    lengths = np.array([len(m) for m in msgs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    out = np.zeros(mold.MAX_PAYLOAD, dtype=np.uint8)
    n = _build_nb(mold.session_array(SESSION), 99, src, offsets, lengths, out)
    assert bytes(out[:n]) == mold.encode_packet(SESSION, 99, msgs)
    assert _read_nb(out, mold.session_array(SESSION)) == (99, 7, True, len(msgs[0]))
    assert not _read_nb(out, mold.session_array("SESSION002"))[2]


def test_request_round_trip_in_python_and_numba():
    raw = mold.encode_request(SESSION, 123456789012, 300)
    assert len(raw) == mold.REQUEST_SIZE
    assert mold.decode_request(raw) == (b"SESSION001", 123456789012, 300)
    out = np.zeros(mold.REQUEST_SIZE, dtype=np.uint8)
    assert _request_nb(out, mold.session_array(SESSION), 123456789012, 300) == (123456789012, 300)
    assert bytes(out) == raw
    with pytest.raises(ValueError, match="20 bytes"):
        mold.decode_request(raw + b"x")


def test_pack_messages_fills_packets_up_to_max_payload():
    msgs = messages(100)  # 36 bytes each: 38 per block, (1472 - 20) // 38 = 38 per packet
    packets = mold.pack_messages(SESSION, 1, msgs)
    assert [mold.decode_packet(p).count for p in packets] == [38, 38, 24]
    assert all(len(p) <= mold.MAX_PAYLOAD for p in packets)
    assert [mold.decode_packet(p).seq for p in packets] == [1, 39, 77]
    assert [m for p in packets for m in mold.decode_packet(p).messages] == msgs
    assert mold.messages_per_packet(36) == 38
    assert len(mold.pack_messages(SESSION, 1, msgs, max_payload=8972)) == 1


@pytest.mark.parametrize("raw, match", [
    (b"short", "shorter than"),
    (mold.encode_header(SESSION, 1, 2) + b"\x00", "length field"),
    (mold.encode_header(SESSION, 1, 1) + b"\x00\x05abc", "runs past"),
])
def test_decode_rejects_malformed_packets(raw, match):
    with pytest.raises(ValueError, match=match):
        mold.decode_packet(raw)


def test_encoder_rejects_bad_input():
    with pytest.raises(ValueError, match="longer than 10"):
        mold.session_bytes("ELEVENCHARS")
    with pytest.raises(ValueError, match="printable"):
        mold.session_bytes("bad\x00")
    with pytest.raises(ValueError, match="exceeds max_payload"):
        mold.encode_packet(SESSION, 1, messages(50), max_payload=mold.MAX_PAYLOAD)
    with pytest.raises(ValueError, match="at least one"):
        mold.encode_packet(SESSION, 1, [])
    with pytest.raises(ValueError, match="cannot fit"):
        mold.pack_messages(SESSION, 1, [b"x" * 100], max_payload=100)
