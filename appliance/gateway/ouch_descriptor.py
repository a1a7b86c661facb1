"""NASDAQ OUCH 5.0 message layouts: one field table per direction, Python codecs and numba hot codecs.

OUCH messages ride in SoupBinTCP packets: inbound (client -> venue) in Unsequenced Data, outbound
(venue -> client) in Sequenced Data. The first byte is the message type. Integers are big-endian
and unsigned; Price is 8 bytes with 4 implied decimals, read here as a signed int64 (PegOffset-style
offsets in the appendage are signed 4-byte). Alpha fields are left-justified and space-padded.
Every outbound message carries an 8-byte Timestamp (ns since midnight) after its type.

Most messages end with Appendage Length (u16) and an optional appendage of TagValue elements, each
`length (u8, counts tag + value) | tag (u8) | value`. The spec marks the Appendage Length as
required on some messages and optional on others (there a message may stop right before it);
System Event has none. Layouts follow OUCH 5.0 rev 1.05 (Oct 2025).

```
 O  Enter Order (47 + appendage)
 0    1            5    6            10                18                26  27  28  29  30  31               45       47
 +----+------------+----+------------+-----------------+-----------------+---+---+---+---+---+----------------+--------+
 | O  | UserRefNum |side| quantity   | symbol alpha8   | price i64 (1e-4)|tif|dsp|cap|iso|crs| ClOrdID alpha14| applen |
 +----+------------+----+------------+-----------------+-----------------+---+---+---+---+---+----------------+--------+

 U  Replace Order (40 + appendage)
 0    1              5            9            13                21  22  23  24                38       40
 +----+--------------+------------+------------+-----------------+---+---+---+----------------+--------+
 | U  | OrigUserRef  | UserRefNum | quantity   | price           |tif|dsp|iso| ClOrdID        | applen |
 +----+--------------+------------+------------+-----------------+---+---+---+----------------+--------+

 X  Cancel Order (9, or 11 + appendage): UserRefNum @1, quantity (new intended size, 0 = all) @5

 A  Order Accepted (64 + appendage)
 0  1          9     13   14   18       26      34  35  36          44  45  46  47  48        62       64
 +--+----------+-----+----+----+--------+-------+---+---+-----------+---+---+---+---+---------+--------+
 |A | timestamp|URN  |side|qty |symbol  |price  |tif|dsp| order ref |cap|iso|crs|st | ClOrdID | applen |
 +--+----------+-----+----+----+--------+-------+---+---+-----------+---+---+---+---+---------+--------+

 U  Order Replaced (68 + appendage): as Accepted with OrigUserRefNum @9 before UserRefNum @13
 C  Order Canceled (18, or 20 + appendage): UserRefNum @9, decrement quantity @13, reason @17
 E  Order Executed (36 + appendage): UserRefNum @9, quantity @13, price @17, liquidity @25, match @26
 J  Rejected (29, or 31 + appendage): UserRefNum @9, reason u16 @13, ClOrdID @15
```
The remaining messages are laid out in `INBOUND` / `OUTBOUND` below with the same conventions.
"""

from __future__ import annotations

import struct

import numpy as np
from numba import njit

from appliance.runtime.wire import get_u16, get_u32, get_u48, get_u64, put_u16, put_u32, put_u64

# ---- appendage rules ---------------------------------------------------------------------------
APP_NONE = 0      # no Appendage Length field
APP_REQUIRED = 1  # Appendage Length always present
APP_OPTIONAL = 2  # the message may end before the Appendage Length field

# ---- field tables: type -> ((name, offset, size, kind), ...) up to (not including) Appendage Length
# kinds: u = unsigned integer, p = Price (signed 8 bytes, 4 implied decimals), c = one ASCII char,
#        a = space-padded alpha.
_TS = ("timestamp", 8, "u")


def _layout(*fields) -> tuple[tuple[str, int, int, str], ...]:
    out, off = [], 1
    for name, size, kind in fields:
        out.append((name, off, size, kind))
        off += size
    return tuple(out)


_ACCEPTED_TAIL = (("side", 1, "c"), ("quantity", 4, "u"), ("symbol", 8, "a"), ("price", 8, "p"),
                  ("time_in_force", 1, "c"), ("display", 1, "c"), ("order_reference_number", 8, "u"),
                  ("capacity", 1, "c"), ("intermarket_sweep_eligibility", 1, "c"), ("cross_type", 1, "c"),
                  ("order_state", 1, "c"), ("cl_ord_id", 14, "a"))

