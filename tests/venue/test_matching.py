"""Matching engine: price-time priority, fills, cancels, replaces and rejects, as ITCH 5.0 and report records,
and its feed replayed through the appliance's L3 book and the independent itch-book package."""

import random
from collections import defaultdict

import numpy as np
import pytest
from itch_book import Session as ItchBookSession

from appliance.book import l3
from appliance.feed import itch_descriptor as d
from appliance.runtime.event import EVENT_DTYPE
from appliance.runtime.wire import alpha_to_int
from appliance.venue import matching as m

SYMBOLS = ["AAPL", "MSFT", "TSLA"]
AAPL = 1
B, S = m.SIDE_BUY, m.SIDE_SELL
DAY, IOC = m.TIF_DAY, m.TIF_IOC
SHOWN, HIDDEN = m.DISPLAY_VISIBLE, m.DISPLAY_HIDDEN


def px(dollars: float) -> int:
    return round(dollars * 10_000)


class Venue:
    """An engine and its outputs, one operation at a time: each call returns (status, ITCH, reports)."""

    def __init__(self, **kw):
        self.eng = m.make_engine(SYMBOLS, **{"max_orders": 4096, "levels": 64, **kw})
        self.out = m.make_out(1 << 16, 1024)
        self.ts = 34_200_000_000_000
        self.feed = bytearray()  # every ITCH frame so far, for replay

    def _done(self, status):
        self.feed += self.out.buf[:self.out.cur[m.C_BUF]].tobytes()
        msgs, reps = m.messages(self.out), m.reports(self.out)
        m.reset(self.out)
        self.ts += 1000
        return status, msgs, reps

    def enter(self, side, qty, price, owner=1, token=0, locate=AAPL, tif=DAY, display=SHOWN, mpid=0):
        return self._done(m.enter(self.eng, self.out, self.ts, locate, owner, token, side, qty, price, tif,
                                  display, mpid))

    def cancel(self, ref, qty=0, reason=m.REASON_USER):
        return self._done(m.cancel(self.eng, self.out, self.ts, ref, qty, reason))

    def cancel_token(self, owner, token, qty=0):
        return self._done(m.cancel_token(self.eng, self.out, self.ts, owner, token, qty, m.REASON_USER))

    def replace(self, ref, new_token, qty, price):
        return self._done(m.replace(self.eng, self.out, self.ts, ref, new_token, qty, price))

    def replace_token(self, owner, token, new_token, qty, price):
        return self._done(m.replace_token(self.eng, self.out, self.ts, owner, token, new_token, qty, price))

    @property
    def ref(self):
        return int(self.out.cur[m.C_REF])

    def levels(self, side, locate=AAPL, depth=10):
        return m.book_levels(self.eng, locate, side, depth)


def brief(msgs):
    """ITCH messages as compact tuples: (type, ref, shares, price) or what the type carries."""
    res = []
    for x in msgs:
        t = x["type"]
        if t in "AF":
            res.append((t, x["ref"], x["side"], x["shares"], x["price"]))
        elif t == "E":
            res.append(("E", x["ref"], x["shares"]))
        elif t == "X":
            res.append(("X", x["ref"], x["shares"]))
        elif t == "D":
            res.append(("D", x["ref"]))
        elif t == "U":
            res.append(("U", x["ref"], x["new_ref"], x["shares"], x["price"]))
        elif t == "P":
            res.append(("P", x["ref"], x["side"], x["shares"], x["price"]))
        else:
            raise AssertionError(f"unexpected ITCH {t}")
    return res


def kinds(reps):
    return [(m.REPORT_KINDS[int(r["kind"])], int(r["token"])) for r in reps]


@pytest.fixture
def v():
    return Venue()


