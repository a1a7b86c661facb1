"""FIX 4.4 codec and hot encoders, checked against simplefix (an independent FIX implementation):
BodyLength and CheckSum recomputed by simplefix equal ours, every message type validates with its
required tags, the stream framer drops garbled input and recovers, validation errors carry 373/371,
and the numba encoders write exactly what the Python encoder writes for the same field values."""

import calendar
import datetime as dt
import random

import numpy as np
import pytest
import simplefix

from appliance.gateway import fix44 as F
from appliance.gateway import fix_hot as H
from appliance.runtime.wire import alpha_to_int

T0 = b"20240229-13:45:01.250"
HEADER = ("CLIENT", "VENUE")


def simplefix_check(raw: bytes) -> simplefix.FixMessage:
    """Parse `raw` with simplefix; its own BodyLength and CheckSum must equal ours, byte for byte."""
    p = simplefix.FixParser()
    p.append_buffer(raw)
    m = p.get_message()
    assert m is not None, raw
    assert p.get_message() is None and p.get_buffer() == b""
    assert m.encode() == raw  # simplefix re-encodes, computing 9 and 10 itself
    body = raw[raw.index(b"\x0135=") + 1:raw.rindex(b"10=")]
    assert int(m.get(9)) == len(body)
    assert int(m.get(10)) == sum(raw[:raw.rindex(b"10=")]) % 256
    return m


# One message of every type the appliance speaks, with every tag FIX 4.4 requires of it.
SAMPLES = {
    F.MSG_HEARTBEAT: [(F.TAG_TEST_REQ_ID, "T1")],
    F.MSG_TEST_REQUEST: [(F.TAG_TEST_REQ_ID, "T1")],
    F.MSG_RESEND_REQUEST: [(F.TAG_BEGIN_SEQ_NO, 3), (F.TAG_END_SEQ_NO, 0)],
    F.MSG_REJECT: [(F.TAG_REF_SEQ_NUM, 4), (F.TAG_REF_TAG_ID, 54), (F.TAG_REF_MSG_TYPE, "D"),
                   (F.TAG_SESSION_REJECT_REASON, 1), (F.TAG_TEXT, "Required tag missing")],
    F.MSG_SEQUENCE_RESET: [(F.TAG_GAP_FILL_FLAG, True), (F.TAG_NEW_SEQ_NO, 9)],
    F.MSG_LOGOUT: [(F.TAG_TEXT, "bye")],
    F.MSG_LOGON: [(F.TAG_ENCRYPT_METHOD, 0), (F.TAG_HEART_BT_INT, 30), (F.TAG_RESET_SEQ_NUM_FLAG, False)],
    F.MSG_NEW_ORDER_SINGLE: [(11, "ORD-1"), (55, "AAPL"), (54, "1"), (60, T0), (38, 100), (40, "2"),
                             (44, 187.25), (59, "0")],
    F.MSG_ORDER_CANCEL_REQUEST: [(41, "ORD-1"), (11, "ORD-2"), (55, "AAPL"), (54, "1"), (60, T0), (38, 100)],
    F.MSG_ORDER_CANCEL_REPLACE_REQUEST: [(41, "ORD-2"), (11, "ORD-3"), (55, "AAPL"), (54, "1"), (60, T0),
                                         (38, 200), (40, "2"), (44, "187.2500")],
    F.MSG_EXECUTION_REPORT: [(37, "V1"), (11, "ORD-1"), (17, "E1"), (150, "F"), (39, "1"), (55, "AAPL"),
                             (54, "1"), (38, 100), (32, 40), (31, 187.25), (151, 60), (14, 40), (6, 187.25)],
    F.MSG_ORDER_CANCEL_REJECT: [(37, "V1"), (11, "ORD-2"), (41, "ORD-1"), (39, "8"), (434, "1"), (102, 1)],
    F.MSG_BUSINESS_MESSAGE_REJECT: [(45, 5), (372, "6"), (380, 3), (58, "Unsupported Message Type")],
}


def test_required_table_covers_every_sample():
    assert set(SAMPLES) == set(F.REQUIRED)
    for mt, fields in SAMPLES.items():
        assert set(F.REQUIRED[mt]) <= {t for t, _ in fields}, mt


