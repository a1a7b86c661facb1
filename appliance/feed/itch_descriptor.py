"""NASDAQ TotalView-ITCH 5.0 message layouts: one table read by the encoder, the decoder and the book.

Every message starts with the same 11-byte header; all integers are big-endian and unsigned; prices
are 4-byte integers in units of 1e-4 dollars (Price(4)) except the MWCB levels, which are 8-byte
integers in 1e-8 dollars (Price(8)); alpha fields are left-justified and space-padded.

```
 0       1               3               5                                       11
 +-------+---------------+---------------+---------------------------------------+------- ...
 | type  | stock locate  | tracking num  |  timestamp: ns since midnight (u48)   | body
 +-------+---------------+---------------+---------------------------------------+------- ...

 A  Add Order (36)             F  Add Order with MPID (40)
 11              19    20              24                              32              36      40
 +---------------+-----+---------------+-------------------------------+---------------+-------+
 | order ref u64 |side | shares u32    | stock alpha8                  | price u32     | MPID  | (F only)
 +---------------+-----+---------------+-------------------------------+---------------+-------+

 E  Order Executed (31)        C  Order Executed With Price (36)
 11              19              23                              31        32          36
 +---------------+---------------+-------------------------------+---------+-----------+
 | order ref u64 | exec shares   | match number u64              |printable| exec price| (C only)
 +---------------+---------------+-------------------------------+---------+-----------+

 X  Order Cancel (23): ref u64 @11, cancelled shares u32 @19
 D  Order Delete (19): ref u64 @11
 U  Order Replace (35): original ref u64 @11, new ref u64 @19, shares u32 @27, price u32 @31
 P  Trade, non-cross (44): ref @11, side @19, shares u32 @20, stock @24, price @32, match u64 @36
 Q  Cross Trade (40): shares u64 @11, stock @19, cross price @27, match u64 @31, cross type @39
```
The remaining types are laid out in `FIELDS` below with the same conventions.
"""

from __future__ import annotations

import numpy as np

from appliance.runtime.wire import alpha_to_int, int_to_alpha

# ---- header -------------------------------------------------------------------------------------
OFF_TYPE = 0
OFF_LOCATE = 1
OFF_TRACKING = 3
OFF_TIMESTAMP = 5
HEADER_SIZE = 11

# ---- message types ------------------------------------------------------------------------------
MSG_SYSTEM_EVENT = ord("S")
MSG_STOCK_DIRECTORY = ord("R")
MSG_TRADING_ACTION = ord("H")
MSG_REG_SHO = ord("Y")
MSG_PARTICIPANT_POSITION = ord("L")
MSG_MWCB_DECLINE = ord("V")
MSG_MWCB_STATUS = ord("W")
MSG_IPO_QUOTING = ord("K")
MSG_LULD_COLLAR = ord("J")
MSG_OPERATIONAL_HALT = ord("h")
MSG_ADD = ord("A")
MSG_ADD_MPID = ord("F")
MSG_EXECUTED = ord("E")
MSG_EXECUTED_PRICE = ord("C")
MSG_CANCEL = ord("X")
MSG_DELETE = ord("D")
MSG_REPLACE = ord("U")
MSG_TRADE = ord("P")
MSG_CROSS_TRADE = ord("Q")
MSG_BROKEN_TRADE = ord("B")
MSG_NOII = ord("I")
MSG_RPII = ord("N")
MSG_DLCR = ord("O")

# ---- body offsets (from the start of the message) -------------------------------------------------
# S
SYS_EVENT_CODE = 11
# R
DIR_STOCK = 11
DIR_MARKET_CATEGORY = 19
DIR_FINANCIAL_STATUS = 20
DIR_ROUND_LOT = 21
DIR_ROUND_LOTS_ONLY = 25
DIR_ISSUE_CLASS = 26
DIR_ISSUE_SUBTYPE = 27
DIR_AUTHENTICITY = 29
DIR_SHORT_SALE = 30
DIR_IPO_FLAG = 31
DIR_LULD_TIER = 32
DIR_ETP_FLAG = 33
DIR_ETP_LEVERAGE = 34
DIR_INVERSE = 38
# H
ACT_STOCK = 11
ACT_STATE = 19
ACT_RESERVED = 20
ACT_REASON = 21
# A / F
ADD_REF = 11
ADD_SIDE = 19
ADD_SHARES = 20
ADD_STOCK = 24
ADD_PRICE = 32
ADD_MPID = 36
# E / C
EXE_REF = 11
EXE_SHARES = 19
EXE_MATCH = 23
EXE_PRINTABLE = 31
EXE_PRICE = 32
# X
CXL_REF = 11
CXL_SHARES = 19
# D
DEL_REF = 11
# U
REP_OLD_REF = 11
REP_NEW_REF = 19
REP_SHARES = 27
REP_PRICE = 31
# P
TRD_REF = 11
TRD_SIDE = 19
TRD_SHARES = 20
TRD_STOCK = 24
TRD_PRICE = 32
TRD_MATCH = 36
# Q
CRS_SHARES = 11
CRS_STOCK = 19
CRS_PRICE = 27
CRS_MATCH = 31
CRS_TYPE = 39
# B
BRK_MATCH = 11