def test_crossing_order_fills_at_resting_prices_best_price_then_oldest_first(v):
    st, msgs, reps = v.enter(S, 100, px(100.02), owner=1, token=1)
    assert st == m.OK and v.ref == 1
    assert brief(msgs) == [("A", 1, "S", 100, px(100.02))]
    assert kinds(reps) == [("accepted", 1)] and chr(reps[0]["state"]) == "L"
    v.enter(S, 100, px(100.01), owner=1, token=2)  # ref 2: better price, later
    v.enter(S, 50, px(100.01), owner=0)  # ref 3: same price as ref 2, later still (synthetic: no report)
    assert v.levels(1) == [(px(100.01), 150, 2), (px(100.02), 100, 1)]

    st, msgs, reps = v.enter(B, 120, px(100.05), owner=2, token=7)
    assert st == m.OK
    assert brief(msgs) == [("E", 2, 100), ("E", 3, 20)]  # price first, then time; ref 1 untouched
    assert [x["match"] for x in msgs] == [1, 2]
    assert [x["locate"] for x in msgs] == [AAPL, AAPL] and {x["tracking"] for x in msgs} == {1}
    assert [x["timestamp"] for x in msgs] == [v.ts - 1000] * 2
    # the buyer's reports: accepted, then one execution per fill at the resting price, liquidity removed
    got = [(m.REPORT_KINDS[int(r["kind"])], int(r["owner"]), int(r["token"]), int(r["qty"]), int(r["price"]),
            int(r["leaves"]), int(r["cum"]), chr(r["liquidity"]) if r["liquidity"] else "", int(r["match"]))
           for r in reps]
    assert got == [
        ("accepted", 2, 7, 120, px(100.05), 120, 0, "", 0),
        ("executed", 1, 2, 100, px(100.01), 0, 100, "A", 1),  # the resting client order, fully filled
        ("executed", 2, 7, 100, px(100.01), 20, 100, "R", 1),
        ("executed", 2, 7, 20, px(100.01), 0, 120, "R", 2),
    ]
    assert chr(reps[0]["state"]) == "D"  # filled on arrival: never live
    assert v.levels(1) == [(px(100.01), 30, 1), (px(100.02), 100, 1)]
    assert v.levels(0) == []
    assert m.bbo(v.eng, AAPL) == (0, 0, px(100.01), 30)


def test_partial_fills_across_levels_then_the_remainder_rests(v):
    v.enter(S, 150, px(50.01), owner=0)  # ref 1
    v.enter(S, 100, px(50.02), owner=0)  # ref 2
    v.enter(S, 100, px(50.04), owner=0)  # ref 3: beyond the buyer's limit
    st, msgs, reps = v.enter(B, 300, px(50.03), owner=3, token=9)
    assert st == m.OK
    ref = v.ref
    assert brief(msgs) == [("E", 1, 150), ("E", 2, 100), ("A", ref, "B", 50, px(50.03))]
    assert [(int(r["qty"]), int(r["price"]), int(r["leaves"])) for r in reps[1:]] == [
        (150, px(50.01), 150), (100, px(50.02), 50)]
    assert chr(reps[0]["state"]) == "L" and int(v.out.cur[m.C_FILLED]) == 250 and int(v.out.cur[m.C_LEAVES]) == 50
    assert m.bbo(v.eng, AAPL) == (px(50.03), 50, px(50.04), 100)
    assert m.order_leaves(v.eng, ref) == 50 and m.find_token(v.eng, 3, 9) == ref


def test_ioc_remainder_is_canceled_and_never_shown(v):
    v.enter(S, 40, px(10.00), owner=0)
    st, msgs, reps = v.enter(B, 100, px(10.00), owner=4, token=1, tif=IOC)
    assert st == m.OK
    assert brief(msgs) == [("E", 1, 40)]  # no A, no D: the IOC never rested
    assert kinds(reps) == [("accepted", 1), ("executed", 1), ("canceled", 1)]
    assert chr(reps[-1]["reason"]) == "I" and int(reps[-1]["qty"]) == 60 and int(reps[-1]["leaves"]) == 0
    assert chr(reps[0]["state"]) == "D"
    # an IOC with nothing to trade against: no ITCH at all
    st, msgs, reps = v.enter(B, 100, px(9.00), owner=4, token=2, tif=IOC)
    assert st == m.OK and msgs == [] and kinds(reps) == [("accepted", 2), ("canceled", 2)]
    assert v.levels(0) == [] and v.levels(1) == [] and m.live_orders(v.eng) == 0


def test_market_order_sweeps_and_its_remainder_is_canceled(v):
    v.enter(B, 100, px(20.00), owner=0)
    v.enter(B, 100, px(19.00), owner=0)
    st, msgs, reps = v.enter(S, 250, m.MARKET, owner=5, token=1)
    assert st == m.OK
    assert brief(msgs) == [("E", 1, 100), ("E", 2, 100)]
    assert [int(r["price"]) for r in reps if r["kind"] == m.R_EXECUTED] == [px(20.00), px(19.00)]
    assert kinds(reps)[-1] == ("canceled", 1) and int(reps[-1]["qty"]) == 50
    assert v.levels(0) == [] and v.levels(1) == []