INBOUND: dict[str, tuple] = {
    "O": _layout(("user_ref_num", 4, "u"), ("side", 1, "c"), ("quantity", 4, "u"), ("symbol", 8, "a"),
                 ("price", 8, "p"), ("time_in_force", 1, "c"), ("display", 1, "c"), ("capacity", 1, "c"),
                 ("intermarket_sweep_eligibility", 1, "c"), ("cross_type", 1, "c"), ("cl_ord_id", 14, "a")),
    "U": _layout(("orig_user_ref_num", 4, "u"), ("user_ref_num", 4, "u"), ("quantity", 4, "u"), ("price", 8, "p"),
                 ("time_in_force", 1, "c"), ("display", 1, "c"), ("intermarket_sweep_eligibility", 1, "c"),
                 ("cl_ord_id", 14, "a")),
    "X": _layout(("user_ref_num", 4, "u"), ("quantity", 4, "u")),
    "M": _layout(("user_ref_num", 4, "u"), ("side", 1, "c"), ("quantity", 4, "u")),
    "C": _layout(("user_ref_num", 4, "u"), ("firm", 4, "a"), ("symbol", 8, "a")),
    "D": _layout(("user_ref_num", 4, "u"), ("firm", 4, "a")),
    "E": _layout(("user_ref_num", 4, "u"), ("firm", 4, "a")),
    "Q": _layout(),
}
OUTBOUND: dict[str, tuple] = {
    "S": _layout(_TS, ("event_code", 1, "c")),
    "A": _layout(_TS, ("user_ref_num", 4, "u"), *_ACCEPTED_TAIL),
    "U": _layout(_TS, ("orig_user_ref_num", 4, "u"), ("user_ref_num", 4, "u"), *_ACCEPTED_TAIL),
    "C": _layout(_TS, ("user_ref_num", 4, "u"), ("quantity", 4, "u"), ("reason", 1, "c")),
    "D": _layout(_TS, ("user_ref_num", 4, "u"), ("decrement_shares", 4, "u"), ("reason", 1, "c"),
                 ("quantity_prevented_from_trading", 4, "u"), ("execution_price", 8, "p"),
                 ("liquidity_flag", 1, "c"), ("aiq_strategy", 1, "c")),
    "E": _layout(_TS, ("user_ref_num", 4, "u"), ("quantity", 4, "u"), ("price", 8, "p"),
                 ("liquidity_flag", 1, "c"), ("match_number", 8, "u")),
    "B": _layout(_TS, ("user_ref_num", 4, "u"), ("match_number", 8, "u"), ("reason", 1, "c"),
                 ("cl_ord_id", 14, "a")),
    "J": _layout(_TS, ("user_ref_num", 4, "u"), ("reason", 2, "u"), ("cl_ord_id", 14, "a")),
    "P": _layout(_TS, ("user_ref_num", 4, "u")),
    "I": _layout(_TS, ("user_ref_num", 4, "u")),
    "T": _layout(_TS, ("user_ref_num", 4, "u"), ("price", 8, "p"), ("display", 1, "c"),
                 ("order_reference_number", 8, "u")),
    "M": _layout(_TS, ("user_ref_num", 4, "u"), ("side", 1, "c"), ("quantity", 4, "u")),
    "R": _layout(_TS, ("user_ref_num", 4, "u"), ("reason", 1, "c")),
    "X": _layout(_TS, ("user_ref_num", 4, "u"), ("firm", 4, "a"), ("symbol", 8, "a")),
    "G": _layout(_TS, ("user_ref_num", 4, "u"), ("firm", 4, "a")),
    "K": _layout(_TS, ("user_ref_num", 4, "u"), ("firm", 4, "a")),
    "Q": _layout(_TS, ("next_user_ref_num", 4, "u")),
}
INBOUND_RULE = {"O": APP_REQUIRED, "U": APP_REQUIRED, "X": APP_OPTIONAL, "M": APP_OPTIONAL, "C": APP_REQUIRED,
                "D": APP_REQUIRED, "E": APP_REQUIRED, "Q": APP_OPTIONAL}
OUTBOUND_RULE = {"S": APP_NONE, "A": APP_REQUIRED, "U": APP_REQUIRED, "C": APP_OPTIONAL, "D": APP_OPTIONAL,
                 "E": APP_REQUIRED, "B": APP_OPTIONAL, "J": APP_OPTIONAL, "P": APP_OPTIONAL, "I": APP_OPTIONAL,
                 "T": APP_OPTIONAL, "M": APP_OPTIONAL, "R": APP_REQUIRED, "X": APP_REQUIRED, "G": APP_REQUIRED,
                 "K": APP_REQUIRED, "Q": APP_OPTIONAL}
NAMES = {
    "in": {"O": "enter_order", "U": "replace_order", "X": "cancel_order", "M": "modify_order",
           "C": "mass_cancel_request", "D": "disable_order_entry_request", "E": "enable_order_entry_request",
           "Q": "account_query_request"},
    "out": {"S": "system_event", "A": "order_accepted", "U": "order_replaced", "C": "order_canceled",
            "D": "aiq_canceled", "E": "order_executed", "B": "broken_trade", "J": "rejected", "P": "cancel_pending",
            "I": "cancel_reject", "T": "order_priority_update", "M": "order_modified", "R": "order_restated",
            "X": "mass_cancel_response", "G": "disable_order_entry_response", "K": "enable_order_entry_response",
            "Q": "account_query_response"},
}


def _base(spec) -> int:
    return 1 + sum(size for _, _, size, _ in spec)


# Length without the Appendage Length field, and with it (the spec's fixed message lengths).
INBOUND_BASE = {t: _base(s) for t, s in INBOUND.items()}
OUTBOUND_BASE = {t: _base(s) for t, s in OUTBOUND.items()}
assert {t: n + (2 if INBOUND_RULE[t] else 0) for t, n in INBOUND_BASE.items()} == {
    "O": 47, "U": 40, "X": 11, "M": 12, "C": 19, "D": 11, "E": 11, "Q": 3}, "inbound layout drifted from OUCH 5.0"
assert {t: n + (2 if OUTBOUND_RULE[t] else 0) for t, n in OUTBOUND_BASE.items()} == {
    "S": 10, "A": 64, "U": 68, "C": 20, "D": 34, "E": 36, "B": 38, "J": 31, "P": 15, "I": 15, "T": 32, "M": 20,
    "R": 16, "X": 27, "G": 19, "K": 19, "Q": 15}, "outbound layout drifted from OUCH 5.0"

# The same, indexed by type byte for the hot path: base length (0 = unknown type) and appendage rule.
IN_BASE = np.zeros(256, dtype=np.int32)
IN_RULE = np.zeros(256, dtype=np.int32)
OUT_BASE = np.zeros(256, dtype=np.int32)
OUT_RULE = np.zeros(256, dtype=np.int32)
for _t, _n in INBOUND_BASE.items():
    IN_BASE[ord(_t)], IN_RULE[ord(_t)] = _n, INBOUND_RULE[_t]
for _t, _n in OUTBOUND_BASE.items():
    OUT_BASE[ord(_t)], OUT_RULE[ord(_t)] = _n, OUTBOUND_RULE[_t]

