"""SoupBinTCP 4.x packets: exact layouts, field padding, and the stream framer (Python and numba) on bad input."""

import random

import numpy as np
import pytest

from appliance.gateway import soupbintcp_descriptor as sb


def test_login_request_layout_is_byte_exact():
    pkt = sb.login_request("ALICE", "secret", "", 42)
    assert len(pkt) == sb.LREQ_SIZE == 49
    assert pkt[:3] == b"\x00\x2fL"                      # length 47 counts the type byte and the payload
    assert pkt[3:9] == b"ALICE "                        # alpha: left-justified, space-padded
    assert pkt[9:19] == b"secret    "
    assert pkt[19:29] == b" " * 10                      # blank session = the current one
    assert pkt[29:49] == b" " * 18 + b"42"              # numeric: right-justified, left-padded


def test_login_accepted_pads_session_on_the_left():
    pkt = sb.login_accepted("SESS1", 7)
    assert pkt == b"\x00\x1fA" + b"     SESS1" + b" " * 19 + b"7"
    assert sb.decode_packet(pkt) == {"type": "A", "session": "SESS1", "sequence": 7}


@pytest.mark.parametrize("pkt, expect", [
    (sb.login_rejected("A"), {"type": "J", "reason": "A"}),
    (sb.login_rejected("S"), {"type": "J", "reason": "S"}),
    (sb.sequenced(b"\x00\x01xyz"), {"type": "S", "payload": b"\x00\x01xyz"}),
    (sb.unsequenced(b""), {"type": "U", "payload": b""}),
    (sb.debug("hello"), {"type": "+", "payload": b"hello"}),
    (sb.server_heartbeat(), {"type": "H"}),
    (sb.client_heartbeat(), {"type": "R"}),
    (sb.end_of_session(), {"type": "Z"}),
    (sb.logout_request(), {"type": "O"}),
    (sb.login_request("u", "p", "S2", 0), {"type": "L", "username": "u", "password": "p", "session": "S2",
                                           "sequence": 0}),
])
def test_every_packet_round_trips(pkt, expect):
    assert sb.decode_packet(pkt) == expect
    assert int.from_bytes(pkt[:2], "big") == len(pkt) - 2


def test_field_errors_are_clear():
    with pytest.raises(ValueError, match="longer than the 6-byte field"):
        sb.login_request("TOOLONG", "p")
    with pytest.raises(ValueError, match="does not fit a 20-digit field"):
        sb.pack_numeric(10**20, 20)
    with pytest.raises(ValueError, match="non-digits"):
        sb.parse_numeric(b"  12x")
    with pytest.raises(ValueError, match="reject reason"):
        sb.login_rejected("X")
    with pytest.raises(ValueError, match="unknown SoupBinTCP packet type"):
        sb.decode_packet(b"\x00\x01?")
    with pytest.raises(ValueError, match="has length 1, got 2"):
        sb.decode_packet(b"\x00\x02HH")


def test_framer_reassembles_packets_split_anywhere():
    stream = sb.login_accepted("S", 1) + sb.sequenced(b"abc") + sb.server_heartbeat() + sb.sequenced(b"")
    framer = sb.SoupFramer(sent_by="server")
    got = []
    for i in range(len(stream)):                         # one byte at a time: the worst TCP can do
        got += framer.feed(stream[i:i + 1])
    assert [(chr(t), p) for t, p in got] == [("A", stream[3:33]), ("S", b"abc"), ("H", b""), ("S", b"")]
    assert framer.pending == 0
    assert framer.counters == {"packets": 4, "bad_length": 0, "unknown_type": 0, "truncated": 0}


def test_framer_counts_and_skips_malformed_packets():
    stream = (b"\x00\x00"                                # length 0: no type byte at all
              + b"\x00\x02H!"                            # heartbeat with a payload: wrong fixed length
              + b"\x00\x03?ab"                           # unknown type
              + sb.client_heartbeat()                    # a client-only type on the server's stream
              + sb.sequenced(b"ok")
              + b"\x00\x09Sabc")                         # truncated: 9 promised, 4 present
    framer = sb.SoupFramer(sent_by="server")
    assert framer.feed(stream) == [(sb.PKT_SEQUENCED, b"ok")]
    assert framer.pending == 6
    framer.close()
    assert framer.counters == {"packets": 1, "bad_length": 2, "unknown_type": 2, "truncated": 1}


