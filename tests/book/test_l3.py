"""L3 book semantics, message by message, and a randomised check against a plain-Python model."""

import random

import numpy as np
import pytest

from appliance.book import l3
from appliance.feed import itch_descriptor as d
from appliance.runtime.event import (
    EVENT_DTYPE,
    KIND_BBO,
    KIND_STATE,
    KIND_TRADE,
    TRADE_EXECUTION,
    TRADE_EXECUTION_PRICE,
    TRADE_NON_PRINTABLE,
)


def frames(msgs):
    return np.frombuffer(b"".join(len(m).to_bytes(2, "big") + m for m in msgs), dtype=np.uint8)


class Session:
    """Feed messages to a book one script step at a time and collect the events."""

    def __init__(self, **kw):
        self.bk = l3.make_book(**{"max_orders": 1024, "levels": 16, "max_symbols": 8, **kw})
        self.out = np.zeros(64, dtype=EVENT_DTYPE)
        self.seq = 1

    def send(self, *msgs):
        buf = frames(msgs)
        end, self.seq, n = l3.book_replay(self.bk, buf, 0, len(buf), self.seq, 0, self.out, 63, 0)
        assert end == len(buf)
        return [self.out[i].copy() for i in range(n)]


def add(ref, side, shares, price, locate=1, stock="AAPL", mpid=None):
    if mpid:
        return d.encode("F", locate=locate, ref=ref, side=side, shares=shares, stock=stock, price=price, mpid=mpid)
    return d.encode("A", locate=locate, ref=ref, side=side, shares=shares, stock=stock, price=price)


@pytest.fixture
def s():
    sess = Session()
    assert sess.send(d.encode("R", locate=1, stock="AAPL"), d.encode("R", locate=2, stock="MSFT")) == []
    return sess


def test_add_builds_levels_and_reports_bbo_changes(s):
    ev = s.send(add(1, "B", 100, 100_0000))
    assert [(e["kind"], e["px"], e["qty"], e["px2"], e["qty2"]) for e in ev] == [(KIND_BBO, 100_0000, 100, 0, 0)]
    ev = s.send(add(2, "B", 50, 99_0000))  # behind the touch: no BBO event
    assert ev == []
    ev = s.send(add(3, "S", 70, 101_0000, mpid="MPID"), add(4, "B", 30, 100_0000))
    assert [(e["px"], e["qty"], e["px2"], e["qty2"]) for e in ev] == [(100_0000, 100, 101_0000, 70),
                                                                      (100_0000, 130, 101_0000, 70)]
    assert l3.depth(s.bk, "AAPL") == {"bid": [(100_0000, 130, 2), (99_0000, 50, 1)], "ask": [(101_0000, 70, 1)]}
    assert l3.bbo(s.bk)["AAPL"] == (100_0000, 130, 101_0000, 70)


def test_execution_trades_at_order_price_and_reduces_the_level(s):
    s.send(add(1, "S", 100, 101_0000), add(2, "S", 100, 101_0000))
    ev = s.send(d.encode("E", locate=1, ref=1, shares=40, match=9))
    assert (ev[0]["kind"], ev[0]["px"], ev[0]["qty"], ev[0]["side"], ev[0]["ref"], ev[0]["flags"]) == \
        (KIND_TRADE, 101_0000, 40, 1, 9, TRADE_EXECUTION)
    assert (ev[1]["kind"], ev[1]["px2"], ev[1]["qty2"]) == (KIND_BBO, 101_0000, 160)
    ev = s.send(d.encode("C", locate=1, ref=1, shares=60, match=10, printable="N", price=100_9000))
    assert ev[0]["px"] == 100_9000 and ev[0]["flags"] == TRADE_EXECUTION_PRICE | TRADE_NON_PRINTABLE
    assert l3.depth(s.bk, "AAPL")["ask"] == [(101_0000, 100, 1)]  # order 1 fully executed and gone
    assert l3.stats(s.bk)["live_orders"] == 1


def test_cancel_delete_replace(s):
    s.send(add(1, "B", 100, 100_0000), add(2, "B", 100, 99_0000))
    s.send(d.encode("X", locate=1, ref=1, shares=30))
    assert l3.bbo(s.bk)["AAPL"][:2] == (100_0000, 70)
    ev = s.send(d.encode("U", locate=1, ref=1, new_ref=5, shares=500, price=98_0000))
    assert (ev[0]["px"], ev[0]["qty"]) == (99_0000, 100)  # replaced order left the touch
    assert l3.depth(s.bk, "AAPL")["bid"] == [(99_0000, 100, 1), (98_0000, 500, 1)]
    s.send(d.encode("D", locate=1, ref=2))
    assert l3.bbo(s.bk)["AAPL"][:2] == (98_0000, 500)
    s.send(d.encode("D", locate=1, ref=5))
    assert l3.bbo(s.bk)["AAPL"] == (0, 0, 0, 0)
    assert l3.stats(s.bk)["live_orders"] == 0


def test_books_are_per_symbol(s):
    s.send(add(1, "B", 100, 100_0000, locate=1), add(2, "B", 7, 20_0000, locate=2, stock="MSFT"))
    assert l3.bbo(s.bk) == {"AAPL": (100_0000, 100, 0, 0), "MSFT": (20_0000, 7, 0, 0)}