# ---- named offsets of the hot messages (from the start of the OUCH message) -------------------------
MSG_ENTER_ORDER = ord("O")
MSG_REPLACE_ORDER = ord("U")
MSG_CANCEL_ORDER = ord("X")
MSG_ACCEPTED = ord("A")
MSG_REPLACED = ord("U")
MSG_CANCELED = ord("C")
MSG_EXECUTED = ord("E")
MSG_REJECTED = ord("J")

# O Enter Order
EO_USER_REF, EO_SIDE, EO_QUANTITY, EO_SYMBOL, EO_PRICE = 1, 5, 6, 10, 18
EO_TIF, EO_DISPLAY, EO_CAPACITY, EO_ISO, EO_CROSS, EO_CLORDID, EO_APPLEN, EO_SIZE = 26, 27, 28, 29, 30, 31, 45, 47
# U Replace Order
RO_ORIG_USER_REF, RO_USER_REF, RO_QUANTITY, RO_PRICE = 1, 5, 9, 13
RO_TIF, RO_DISPLAY, RO_ISO, RO_CLORDID, RO_APPLEN, RO_SIZE = 21, 22, 23, 24, 38, 40
# X Cancel Order (sent without the optional Appendage Length)
CO_USER_REF, CO_QUANTITY, CO_SIZE = 1, 5, 9
# A Order Accepted
AC_TIMESTAMP, AC_USER_REF, AC_SIDE, AC_QUANTITY, AC_SYMBOL, AC_PRICE, AC_TIF, AC_DISPLAY = 1, 9, 13, 14, 18, 26, 34, 35
AC_ORDER_REF, AC_CAPACITY, AC_ISO, AC_CROSS, AC_STATE, AC_CLORDID, AC_APPLEN, AC_SIZE = 36, 44, 45, 46, 47, 48, 62, 64
# U Order Replaced
RP_TIMESTAMP, RP_ORIG_USER_REF, RP_USER_REF, RP_SIDE, RP_QUANTITY, RP_SYMBOL, RP_PRICE = 1, 9, 13, 17, 18, 22, 30
RP_TIF, RP_DISPLAY, RP_ORDER_REF, RP_CAPACITY, RP_ISO, RP_CROSS, RP_STATE, RP_CLORDID = 38, 39, 40, 48, 49, 50, 51, 52
RP_APPLEN, RP_SIZE = 66, 68
# C Order Canceled
CX_TIMESTAMP, CX_USER_REF, CX_QUANTITY, CX_REASON, CX_BASE = 1, 9, 13, 17, 18
# E Order Executed
EX_TIMESTAMP, EX_USER_REF, EX_QUANTITY, EX_PRICE, EX_LIQUIDITY, EX_MATCH, EX_APPLEN, EX_SIZE = 1, 9, 13, 17, 25, 26, 34, 36
# J Rejected
RJ_TIMESTAMP, RJ_USER_REF, RJ_REASON, RJ_CLORDID, RJ_BASE = 1, 9, 13, 15, 29


def _offsets(spec) -> dict[str, int]:
    return {name: off for name, off, _, _ in spec}


assert _offsets(INBOUND["O"]) == {
    "user_ref_num": EO_USER_REF, "side": EO_SIDE, "quantity": EO_QUANTITY, "symbol": EO_SYMBOL, "price": EO_PRICE,
    "time_in_force": EO_TIF, "display": EO_DISPLAY, "capacity": EO_CAPACITY, "intermarket_sweep_eligibility": EO_ISO,
    "cross_type": EO_CROSS, "cl_ord_id": EO_CLORDID} and INBOUND_BASE["O"] == EO_APPLEN
assert _offsets(INBOUND["U"]) == {
    "orig_user_ref_num": RO_ORIG_USER_REF, "user_ref_num": RO_USER_REF, "quantity": RO_QUANTITY, "price": RO_PRICE,
    "time_in_force": RO_TIF, "display": RO_DISPLAY, "intermarket_sweep_eligibility": RO_ISO,
    "cl_ord_id": RO_CLORDID} and INBOUND_BASE["U"] == RO_APPLEN
assert _offsets(INBOUND["X"]) == {"user_ref_num": CO_USER_REF, "quantity": CO_QUANTITY} and INBOUND_BASE["X"] == CO_SIZE
assert _offsets(OUTBOUND["A"]) == {
    "timestamp": AC_TIMESTAMP, "user_ref_num": AC_USER_REF, "side": AC_SIDE, "quantity": AC_QUANTITY,
    "symbol": AC_SYMBOL, "price": AC_PRICE, "time_in_force": AC_TIF, "display": AC_DISPLAY,
    "order_reference_number": AC_ORDER_REF, "capacity": AC_CAPACITY, "intermarket_sweep_eligibility": AC_ISO,
    "cross_type": AC_CROSS, "order_state": AC_STATE, "cl_ord_id": AC_CLORDID} and OUTBOUND_BASE["A"] == AC_APPLEN
assert _offsets(OUTBOUND["U"]) == {
    "timestamp": RP_TIMESTAMP, "orig_user_ref_num": RP_ORIG_USER_REF, "user_ref_num": RP_USER_REF, "side": RP_SIDE,
    "quantity": RP_QUANTITY, "symbol": RP_SYMBOL, "price": RP_PRICE, "time_in_force": RP_TIF,
    "display": RP_DISPLAY, "order_reference_number": RP_ORDER_REF, "capacity": RP_CAPACITY,
    "intermarket_sweep_eligibility": RP_ISO, "cross_type": RP_CROSS, "order_state": RP_STATE,
    "cl_ord_id": RP_CLORDID} and OUTBOUND_BASE["U"] == RP_APPLEN
assert _offsets(OUTBOUND["C"]) == {"timestamp": CX_TIMESTAMP, "user_ref_num": CX_USER_REF, "quantity": CX_QUANTITY,
                                   "reason": CX_REASON} and OUTBOUND_BASE["C"] == CX_BASE