def test_cancel_part_then_all(v):
    v.enter(B, 500, px(30.00), owner=6, token=1)
    ref = v.ref
    st, msgs, reps = v.cancel(ref, 200)
    assert st == m.OK and brief(msgs) == [("X", ref, 200)]
    assert [(int(r["qty"]), int(r["leaves"]), chr(r["reason"]), chr(r["state"])) for r in reps] == [(200, 300, "U", "L")]
    assert v.levels(0) == [(px(30.00), 300, 1)]
    st, msgs, reps = v.cancel_token(6, 1)  # the rest, by the owner's token
    assert st == m.OK and brief(msgs) == [("D", ref)]
    assert [(int(r["qty"]), int(r["leaves"]), chr(r["state"])) for r in reps] == [(300, 0, "D")]
    assert v.levels(0) == [] and m.find_token(v.eng, 6, 1) == 0
    # canceling again: unknown, and the token form gets a rejected record for the session
    st, msgs, reps = v.cancel(ref)
    assert st == m.ST_UNKNOWN_ORDER and msgs == [] and len(reps) == 0
    st, msgs, reps = v.cancel_token(6, 1)
    assert st == m.ST_UNKNOWN_ORDER and msgs == []
    assert kinds(reps) == [("rejected", 1)] and chr(reps[0]["request"]) == "X"
    # canceling at least the open shares cancels all of them
    v.enter(S, 100, px(31.00), owner=0)
    st, msgs, _ = v.cancel(v.ref, 1000)
    assert st == m.OK and [x["type"] for x in msgs] == ["D"]


def test_replace_loses_priority_and_gets_a_new_reference(v):
    v.enter(B, 100, px(40.00), owner=7, token=1)  # ref 1, first in the queue
    v.enter(B, 100, px(40.00), owner=0)  # ref 2
    st, msgs, reps = v.replace_token(7, 1, 2, 100, px(40.00))  # same price and size, new token
    assert st == m.OK
    new = v.ref
    assert new > 2 and brief(msgs) == [("U", 1, new, 100, px(40.00))]
    r = reps[0]
    assert (m.REPORT_KINDS[int(r["kind"])], int(r["token"]), int(r["prev_token"]), int(r["ref"]),
            int(r["prev_ref"])) == ("replaced", 2, 1, new, 1)
    assert m.find_token(v.eng, 7, 1) == 0 and m.find_token(v.eng, 7, 2) == new
    # a sell now hits the synthetic order first: the replaced one went to the back
    st, msgs, _ = v.enter(S, 100, px(40.00), owner=0)
    assert brief(msgs) == [("E", 2, 100)]
    # replace to a marketable price: the old order leaves the feed, trades, and the rest is added
    v.enter(S, 30, px(40.05), owner=0)  # ref after `new`
    ask = v.ref
    st, msgs, reps = v.replace(new, 3, 80, px(40.10))
    assert st == m.OK
    newer = v.ref
    assert brief(msgs) == [("D", new), ("E", ask, 30), ("A", newer, "B", 50, px(40.10))]
    assert kinds(reps) == [("replaced", 3), ("executed", 3)] and chr(reps[0]["state"]) == "L"
    assert m.bbo(v.eng, AAPL) == (px(40.10), 50, 0, 0)
    # a refused replace leaves the order as it was
    st, msgs, reps = v.replace(newer, 4, 0, px(40.10))
    assert st == m.REJECT_INVALID_QUANTITY and msgs == []
    assert kinds(reps) == [("rejected", 4)] and chr(reps[0]["request"]) == "U" and int(reps[0]["prev_token"]) == 3
    assert m.order_leaves(v.eng, newer) == 50
    assert v.replace(12345, 5, 10, px(40.0))[0] == m.ST_UNKNOWN_ORDER


@pytest.mark.parametrize("change, reason", [
    (dict(locate=0), m.REJECT_INVALID_SYMBOL),
    (dict(locate=len(SYMBOLS) + 1), m.REJECT_INVALID_SYMBOL),
    (dict(side=ord("X")), m.REJECT_INVALID_SIDE),
    (dict(qty=0), m.REJECT_INVALID_QUANTITY),
    (dict(qty=1_000_001), m.REJECT_INVALID_QUANTITY),
    (dict(price=px(10.005)), m.REJECT_INVALID_PRICE),  # off the cent tick
    (dict(price=0), m.REJECT_INVALID_PRICE),
    (dict(price=-100), m.REJECT_INVALID_PRICE),
    (dict(price=2_000_000_000), m.REJECT_INVALID_PRICE),  # above $199,999.99
    (dict(display=ord("Q")), m.REJECT_INVALID_DISPLAY),
    (dict(tif=ord("9")), m.REJECT_OTHER),
])
def test_rejects_name_the_ouch_reason_and_change_nothing(v, change, reason):
    args = dict(side=B, qty=100, price=px(10.00), owner=8, token=1, locate=AAPL)
    args.update(change)
    st, msgs, reps = v.enter(**args)
    assert st == reason
    assert msgs == [] and m.live_orders(v.eng) == 0
    assert kinds(reps) == [("rejected", 1)]
    assert (int(reps[0]["reject"]), chr(reps[0]["request"]), chr(reps[0]["state"])) == (reason, "O", "D")