# ---- field table: (name, offset, size, kind) per type, in wire order after the header -------------
# kinds: u = unsigned integer, c = one ASCII character, a = space-padded alpha, p = Price(4),
#        p8 = Price(8); timestamps are the header's u48.
FIELDS: dict[str, tuple[tuple[str, int, int, str], ...]] = {
    "S": (("event_code", 11, 1, "c"),),
    "R": (("stock", 11, 8, "a"), ("market_category", 19, 1, "c"), ("financial_status", 20, 1, "c"),
          ("round_lot_size", 21, 4, "u"), ("round_lots_only", 25, 1, "c"),
          ("issue_classification", 26, 1, "c"), ("issue_subtype", 27, 2, "a"),
          ("authenticity", 29, 1, "c"), ("short_sale_threshold", 30, 1, "c"), ("ipo_flag", 31, 1, "c"),
          ("luld_tier", 32, 1, "c"), ("etp_flag", 33, 1, "c"), ("etp_leverage", 34, 4, "u"),
          ("inverse", 38, 1, "c")),
    "H": (("stock", 11, 8, "a"), ("state", 19, 1, "c"), ("reserved", 20, 1, "c"), ("reason", 21, 4, "a")),
    "Y": (("stock", 11, 8, "a"), ("action", 19, 1, "c")),
    "L": (("mpid", 11, 4, "a"), ("stock", 15, 8, "a"), ("primary", 23, 1, "c"), ("mode", 24, 1, "c"),
          ("state", 25, 1, "c")),
    "V": (("level1", 11, 8, "p8"), ("level2", 19, 8, "p8"), ("level3", 27, 8, "p8")),
    "W": (("breached_level", 11, 1, "c"),),
    "K": (("stock", 11, 8, "a"), ("release_time", 19, 4, "u"), ("qualifier", 23, 1, "c"),
          ("ipo_price", 24, 4, "p")),
    "J": (("stock", 11, 8, "a"), ("ref_price", 19, 4, "p"), ("upper_price", 23, 4, "p"),
          ("lower_price", 27, 4, "p"), ("extension", 31, 4, "u")),
    "h": (("stock", 11, 8, "a"), ("market_code", 19, 1, "c"), ("action", 20, 1, "c")),
    "A": (("ref", 11, 8, "u"), ("side", 19, 1, "c"), ("shares", 20, 4, "u"), ("stock", 24, 8, "a"),
          ("price", 32, 4, "p")),
    "F": (("ref", 11, 8, "u"), ("side", 19, 1, "c"), ("shares", 20, 4, "u"), ("stock", 24, 8, "a"),
          ("price", 32, 4, "p"), ("mpid", 36, 4, "a")),
    "E": (("ref", 11, 8, "u"), ("shares", 19, 4, "u"), ("match", 23, 8, "u")),
    "C": (("ref", 11, 8, "u"), ("shares", 19, 4, "u"), ("match", 23, 8, "u"), ("printable", 31, 1, "c"),
          ("price", 32, 4, "p")),
    "X": (("ref", 11, 8, "u"), ("shares", 19, 4, "u")),
    "D": (("ref", 11, 8, "u"),),
    "U": (("ref", 11, 8, "u"), ("new_ref", 19, 8, "u"), ("shares", 27, 4, "u"), ("price", 31, 4, "p")),
    "P": (("ref", 11, 8, "u"), ("side", 19, 1, "c"), ("shares", 20, 4, "u"), ("stock", 24, 8, "a"),
          ("price", 32, 4, "p"), ("match", 36, 8, "u")),
    "Q": (("shares", 11, 8, "u"), ("stock", 19, 8, "a"), ("price", 27, 4, "p"), ("match", 31, 8, "u"),
          ("cross_type", 39, 1, "c")),
    "B": (("match", 11, 8, "u"),),
    "I": (("paired", 11, 8, "u"), ("imbalance", 19, 8, "u"), ("direction", 27, 1, "c"),
          ("stock", 28, 8, "a"), ("far_price", 36, 4, "p"), ("near_price", 40, 4, "p"),
          ("ref_price", 44, 4, "p"), ("cross_type", 48, 1, "c"), ("variation", 49, 1, "c")),
    "N": (("stock", 11, 8, "a"), ("interest", 19, 1, "c")),
    "O": (("stock", 11, 8, "a"), ("open_eligibility", 19, 1, "c"), ("min_price", 20, 4, "p"),
          ("max_price", 24, 4, "p"), ("near_price", 28, 4, "p"), ("near_time", 32, 8, "u"),
          ("lower_collar", 40, 4, "p"), ("upper_collar", 44, 4, "p")),
}

