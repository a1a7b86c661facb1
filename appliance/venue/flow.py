"""Synthetic participants for the live venue: seeded order flow that goes through the matching engine.

Unlike the day-file generator (appliance.venue.generator), which writes ITCH directly, this flow enters,
cancels and replaces real orders in the venue's matching engine as owner 0, so the appliances' orders
rest beside them and trade against them, and the feed shows every book change the same way for both.

Per symbol a fair price random-walks by one tick; passive orders rest a geometric number of ticks
behind it (bids below, asks above), so the touch sits near the fair price; a small share of orders
are marketable IOCs that take liquidity and print executions. Each symbol keeps a bounded pool of its
own live references to cancel and replace. Symbols are drawn with a skew (a few busy, many quiet).
Everything is in numpy arrays and one numba loop; the same seed gives the same operations.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from . import matching as m

POOL = 64  # live synthetic references kept per symbol for cancels and replaces

# words[]
W_RNG = 0
W_OPS = 1  # operations done
W_ADDS = 2
W_CANCELS = 3
W_REPLACES = 4
W_TAKES = 5  # marketable IOCs
W_STALE = 6  # cancels/replaces of references that had already traded away
N_WORDS = 8

# operation mix, per mille
ADD_PM = 520
CANCEL_PM = 360
REPLACE_PM = 90  # the rest (30) are marketable IOCs

Flow = namedtuple("Flow", "fair pool count words")


def make_flow(eng: m.Engine, seed: int = 1, base_prices=None) -> Flow:
    """Flow state for every symbol of `eng`; fair prices start at `base_prices` (1e-4 $) or seeded $10-$200."""
    n = int(eng.words[m.M_NSYM])
    tick = int(eng.words[m.M_TICK])
    rng = np.random.default_rng(seed)
    if base_prices is None:
        base_prices = np.exp(rng.uniform(np.log(10), np.log(200), n)) * 10_000
    fair = np.zeros(n + 1, dtype=np.int64)
    fair[1:] = (np.asarray(base_prices, dtype=np.float64) // tick).astype(np.int64) * tick
    return Flow(fair=fair, pool=np.zeros((n + 1, POOL), dtype=np.int64), count=np.zeros(n + 1, dtype=np.int64),
                words=np.array([seed * 0x9E3779B97F4A7C15 & 0x7FFFFFFFFFFFFFFF or 1] + [0] * (N_WORDS - 1),
                               dtype=np.int64))


@njit(nogil=True, cache=True, inline="always")
def _rand(w):
    """xorshift64*, 62 usable bits as a non-negative int64."""
    x = np.uint64(w[W_RNG])
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    w[W_RNG] = np.int64(x & np.uint64(0x7FFFFFFFFFFFFFFF))
    return np.int64((x * np.uint64(0x2545F4914F6CDD1D)) >> np.uint64(2))


@njit(nogil=True, cache=True, inline="always")
def _depth(r):
    """1 + a geometric number of ticks (half the orders at the touch, a quarter one behind, ...), at most 12."""
    k = 1
    while k < 12 and (r & 1) == 1:
        r >>= 1
        k += 1
    return k


@njit(nogil=True, cache=True, inline="always")
def _drop(fl, loc, i):
    c = fl.count[loc] - 1
    fl.pool[loc, i] = fl.pool[loc, c]
    fl.count[loc] = c


@njit(nogil=True, cache=True, _nrt=False)
def flow_step(eng, out, fl, n, ts):
    """Up to `n` synthetic operations at time `ts` (ns since midnight); returns how many were done.

    Stops early when `out` has no room for another operation's worst case (drain it and call again).
    """
    w = fl.words
    nsym = eng.words[m.M_NSYM]
    tick = eng.words[m.M_TICK]
    done = 0
    while done < n:
        if out.buf.shape[0] - out.cur[m.C_BUF] < 8 * m.MSG_ROOM or out.reports.shape[0] - out.cur[m.C_REP] < 8:
            break
        r = _rand(w)
        # skewed symbol choice: the square of a uniform draw favours low locates
        u = (r & 0xFFFF) / 65536.0
        loc = 1 + np.int64(u * u * nsym)
        if loc > nsym:
            loc = nsym
        r >>= 16
        if (r & 31) == 0:  # the fair price moves one tick about every 32nd operation
            step = tick if (r & 32) else -tick
            if fl.fair[loc] + step >= 20 * tick:
                fl.fair[loc] += step
        r >>= 4
        kind = r % 1000
        r >>= 10
        cnt = fl.count[loc]
        fair = fl.fair[loc]
        if cnt == 0 or (kind < ADD_PM and cnt < POOL):
            side = r & 1
            d = _depth(r >> 1)
            qty = 100 * (1 + (r >> 16) % 10)
            price = fair - d * tick if side == 0 else fair + d * tick
            st = m.enter_inline(eng, out, ts, loc, 0, 0, m.SIDE_BUY if side == 0 else m.SIDE_SELL, qty, price,
                         m.TIF_DAY, m.DISPLAY_VISIBLE, 0)
            if st == m.OK and out.cur[m.C_LEAVES] > 0:
                fl.pool[loc, fl.count[loc]] = out.cur[m.C_REF]
                fl.count[loc] += 1
            w[W_ADDS] += 1
        elif kind < ADD_PM + CANCEL_PM or cnt >= POOL:
            i = r % cnt
            if m.cancel_inline(eng, out, ts, fl.pool[loc, i], 0, m.REASON_USER) == m.ST_UNKNOWN_ORDER:
                w[W_STALE] += 1
            _drop(fl, loc, i)
            w[W_CANCELS] += 1
        elif kind < ADD_PM + CANCEL_PM + REPLACE_PM:
            i = r % cnt
            ref = fl.pool[loc, i]
            leaves = m.order_leaves(eng, ref)
            if leaves == 0:
                w[W_STALE] += 1
                _drop(fl, loc, i)
            else:
                side = eng.orders[eng.ref_slot[ref & eng.words[m.M_RMASK]]].side
                d = _depth(r >> 8)
                price = fair - d * tick if side == 0 else fair + d * tick
                st = m.replace_inline(eng, out, ts, ref, 0, 100 * (1 + (r >> 20) % 10), price)
                if st == m.OK and out.cur[m.C_LEAVES] > 0:
                    fl.pool[loc, i] = out.cur[m.C_REF]
                else:
                    _drop(fl, loc, i)
            w[W_REPLACES] += 1
        else:  # take liquidity: a marketable IOC a few ticks through the fair price
            side = r & 1
            price = fair + 3 * tick if side == 0 else fair - 3 * tick
            m.enter_inline(eng, out, ts, loc, 0, 0, m.SIDE_BUY if side == 0 else m.SIDE_SELL, 100 * (1 + (r >> 1) % 5),
                    price, m.TIF_IOC, m.DISPLAY_VISIBLE, 0)
            w[W_TAKES] += 1
        done += 1
    w[W_OPS] += done
    return done


def stats(fl: Flow) -> dict[str, int]:
    w = fl.words
    return {"operations": int(w[W_OPS]), "adds": int(w[W_ADDS]), "cancels": int(w[W_CANCELS]),
            "replaces": int(w[W_REPLACES]), "takes": int(w[W_TAKES]), "stale": int(w[W_STALE])}