assert _offsets(OUTBOUND["E"]) == {"timestamp": EX_TIMESTAMP, "user_ref_num": EX_USER_REF, "quantity": EX_QUANTITY,
                                   "price": EX_PRICE, "liquidity_flag": EX_LIQUIDITY,
                                   "match_number": EX_MATCH} and OUTBOUND_BASE["E"] == EX_APPLEN
assert _offsets(OUTBOUND["J"]) == {"timestamp": RJ_TIMESTAMP, "user_ref_num": RJ_USER_REF, "reason": RJ_REASON,
                                   "cl_ord_id": RJ_CLORDID} and OUTBOUND_BASE["J"] == RJ_BASE

# ---- optional appendage: tag -> (name, value size, kind); kind s = signed 4-byte price offset ---------
TAGS: dict[int, tuple[str, int, str]] = {
    1: ("secondary_ord_ref_num", 8, "u"), 2: ("firm", 4, "a"), 3: ("min_qty", 4, "u"), 4: ("customer_type", 1, "c"),
    5: ("max_floor", 4, "u"), 6: ("price_type", 1, "c"), 7: ("peg_offset", 4, "s"), 9: ("discretion_price", 8, "p"),
    10: ("discretion_price_type", 1, "c"), 11: ("discretion_peg_offset", 4, "s"), 12: ("post_only", 1, "c"),
    13: ("random_reserves", 4, "u"), 14: ("route", 4, "a"), 15: ("expire_time", 4, "u"), 16: ("trade_now", 1, "c"),
    17: ("handle_inst", 1, "c"), 18: ("bbo_weight_indicator", 1, "c"), 22: ("display_quantity", 4, "u"),
    23: ("display_price", 8, "p"), 24: ("group_id", 2, "u"), 25: ("shares_located", 1, "c"),
    26: ("locate_broker", 4, "a"), 27: ("side", 1, "c"), 28: ("user_ref_idx", 1, "u"), 29: ("aiq_strategy", 1, "c"),
    30: ("aiq_group_id", 2, "a"),
}
TAG_BY_NAME = {name: tag for tag, (name, _, _) in TAGS.items()}

# ---- enumerations (code -> meaning) ----------------------------------------------------------------
SIDES = {"B": "buy", "S": "sell", "T": "sell short", "E": "sell short exempt"}
TIME_IN_FORCE = {"0": "day (market hours)", "3": "immediate or cancel", "5": "GTX (extended hours)",
                 "6": "GTT (ExpireTime required)", "E": "after hours"}
DISPLAY = {"Y": "visible", "N": "hidden", "A": "attributable", "Z": "conformant (outbound only)"}
CAPACITY = {"A": "agency", "P": "principal", "R": "riskless", "O": "other"}
INTERMARKET_SWEEP = {"Y": "eligible", "N": "not eligible"}
CROSS_TYPES = {"N": "continuous market", "O": "opening cross", "C": "closing cross", "H": "halt/IPO",
               "S": "supplemental", "R": "retail", "E": "extended life", "A": "after hours close"}
ORDER_STATES = {"L": "live", "D": "dead"}
EVENT_CODES = {"S": "start of day", "E": "end of day"}
CANCEL_REASONS = {
    "U": "user requested", "I": "immediate or cancel", "T": "timeout", "S": "supervisory",
    "D": "regulatory restriction", "Q": "self match prevention", "Z": "system cancel",
    "K": "market collars", "H": "halted", "X": "open protection", "E": "closed",
    "F": "post only cancel (NMS price slide)", "G": "post only cancel (contra side displayed)",
    "e": "exceeds allowable shares",
}
BROKEN_TRADE_REASONS = {"E": "erroneous", "C": "consent", "S": "supervisory", "X": "external"}
RESTATED_REASONS = {"R": "refresh of display", "P": "update of displayed price"}
LIQUIDITY_FLAGS = {
    "A": "added", "C": "closing cross", "e": "retail designated execution that added displayed liquidity",
    "H": "halt/IPO cross", "i": "after hours closing cross", "J": "non-displayed adding liquidity",
    "j": "RPI order provides liquidity", "k": "added liquidity via a midpoint order", "K": "halt cross",
    "L": "closing cross (imbalance-only)", "M": "opening cross (imbalance-only)",
    "m": "removed liquidity at a midpoint", "N": "passive midpoint execution",
    "n": "midpoint extended life order execution", "O": "opening cross",
    "p": "removed price improving non-displayed liquidity", "q": "RMO retail order removes non-RPI midpoint liquidity",
    "R": "removed", "r": "retail order removes RPI liquidity",
    "t": "retail order removes price improving non-displayed liquidity other than RPI",
    "0": "supplemental order execution", "7": "displayed adding order improves the NBBO",
    "8": "displayed adding order sets the QBBO while joining the NBBO", "1": "RPI order provides liquidity, no RPII",
}
# Every code rev 1.05 lists in Appendix D, including u 2 3 5 9 not named above; decoders pass any flag through.
LIQUIDITY_FLAG_CODES = "ACeHiJjkKLMmNnOpqRrtu07812359"
AIQ_STRATEGIES = "*NYDOWRydowrZEPXS01245"
REJECT_REASONS = {
    0x01: "quote unavailable", 0x02: "destination closed", 0x03: "invalid display", 0x04: "invalid max floor",
    0x05: "invalid peg type", 0x06: "fat finger", 0x07: "halted", 0x08: "ISO not allowed", 0x09: "invalid side",
    0x0A: "processing error", 0x0B: "cancel pending", 0x0C: "firm not authorized", 0x0D: "invalid min quantity",
    0x0E: "no closing reference price", 0x0F: "other", 0x10: "cancel not allowed", 0x11: "pegging not allowed",
    0x12: "crossed market", 0x13: "invalid quantity", 0x14: "invalid cross order", 0x15: "replace not allowed",
    0x16: "routing not allowed", 0x17: "invalid symbol", 0x18: "test", 0x19: "late LOC too aggressive",
    0x1A: "retail not allowed", 0x1B: "invalid midpoint post only price", 0x1C: "invalid destination",
    0x1D: "invalid price", 0x1E: "shares exceed threshold", 0x1F: "exceeds maximum allowed notional value",
    0x20: "risk: aggregate exposure exceeded", 0x21: "risk: market impact", 0x22: "risk: restricted stock",
    0x23: "risk: short sell restricted", 0x24: "risk: ISO not allowed", 0x25: "risk: exceeds ADV limit",
    0x26: "risk: fat finger", 0x27: "risk: locate required", 0x28: "risk: symbol message rate restriction",
    0x29: "risk: port message rate restriction", 0x2A: "risk: duplicate message rate restriction",
    0x2B: "risk: short sell not allowed", 0x2C: "risk: market order not allowed",
    0x2D: "risk: pre-market not allowed", 0x2E: "risk: post-market not allowed",
    0x2F: "risk: short sell exempt not allowed", 0x30: "risk: single order notional exceeded",
    0x31: "risk: max quantity exceeded", 0x32: "Reg SHO state not available",
    0x33: "risk: IPO market buy not allowed",
}
REJECT_QUOTE_UNAVAILABLE, REJECT_HALTED, REJECT_INVALID_SIDE, REJECT_OTHER = 0x01, 0x07, 0x09, 0x0F
REJECT_INVALID_QUANTITY, REJECT_INVALID_SYMBOL, REJECT_INVALID_PRICE = 0x13, 0x17, 0x1D

