"""OUCH 5.0: every message round-trips; golden bytes; numba codecs agree with the Python ones byte for byte."""

import random
import string

import numpy as np
import pytest

from appliance.gateway import ouch_descriptor as ou
from appliance.runtime.wire import alpha_to_int

ALL = [("in", t) for t in ou.INBOUND] + [("out", t) for t in ou.OUTBOUND]


def _value(rng, size, kind):
    if kind == "u":
        return rng.randrange(2 ** (8 * size - 1) if size == 8 else 2 ** (8 * size))  # 8-byte fields fit int64
    if kind in ("p", "s"):
        half = 2 ** (8 * size - 1)
        return rng.randrange(-half, half)
    if kind == "c":
        return rng.choice("BSTE0356YNAZLD ")
    text = "".join(rng.choice(string.ascii_uppercase + string.digits + " .") for _ in range(rng.randrange(size + 1)))
    return text.rstrip(" ")


def _fields(rng, spec):
    return {name: _value(rng, size, kind) for name, _, size, kind in spec}


def _appendage(rng):
    items = []
    for tag in rng.sample(sorted(ou.TAGS), rng.randrange(4)):
        _, size, kind = ou.TAGS[tag]
        items.append((tag, _value(rng, size, kind)))
    if rng.random() < 0.3:
        items.append((99, bytes(rng.randrange(256) for _ in range(rng.randrange(6)))))  # unknown tag stays raw
    return items


def _specs(direction):
    return (ou.INBOUND, ou.INBOUND_RULE) if direction == "in" else (ou.OUTBOUND, ou.OUTBOUND_RULE)


@pytest.mark.parametrize("direction, mtype", ALL, ids=[f"{d}-{t}" for d, t in ALL])
def test_every_message_round_trips(direction, mtype):
    rng = random.Random(f"{direction}{mtype}")
    specs, rules = _specs(direction)
    for _ in range(30):
        values = _fields(rng, specs[mtype])
        if rules[mtype] == ou.APP_NONE:
            variants = [None]
        elif rules[mtype] == ou.APP_OPTIONAL:
            variants = [None, [], _appendage(rng)]
        else:
            variants = [[], _appendage(rng)]
        for app in variants:
            msg = ou.encode(direction, mtype, appendage=app, **values)
            back = ou.decode(direction, msg)
            assert back == {"type": mtype, **values, "appendage": app}
            assert ou.encode(direction, mtype, appendage=back["appendage"],
                             **{k: v for k, v in back.items() if k not in ("type", "appendage")}) == msg


def test_message_lengths_follow_the_spec():
    fixed = {d: {t: len(ou.encode(d, t)) for t in _specs(d)[0]} for d in ("in", "out")}
    # required appendage lengths are always written; optional ones only when asked for
    assert fixed["in"] == {"O": 47, "U": 40, "X": 9, "M": 10, "C": 19, "D": 11, "E": 11, "Q": 1}
    assert fixed["out"] == {"S": 10, "A": 64, "U": 68, "C": 18, "D": 32, "E": 36, "B": 36, "J": 29, "P": 13,
                            "I": 13, "T": 30, "M": 18, "R": 16, "X": 27, "G": 19, "K": 19, "Q": 13}
    assert len(ou.encode("out", "C", appendage=[])) == 20
    assert len(ou.encode("in", "Q", appendage=[(28, 3)])) == 6


def test_enter_order_golden_bytes():
    expected = (b"O" + (1).to_bytes(4, "big") + b"B" + (100).to_bytes(4, "big") + b"AAPL    "
                + (1_503_400).to_bytes(8, "big") + b"0" + b"Y" + b"A" + b"N" + b"N" + b"CLORD1        "
                + b"\x00\x03" + b"\x02\x1c\x05")        # one TagValue: length 2, tag 28 UserRefIdx, value 5
    got = ou.encode_inbound("O", user_ref_num=1, side="B", quantity=100, symbol="AAPL",
                            price=ou.price_to_int("150.34"), time_in_force="0", display="Y", capacity="A",
                            intermarket_sweep_eligibility="N", cross_type="N", cl_ord_id="CLORD1",
                            appendage=[("user_ref_idx", 5)])
    assert got == expected and len(got) == 50


def test_executed_and_rejected_golden_bytes():
    ts = 34_200_000_000_123                              # 09:30:00.000000123
    executed = (b"E" + ts.to_bytes(8, "big") + (4).to_bytes(4, "big") + (100).to_bytes(4, "big")
                + (1_503_400).to_bytes(8, "big") + b"R" + (987_654).to_bytes(8, "big") + b"\x00\x00")
    assert ou.encode_outbound("E", timestamp=ts, user_ref_num=4, quantity=100, price=1_503_400, liquidity_flag="R",
                              match_number=987_654) == executed
    rejected = b"J" + ts.to_bytes(8, "big") + (9).to_bytes(4, "big") + b"\x00\x17" + b"BAD-SYM       "
    assert ou.encode_outbound("J", timestamp=ts, user_ref_num=9, reason=ou.REJECT_INVALID_SYMBOL,
                              cl_ord_id="BAD-SYM") == rejected
    assert ou.REJECT_REASONS[ou.decode_outbound(rejected)["reason"]] == "invalid symbol"