def test_halted_symbol_and_duplicate_token_are_refused(v):
    v.enter(B, 100, px(10.00), owner=8, token=1)
    st, msgs, reps = v.enter(B, 100, px(10.00), owner=8, token=1)
    assert st == m.ST_DUPLICATE_TOKEN and msgs == [] and int(reps[0]["reject"]) == m.ST_DUPLICATE_TOKEN
    assert v.enter(B, 100, px(10.00), owner=9, token=1)[0] == m.OK  # tokens are per owner
    m.set_halted(v.eng, AAPL, True)
    assert v.enter(B, 100, px(10.00), owner=8, token=2)[0] == m.REJECT_HALTED
    assert v.replace_token(8, 1, 3, 50, px(10.00))[0] == m.REJECT_HALTED
    assert v.cancel_token(8, 1)[0] == m.OK  # cancels still work during a halt
    m.set_halted(v.eng, AAPL, False)
    assert v.enter(B, 100, px(10.00), owner=8, token=2)[0] == m.OK


def test_full_order_pool_rejects_with_processing_error():
    v = Venue(max_orders=2)
    assert v.enter(B, 1, px(1.00), owner=0)[0] == m.OK
    assert v.enter(B, 1, px(1.01), owner=0)[0] == m.OK
    st, msgs, reps = v.enter(B, 1, px(1.02), owner=1, token=1)
    assert st == m.REJECT_PROCESSING_ERROR and msgs == []


def test_hidden_orders_trade_behind_displayed_ones_and_print_as_trades(v):
    v.enter(S, 100, px(25.00), owner=10, token=1, display=HIDDEN)  # ref 1: first in time, not shown
    st, msgs, _ = v.enter(S, 100, px(25.00), owner=0)  # ref 2: shown
    assert brief(msgs) == [("A", 2, "S", 100, px(25.00))]
    assert v.levels(1) == [(px(25.00), 100, 1)]
    assert m.book_levels(v.eng, AAPL, 1, hidden=True) == [(px(25.00), 200, 2)]
    st, msgs, reps = v.enter(B, 150, px(25.00), owner=0)
    # the displayed order trades first despite arriving later; the hidden fill prints as P with ref 0
    assert brief(msgs) == [("E", 2, 100), ("P", 0, "S", 50, px(25.00))]
    assert msgs[0]["match"] + 1 == msgs[1]["match"]
    assert [chr(r["liquidity"]) for r in reps] == ["J"]  # the hidden client order added non-displayed liquidity
    assert v.levels(1) == [] and m.bbo(v.eng, AAPL) == (0, 0, 0, 0)
    st, msgs, reps = v.cancel_token(10, 1)  # the hidden remainder leaves silently
    assert st == m.OK and msgs == [] and int(reps[0]["qty"]) == 50


def test_attributed_order_is_added_with_its_mpid(v):
    st, msgs, _ = v.enter(B, 100, px(12.34), owner=0, mpid=alpha_to_int("VNUE", 4), display=m.DISPLAY_ATTRIBUTABLE)
    assert st == m.OK and [(x["type"], x["mpid"]) for x in msgs] == [("F", "VNUE")]


def test_output_room_is_checked_before_anything_changes():
    v = Venue()
    v.out = m.make_out(2 * m.MSG_ROOM - 1, 16)  # less than one add plus one cancel
    st, msgs, reps = v.enter(B, 100, px(10.00), owner=1, token=1)
    assert st == m.ST_NO_ROOM and msgs == [] and len(reps) == 0 and m.live_orders(v.eng) == 0
    # a sweep longer than the room stops between fills and cancels the rest ('Z'), never half-written
    v.out = m.make_out(1 << 16, 1024)
    for i in range(10):
        v.enter(S, 10, px(10.00) + i * 100, owner=0)
    v.out = m.make_out(5 * m.MSG_ROOM, 64)
    st, msgs, reps = v.enter(B, 100, px(11.00), owner=1, token=2)
    assert st == m.OK
    fills = [x for x in msgs if x["type"] == "E"]
    assert 0 < len(fills) < 10 and [x["type"] for x in msgs] == ["E"] * len(fills)
    assert kinds(reps)[-1] == ("canceled", 2) and chr(reps[-1]["reason"]) == "Z"
    assert len(v.levels(1, depth=20)) == 10 - len(fills)