NAMES = {
    "S": "system_event", "R": "stock_directory", "H": "trading_action", "Y": "reg_sho",
    "L": "participant_position", "V": "mwcb_decline", "W": "mwcb_status", "K": "ipo_quoting",
    "J": "luld_collar", "h": "operational_halt", "A": "add", "F": "add_mpid", "E": "executed",
    "C": "executed_price", "X": "cancel", "D": "delete", "U": "replace", "P": "trade",
    "Q": "cross_trade", "B": "broken_trade", "I": "noii", "N": "rpii", "O": "dlcr",
}


def _length(spec) -> int:
    return max(HEADER_SIZE, *(off + size for _, off, size, _ in spec))


LENGTHS: dict[str, int] = {t: _length(spec) for t, spec in FIELDS.items()}
MAX_LENGTH = max(LENGTHS.values())

# Indexed by the type byte: the exact length of each known type, 0 for unknown types. The hot path
# checks `MSG_LENGTH[type] == len` before reading any field.
MSG_LENGTH = np.zeros(256, dtype=np.int32)
for _t, _n in LENGTHS.items():
    MSG_LENGTH[ord(_t)] = _n

assert LENGTHS == {"S": 12, "R": 39, "H": 25, "Y": 20, "L": 26, "V": 35, "W": 12, "K": 28, "J": 35,
                   "h": 21, "A": 36, "F": 40, "E": 31, "C": 36, "X": 23, "D": 19, "U": 35, "P": 44,
                   "Q": 40, "B": 19, "I": 50, "N": 20, "O": 48}, "layout drifted from ITCH 5.0"


# ---- cold-path encode / decode (tests, tools, the venue's control side) ----------------------------
def encode(mtype: str, *, locate: int = 0, tracking: int = 0, timestamp: int = 0, **values) -> bytes:
    """Build one ITCH message from field values; missing fields are zero / spaces."""
    spec = FIELDS[mtype]
    out = bytearray(LENGTHS[mtype])
    out[0] = ord(mtype)
    out[1:3] = locate.to_bytes(2, "big")
    out[3:5] = tracking.to_bytes(2, "big")
    out[5:11] = timestamp.to_bytes(6, "big")
    known = {name for name, *_ in spec}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"ITCH {mtype!r} has no fields {sorted(unknown)}; it has {sorted(known)}")
    for name, off, size, kind in spec:
        v = values.get(name)
        if kind in ("c", "a"):
            raw = b" " * size if v is None else (v.encode("ascii") if isinstance(v, str) else bytes(v))
            if len(raw) > size:
                raise ValueError(f"ITCH {mtype!r} field {name!r}: {raw!r} longer than {size} bytes")
            out[off:off + size] = raw.ljust(size, b" ")
        else:
            out[off:off + size] = int(v or 0).to_bytes(size, "big")
    return bytes(out)


def decode(msg: bytes | memoryview | np.ndarray) -> dict:
    """Decode one ITCH message into a dict (type, locate, tracking, timestamp and the body fields)."""
    raw = bytes(msg)
    if not raw:
        raise ValueError("empty ITCH message")
    mtype = chr(raw[0])
    if mtype not in FIELDS:
        raise ValueError(f"unknown ITCH message type {raw[0]:#04x}")
    if len(raw) != LENGTHS[mtype]:
        raise ValueError(f"ITCH {mtype!r} is {LENGTHS[mtype]} bytes, got {len(raw)}")
    out = {"type": mtype, "locate": int.from_bytes(raw[1:3], "big"),
           "tracking": int.from_bytes(raw[3:5], "big"), "timestamp": int.from_bytes(raw[5:11], "big")}
    for name, off, size, kind in FIELDS[mtype]:
        field = raw[off:off + size]
        out[name] = field.decode("ascii", "replace").rstrip(" ") if kind in ("c", "a") \
            else int.from_bytes(field, "big")
    return out


__all__ = ["FIELDS", "LENGTHS", "MSG_LENGTH", "MAX_LENGTH", "NAMES", "encode", "decode",
           "alpha_to_int", "int_to_alpha"]