PRICE_SCALE = 10_000                 # 4 implied decimal places
PRICE_MAX_LIMIT = 1_999_999_900      # $199,999.9900, the largest limit price
PRICE_MARKET = (2_000_000_000, 0x7FFFFFFF)  # prices that flag a market order for a cross


# ---- cold-path codecs ------------------------------------------------------------------------------
def _tables(direction: str):
    if direction in ("in", "inbound"):
        return "in", INBOUND, INBOUND_RULE
    if direction in ("out", "outbound"):
        return "out", OUTBOUND, OUTBOUND_RULE
    raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")


def _put_field(out: bytearray, where: str, name: str, off: int, size: int, kind: str, value) -> None:
    if kind in ("c", "a"):
        raw = b" " * size if value is None else (value.encode("ascii") if isinstance(value, str) else bytes(value))
        if len(raw) > size:
            raise ValueError(f"{where} field {name!r}: {raw!r} is longer than {size} bytes")
        out[off:off + size] = raw.ljust(size, b" ")
    else:
        v = int(value or 0)
        try:
            out[off:off + size] = v.to_bytes(size, "big", signed=kind in ("p", "s"))
        except OverflowError:
            raise ValueError(f"{where} field {name!r}: {v} does not fit {size} bytes") from None


def _get_field(raw: bytes, off: int, size: int, kind: str):
    field = raw[off:off + size]
    if kind == "c":
        return field.decode("ascii", "replace")
    if kind == "a":
        return field.decode("ascii", "replace").rstrip(" ")
    return int.from_bytes(field, "big", signed=kind in ("p", "s"))


def encode_appendage(items) -> bytes:
    """TagValue elements from (tag, value) pairs; tag by number or name, value typed or raw bytes."""
    out = bytearray()
    for tag, value in items:
        t = TAG_BY_NAME[tag] if isinstance(tag, str) else int(tag)
        if isinstance(value, (bytes, bytearray)):
            body = bytes(value)
        elif t in TAGS:
            name, size, kind = TAGS[t]
            cell = bytearray(size)
            _put_field(cell, "appendage", name, 0, size, kind, value)
            body = bytes(cell)
        else:
            raise ValueError(f"OUCH tag {t} is not in Appendix A: give its value as bytes")
        if not 0 <= t <= 255 or len(body) + 1 > 255:
            raise ValueError(f"OUCH tag {t} with a {len(body)}-byte value cannot be encoded")
        out += bytes((len(body) + 1, t)) + body
    return bytes(out)


def decode_appendage(raw: bytes) -> list[tuple[int, object]]:
    """(tag, value) pairs; known tags of the right size are typed, others come back as bytes."""
    items, pos = [], 0
    while pos < len(raw):
        length = raw[pos]
        if length == 0 or pos + 1 + length > len(raw):
            raise ValueError(f"malformed TagValue element at appendage offset {pos}")
        tag, body = raw[pos + 1], raw[pos + 2:pos + 1 + length]
        spec = TAGS.get(tag)
        items.append((tag, _get_field(body, 0, spec[1], spec[2]) if spec and spec[1] == len(body) else bytes(body)))
        pos += 1 + length
    return items


def encode(direction: str, mtype: str, *, appendage=None, **values) -> bytes:
    """Build one OUCH message ('in' = client -> venue, 'out' = venue -> client); missing fields are 0 / spaces.

    `appendage` is a list of (tag, value) pairs, or None. Where the Appendage Length is optional,
    None leaves it off; where it is required, None writes a zero length.
    """
    side, specs, rules = _tables(direction)
    if mtype not in specs:
        raise ValueError(f"OUCH {side}bound has no message type {mtype!r}")
    spec, rule = specs[mtype], rules[mtype]
    known = {name for name, *_ in spec}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"OUCH {side}bound {mtype!r} has no fields {sorted(unknown)}; it has {sorted(known)}")
    out = bytearray(_base(spec))
    out[0] = ord(mtype)
    for name, off, size, kind in spec:
        _put_field(out, f"OUCH {mtype!r}", name, off, size, kind, values.get(name))
    if rule == APP_NONE:
        if appendage:
            raise ValueError(f"OUCH {side}bound {mtype!r} carries no appendage")
    elif appendage is not None or rule == APP_REQUIRED:
        body = encode_appendage(appendage or ())
        out += len(body).to_bytes(2, "big") + body
    return bytes(out)