def test_trading_action_and_system_event_are_events(s):
    ev = s.send(d.encode("S", event_code="Q"), d.encode("H", locate=1, stock="AAPL", state="H", reason="T1"))
    assert ev[1]["kind"] == KIND_STATE and chr(ev[1]["flags"]) == "H"
    assert s.bk.sym_state[0] == ord("H")


def test_bad_input_is_counted_by_kind_and_skipped(s):
    s.send(add(1, "B", 100, 100_0000))
    s.send(add(1, "B", 100, 100_0000),                       # duplicate reference
           d.encode("D", locate=1, ref=77),                  # unknown order
           d.encode("E", locate=1, ref=1, shares=500),       # executes more than the order has
           add(2, "Z", 100, 100_0000),                       # bad side
           b"Z" + bytes(10),                                 # unknown type
           d.encode("D", locate=1, ref=2)[:-1])              # wrong length for D
    st = l3.stats(s.bk)["malformed"]
    assert (st["duplicate_order"], st["unknown_order"], st["over_execution"], st["bad_side"],
            st["unknown_type"], st["bad_length"]) == (1, 1, 1, 1, 1, 1)
    assert l3.stats(s.bk)["live_orders"] == 0  # the over-execution removed what there was
    kinds = {e["kind"] for e in l3.examples(s.bk)}
    assert {"duplicate_order", "unknown_order", "bad_length"} <= kinds


def test_level_overflow_is_counted_not_fatal():
    s = Session(levels=4)
    s.send(*[add(i + 1, "B", 10, 100_0000 - i * 100) for i in range(6)])
    st = l3.stats(s.bk)
    assert st["malformed"]["level_overflow"] == 2 and st["live_orders"] == 6
    s.send(d.encode("D", locate=1, ref=6))  # its level was never booked
    assert l3.stats(s.bk)["malformed"]["level_miss"] == 1
    assert l3.bbo(s.bk)["AAPL"][:2] == (100_0000, 10)  # booked from the Add, no directory entry needed


def test_symbol_subset_books_only_those_symbols():
    s = Session(symbols=("MSFT",))
    s.send(d.encode("R", locate=1, stock="AAPL"), d.encode("R", locate=2, stock="MSFT"),
           add(1, "B", 100, 100_0000, locate=1), add(2, "B", 5, 20_0000, locate=2, stock="MSFT"),
           d.encode("D", locate=1, ref=1))
    assert l3.bbo(s.bk) == {"MSFT": (20_0000, 5, 0, 0)}
    st = l3.stats(s.bk)
    assert st["filtered"] == 2 and st["malformed"]["unknown_order"] == 0


def test_truncated_frame_is_left_for_the_caller(s):
    buf = frames([add(1, "B", 100, 100_0000)])
    end, seq, _ = l3.book_replay(s.bk, buf[:-3], 0, len(buf) - 3, 1, 0, s.out, 63, 0)
    assert end == 0 and seq == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_flow_matches_a_python_model(seed):
    """Random adds/executes/cancels/deletes/replaces on a tiny order table (heavy probing and wraparound)."""
    rng = random.Random(seed)
    s = Session(max_orders=64, levels=64, max_symbols=4)
    s.send(*[d.encode("R", locate=loc, stock=f"S{loc}") for loc in (1, 2, 3)])
    live = {}  # ref -> [locate, side, shares, price]
    next_ref = rng.randrange(1, 1000) * 64  # refs collide on purpose in a 64-slot table
    for _ in range(3000):
        op = rng.random()
        if op < 0.4 or len(live) < 5:
            if len(live) >= 48:
                continue
            next_ref += rng.choice((1, 1, 1, 63, 64, 65, 128))
            loc, side = rng.choice((1, 2, 3)), rng.choice("BS")
            price = (100 + rng.randrange(-10, 11)) * 100 + (0 if side == "B" else 5000)
            shares = rng.randrange(1, 500)
            live[next_ref] = [loc, side, shares, price]
            msg = add(next_ref, side, shares, price, locate=loc, stock=f"S{loc}")
        else:
            ref = rng.choice(sorted(live))
            loc, side, shares, price = live[ref]
            if op < 0.6:
                n = rng.randrange(1, shares + 1)
                msg = d.encode(rng.choice("EX"), locate=loc, ref=ref, shares=n)
                live[ref][2] -= n
                if live[ref][2] == 0:
                    del live[ref]
            elif op < 0.85:
                msg = d.encode("D", locate=loc, ref=ref)
                del live[ref]
            else:
                next_ref += 1
                new_px = price + rng.randrange(-3, 4) * 100
                new_sh = rng.randrange(1, 500)
                msg = d.encode("U", locate=loc, ref=ref, new_ref=next_ref, shares=new_sh, price=new_px)
                del live[ref]
                live[next_ref] = [loc, side, new_sh, new_px]
        s.send(msg)
    st = l3.stats(s.bk)
    assert sum(st["malformed"].values()) == 0
    assert st["live_orders"] == len(live)
    for loc in (1, 2, 3):
        want = {"bid": {}, "ask": {}}
        for lloc, side, shares, price in live.values():
            if lloc == loc:
                lvl = want["bid" if side == "B" else "ask"].setdefault(price, [0, 0])
                lvl[0] += shares
                lvl[1] += 1
        got = l3.depth(s.bk, f"S{loc}", levels=64)
        assert got["bid"] == [(p, q, c) for p, (q, c) in sorted(want["bid"].items(), reverse=True)]
        assert got["ask"] == [(p, q, c) for p, (q, c) in sorted(want["ask"].items())]