def test_price_is_signed_eight_bytes_with_four_decimals():
    assert ou.price_to_int("199999.99") == ou.PRICE_MAX_LIMIT
    msg = ou.encode_outbound("T", price=-12_345, display="Y")
    assert msg[13:21] == (-12_345).to_bytes(8, "big", signed=True)
    assert ou.decode_outbound(msg)["price"] == -12_345


def test_appendage_typed_values_and_errors():
    raw = ou.encode_appendage([("firm", "FIRM"), ("peg_offset", -5), (24, 7), (99, b"\x01\x02")])
    assert raw == b"\x05\x02FIRM" + b"\x05\x07\xff\xff\xff\xfb" + b"\x03\x18\x00\x07" + b"\x03\x63\x01\x02"
    assert ou.decode_appendage(raw) == [(2, "FIRM"), (7, -5), (24, 7), (99, b"\x01\x02")]
    with pytest.raises(ValueError, match="malformed TagValue"):
        ou.decode_appendage(b"\x05\x02FI")              # element runs past the end
    with pytest.raises(ValueError, match="malformed TagValue"):
        ou.decode_appendage(b"\x00")
    with pytest.raises(ValueError, match="not in Appendix A"):
        ou.encode_appendage([(99, 5)])


@pytest.mark.parametrize("direction, msg, match", [
    ("in", b"", "empty"),
    ("in", b"Z", "unknown OUCH inbound"),
    ("out", b"S" + b"\x00" * 8, "is 10 bytes"),
    ("in", b"O" + b"\x00" * 45, "at least 47"),          # Appendage Length is required on Enter Order
    ("out", b"C" + b"\x00" * 18, "at least 20"),         # one stray byte where the optional length goes
    ("out", b"E" + b"\x00" * 33 + b"\x00\x05\x02\x1c\x01", "does not match"),
])
def test_python_decoder_rejects_malformed_messages(direction, msg, match):
    with pytest.raises(ValueError, match=match):
        ou.decode(direction, msg)


def test_encoder_errors_name_the_field():
    with pytest.raises(ValueError, match="no fields \\['bogus'\\]"):
        ou.encode_inbound("X", bogus=1)
    with pytest.raises(ValueError, match="'symbol'.*longer than 8"):
        ou.encode_inbound("O", symbol="TOOLONGSYM")
    with pytest.raises(ValueError, match="'quantity'.*does not fit"):
        ou.encode_inbound("X", quantity=2**32)
    with pytest.raises(ValueError, match="carries no appendage"):
        ou.encode_outbound("S", appendage=[(28, 1)])


# ---- numba codecs against the Python ones ---------------------------------------------------------
def _chars(values, *names):
    return [ord(values[n]) for n in names]


def test_numba_encoders_match_python_byte_for_byte():
    rng = random.Random(11)
    buf = np.zeros(128, dtype=np.uint8)
    for _ in range(200):
        v = _fields(rng, ou.INBOUND["O"])
        off = rng.randrange(16)
        n = ou.enc_enter_order(buf, off, v["user_ref_num"], *_chars(v, "side"), v["quantity"],
                               alpha_to_int(v["symbol"]), v["price"],
                               *_chars(v, "time_in_force", "display", "capacity", "intermarket_sweep_eligibility",
                                       "cross_type"), ou.clordid_array(v["cl_ord_id"]))
        assert bytes(buf[off:off + n]) == ou.encode_inbound("O", **v)

        v = _fields(rng, ou.INBOUND["U"])
        n = ou.enc_replace_order(buf, off, v["orig_user_ref_num"], v["user_ref_num"], v["quantity"], v["price"],
                                 *_chars(v, "time_in_force", "display", "intermarket_sweep_eligibility"),
                                 ou.clordid_array(v["cl_ord_id"]))
        assert bytes(buf[off:off + n]) == ou.encode_inbound("U", **v)

        v = _fields(rng, ou.INBOUND["X"])
        n = ou.enc_cancel_order(buf, off, v["user_ref_num"], v["quantity"])
        assert bytes(buf[off:off + n]) == ou.encode_inbound("X", **v)


# vector slot per Python field name, with how to turn the Python value into the slot's int64
_SLOTS = {
    "timestamp": (ou.V_TIMESTAMP, int), "user_ref_num": (ou.V_USER_REF, int),
    "orig_user_ref_num": (ou.V_ORIG_USER_REF, int), "side": (ou.V_SIDE, ord), "quantity": (ou.V_QUANTITY, int),
    "symbol": (ou.V_SYMBOL, alpha_to_int), "price": (ou.V_PRICE, int), "time_in_force": (ou.V_TIF, ord),
    "display": (ou.V_DISPLAY, ord), "order_reference_number": (ou.V_ORDER_REF, int),
    "capacity": (ou.V_CAPACITY, ord), "intermarket_sweep_eligibility": (ou.V_ISO, ord),
    "cross_type": (ou.V_CROSS, ord), "order_state": (ou.V_STATE, ord), "liquidity_flag": (ou.V_LIQUIDITY, ord),
    "match_number": (ou.V_MATCH, int),
}


