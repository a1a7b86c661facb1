"""FIX 4.4 order encoders for the gateway's hot path: NewOrderSingle, OrderCancelRequest and
OrderCancelReplaceRequest written into a preallocated uint8 template, in numba, without allocating.

A template holds one message type for one session. Its constant bytes (MsgType, CompIDs, tags, SOHs)
are written once by `build_template`; each call patches the fixed-width slots in place, writes the
variable tail (Price when the order has one, Symbol, CheckSum), then writes `8=FIX.4.4|9=LEN|`
right-aligned in front of the body so BodyLength never needs padding or a memmove. The message is
`buf[start:end]`. Fixed widths rely on FIX allowing leading zeros in int and float values
(FIX 4.4 Vol. 1, data types: "00023" = "23", "00023.23" = "23.23").

```
 0          start                BODY_OFF   seq_off (S)
 +----------+--------------------+----------+--------------------------------------------------
 | (unused) | 8=FIX.4.4|9=LEN|   | 35=D|49=SENDER|56=TARGET|34=<SEQ 9>|52=<SENDING 21>|<slots>...
 +----------+--------------------+----------+--------------------------------------------------

 last 32 bytes (STAMP_CACHE): the second of the last timestamp written, formatted, reused within it.

 slots after S (offsets below are from S; all three types share SEQ and SENDING):
   S+0   SEQ 9 digits     S+13  SENDING YYYYMMDD-HH:MM:SS.sss
 D  S+38 11=CLORD 16 | S+58 54=SIDE | S+63 38=QTY 9 | S+76 40=ORDTYPE | S+81 59=TIF | S+86 60=TRANSACT 21
    tail S+108: [44=PRICE 12|] 55=SYMBOL| 10=CCC|
 F  S+38 41=ORIG 16 | S+58 11=CLORD 16 | S+78 54=SIDE | S+83 38=QTY 9 | S+96 60=TRANSACT 21
    tail S+118: 55=SYMBOL| 10=CCC|
 G  S+38 41=ORIG 16 | S+58 11=CLORD 16 | S+78 54=SIDE | S+83 38=QTY 9 | S+96 40=ORDTYPE | S+101 59=TIF
    | S+106 60=TRANSACT 21    tail S+128: [44=PRICE 12|] 55=SYMBOL| 10=CCC|
```
Values: ClOrdID/OrigClOrdID are non-negative integers below 10**16 written as 16 digits; OrderQty
below 10**9 as 9 digits; Price is fixed-point in 1e-4 units (ITCH Price(4)) below 10**11, written
`DDDDDDD.dddd`; Symbol is an 8-byte space-padded alpha packed big-endian into an int64 (what
`wire.get_alpha8` reads from ITCH); times are nanoseconds since the epoch, UTC, written to the ms.
Price is omitted for market orders (OrdType '1'). Out-of-range input is not encoded: the encoders
return (-1, ERR_*) so the caller counts it by kind.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from ..runtime.wire import get_u64, put_u64
from .fix44 import MSG_NEW_ORDER_SINGLE, MSG_ORDER_CANCEL_REPLACE_REQUEST, MSG_ORDER_CANCEL_REQUEST

# ---- widths ---------------------------------------------------------------------------------------
SEQ_W = 9
TIME_W = 21
CLORD_W = 16
QTY_W = 9
PRICE_INT_W = 7
PRICE_DEC = 4
PRICE_W = PRICE_INT_W + 1 + PRICE_DEC
SYMBOL_MAX = 8

SEQ_LIMIT = 10 ** SEQ_W
CLORD_LIMIT = 10 ** CLORD_W
QTY_LIMIT = 10 ** QTY_W
PRICE_LIMIT = 10 ** (PRICE_INT_W + PRICE_DEC)

# ---- buffer ---------------------------------------------------------------------------------------
HEAD_MAX = 17       # "8=FIX.4.4|" (10) + "9=" (2) + up to 4 length digits + SOH
BODY_OFF = HEAD_MAX
COMP_ID_MAX = 32
TEMPLATE_SIZE = 512
# The last bytes of a template cache the formatted second of the last timestamp written:
# [second + 1 (u64, 0 = empty)][YYYYMMDD-HH:MM:SS.sss]. Formatting a date costs more than the rest of
# the message; it changes once a second.
STAMP_CACHE = TEMPLATE_SIZE - 32

ORD_TYPE_MARKET = ord("1")
ORD_TYPE_LIMIT = ord("2")

# ---- errors (second element of the returned pair when the first is -1) ----------------------------
ERR_SEQ = 1
ERR_CLORDID = 2
ERR_QTY = 3
ERR_PRICE = 4
ERR_SYMBOL = 5
ERR_TIME = 6


def _layout(slots):
    """Offsets from S of each slot's value and of the tail, for a list of (tag, width) after SEQ."""
    offs = {}
    off = SEQ_W + 1  # SEQ value, SOH
    for tag, width in slots:
        off += len(b"%d=" % tag)
        offs[tag] = off
        off += width + 1
    return offs, off