@pytest.mark.parametrize("msg_type", sorted(SAMPLES))
def test_every_message_type_encodes_parses_and_validates(msg_type):
    raw = F.encode(msg_type, SAMPLES[msg_type], *HEADER, 12, T0)
    m = simplefix_check(raw)
    assert m.message_type == msg_type
    assert m.get(49) == b"CLIENT" and m.get(56) == b"VENUE" and m.get(34) == b"12" and m.get(52) == T0
    ours = F.parse(raw)
    F.validate(ours)
    assert ours.msg_type == msg_type and ours.seq_num == 12
    assert [t for t, _ in ours.fields][:7] == [8, 9, 35, 49, 56, 34, 52]
    assert ours.fields[-1][0] == 10
    for tag, _ in SAMPLES[msg_type]:
        assert m.get(tag) == ours.get(tag)


def test_header_flags_and_value_types():
    raw = F.encode(F.MSG_EXECUTION_REPORT, SAMPLES[F.MSG_EXECUTION_REPORT], *HEADER, 7, 1709214301.25,
                   poss_dup=True, poss_resend=True, orig_sending_time=b"20240229-13:45:00.000")
    m = simplefix_check(raw)
    assert m.get(52) == T0 and m.get(43) == b"Y" and m.get(97) == b"Y" and m.get(122) == b"20240229-13:45:00.000"
    assert m.get(31) == b"187.25" and m.get(14) == b"40"
    assert F._value(1e-7) == b"0.0000001" and F._value(True) == b"Y" and F._value(False) == b"N"
    assert F._value(123456789012.5) == b"123456789012.5"


@pytest.mark.parametrize("fields, what", [
    ([(58, "a\x01b")], "SOH"), ([(58, "")], "empty"), ([(9, 5)], "BodyLength"),
    ([(10, "000")], "CheckSum"), ([(8, "FIX.4.2")], "BeginString"), ([(0, "x")], "tag 0"),
])
def test_encode_refuses_what_would_break_framing(fields, what):
    with pytest.raises(ValueError):
        F.encode(F.MSG_HEARTBEAT, fields, *HEADER, 1, T0)


# ---- framing --------------------------------------------------------------------------------------

def _msgs(n, start=1):
    return [F.encode(F.MSG_TEST_REQUEST, [(112, "R%d" % i)], *HEADER, i, T0) for i in range(start, start + n)]


def test_stream_framing_at_every_split_point():
    msgs = _msgs(3)
    stream = b"".join(msgs)
    for cut in range(len(stream) + 1):
        p = F.FixStreamParser()
        got = p.feed(stream[:cut]) + p.feed(stream[cut:])
        assert [m.raw for m in got] == msgs, cut
        assert p.pending == 0 and p.garbled == {}


def test_stream_framing_byte_by_byte():
    msgs = _msgs(4)
    p = F.FixStreamParser()
    got = []
    for b in b"".join(msgs):
        got += p.feed(bytes([b]))
    assert [m.raw for m in got] == msgs


def _kinds(items):
    return [x.kind if isinstance(x, F.GarbledMessage) else x.seq_num for x in items]


def test_bad_checksum_is_dropped_and_the_next_message_survives():
    a, b, c = _msgs(3)
    bad = b[:-4] + (b"%03d" % ((int(b[-4:-1]) + 1) % 256)) + b"\x01"
    p = F.FixStreamParser()
    assert _kinds(p.feed(a + bad + c)) == [1, "checksum", 3]
    assert p.garbled == {"checksum": 1}


@pytest.mark.parametrize("delta", [-5, -1, 1, 7, 400])
def test_wrong_body_length_is_dropped_and_the_stream_resyncs(delta):
    a, b, c = _msgs(3)
    declared = int(b.split(b"\x01")[1][2:])
    bad = b.replace(b"\x019=%d\x01" % declared, b"\x019=%d\x01" % (declared + delta), 1)
    p = F.FixStreamParser()
    out = p.feed(a + bad + c)
    assert _kinds(out) == [1, "body_length", 3]
    assert p.pending == 0