def _check_vector(out, fields, msg_off, msg, base):
    for name, value in fields.items():
        if name in ("type", "appendage"):
            continue
        if name == "cl_ord_id":
            assert ou.clordid_from_ints(out[ou.V_CLORDID_HI], out[ou.V_CLORDID_LO]) == value
        elif name == "reason":
            assert out[ou.V_REASON] == (value if isinstance(value, int) else ord(value))
        else:
            slot, conv = _SLOTS[name]
            assert out[slot] == conv(value), name
    tail = msg[base + 2:] if fields["appendage"] is not None else b""
    assert out[ou.V_APPENDAGE_LEN] == len(tail)
    if tail:
        assert out[ou.V_APPENDAGE_OFF] == msg_off + base + 2


@pytest.mark.parametrize("mtype, single", [("A", ou.dec_order_accepted), ("U", ou.dec_order_replaced),
                                           ("C", ou.dec_order_canceled), ("E", ou.dec_order_executed),
                                           ("J", ou.dec_rejected)])
def test_numba_outbound_decoders_match_python(mtype, single):
    rng = random.Random(mtype)
    buf = np.zeros(512, dtype=np.uint8)
    out = np.zeros(ou.V_WORDS, dtype=np.int64)
    for _ in range(150):
        values = _fields(rng, ou.OUTBOUND[mtype])
        app = rng.choice([None, [], _appendage(rng)]) if ou.OUTBOUND_RULE[mtype] == ou.APP_OPTIONAL \
            else rng.choice([[], _appendage(rng)])
        msg = ou.encode_outbound(mtype, appendage=app, **values)
        off = rng.randrange(32)
        buf[off:off + len(msg)] = np.frombuffer(msg, dtype=np.uint8)
        out[:] = -99
        assert single(buf, off, len(msg), out) == ord(mtype)
        out[:] = -99
        assert ou.dec_outbound(buf, off, len(msg), out) == ord(mtype)
        _check_vector(out, ou.decode_outbound(msg), off, msg, ou.OUTBOUND_BASE[mtype])


def test_numba_inbound_decoder_matches_python():
    rng = random.Random(5)
    buf = np.zeros(256, dtype=np.uint8)
    out = np.zeros(ou.V_WORDS, dtype=np.int64)
    for mtype in ("O", "U", "X"):
        for _ in range(100):
            values = _fields(rng, ou.INBOUND[mtype])
            app = rng.choice([None, [], _appendage(rng)]) if mtype == "X" else rng.choice([[], _appendage(rng)])
            msg = ou.encode_inbound(mtype, appendage=app, **values)
            buf[:len(msg)] = np.frombuffer(msg, dtype=np.uint8)
            assert ou.dec_inbound(buf, 0, len(msg), out) == ord(mtype)
            _check_vector(out, ou.decode_inbound(msg), 0, msg, ou.INBOUND_BASE[mtype])


def test_numba_decoders_report_malformed_input_without_raising():
    out = np.zeros(ou.V_WORDS, dtype=np.int64)
    good = ou.encode_outbound("E", quantity=1, appendage=[(28, 1)])
    buf = np.frombuffer(good + b"\x00" * 8, dtype=np.uint8).copy()
    assert ou.dec_outbound(buf, 0, len(good), out) == ord("E")
    assert ou.dec_outbound(buf, 0, 20, out) == ou.ERR_LENGTH             # truncated
    assert ou.dec_outbound(buf, 0, len(good) + 1, out) == ou.ERR_APPENDAGE  # length disagrees
    assert ou.dec_outbound(buf, 0, 0, out) == ou.ERR_LENGTH
    canceled = np.frombuffer(ou.encode_outbound("C") + b"\x00", dtype=np.uint8).copy()
    assert ou.dec_outbound(canceled, 0, 18, out) == ord("C")             # optional length left off
    assert ou.dec_outbound(canceled, 0, 19, out) == ou.ERR_LENGTH        # one stray byte
    system = np.frombuffer(ou.encode_outbound("S"), dtype=np.uint8).copy()
    assert ou.dec_outbound(system, 0, 10, out) == ou.ERR_UNKNOWN         # not a hot message
    assert ou.dec_inbound(system, 0, 10, out) == ou.ERR_UNKNOWN


@pytest.mark.parametrize("direction, mtype", ALL, ids=[f"{d}-{t}" for d, t in ALL])
def test_packer_writes_the_same_bytes_as_encode(direction, mtype):
    rng = random.Random(f"pack{direction}{mtype}")
    specs, rules = _specs(direction)
    pack = ou.packer(direction, mtype)
    for _ in range(30):
        values = _fields(rng, specs[mtype])
        app = [] if rules[mtype] == ou.APP_REQUIRED else None
        raw = [v.encode("ascii") if isinstance(v, str) else v for v in values.values()]
        assert pack(*raw) == ou.encode(direction, mtype, appendage=app, **values)