_COMMON = ((52, TIME_W),)
_D_SLOTS = _COMMON + ((11, CLORD_W), (54, 1), (38, QTY_W), (40, 1), (59, 1), (60, TIME_W))
_F_SLOTS = _COMMON + ((41, CLORD_W), (11, CLORD_W), (54, 1), (38, QTY_W), (60, TIME_W))
_G_SLOTS = _COMMON + ((41, CLORD_W), (11, CLORD_W), (54, 1), (38, QTY_W), (40, 1), (59, 1), (60, TIME_W))
_D, D_TAIL = _layout(_D_SLOTS)
_F, F_TAIL = _layout(_F_SLOTS)
_G, G_TAIL = _layout(_G_SLOTS)
SLOTS = {MSG_NEW_ORDER_SINGLE: _D_SLOTS, MSG_ORDER_CANCEL_REQUEST: _F_SLOTS,
         MSG_ORDER_CANCEL_REPLACE_REQUEST: _G_SLOTS}

SENDING = _D[52]  # the same in all three layouts
D_CLORD, D_SIDE, D_QTY, D_ORDTYPE, D_TIF, D_TRANSACT = _D[11], _D[54], _D[38], _D[40], _D[59], _D[60]
F_ORIG, F_CLORD, F_SIDE, F_QTY, F_TRANSACT = _F[41], _F[11], _F[54], _F[38], _F[60]
G_ORIG, G_CLORD, G_SIDE, G_QTY, G_ORDTYPE, G_TIF, G_TRANSACT = (_G[41], _G[11], _G[54], _G[38], _G[40],
                                                                _G[59], _G[60])
assert _F[52] == _G[52] == SENDING
assert (D_CLORD, D_SIDE, D_QTY, D_ORDTYPE, D_TIF, D_TRANSACT, D_TAIL) == (38, 58, 63, 76, 81, 86, 108)
assert (F_ORIG, F_CLORD, F_SIDE, F_QTY, F_TRANSACT, F_TAIL) == (38, 58, 78, 83, 96, 118)
assert (G_ORIG, G_CLORD, G_SIDE, G_QTY, G_ORDTYPE, G_TIF, G_TRANSACT, G_TAIL) == (38, 58, 78, 83, 96, 101, 106, 128)


def build_template(msg_type: bytes, sender: str | bytes, target: str | bytes) -> tuple[np.ndarray, int]:
    """A template buffer for one order message type and session; returns (buf, seq_off)."""
    if msg_type not in SLOTS:
        raise ValueError(f"no hot template for MsgType {msg_type!r}")
    sender = sender.encode("ascii") if isinstance(sender, str) else bytes(sender)
    target = target.encode("ascii") if isinstance(target, str) else bytes(target)
    for name, v in (("sender", sender), ("target", target)):
        if not v or len(v) > COMP_ID_MAX or b"\x01" in v or b"=" in v:
            raise ValueError(f"{name} CompID {v!r} must be 1..{COMP_ID_MAX} bytes without SOH or '='")
    head = b"35=" + msg_type + b"\x0149=" + sender + b"\x0156=" + target + b"\x0134="
    body = bytearray(head + b"0" * SEQ_W + b"\x01")
    for tag, width in SLOTS[msg_type]:
        body += b"%d=" % tag + b"0" * width + b"\x01"
    buf = np.zeros(TEMPLATE_SIZE, dtype=np.uint8)
    buf[BODY_OFF:BODY_OFF + len(body)] = np.frombuffer(bytes(body), dtype=np.uint8)
    return buf, BODY_OFF + len(head)


# ---- numba helpers --------------------------------------------------------------------------------

@njit(inline="always", cache=True)
def _put_digits(buf, off, width, value):
    for i in range(width - 1, -1, -1):
        buf[off + i] = 48 + value % 10
        value //= 10


