"""The synthetic ITCH day: deterministic, shaped like a real day, self-consistent, and readable by itchfeed.

Consistency is checked by an independent pure-Python replay that reads the bytes with its own struct
layouts (from the ITCH 5.0 specification) and keeps its own book.
"""

import gzip
import heapq
import struct
from collections import Counter

import numpy as np
import pytest

from appliance.feed.dayfile import iter_messages, read_dayfile, type_counts, walk_frames
from appliance.feed.itch_descriptor import FIELDS, LENGTHS
from appliance.venue.generator import Generator, GeneratorParams, generate, main
from tests.support import itchfeed_counts

TICK = 100


@pytest.fixture(scope="module")
def day():
    params = GeneratorParams(seed=11, messages=300_000, symbols=120)
    buf, counts = generate(params)
    return params, buf, counts


# ---- the independent replay ------------------------------------------------------------------------
HEADER = struct.Struct(">cHH6s")
ADD = struct.Struct(">Qc I 8s I".replace(" ", ""))
EXEC = struct.Struct(">QIQ")
EXEC_PRICE = struct.Struct(">QIQcI")
CANCEL = struct.Struct(">QI")
REPLACE = struct.Struct(">QQII")
TRADE = struct.Struct(">Qc I 8s I Q".replace(" ", ""))
CROSS = struct.Struct(">Q8sIQc")


class Side:
    """One side of one symbol's book: orders per price in arrival order, best price by a lazy heap."""

    def __init__(self, bid: bool):
        self.bid = bid
        self.levels: dict[int, dict[int, None]] = {}
        self.heap: list[int] = []

    def add(self, price, ref):
        if price not in self.levels:
            self.levels[price] = {}
            heapq.heappush(self.heap, -price if self.bid else price)
        self.levels[price][ref] = None

    def remove(self, price, ref):
        level = self.levels[price]
        del level[ref]
        if not level:
            del self.levels[price]

    def best(self):
        while self.heap:
            price = -self.heap[0] if self.bid else self.heap[0]
            if price in self.levels:
                return price
            heapq.heappop(self.heap)
        return None

    def first_at_best(self):
        best = self.best()
        return None if best is None else next(iter(self.levels[best]))


def replay(buf):
    """Walk a day file checking every rule a real NASDAQ feed keeps; returns what it saw."""
    orders = {}  # ref -> [locate, side, shares, price]
    books = {}  # locate -> (bids, asks)
    stocks = {}  # locate -> stock
    trading = {}  # locate -> may execute
    last_ts = -1
    last_ref = 0
    last_match = 0
    system = []
    counts = Counter()
    crossed_checks = 0
    for i, msg in enumerate(iter_messages(buf)):
        mtype, locate, _tracking, ts6 = HEADER.unpack_from(msg)
        t = mtype.decode()
        counts[t] += 1
        assert len(msg) == LENGTHS[t], (i, t, len(msg))
        ts = int.from_bytes(ts6, "big")
        assert ts >= last_ts, f"message {i} ({t}) goes back in time: {ts} < {last_ts}"
        last_ts = ts
        body = msg[11:]
        if t == "S":
            system.append(chr(body[0]))
            assert locate == 0
            continue
        if t in "VW":
            assert locate == 0
            continue
        if t == "R":
            assert locate not in stocks, f"second directory entry for locate {locate}"
            stocks[locate] = bytes(body[:8])
            books[locate] = (Side(True), Side(False))
            trading[locate] = True
            continue
        assert locate in stocks, f"message {i} ({t}) for locate {locate} before its directory entry"
        if t in "HYLKJhINO":
            if t == "H":
                trading[locate] = chr(body[8]) == "T"
            if t == "h":
                trading[locate] = chr(body[9]) == "T"
            if t in "HYKJhNO":
                assert bytes(body[:8]) == stocks[locate]
            continue
        if t in "AF":
            ref, side, shares, stock, price = ADD.unpack_from(body)
            assert ref > last_ref, f"message {i}: reference {ref} not above {last_ref}"
            last_ref = ref
            assert stock == stocks[locate] and side in (b"B", b"S") and shares > 0
            assert price > 0 and price % TICK == 0, price
            bids, asks = books[locate]
            own, other = (bids, asks) if side == b"B" else (asks, bids)
            opposite = other.best()
            if opposite is not None:
                crossed_checks += 1
                assert (price < opposite) if side == b"B" else (price > opposite), \
                    f"message {i}: {side} at {price} crosses {opposite}"
            own.add(price, ref)
            orders[ref] = [locate, side, shares, price]
        elif t in "ECX":
            if t == "E":
                ref, shares, match = EXEC.unpack_from(body)
            elif t == "C":
                ref, shares, match, printable, xprice = EXEC_PRICE.unpack_from(body)
                assert printable in (b"Y", b"N") and xprice > 0
            else:
                ref, shares = CANCEL.unpack_from(body)
            assert ref in orders, f"message {i} ({t}) names order {ref}, which is not live"
            o = orders[ref]
            assert o[0] == locate and 0 < shares <= o[2], (i, t, shares, o)
            own = books[locate][0 if o[1] == b"B" else 1]
            if t in "EC":
                assert trading[locate], f"message {i}: execution while {locate} is not trading"
                assert match > last_match
                last_match = match
                # Price-time priority: the best price's oldest order goes first.
                assert own.best() == o[3] and own.first_at_best() == ref, (i, ref, o, own.best())
            else:
                assert shares < o[2], "an X cancels part of an order; a whole one goes by D"
            o[2] -= shares
            if o[2] == 0:
                own.remove(o[3], ref)
                del orders[ref]
        elif t == "D":
            (ref,) = struct.unpack_from(">Q", body)
            assert ref in orders, f"message {i} deletes order {ref}, which is not live"
            o = orders.pop(ref)
            assert o[0] == locate
            books[locate][0 if o[1] == b"B" else 1].remove(o[3], ref)
        elif t == "U":
            old, new, shares, price = REPLACE.unpack_from(body)
            assert old in orders, f"message {i} replaces order {old}, which is not live"
            assert new > last_ref and shares > 0 and price > 0 and price % TICK == 0
            last_ref = new
            o = orders.pop(old)
            assert o[0] == locate
            bids, asks = books[locate]
            own, other = (bids, asks) if o[1] == b"B" else (asks, bids)
            own.remove(o[3], old)
            opposite = other.best()
            if opposite is not None:
                crossed_checks += 1
                assert (price < opposite) if o[1] == b"B" else (price > opposite)
            own.add(price, new)
            orders[new] = [locate, o[1], shares, price]
        elif t == "P":
            ref, side, shares, stock, price, match = TRADE.unpack_from(body)
            assert trading[locate] and stock == stocks[locate] and shares > 0 and price > 0
            assert match > last_match
            last_match = match
        elif t == "Q":
            shares, stock, price, match, cross_type = CROSS.unpack_from(body)
            assert stock == stocks[locate] and cross_type in (b"O", b"C", b"H") and price > 0
            assert match > last_match
            last_match = match
        elif t == "B":
            (match,) = struct.unpack_from(">Q", body)
            assert 0 < match <= last_match
        else:
            raise AssertionError(f"message {i}: unexpected type {t!r}")
    return {"counts": counts, "system": system, "live": len(orders), "crossed_checks": crossed_checks,
            "symbols": len(stocks)}