def test_owner_disconnect_cancels_all_its_resting_orders(v):
    for t in range(5):
        v.enter(B, 10 + t, px(5.00) + t * 100, owner=11, token=t)
    v.enter(B, 10, px(4.00), owner=12, token=0)
    n = m.cancel_owner(v.eng, v.out, v.ts, 11, m.REASON_SUPERVISORY)
    st, msgs, reps = v._done(m.OK)
    assert n == 5 and sorted(x["type"] for x in msgs) == ["D"] * 5
    assert {chr(r["reason"]) for r in reps} == {"S"} and v.levels(0) == [(px(4.00), 10, 1)]


# ---- randomized: the feed rebuilds the engine's book, and every fill balances --------------------------
def random_session(seed: int, ops: int):
    """Drive a random mix of enters (day, IOC, market, hidden; clients and synthetic), cancels and replaces."""
    rng = random.Random(seed)
    v = Venue(max_orders=8192, levels=64, report_all=True)
    v.out = m.make_out(1 << 22, 1 << 16)
    mid = {loc: px(rng.choice([20.0, 100.0, 350.0])) for loc in range(1, len(SYMBOLS) + 1)}
    refs, tokens = [], []
    statuses = defaultdict(int)
    all_reports = []
    for step in range(ops):
        loc = rng.randint(1, len(SYMBOLS))
        mid[loc] = max(px(1.0), mid[loc] + rng.choice((-100, 0, 0, 100)))
        r = rng.random()
        owner = rng.choice((0, 0, 1, 2))
        if r < 0.55 or not refs:
            side = rng.choice((B, S))
            off = rng.randint(-3, 6) * 100
            price = mid[loc] - off if side == B else mid[loc] + off
            tif = IOC if rng.random() < 0.1 else DAY
            if rng.random() < 0.02:
                price = m.MARKET
            display = HIDDEN if rng.random() < 0.08 else SHOWN
            st = m.enter(v.eng, v.out, v.ts, loc, owner, step, side, rng.choice((1, 50, 100, 100, 200, 500)),
                         price, tif, display, 0)
            if st == m.OK and v.out.cur[m.C_LEAVES] > 0:
                refs.append(int(v.out.cur[m.C_REF]))
                tokens.append((owner, step))
        elif r < 0.85:
            i = rng.randrange(len(refs))
            if owner and rng.random() < 0.5:
                o, t = tokens[i]
                st = m.cancel_token(v.eng, v.out, v.ts, o, t, rng.choice((0, 0, 10, 60)), m.REASON_USER)
            else:
                st = m.cancel(v.eng, v.out, v.ts, refs[i], rng.choice((0, 0, 10, 60)), m.REASON_USER)
        else:
            i = rng.randrange(len(refs))
            side_hint = rng.choice((-1, 1))
            st = m.replace(v.eng, v.out, v.ts, refs[i], step, rng.choice((10, 100, 300)),
                           mid[loc] + side_hint * rng.randint(0, 4) * 100)
            if st == m.OK and v.out.cur[m.C_LEAVES] > 0:
                refs[i] = int(v.out.cur[m.C_REF])
                tokens[i] = (tokens[i][0], step)
        assert st != m.ST_NO_ROOM
        statuses[st] += 1
        v.ts += rng.randint(1, 5000)
        if len(refs) > 400:
            del refs[:100], tokens[:100]
    all_reports = m.reports(v.out)
    feed = v.out.buf[:v.out.cur[m.C_BUF]].copy()
    return v, feed, all_reports, statuses


def directory() -> bytes:
    return b"".join(len(x).to_bytes(2, "big") + x for x in
                    (d.encode("R", locate=i + 1, stock=s, tracking=1) for i, s in enumerate(SYMBOLS)))


@pytest.fixture(scope="module")
def session():
    return random_session(seed=20240604, ops=6000)