@njit(inline="always", cache=True)
def _put_timestamp(buf, off, ns):
    """YYYYMMDD-HH:MM:SS.sss (UTC) from nanoseconds since the epoch."""
    ms_total = ns // 1000000
    secs = ms_total // 1000
    ms = ms_total - secs * 1000
    days = secs // 86400
    sod = secs - days * 86400
    # Civil date from a day count (proleptic Gregorian, era-based, integer only).
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if m <= 2 else 0)
    _put_digits(buf, off, 4, y)
    _put_digits(buf, off + 4, 2, m)
    _put_digits(buf, off + 6, 2, d)
    buf[off + 8] = 45  # '-'
    _put_digits(buf, off + 9, 2, sod // 3600)
    buf[off + 11] = 58  # ':'
    _put_digits(buf, off + 12, 2, (sod // 60) % 60)
    buf[off + 14] = 58
    _put_digits(buf, off + 15, 2, sod % 60)
    buf[off + 17] = 46  # '.'
    _put_digits(buf, off + 18, 3, ms)


@njit(inline="always", cache=True)
def _put_stamp(buf, off, ns):
    """_put_timestamp through the template's one-second cache."""
    ms_total = ns // 1000000
    sec = ms_total // 1000
    if get_u64(buf, STAMP_CACHE) != sec + 1:
        _put_timestamp(buf, STAMP_CACHE + 8, ns)
        put_u64(buf, STAMP_CACHE, sec + 1)
    for k in range(17):
        buf[off + k] = buf[STAMP_CACHE + 8 + k]
    buf[off + 17] = 46  # '.'
    _put_digits(buf, off + 18, 3, ms_total - sec * 1000)


@njit(inline="always", cache=True)
def _put_price(buf, off, price):
    _put_digits(buf, off, PRICE_INT_W, price // 10000)
    buf[off + PRICE_INT_W] = 46
    _put_digits(buf, off + PRICE_INT_W + 1, PRICE_DEC, price % 10000)


@njit(inline="always", cache=True)
def _symbol_len(symbol):
    """Length of a packed space-padded alpha8 (0 when it is blank or has a gap)."""
    n = 0
    for i in range(8):
        c = (symbol >> (56 - 8 * i)) & 0xFF
        if c == 32 or c == 0:
            break
        n += 1
    for i in range(n, 8):
        c = (symbol >> (56 - 8 * i)) & 0xFF
        if c != 32 and c != 0:
            return 0
    return n


@njit(inline="always", cache=True)
def _put_tag(buf, off, t0, t1):
    buf[off] = t0
    buf[off + 1] = t1
    buf[off + 2] = 61  # '='
    return off + 3


@njit(inline="always", cache=True)
def _finish(buf, off, symbol, nsym):
    """Write 55=SYMBOL|, the header in front of BODY_OFF and 10=CCC|; return (start, end)."""
    off = _put_tag(buf, off, 53, 53)
    for i in range(nsym):
        buf[off + i] = (symbol >> (56 - 8 * i)) & 0xFF
    off += nsym
    buf[off] = 1
    off += 1
    body_len = off - BODY_OFF
    nd = 1
    t = body_len
    while t >= 10:
        t //= 10
        nd += 1
    start = BODY_OFF - 13 - nd
    p = start
    # 8=FIX.4.4|9=
    buf[p] = 56; buf[p + 1] = 61; buf[p + 2] = 70; buf[p + 3] = 73; buf[p + 4] = 88
    buf[p + 5] = 46; buf[p + 6] = 52; buf[p + 7] = 46; buf[p + 8] = 52; buf[p + 9] = 1
    buf[p + 10] = 57; buf[p + 11] = 61
    _put_digits(buf, p + 12, nd, body_len)
    buf[BODY_OFF - 1] = 1
    s = 0
    # Unsigned indices: no negative-index wraparound check, so LLVM vectorises the sum.
    for i in range(uint64(start), uint64(off)):
        s += buf[i]
    off = _put_tag(buf, off, 49, 48)
    _put_digits(buf, off, 3, s & 0xFF)
    buf[off + 3] = 1
    return start, off + 4


@njit(inline="always", cache=True)
def _check_common(seq, sending_ns, transact_ns, clordid, qty, symbol):
    if seq < 0 or seq >= SEQ_LIMIT:
        return ERR_SEQ
    if sending_ns < 0 or transact_ns < 0:
        return ERR_TIME
    if clordid < 0 or clordid >= CLORD_LIMIT:
        return ERR_CLORDID
    if qty < 0 or qty >= QTY_LIMIT:
        return ERR_QTY
    if _symbol_len(symbol) == 0:
        return ERR_SYMBOL
    return 0


# ---- encoders -------------------------------------------------------------------------------------

@njit(nogil=True, cache=True)
def encode_new_order(buf, seq_off, seq, sending_ns, clordid, side, qty, ord_type, price, tif,
                     transact_ns, symbol):
    """NewOrderSingle(D) into a template from build_template(b"D", ...); returns (start, end) or (-1, ERR_*)."""
    err = _check_common(seq, sending_ns, transact_ns, clordid, qty, symbol)
    if err == 0 and ord_type != ORD_TYPE_MARKET and (price < 0 or price >= PRICE_LIMIT):
        err = ERR_PRICE
    if err != 0:
        return -1, err
    s = seq_off
    _put_digits(buf, s, SEQ_W, seq)
    _put_stamp(buf, s + SENDING, sending_ns)
    _put_digits(buf, s + D_CLORD, CLORD_W, clordid)
    buf[s + D_SIDE] = side
    _put_digits(buf, s + D_QTY, QTY_W, qty)
    buf[s + D_ORDTYPE] = ord_type
    buf[s + D_TIF] = tif
    _put_stamp(buf, s + D_TRANSACT, transact_ns)
    off = s + D_TAIL
    if ord_type != ORD_TYPE_MARKET:
        off = _put_tag(buf, off, 52, 52)
        _put_price(buf, off, price)
        buf[off + PRICE_W] = 1
        off += PRICE_W + 1
    return _finish(buf, off, symbol, _symbol_len(symbol))


@njit(nogil=True, cache=True)
def encode_cancel(buf, seq_off, seq, sending_ns, orig_clordid, clordid, side, qty, transact_ns, symbol):
    """OrderCancelRequest(F) into a template from build_template(b"F", ...); returns (start, end) or (-1, ERR_*)."""
    err = _check_common(seq, sending_ns, transact_ns, clordid, qty, symbol)
    if err == 0 and (orig_clordid < 0 or orig_clordid >= CLORD_LIMIT):
        err = ERR_CLORDID
    if err != 0:
        return -1, err
    s = seq_off
    _put_digits(buf, s, SEQ_W, seq)
    _put_stamp(buf, s + SENDING, sending_ns)
    _put_digits(buf, s + F_ORIG, CLORD_W, orig_clordid)
    _put_digits(buf, s + F_CLORD, CLORD_W, clordid)
    buf[s + F_SIDE] = side
    _put_digits(buf, s + F_QTY, QTY_W, qty)
    _put_stamp(buf, s + F_TRANSACT, transact_ns)
    return _finish(buf, s + F_TAIL, symbol, _symbol_len(symbol))


@njit(nogil=True, cache=True)
def encode_replace(buf, seq_off, seq, sending_ns, orig_clordid, clordid, side, qty, ord_type, price,
                   tif, transact_ns, symbol):
    """OrderCancelReplaceRequest(G) into a template from build_template(b"G", ...); returns (start, end) or (-1, ERR_*)."""
    err = _check_common(seq, sending_ns, transact_ns, clordid, qty, symbol)
    if err == 0 and (orig_clordid < 0 or orig_clordid >= CLORD_LIMIT):
        err = ERR_CLORDID
    if err == 0 and ord_type != ORD_TYPE_MARKET and (price < 0 or price >= PRICE_LIMIT):
        err = ERR_PRICE
    if err != 0:
        return -1, err
    s = seq_off
    _put_digits(buf, s, SEQ_W, seq)
    _put_stamp(buf, s + SENDING, sending_ns)
    _put_digits(buf, s + G_ORIG, CLORD_W, orig_clordid)
    _put_digits(buf, s + G_CLORD, CLORD_W, clordid)
    buf[s + G_SIDE] = side
    _put_digits(buf, s + G_QTY, QTY_W, qty)
    buf[s + G_ORDTYPE] = ord_type
    buf[s + G_TIF] = tif
    _put_stamp(buf, s + G_TRANSACT, transact_ns)
    off = s + G_TAIL
    if ord_type != ORD_TYPE_MARKET:
        off = _put_tag(buf, off, 52, 52)
        _put_price(buf, off, price)
        buf[off + PRICE_W] = 1
        off += PRICE_W + 1
    return _finish(buf, off, symbol, _symbol_len(symbol))


# ---- Python-side formatting of the same values (what the codec is given to produce the same bytes) --

def format_clordid(v: int) -> bytes:
    return b"%0*d" % (CLORD_W, v)


def format_qty(v: int) -> bytes:
    return b"%0*d" % (QTY_W, v)


def format_price(v: int) -> bytes:
    """Fixed-point 1e-4 price as the hot encoder writes it (DDDDDDD.dddd)."""
    return b"%0*d.%0*d" % (PRICE_INT_W, v // 10000, PRICE_DEC, v % 10000)


def format_seq(v: int) -> bytes:
    return b"%0*d" % (SEQ_W, v)


def parse_price(v: bytes) -> int:
    """A FIX decimal price to 1e-4 fixed point (exact, no float)."""
    neg = v[:1] == b"-"
    a, _, b = (v[1:] if neg else v).partition(b".")
    b = (b + b"0000")[:4]
    out = int(a or b"0") * 10000 + int(b)
    return -out if neg else out