def test_framer_knows_which_side_sends_what():
    client = sb.SoupFramer(sent_by="client")
    got = client.feed(sb.login_request("u", "p") + sb.server_heartbeat() + sb.logout_request())
    assert [t for t, _ in got] == [sb.PKT_LOGIN_REQUEST, sb.PKT_LOGOUT_REQUEST]
    assert client.counters["unknown_type"] == 1
    with pytest.raises(ValueError):
        sb.SoupFramer(sent_by="both")


def _random_stream(rng, count):
    """Well-formed packets of both directions mixed with garbage, as a byte string."""
    parts = []
    for _ in range(count):
        kind = rng.randrange(8)
        if kind == 0:
            parts.append(sb.sequenced(bytes(rng.randrange(256) for _ in range(rng.randrange(40)))))
        elif kind == 1:
            parts.append(sb.login_accepted("S", rng.randrange(10**6)))
        elif kind == 2:
            parts.append(sb.server_heartbeat())
        elif kind == 3:
            parts.append(sb.debug("x" * rng.randrange(5)))
        elif kind == 4:
            parts.append(sb.client_heartbeat())          # unknown on a server stream
        elif kind == 5:
            parts.append(b"\x00\x00")                    # bad length
        elif kind == 6:
            parts.append(b"\x00\x05H1234")               # bad fixed length
        else:
            parts.append(sb.login_rejected("A"))
    return b"".join(parts)


def test_numba_framer_agrees_with_python_framer():
    rng = random.Random(7)
    stream = _random_stream(rng, 400) + b"\x00\x30S" + b"z" * 10     # ends mid-packet
    py = sb.SoupFramer(sent_by="server")
    expect = py.feed(stream)

    buf = np.frombuffer(stream, dtype=np.uint8)
    cap = 16                                             # small on purpose: resume across many calls
    off, ln, ty = (np.zeros(cap, dtype=np.int64) for _ in range(3))
    counters = np.zeros(sb.FC_WORDS, dtype=np.int64)
    got, pos = [], 0
    for _ in range(len(stream)):                         # bounded: each call consumes or stops for good
        n, nxt = sb.frame_packets(buf, pos, len(stream), sb.FROM_SERVER, off, ln, ty, counters)
        got += [(int(ty[i]), bytes(buf[off[i]:off[i] + ln[i]])) for i in range(n)]
        if nxt == pos:
            break
        pos = nxt
    assert got == expect
    assert len(stream) - pos == py.pending == 13
    assert dict(zip(sb.COUNTER_NAMES[:3], counters[:3].tolist())) == {
        k: py.counters[k] for k in sb.COUNTER_NAMES[:3]}


def test_numba_numeric_fields_match_python():
    buf = np.zeros(20, dtype=np.uint8)
    for value in (0, 1, 42, 10**18, 2**63 - 1):        # int64 is the hot path's range
        assert sb.put_numeric(buf, 0, 20, value)
        assert bytes(buf) == sb.pack_numeric(value, 20)
        assert sb.get_numeric(buf, 0, 20) == value
    assert not sb.put_numeric(buf, 0, 2, 123)            # does not fit
    for bad in (b" 1 2" + b" " * 16, b"x" * 20, b"-1" + b" " * 18):
        assert sb.get_numeric(np.frombuffer(bad, dtype=np.uint8), 0, 20) == -1
    assert sb.get_numeric(np.frombuffer(b" " * 20, dtype=np.uint8), 0, 20) == 0
    assert sb.get_numeric(np.frombuffer(b"7" + b" " * 19, dtype=np.uint8), 0, 20) == 7


def test_numba_header_writer():
    buf = np.zeros(8, dtype=np.uint8)
    assert sb.put_header(buf, 1, sb.PKT_UNSEQUENCED, 4) == 4
    buf[4:8] = np.frombuffer(b"abcd", dtype=np.uint8)
    assert bytes(buf[1:]) == sb.unsequenced(b"abcd")