def test_body_length_too_long_at_the_end_waits_then_yields_to_the_next_message():
    a, b = _msgs(2)
    declared = int(a.split(b"\x01")[1][2:])
    bad = a.replace(b"\x019=%d\x01" % declared, b"\x019=%d\x01" % (declared + 50), 1)
    p = F.FixStreamParser()
    assert p.feed(bad) == []  # could still be a longer message
    assert _kinds(p.feed(b)) == ["body_length", 2]


def test_junk_garbled_headers_and_msgtype_not_third():
    a, b = _msgs(2)
    p = F.FixStreamParser()
    assert _kinds(p.feed(b"hello" + a)) == ["junk", 1]
    no_nine = a.replace(b"\x019=", b"\x0199=", 1)
    assert _kinds(p.feed(no_nine + b)) == ["body_length", 2]
    letters = a.replace(b"\x019=", b"\x019=x", 1)
    assert _kinds(p.feed(letters + b)) == ["body_length", 2]
    # MsgType moved after SenderCompID: same length and checksum, so only the order is wrong.
    body = a[a.index(b"35="):a.index(b"10=")]
    f = body.split(b"\x01")
    moved = F.encode(F.MSG_TEST_REQUEST, [(112, "R1")], *HEADER, 1, T0)
    swapped_body = b"\x01".join([f[1], f[0]] + f[2:])
    moved = moved.replace(body, swapped_body)
    cs = sum(moved[:moved.rindex(b"10=")]) % 256
    moved = moved[:moved.rindex(b"10=")] + b"10=%03d\x01" % cs
    assert _kinds(p.feed(moved + b)) == ["msg_type", 2]
    assert p.feed(b"8=FI") == [] and p.pending == 4  # a partial BeginString is kept
    assert _kinds(p.feed(a[4:])) == [1]


def test_absurd_body_length_is_not_waited_for():
    p = F.FixStreamParser()
    (a,) = _msgs(1)
    assert _kinds(p.feed(b"8=FIX.4.4\x019=99999999\x0135=0\x01" + a)) == ["body_length", 1]


def test_parse_raises_garbled_error():
    (a,) = _msgs(1)
    with pytest.raises(F.GarbledError) as e:
        F.parse(a[:-4] + b"%03d\x01" % ((int(a[-4:-1]) + 1) % 256))
    assert e.value.kind == "checksum"
    with pytest.raises(F.GarbledError):
        F.parse(a + a)
    with pytest.raises(F.GarbledError):
        F.parse(a[:-1])


# ---- validation -----------------------------------------------------------------------------------

def _b(v) -> bytes:
    if isinstance(v, bool):
        return b"Y" if v else b"N"
    return v if isinstance(v, bytes) else str(v).encode()


def _raw_with(msg_type, fields, seq=5):
    """A correctly framed message with arbitrary (even invalid) fields, framed straight from the
    definitions of BodyLength and CheckSum (simplefix refuses tags that are not numbers)."""
    body = b"".join(b"%s=%s\x01" % (_b(t), _b(v))
                    for t, v in [(35, msg_type), (49, "CLIENT"), (56, "VENUE"), (34, seq), (52, T0.decode())]
                    + list(fields))
    head = b"8=FIX.4.4\x019=%d\x01" % len(body)
    return head + body + b"10=%03d\x01" % (sum(head + body) % 256)


def _reject_of(raw):
    msg = F.parse(raw)
    with pytest.raises(F.FixValidationError) as e:
        F.validate(msg)
    return e.value


@pytest.mark.parametrize("msg_type, tag", [(mt, t) for mt, tags in sorted(F.REQUIRED.items()) for t in tags])
def test_missing_required_tag_is_reason_1_with_ref_tag(msg_type, tag):
    fields = [(t, v) for t, v in SAMPLES[msg_type] if t != tag]
    e = _reject_of(_raw_with(msg_type, fields))
    assert (e.reason, e.ref_tag, e.ref_seq, e.ref_msg_type) == (F.REJ_REQUIRED_TAG_MISSING, tag, 5, msg_type)


@pytest.mark.parametrize("tag", [49, 56, 52])
def test_missing_header_tag(tag):
    m = simplefix.FixMessage()
    m.append_pair(8, "FIX.4.4", header=True)
    m.append_pair(35, "0", header=True)
    for t, v in [(49, "C"), (56, "V"), (34, 3), (52, T0)]:
        if t != tag:
            m.append_pair(t, v)
    e = _reject_of(m.encode())
    assert (e.reason, e.ref_tag, e.ref_seq) == (1, tag, 3)