# ---- tests ---------------------------------------------------------------------------------------
def test_same_seed_same_bytes_other_seed_other_bytes():
    a, ca = generate(GeneratorParams(seed=3, messages=40_000, symbols=50))
    b, cb = generate(GeneratorParams(seed=3, messages=40_000, symbols=50))
    c, _ = generate(GeneratorParams(seed=4, messages=40_000, symbols=50))
    assert np.array_equal(a, b) and ca == cb
    assert not np.array_equal(a[:c.size], c[:a.size])


def test_chunked_fill_gives_the_same_bytes():
    params = GeneratorParams(seed=5, messages=30_000, symbols=40)
    whole, counts = generate(params)
    gen = Generator(params)
    out = np.zeros(1 << 20, dtype=np.uint8)
    parts = []
    rng = np.random.default_rng(0)
    for _ in range(100_000):  # bounded: 30k messages need far fewer calls
        if gen.done:
            break
        small = out[: int(rng.integers(60, 4000))]  # sometimes room for just one message
        nbytes, n = gen.fill(small, max_messages=int(rng.integers(1, 500)))
        assert n > 0
        parts.append(small[:nbytes].copy())
    assert gen.done and gen.fill(out) == (0, 0)
    assert np.array_equal(np.concatenate(parts), whole)
    assert gen.counts() == counts


def test_fill_with_offset_appends():
    gen = Generator(GeneratorParams(seed=5, messages=1_000, symbols=10))
    out = np.zeros(gen.max_bytes() + 8, dtype=np.uint8)
    nbytes, n = gen.fill(out, max_messages=10, offset=8)
    assert n == 10 and out[:8].sum() == 0
    assert walk_frames(out, 8, 8 + nbytes) == (10, 8 + nbytes, -1)
    with pytest.raises(ValueError):
        gen.fill(out.astype(np.int16))


def test_the_day_has_the_exact_count_and_every_type(day):
    params, buf, counts = day
    assert sum(counts.values()) == params.messages
    assert set(counts) == set(FIELDS)
    assert type_counts(buf) == counts
    assert walk_frames(buf, 0, buf.size) == (params.messages, buf.size, -1)


def test_the_mix_looks_like_nasdaq(day):
    params, _, counts = day
    share = {t: counts.get(t, 0) / params.messages for t in FIELDS}
    bands = {"A": (0.30, 0.46), "D": (0.28, 0.42), "U": (0.05, 0.13), "E": (0.025, 0.09), "X": (0.015, 0.05),
             "F": (0.005, 0.04), "P": (0.008, 0.04), "C": (0.001, 0.015), "I": (0.002, 0.04)}
    for t, (lo, hi) in bands.items():
        assert lo <= share[t] <= hi, f"{t}: {share[t]:.3%} outside {lo:.1%}..{hi:.1%}"
    for t in "SRHYLVWKJhQBNO":
        assert share[t] < 0.01, f"{t} should be rare, is {share[t]:.3%}"