def packer(direction: str, mtype: str):
    """A fast encoder for one message type, for Python paths that send many (the venue's order entry).

    pack(*values) takes every field in layout order: integers, and bytes for char and alpha fields
    (padded with spaces here). Where the layout requires an Appendage Length it is written as 0.
    Produces the same bytes as encode() (tests/gateway/test_ouch.py checks every outbound type).
    """
    side, specs, rules = _tables(direction)
    spec, rule = specs[mtype], rules[mtype]
    codes, alpha = [], []
    for i, (_name, _off, size, kind) in enumerate(spec):
        if kind in ("c", "a"):
            codes.append(f"{size}s")
            alpha.append((i, size))
        else:
            codes.append({(1, False): "B", (2, False): "H", (4, False): "I", (8, False): "Q", (4, True): "i",
                          (8, True): "q"}[(size, kind in ("p", "s"))])
    if rule == APP_REQUIRED:
        codes.append("H")
    st = struct.Struct(">c" + "".join(codes))
    assert st.size == _base(spec) + (2 if rule == APP_REQUIRED else 0), (mtype, st.size)
    t = mtype.encode("ascii")
    tail = (0,) if rule == APP_REQUIRED else ()

    def pack(*values) -> bytes:
        if len(values) != len(spec):
            raise ValueError(f"OUCH {side}bound {mtype!r} takes {len(spec)} fields, got {len(values)}")
        if alpha:
            values = list(values)
            for i, size in alpha:
                values[i] = values[i].ljust(size, b" ")
        return st.pack(t, *values, *tail)

    return pack


def decode(direction: str, msg) -> dict:
    """Decode one OUCH message into a dict: type, the fixed fields, and appendage (None when absent)."""
    side, specs, rules = _tables(direction)
    raw = bytes(msg)
    if not raw:
        raise ValueError("empty OUCH message")
    mtype = chr(raw[0])
    if mtype not in specs:
        raise ValueError(f"unknown OUCH {side}bound message type {raw[0]:#04x}")
    spec, rule = specs[mtype], rules[mtype]
    base = _base(spec)
    n = len(raw)
    if rule == APP_NONE:
        if n != base:
            raise ValueError(f"OUCH {mtype!r} is {base} bytes, got {n}")
        appendage = None
    elif rule == APP_OPTIONAL and n == base:
        appendage = None
    else:
        if n < base + 2:
            raise ValueError(f"OUCH {mtype!r} needs at least {base + 2} bytes, got {n}")
        app_len = int.from_bytes(raw[base:base + 2], "big")
        if base + 2 + app_len != n:
            raise ValueError(f"OUCH {mtype!r} Appendage Length {app_len} does not match its {n - base - 2} bytes")
        appendage = decode_appendage(raw[base + 2:])
    out = {"type": mtype}
    for name, off, size, kind in spec:
        out[name] = _get_field(raw, off, size, kind)
    out["appendage"] = appendage
    return out


def encode_inbound(mtype: str, **kw) -> bytes:
    return encode("in", mtype, **kw)


def encode_outbound(mtype: str, **kw) -> bytes:
    return encode("out", mtype, **kw)


def decode_inbound(msg) -> dict:
    return decode("in", msg)


def decode_outbound(msg) -> dict:
    return decode("out", msg)


def price_to_int(price) -> int:
    """A decimal price (str, int, Decimal or float) as the wire integer with 4 implied decimals."""
    from decimal import ROUND_HALF_EVEN, Decimal

    return int((Decimal(str(price)) * PRICE_SCALE).to_integral_value(ROUND_HALF_EVEN))


def clordid_array(text: str | bytes) -> np.ndarray:
    """A ClOrdID as the 14-byte space-padded uint8 array the numba encoders take."""
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    if len(raw) > 14:
        raise ValueError(f"ClOrdID {raw!r} is longer than 14 bytes")
    return np.frombuffer(raw.ljust(14, b" "), dtype=np.uint8).copy()


def clordid_from_ints(hi: int, lo: int) -> str:
    """Unpack the two words the numba decoders return for a ClOrdID (first 8 bytes, last 6)."""
    raw = (int(hi) & (2**64 - 1)).to_bytes(8, "big") + (int(lo) & (2**48 - 1)).to_bytes(6, "big")
    return raw.decode("ascii", "replace").rstrip(" ")


# ---- hot path: numba encoders (client side) -----------------------------------------------------------
@njit(inline="always", cache=True)
def _put_bytes14(buf, off, src):
    for i in range(14):
        buf[off + i] = src[i]


@njit(nogil=True, cache=True)
def enc_enter_order(buf, off, user_ref, side, quantity, symbol, price, tif, display, capacity, iso, cross, clordid):
    """Write an Enter Order (no appendage, Appendage Length 0) at buf[off]; returns its length (47).

    symbol is the alpha8 field packed into an int64 (wire.alpha_to_int), clordid a 14-byte uint8 array.
    """
    buf[off] = MSG_ENTER_ORDER
    put_u32(buf, off + EO_USER_REF, user_ref)
    buf[off + EO_SIDE] = side
    put_u32(buf, off + EO_QUANTITY, quantity)
    put_u64(buf, off + EO_SYMBOL, symbol)
    put_u64(buf, off + EO_PRICE, price)
    buf[off + EO_TIF] = tif
    buf[off + EO_DISPLAY] = display
    buf[off + EO_CAPACITY] = capacity
    buf[off + EO_ISO] = iso
    buf[off + EO_CROSS] = cross
    _put_bytes14(buf, off + EO_CLORDID, clordid)
    put_u16(buf, off + EO_APPLEN, 0)
    return EO_SIZE


@njit(nogil=True, cache=True)
def enc_replace_order(buf, off, orig_user_ref, user_ref, quantity, price, tif, display, iso, clordid):
    """Write a Replace Order (no appendage) at buf[off]; returns its length (40)."""
    buf[off] = MSG_REPLACE_ORDER
    put_u32(buf, off + RO_ORIG_USER_REF, orig_user_ref)
    put_u32(buf, off + RO_USER_REF, user_ref)
    put_u32(buf, off + RO_QUANTITY, quantity)
    put_u64(buf, off + RO_PRICE, price)
    buf[off + RO_TIF] = tif
    buf[off + RO_DISPLAY] = display
    buf[off + RO_ISO] = iso
    _put_bytes14(buf, off + RO_CLORDID, clordid)
    put_u16(buf, off + RO_APPLEN, 0)
    return RO_SIZE