def test_invalid_msg_type_is_reason_11():
    e = _reject_of(_raw_with("ZZ", []))
    assert (e.reason, e.ref_tag, e.ref_seq, e.ref_msg_type) == (F.REJ_INVALID_MSG_TYPE, 35, 5, b"ZZ")


@pytest.mark.parametrize("fields, reason, ref_tag", [
    ([(112, "A"), (112, "B")], F.REJ_TAG_APPEARS_MORE_THAN_ONCE, 112),
    ([(112, "A"), (58, "")], F.REJ_TAG_WITHOUT_VALUE, 58),
    ([(112, "A"), ("x1", "v")], F.REJ_INVALID_TAG_NUMBER, None),
    ([(112, "A"), ("058", "v")], F.REJ_INVALID_TAG_NUMBER, None),
    ([(112, "A"), (36, "12a")], F.REJ_INCORRECT_DATA_FORMAT, 36),
    ([(112, "A"), (44, "1.2.3")], F.REJ_INCORRECT_DATA_FORMAT, 44),
    ([(112, "A"), (60, "20241301-00:00:00")], F.REJ_INCORRECT_DATA_FORMAT, 60),
    ([(112, "A"), (60, "20230229-00:00:00")], F.REJ_INCORRECT_DATA_FORMAT, 60),
    ([(112, "A"), (43, "X")], F.REJ_VALUE_INCORRECT, 43),
    ([(112, "A"), (54, "Z")], F.REJ_VALUE_INCORRECT, 54),
    ([(112, "A"), (98, "9")], F.REJ_VALUE_INCORRECT, 98),
])
def test_field_level_rejects(fields, reason, ref_tag):
    e = _reject_of(_raw_with("1", fields))
    assert (e.reason, e.ref_tag, e.ref_seq, e.ref_msg_type) == (reason, ref_tag, 5, b"1")
    assert e.text


def test_repeats_of_unknown_tags_are_left_to_repeating_groups():
    msg = F.parse(_raw_with("8", SAMPLES[F.MSG_EXECUTION_REPORT] + [(453, 2), (448, "A"), (448, "B")]))
    F.validate(msg)
    assert msg.duplicate_tags == (448,) and msg.get(448) == b"A"


def test_valid_application_messages_from_simplefix_pass():
    for mt in (F.MSG_NEW_ORDER_SINGLE, F.MSG_EXECUTION_REPORT, F.MSG_ORDER_CANCEL_REJECT):
        F.validate(F.parse(_raw_with(mt.decode(), SAMPLES[mt])))


# ---- timestamps -----------------------------------------------------------------------------------

@pytest.mark.parametrize("when", ["1970-01-01T00:00:00", "2000-02-29T23:59:59.999", "2024-02-29T13:45:01.250",
                                  "2099-12-31T23:59:59.001", "2100-03-01T00:00:00.5"])