def test_independent_replay_finds_a_consistent_day(day):
    params, buf, counts = day
    seen = replay(buf)
    assert seen["counts"] == counts
    assert seen["system"] == ["O", "S", "Q", "M", "E", "C"]
    assert seen["symbols"] == params.symbols
    assert seen["crossed_checks"] > 100_000
    assert 0 < seen["live"] <= params.symbols * params.pool_cap


def test_replay_notices_a_broken_day(day):
    # The checker must be able to fail: delete an order twice.
    _, buf, _ = day
    msgs = [bytes(m) for m in iter_messages(buf[:2_000_000], strict=False)]
    first = next(i for i, m in enumerate(msgs) if m[:1] == b"D")
    msgs.insert(first + 1, msgs[first])
    bad = b"".join(len(m).to_bytes(2, "big") + m for m in msgs)
    replay(np.frombuffer(b"".join(len(m).to_bytes(2, "big") + m for m in msgs[:first + 1]), dtype=np.uint8))
    with pytest.raises(AssertionError, match="not live"):
        replay(np.frombuffer(bad, dtype=np.uint8))


def test_prices_and_sizes_are_plausible(day):
    _, buf, _ = day
    prices, sizes = [], []
    for msg in iter_messages(buf[:3_000_000], strict=False):
        if msg[0] == ord("A"):
            _, _, shares, _, price = ADD.unpack_from(msg, 11)
            prices.append(price)
            sizes.append(shares)
    prices, sizes = np.array(prices), np.array(sizes)
    assert prices.min() >= TICK and prices.max() < 2_000 * 10_000
    assert np.median(prices) > 5 * 10_000
    round_lots = np.mean(sizes % 100 == 0)
    assert 0.8 < round_lots < 0.99  # mostly round lots, some odd lots


def test_times_follow_the_trading_day(day):
    params, buf, _ = day
    stamps = np.array([int.from_bytes(bytes(m[5:11]), "big") for m in iter_messages(buf)])
    assert stamps[0] == params.start_ns and stamps[-1] == params.end_ns
    regular = np.mean((stamps >= params.open_ns) & (stamps < params.close_ns))
    assert 0.8 < regular < 0.99  # most of the flow is in market hours, some before and after


def test_itchfeed_reads_the_file_and_counts_the_same(tmp_path):
    params = GeneratorParams(seed=2, messages=50_000, symbols=60)
    buf, counts = generate(params)
    path = tmp_path / "day.itch"
    path.write_bytes(buf.tobytes())
    theirs = itchfeed_counts(path)
    assert theirs == counts
    assert sum(theirs.values()) == params.messages


def test_small_and_odd_days():
    # Fewer messages than the fixed schedule: the schedule alone, still a whole day.
    buf, counts = generate(GeneratorParams(seed=1, messages=10, symbols=3))
    seen = replay(buf)
    assert seen["system"] == ["O", "S", "Q", "M", "E", "C"] and sum(counts.values()) > 10
    # A short window that misses the open and the close: fixed points are clamped into it, in order.
    p = GeneratorParams(seed=1, messages=5_000, symbols=5, start_ns=11 * 3600 * 10**9, end_ns=11 * 3600 * 10**9
                        + 60 * 10**9)
    buf, counts = generate(p)
    assert replay(buf)["system"] == ["O", "S", "Q", "M", "E", "C"] and sum(counts.values()) == 5_000


@pytest.mark.parametrize("bad", [dict(symbols=0), dict(symbols=70_000), dict(messages=-1), dict(tick=0),
                                 dict(start_ns=10, end_ns=5), dict(pool_cap=1), dict(mix=(("Z", 1.0),)),
                                 dict(mix=(("A", 0.0),)), dict(burst=1.5), dict(seed=1.5)])
def test_bad_params_are_refused_by_name(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        GeneratorParams(**bad)


def test_main_writes_raw_and_gzip(tmp_path, capsys):
    raw = tmp_path / "day.itch"
    assert main(["--messages", "20000", "--symbols", "20", "--seed", "9", str(raw)]) == 0
    line = capsys.readouterr().out
    assert "20000 messages" in line and "M msgs/s" in line
    expect, _ = generate(GeneratorParams(seed=9, messages=20_000, symbols=20))
    assert np.array_equal(read_dayfile(raw), expect)
    zipped = tmp_path / "day.bin"
    assert main(["--messages", "20000", "--symbols", "20", "--seed", "9", "--gzip", str(zipped)]) == 0
    assert zipped.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress(zipped.read_bytes()) == expect.tobytes()
    assert main(["--symbols", "0", str(raw)]) == 2
