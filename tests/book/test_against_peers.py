"""The book against independent ITCH 5.0 implementations from PyPI, on the same generated day file.

itch-book (C++23 core) gives every symbol's best bid and offer; itchfeed (pure Python, run with
ITCH_NO_CPP=1 so it cannot borrow a C++ parser) gives per-type message counts.
"""


import numpy as np
import pytest

from appliance.book import l3
from appliance.feed import itch_descriptor as d
from appliance.feed.dayfile import write_dayfile
from appliance.runtime.event import EVENT_DTYPE
from appliance.venue.generator import GeneratorParams, generate
from tests.support import itchfeed_counts


@pytest.fixture(scope="module")
def day():
    buf, counts = generate(GeneratorParams(seed=7, messages=400_000, symbols=60))
    return buf, counts


def apply_all(buf, **kw):
    bk = l3.make_book(max_orders=1 << 18, levels=1024, max_symbols=256, **kw)
    out = np.zeros(4096, dtype=EVENT_DTYPE)
    end, _, _ = l3.book_replay(bk, buf, 0, len(buf), 1, 0, out, 4095, 0)
    assert end == len(buf)
    return bk


def peer_bbo(buf, symbols=()):
    from itch_book import Session

    s = Session(tables=["bbo"], depth=0, symbols=list(symbols))
    s.reserve(len(buf) // 19 + 1)
    s.feed(buf)
    st = s.stats()
    assert st["malformed"] == 0 and st["unknown"] == 0 and st["missing_ref"] == 0 and st["pending_bytes"] == 0
    t = s.take_bbo()
    last = {}
    for j in range(len(t["locate"])):
        last[int(t["locate"][j])] = (int(t["bid_px"][j]), int(t["bid_sz"][j]), int(t["ask_px"][j]),
                                     int(t["ask_sz"][j]))
    return last, st


def test_every_symbols_final_bbo_equals_itch_book(day):
    buf, _ = day
    bk = apply_all(buf)
    ours = l3.bbo(bk)
    assert sum(l3.stats(bk)["malformed"].values()) == 0
    theirs, st = peer_bbo(buf)
    by_locate = {int(bk.sym_locate[slot]): ours[name] for slot, name in enumerate(ours)}
    # itch-book emits a row only when a BBO changes, so a symbol whose book never moved has none.
    touched = {loc: v for loc, v in by_locate.items() if v != (0, 0, 0, 0) or loc in theirs}
    assert len(theirs) >= 50
    assert touched == theirs
    assert st["live_orders"] == l3.stats(bk)["live_orders"]


def test_symbol_subset_matches_itch_book_subset(day):
    buf, _ = day
    bk = apply_all(buf)
    names = sorted(l3.bbo(bk))[:5]
    sub = apply_all(buf, symbols=tuple(names))
    theirs, _ = peer_bbo(buf, symbols=names)
    ours = l3.bbo(sub)
    assert set(ours) == set(names)
    assert {int(sub.sym_locate[s]): ours[n] for s, n in enumerate(ours)} == theirs


def test_per_type_counts_equal_itchfeed(tmp_path, day):
    buf, counts = day
    small = buf[: _prefix_bytes(buf, 40_000)]
    path = tmp_path / "day.itch"
    write_dayfile(path, small)
    theirs = itchfeed_counts(path)
    bk = apply_all(small)
    assert l3.stats(bk)["by_type"] == theirs
    assert len(theirs) >= 10


def _prefix_bytes(buf, n):
    off = 0
    for _ in range(n):
        off += 2 + (int(buf[off]) << 8 | int(buf[off + 1]))
    return off


def test_unknown_types_are_counted_and_so_are_later_references_to_their_orders(day):
    """Turn every 1000th Add into an unknown type: each is counted, as is every later use of its order."""
    buf, _ = day
    bad = buf[: _prefix_bytes(buf, 100_000)].copy()
    off, flipped = 0, 0
    i = 0
    while off < len(bad):
        ln = int(bad[off]) << 8 | int(bad[off + 1])
        if bad[off + 2] == d.MSG_ADD and i % 1000 == 0:
            bad[off + 2] = ord("z")
            flipped += 1
        i += 1
        off += 2 + ln
    bk = apply_all(bad)
    st = l3.stats(bk)["malformed"]
    assert st["unknown_type"] == flipped > 10
    # references to the orders that never arrived are counted, not fatal
    assert st["unknown_order"] > 0