@njit(nogil=True, cache=True)
def enc_cancel_order(buf, off, user_ref, quantity):
    """Write a Cancel Order without the optional Appendage Length; returns its length (9)."""
    buf[off] = MSG_CANCEL_ORDER
    put_u32(buf, off + CO_USER_REF, user_ref)
    put_u32(buf, off + CO_QUANTITY, quantity)
    return CO_SIZE


# ---- hot path: numba decoders -----------------------------------------------------------------------
# Decoders fill an int64 field vector (indices below) and return the type byte, or a negative error.
V_TYPE, V_TIMESTAMP, V_USER_REF, V_ORIG_USER_REF, V_SIDE, V_QUANTITY, V_SYMBOL, V_PRICE = 0, 1, 2, 3, 4, 5, 6, 7
V_TIF, V_DISPLAY, V_ORDER_REF, V_CAPACITY, V_ISO, V_CROSS, V_STATE = 8, 9, 10, 11, 12, 13, 14
V_CLORDID_HI, V_CLORDID_LO, V_REASON, V_LIQUIDITY, V_MATCH, V_APPENDAGE_OFF, V_APPENDAGE_LEN = 15, 16, 17, 18, 19, 20, 21
V_WORDS = 22

ERR_LENGTH = -1     # shorter than the message's fixed part, or a stray byte where Appendage Length goes
ERR_APPENDAGE = -2  # Appendage Length disagrees with the bytes that follow
ERR_UNKNOWN = -3    # a type this decoder does not handle


@njit(nogil=True, cache=True)
def appendage_length(buf, off, n, base, rule):
    """Validate an n-byte message's length against its fixed part; the appendage's length (0 if none) or an error."""
    if n < base:
        return ERR_LENGTH
    if rule == APP_NONE:
        return 0 if n == base else ERR_LENGTH
    if rule == APP_OPTIONAL and n == base:
        return 0
    if n < base + 2:
        return ERR_LENGTH
    app = np.int64(get_u16(buf, off + base))  # the wire helpers read unsigned; keep one signed result type
    if base + 2 + app != n:
        return ERR_APPENDAGE
    return app


@njit(inline="always", cache=True)
def _clordid(buf, off, out):
    out[V_CLORDID_HI] = get_u64(buf, off)
    out[V_CLORDID_LO] = get_u48(buf, off + 8)


@njit(inline="always", cache=True)
def _appendage(out, off, base, app):
    out[V_APPENDAGE_OFF] = off + base + 2
    out[V_APPENDAGE_LEN] = app


@njit(nogil=True, cache=True)
def dec_order_accepted(buf, off, n, out):
    app = appendage_length(buf, off, n, AC_APPLEN, APP_REQUIRED)
    if app < 0:
        return app
    out[V_TYPE] = MSG_ACCEPTED
    out[V_TIMESTAMP] = get_u64(buf, off + AC_TIMESTAMP)
    out[V_USER_REF] = get_u32(buf, off + AC_USER_REF)
    out[V_SIDE] = buf[off + AC_SIDE]
    out[V_QUANTITY] = get_u32(buf, off + AC_QUANTITY)
    out[V_SYMBOL] = get_u64(buf, off + AC_SYMBOL)
    out[V_PRICE] = get_u64(buf, off + AC_PRICE)
    out[V_TIF] = buf[off + AC_TIF]
    out[V_DISPLAY] = buf[off + AC_DISPLAY]
    out[V_ORDER_REF] = get_u64(buf, off + AC_ORDER_REF)
    out[V_CAPACITY] = buf[off + AC_CAPACITY]
    out[V_ISO] = buf[off + AC_ISO]
    out[V_CROSS] = buf[off + AC_CROSS]
    out[V_STATE] = buf[off + AC_STATE]
    _clordid(buf, off + AC_CLORDID, out)
    _appendage(out, off, AC_APPLEN, app)
    return MSG_ACCEPTED


@njit(nogil=True, cache=True)
def dec_order_replaced(buf, off, n, out):
    app = appendage_length(buf, off, n, RP_APPLEN, APP_REQUIRED)
    if app < 0:
        return app
    out[V_TYPE] = MSG_REPLACED
    out[V_TIMESTAMP] = get_u64(buf, off + RP_TIMESTAMP)
    out[V_ORIG_USER_REF] = get_u32(buf, off + RP_ORIG_USER_REF)
    out[V_USER_REF] = get_u32(buf, off + RP_USER_REF)
    out[V_SIDE] = buf[off + RP_SIDE]
    out[V_QUANTITY] = get_u32(buf, off + RP_QUANTITY)
    out[V_SYMBOL] = get_u64(buf, off + RP_SYMBOL)
    out[V_PRICE] = get_u64(buf, off + RP_PRICE)
    out[V_TIF] = buf[off + RP_TIF]
    out[V_DISPLAY] = buf[off + RP_DISPLAY]
    out[V_ORDER_REF] = get_u64(buf, off + RP_ORDER_REF)
    out[V_CAPACITY] = buf[off + RP_CAPACITY]
    out[V_ISO] = buf[off + RP_ISO]
    out[V_CROSS] = buf[off + RP_CROSS]
    out[V_STATE] = buf[off + RP_STATE]
    _clordid(buf, off + RP_CLORDID, out)
    _appendage(out, off, RP_APPLEN, app)
    return MSG_REPLACED