def test_timestamps_format_and_parse(when):
    t = dt.datetime.fromisoformat(when).replace(tzinfo=dt.timezone.utc)
    ns = calendar.timegm(t.timetuple()) * 10**9 + t.microsecond * 1000
    text = F.format_utc_timestamp_ns(ns)
    assert text == t.strftime("%Y%m%d-%H:%M:%S.").encode() + b"%03d" % (t.microsecond // 1000)
    assert F.parse_utc_timestamp(text) == pytest.approx(ns / 1e9, abs=1e-3)


@pytest.mark.parametrize("bad", [b"20240230-00:00:00", b"2024022-00:00:00", b"20240101-24:00:00",
                                 b"20240101-00:00:00.", b"20240101-00:00:00.1234567890", b"20240101 00:00:00"])
def test_bad_timestamps_raise(bad):
    with pytest.raises(ValueError):
        F.parse_utc_timestamp(bad)


# ---- hot encoders ---------------------------------------------------------------------------------

def _python_order(msg_type, sender, target, seq, sending_ns, clordid, side, qty, ord_type, price, tif,
                  transact_ns, symbol, orig=None):
    """The same order through the Python encoder, fields in the hot template's order."""
    ts = F.format_utc_timestamp_ns
    f = []
    if orig is not None:
        f.append((41, H.format_clordid(orig)))
    f.append((11, H.format_clordid(clordid)))
    f.append((54, bytes([side])))
    f.append((38, H.format_qty(qty)))
    if msg_type != F.MSG_ORDER_CANCEL_REQUEST:
        f += [(40, bytes([ord_type])), (59, bytes([tif]))]
    f.append((60, ts(transact_ns)))
    if msg_type != F.MSG_ORDER_CANCEL_REQUEST and ord_type != H.ORD_TYPE_MARKET:
        f.append((44, H.format_price(price)))
    f.append((55, symbol.encode()))
    return F.encode(msg_type, f, sender, target, H.format_seq(seq), ts(sending_ns))


def _hot(msg_type, buf, seq_off, seq, sending_ns, clordid, side, qty, ord_type, price, tif, transact_ns,
         symbol, orig=None):
    sym = alpha_to_int(symbol)
    if msg_type == F.MSG_NEW_ORDER_SINGLE:
        return H.encode_new_order(buf, seq_off, seq, sending_ns, clordid, side, qty, ord_type, price, tif,
                                  transact_ns, sym)
    if msg_type == F.MSG_ORDER_CANCEL_REQUEST:
        return H.encode_cancel(buf, seq_off, seq, sending_ns, orig, clordid, side, qty, transact_ns, sym)
    return H.encode_replace(buf, seq_off, seq, sending_ns, orig, clordid, side, qty, ord_type, price, tif,
                            transact_ns, sym)


@pytest.mark.parametrize("msg_type", [F.MSG_NEW_ORDER_SINGLE, F.MSG_ORDER_CANCEL_REQUEST,
                                      F.MSG_ORDER_CANCEL_REPLACE_REQUEST])
def test_hot_encoder_is_byte_identical_to_python_encoder(msg_type):
    rng = random.Random(44)
    for sender, target in (("GW", "V"), ("APPLIANCE-01", "NASDAQ-FIX-SESSION-7"), ("A" * 32, "B" * 32)):
        buf, seq_off = H.build_template(msg_type, sender, target)
        for i in range(60):
            sym = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ.") for _ in range(rng.randint(1, 8)))
            sym = "Z" + sym[1:]
            ns = rng.randrange(946_684_800 * 10**9, 4_102_444_800 * 10**9)  # 2000 .. 2100
            args = dict(seq=rng.choice([1, 9, 10, rng.randrange(H.SEQ_LIMIT), H.SEQ_LIMIT - 1]),
                        sending_ns=ns, clordid=rng.choice([0, rng.randrange(H.CLORD_LIMIT), H.CLORD_LIMIT - 1]),
                        side=rng.choice(b"125"), qty=rng.choice([1, rng.randrange(H.QTY_LIMIT), H.QTY_LIMIT - 1]),
                        ord_type=rng.choice(b"12"), price=rng.choice([0, rng.randrange(H.PRICE_LIMIT), 1]),
                        tif=rng.choice(b"0346"), transact_ns=ns - rng.randrange(10**9), symbol=sym,
                        orig=None if msg_type == F.MSG_NEW_ORDER_SINGLE else rng.randrange(H.CLORD_LIMIT))
            start, end = _hot(msg_type, buf, seq_off, **args)
            assert start > 0, (start, end)
            got = bytes(buf[start:end])
            assert got == _python_order(msg_type, sender, target, **args), i
            m = simplefix_check(got)
            assert m.get(55) == sym.encode()
            ours = F.parse(got)
            F.validate(ours)
            assert ours.seq_num == args["seq"]
            if msg_type != F.MSG_ORDER_CANCEL_REQUEST and args["ord_type"] == H.ORD_TYPE_LIMIT:
                assert H.parse_price(ours[44]) == args["price"]
            else:
                assert 44 not in ours


def test_hot_template_reuse_leaves_no_stale_bytes():
    buf, seq_off = H.build_template(F.MSG_NEW_ORDER_SINGLE, "GW", "VENUE")
    ns = 1_709_214_301_250_000_000
    long = H.encode_new_order(buf, seq_off, 1, ns, 1, 49, 100, 50, 1_000_000, 48, ns, alpha_to_int("ABCDEFGH"))
    short = H.encode_new_order(buf, seq_off, 2, ns, 2, 49, 100, 49, 0, 48, ns, alpha_to_int("X"))
    assert long[1] - long[0] > short[1] - short[0]
    raw = bytes(buf[short[0]:short[1]])
    assert raw == _python_order(F.MSG_NEW_ORDER_SINGLE, "GW", "VENUE", 2, ns, 2, 49, 100, 49, 0, 48, ns, "X")
    simplefix_check(raw)


def test_hot_timestamp_cache_follows_the_clock():
    buf, seq_off = H.build_template(F.MSG_ORDER_CANCEL_REQUEST, "GW", "VENUE")
    base = 1_709_251_199 * 10**9  # 2024-02-29 23:59:59 UTC
    steps = [0, 1, 999_999_999, 10**9, 10**9 + 5 * 10**6, 1, 86_400 * 10**9 + 7, 999_000_000]
    for i, ns in enumerate(base + d for d in steps):
        transact = ns - (i % 3) * 600_000_000  # sometimes in the previous second
        start, end = H.encode_cancel(buf, seq_off, i + 1, ns, 1, 2, 50, 10, transact, alpha_to_int("IBM"))
        raw = bytes(buf[start:end])
        assert raw == _python_order(F.MSG_ORDER_CANCEL_REQUEST, "GW", "VENUE", i + 1, ns, 2, 50, 10, 0, 0, 0,
                                    transact, "IBM", orig=1), i


@pytest.mark.parametrize("field, value, err", [
    ("seq", H.SEQ_LIMIT, H.ERR_SEQ), ("seq", -1, H.ERR_SEQ), ("clordid", H.CLORD_LIMIT, H.ERR_CLORDID),
    ("qty", H.QTY_LIMIT, H.ERR_QTY), ("qty", -5, H.ERR_QTY), ("price", H.PRICE_LIMIT, H.ERR_PRICE),
    ("price", -1, H.ERR_PRICE), ("symbol", 0x2020202020202020, H.ERR_SYMBOL),
    ("symbol", alpha_to_int("AB CD"), H.ERR_SYMBOL), ("sending_ns", -1, H.ERR_TIME),
])
def test_hot_encoder_refuses_out_of_range_values(field, value, err):
    buf, seq_off = H.build_template(F.MSG_NEW_ORDER_SINGLE, "GW", "VENUE")
    before = buf.copy()
    args = dict(seq=1, sending_ns=10**18, clordid=1, side=49, qty=1, ord_type=50, price=1, tif=48,
                transact_ns=10**18, symbol=alpha_to_int("AAPL"))
    args[field] = value
    assert tuple(H.encode_new_order(buf, seq_off, *args.values())) == (-1, err)
    assert np.array_equal(buf, before)


def test_market_order_may_carry_any_price():
    buf, seq_off = H.build_template(F.MSG_ORDER_CANCEL_REPLACE_REQUEST, "GW", "VENUE")
    start, end = H.encode_replace(buf, seq_off, 3, 10**18, 1, 2, 49, 10, 49, -1, 48, 10**18, alpha_to_int("MSFT"))
    msg = F.parse(bytes(buf[start:end]))
    F.validate(msg)
    assert 44 not in msg and msg[40] == b"1"


def test_build_template_checks_its_input():
    with pytest.raises(ValueError):
        H.build_template(F.MSG_EXECUTION_REPORT, "A", "B")
    with pytest.raises(ValueError):
        H.build_template(F.MSG_NEW_ORDER_SINGLE, "", "B")
    with pytest.raises(ValueError):
        H.build_template(F.MSG_NEW_ORDER_SINGLE, "A" * 33, "B")


@pytest.mark.parametrize("text, value", [(b"187.25", 1_872_500), (b"0000187.2500", 1_872_500), (b"5", 50_000),
                                         (b".5", 5_000), (b"-1.0001", -10_001)])
def test_price_text_to_fixed_point(text, value):
    assert H.parse_price(text) == value
    if value >= 0:
        assert H.parse_price(H.format_price(value)) == value