def test_random_session_exercises_every_path(session):
    v, feed, reps, statuses = session
    st = m.stats(v.eng)
    assert st["fills"] > 300 and st["canceled"] > 300 and st["replaced"] > 100 and st["live_orders"] > 50
    assert set(st["by_type"]) == {"A", "E", "X", "D", "U", "P"}
    assert statuses[m.OK] > 4000 and statuses[m.ST_UNKNOWN_ORDER] > 0


def test_feed_replayed_through_the_l3_book_gives_the_engines_levels(session):
    v, feed, _, _ = session
    buf = np.frombuffer(directory() + feed.tobytes(), dtype=np.uint8).copy()
    bk = l3.make_book(max_orders=1 << 15, levels=128, max_symbols=8)
    ev = np.zeros(1 << 16, dtype=EVENT_DTYPE)
    end, _, _ = l3.book_replay(bk, buf, 0, len(buf), 1, 0, ev, len(ev) - 1, 0)
    assert end == len(buf)
    assert all(n == 0 for n in l3.stats(bk)["malformed"].values()), l3.examples(bk)
    total_levels = 0
    for loc, stock in enumerate(SYMBOLS, start=1):
        got = l3.depth(bk, stock, levels=1000)
        assert got["bid"] == m.book_levels(v.eng, loc, 0, 1000)
        assert got["ask"] == m.book_levels(v.eng, loc, 1, 1000)
        total_levels += len(got["bid"]) + len(got["ask"])
    assert total_levels > 20
    shown = int(sum(r["leaves"] for r in v.eng.orders if r["level"] >= 0 and r["display"] != m.DISPLAY_HIDDEN))
    assert sum(p[1] for loc in range(1, 4) for s in (0, 1) for p in m.book_levels(v.eng, loc, s, 1000)) == shown


def test_feed_read_by_itch_book_ends_on_the_engines_bbo(session):
    v, feed, _, _ = session
    buf = np.frombuffer(directory() + feed.tobytes(), dtype=np.uint8).copy()
    s = ItchBookSession(tables=["bbo"], depth=0, symbols=[])
    s.reserve(len(buf) // 19 + 16)
    s.feed(buf)
    rows = s.take_bbo()
    last = {}
    for i in range(len(rows["locate"])):
        last[int(rows["locate"][i])] = (int(rows["bid_px"][i]), int(rows["bid_sz"][i]), int(rows["ask_px"][i]),
                                        int(rows["ask_sz"][i]))
    assert sorted(last) == [1, 2, 3]
    for loc in last:
        assert last[loc] == m.bbo(v.eng, loc), SYMBOLS[loc - 1]


def test_every_fill_balances_between_the_two_sides_and_the_feed(session):
    v, feed, reps, _ = session
    msgs = m.messages(m.Out(feed, reps, np.array([len(feed), len(reps), 0, 0, 0, 0, 0, 0])))
    printed = {x["match"]: x["shares"] for x in msgs if x["type"] in "EP"}
    by_match = defaultdict(list)
    for r in reps[reps["kind"] == m.R_EXECUTED]:
        by_match[int(r["match"])].append(r)
    assert sorted(by_match) == sorted(printed) == list(range(1, len(printed) + 1))
    for match, pair in by_match.items():
        assert len(pair) == 2
        add, take = sorted(pair, key=lambda r: chr(r["liquidity"]) == "R")
        assert chr(add["liquidity"]) in "AJ" and chr(take["liquidity"]) == "R"
        assert add["qty"] == take["qty"] == printed[match]
        assert add["price"] == take["price"] and add["locate"] == take["locate"]
        assert (add["side"] == B) != (take["side"] == B)
    total = sum(printed.values())
    assert total == m.stats(v.eng)["shares"] == sum(int(r["qty"]) for r in reps if r["kind"] == m.R_EXECUTED) // 2
    # per order: what was entered (or set by a replace) = executed + canceled + what still rests
    open_qty = {}
    for r in reps:
        k, ref = int(r["kind"]), int(r["ref"])
        if k == m.R_ACCEPTED:
            open_qty[ref] = int(r["qty"])
        elif k == m.R_REPLACED:
            assert open_qty.pop(int(r["prev_ref"])) > 0
            open_qty[ref] = int(r["qty"])
        elif k in (m.R_EXECUTED, m.R_CANCELED):
            open_qty[ref] -= int(r["qty"])
            assert open_qty[ref] == int(r["leaves"]) >= 0
    live = {int(o["ref"]): int(o["leaves"]) for o in v.eng.orders if o["level"] >= 0}
    assert live == {ref: q for ref, q in open_qty.items() if q > 0}