@njit(nogil=True, cache=True)
def dec_order_canceled(buf, off, n, out):
    app = appendage_length(buf, off, n, CX_BASE, APP_OPTIONAL)
    if app < 0:
        return app
    out[V_TYPE] = MSG_CANCELED
    out[V_TIMESTAMP] = get_u64(buf, off + CX_TIMESTAMP)
    out[V_USER_REF] = get_u32(buf, off + CX_USER_REF)
    out[V_QUANTITY] = get_u32(buf, off + CX_QUANTITY)
    out[V_REASON] = buf[off + CX_REASON]
    _appendage(out, off, CX_BASE, app)
    return MSG_CANCELED


@njit(nogil=True, cache=True)
def dec_order_executed(buf, off, n, out):
    app = appendage_length(buf, off, n, EX_APPLEN, APP_REQUIRED)
    if app < 0:
        return app
    out[V_TYPE] = MSG_EXECUTED
    out[V_TIMESTAMP] = get_u64(buf, off + EX_TIMESTAMP)
    out[V_USER_REF] = get_u32(buf, off + EX_USER_REF)
    out[V_QUANTITY] = get_u32(buf, off + EX_QUANTITY)
    out[V_PRICE] = get_u64(buf, off + EX_PRICE)
    out[V_LIQUIDITY] = buf[off + EX_LIQUIDITY]
    out[V_MATCH] = get_u64(buf, off + EX_MATCH)
    _appendage(out, off, EX_APPLEN, app)
    return MSG_EXECUTED


@njit(nogil=True, cache=True)
def dec_rejected(buf, off, n, out):
    app = appendage_length(buf, off, n, RJ_BASE, APP_OPTIONAL)
    if app < 0:
        return app
    out[V_TYPE] = MSG_REJECTED
    out[V_TIMESTAMP] = get_u64(buf, off + RJ_TIMESTAMP)
    out[V_USER_REF] = get_u32(buf, off + RJ_USER_REF)
    out[V_REASON] = get_u16(buf, off + RJ_REASON)
    _clordid(buf, off + RJ_CLORDID, out)
    _appendage(out, off, RJ_BASE, app)
    return MSG_REJECTED


@njit(nogil=True, cache=True)
def dec_outbound(buf, off, n, out):
    """Decode one hot outbound message (A U C E J) of n bytes at buf[off]; type byte or a negative error."""
    if n < 1:
        return ERR_LENGTH
    t = buf[off]
    if t == MSG_EXECUTED:
        return dec_order_executed(buf, off, n, out)
    if t == MSG_ACCEPTED:
        return dec_order_accepted(buf, off, n, out)
    if t == MSG_CANCELED:
        return dec_order_canceled(buf, off, n, out)
    if t == MSG_REPLACED:
        return dec_order_replaced(buf, off, n, out)
    if t == MSG_REJECTED:
        return dec_rejected(buf, off, n, out)
    return ERR_UNKNOWN


@njit(nogil=True, cache=True)
def dec_inbound(buf, off, n, out):
    """Decode a hot inbound message (O U X) for the venue's side; type byte or a negative error."""
    if n < 1:
        return ERR_LENGTH
    t = buf[off]
    if t == MSG_ENTER_ORDER:
        app = appendage_length(buf, off, n, EO_APPLEN, APP_REQUIRED)
        if app < 0:
            return app
        out[V_USER_REF] = get_u32(buf, off + EO_USER_REF)
        out[V_SIDE] = buf[off + EO_SIDE]
        out[V_QUANTITY] = get_u32(buf, off + EO_QUANTITY)
        out[V_SYMBOL] = get_u64(buf, off + EO_SYMBOL)
        out[V_PRICE] = get_u64(buf, off + EO_PRICE)
        out[V_TIF] = buf[off + EO_TIF]
        out[V_DISPLAY] = buf[off + EO_DISPLAY]
        out[V_CAPACITY] = buf[off + EO_CAPACITY]
        out[V_ISO] = buf[off + EO_ISO]
        out[V_CROSS] = buf[off + EO_CROSS]
        _clordid(buf, off + EO_CLORDID, out)
        _appendage(out, off, EO_APPLEN, app)
    elif t == MSG_REPLACE_ORDER:
        app = appendage_length(buf, off, n, RO_APPLEN, APP_REQUIRED)
        if app < 0:
            return app
        out[V_ORIG_USER_REF] = get_u32(buf, off + RO_ORIG_USER_REF)
        out[V_USER_REF] = get_u32(buf, off + RO_USER_REF)
        out[V_QUANTITY] = get_u32(buf, off + RO_QUANTITY)
        out[V_PRICE] = get_u64(buf, off + RO_PRICE)
        out[V_TIF] = buf[off + RO_TIF]
        out[V_DISPLAY] = buf[off + RO_DISPLAY]
        out[V_ISO] = buf[off + RO_ISO]
        _clordid(buf, off + RO_CLORDID, out)
        _appendage(out, off, RO_APPLEN, app)
    elif t == MSG_CANCEL_ORDER:
        app = appendage_length(buf, off, n, CO_SIZE, APP_OPTIONAL)
        if app < 0:
            return app
        out[V_USER_REF] = get_u32(buf, off + CO_USER_REF)
        out[V_QUANTITY] = get_u32(buf, off + CO_QUANTITY)
        _appendage(out, off, CO_SIZE, app)
    else:
        return ERR_UNKNOWN
    out[V_TYPE] = t
    return t


__all__ = [
    "INBOUND", "OUTBOUND", "INBOUND_RULE", "OUTBOUND_RULE", "INBOUND_BASE", "OUTBOUND_BASE", "NAMES", "TAGS",
    "TAG_BY_NAME", "encode", "decode", "encode_inbound", "encode_outbound", "decode_inbound", "decode_outbound",
    "encode_appendage", "decode_appendage", "price_to_int", "clordid_array", "clordid_from_ints",
    "enc_enter_order", "enc_replace_order", "enc_cancel_order", "dec_order_accepted", "dec_order_replaced",
    "dec_order_canceled", "dec_order_executed", "dec_rejected", "dec_outbound", "dec_inbound", "appendage_length",
]
