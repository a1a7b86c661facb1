"""The Ray design peer: its sample feed, its actor's book and decision, its order bytes, and one real run."""

import pytest

from appliance.feed import itch_descriptor as itch
from appliance.feed import moldudp64_descriptor as mold
from appliance.gateway import ouch_descriptor as ouch
from appliance.gateway import soupbintcp_descriptor as sbt
from bench.ray_design import ORDER_SIZE, TouchMaker, make_packets, order_packet, run_ray_design


def _pkt(*msgs, seq=1):
    return mold.encode_packet("TEST000001", seq, msgs)


def _add(ref, side, price, shares=100, locate=1, stock="AAA"):
    return itch.encode("A", locate=locate, ref=ref, side=side, shares=shares, stock=stock, price=price)


def test_sample_feed_decodes_and_is_numbered_without_gaps():
    packets = make_packets(200, seed=3)
    assert len(packets) == 200 and packets == make_packets(200, seed=3)
    seq, kinds = 1, set()
    for raw in packets:
        p = mold.decode_packet(raw)
        assert p.seq == seq and 1 <= p.count <= 4 and len(p.messages) == p.count
        types = [itch.decode(m)["type"] for m in p.messages]
        assert types[-1] == "A" and set(types) <= set("AXEUD")
        kinds.update(types)
        seq += p.count
    assert kinds == set("AXEUD")


def test_book_follows_adds_reductions_and_replaces():
    t = TouchMaker()
    t.on_tick(_pkt(_add(1, "B", 1000), _add(2, "B", 1100), _add(3, "S", 1300), _add(4, "S", 1200, shares=300)))
    assert t.bbo(1) == (1100, 1200)
    t.on_tick(_pkt(itch.encode("D", locate=1, ref=2)))                          # best bid gone
    assert t.bbo(1) == (1000, 1200)
    t.on_tick(_pkt(itch.encode("E", locate=1, ref=4, shares=100, match=1)))     # partial: ask stays
    t.on_tick(_pkt(itch.encode("X", locate=1, ref=4, shares=100)))
    assert t.bbo(1) == (1000, 1200) and t.orders[4][3] == 100
    t.on_tick(_pkt(itch.encode("C", locate=1, ref=4, shares=100, match=2, printable="Y", price=1200)))
    assert t.bbo(1) == (1000, 1300) and 4 not in t.orders
    t.on_tick(_pkt(itch.encode("U", locate=1, ref=1, new_ref=5, shares=200, price=1250)))  # bid moves up
    assert t.bbo(1) == (1250, 1300) and t.orders[5] == [1, 1, 1250, 200] and 1 not in t.orders
    t.on_tick(_pkt(itch.encode("D", locate=1, ref=5), itch.encode("D", locate=1, ref=3)))
    assert t.bbo(1) == (None, None) and not t.orders
    assert t.stats()["unknown_ref"] == 0


def test_book_agrees_with_a_brute_force_touch_on_the_sample_feed():
    t, live = TouchMaker(), {}
    for raw in make_packets(400, symbols=5, seed=7):
        t.on_tick(raw)
        for m in mold.decode_packet(raw).messages:
            d = itch.decode(m)
            if d["type"] == "A":
                live[d["ref"]] = [d["locate"], d["side"], d["price"], d["shares"]]
            elif d["type"] in "EX":
                live[d["ref"]][3] -= d["shares"]
            elif d["type"] == "D":
                live[d["ref"]][3] = 0
            elif d["type"] == "U":
                old = live.pop(d["ref"])
                live[d["new_ref"]] = [old[0], old[1], d["price"], d["shares"]]
            live = {r: o for r, o in live.items() if o[3] > 0}
        for loc in range(1, 6):
            bids = [o[2] for o in live.values() if o[0] == loc and o[1] == "B"]
            asks = [o[2] for o in live.values() if o[0] == loc and o[1] == "S"]
            assert t.bbo(loc) == (max(bids, default=None), min(asks, default=None))
    assert sum(t.stats()[k] for k in ("unknown_ref", "duplicate_ref", "bad_block", "bad_length")) == 0


def test_decision_joins_the_touch_alternating_sides_on_every_nth_packet():
    t = TouchMaker(order_every=2, qty=300)
    assert t.on_tick(_pkt(_add(1, "B", 1000), _add(2, "S", 1100))) is None   # packet 1: not an order tick
    assert t.on_tick(_pkt(_add(3, "B", 1050))) == (b"B", b"AAA     ", 1050, 300)
    assert t.on_tick(_pkt(_add(4, "S", 1090))) is None
    assert t.on_tick(_pkt(_add(5, "S", 1080))) == (b"S", b"AAA     ", 1080, 300)
    # The quote is on the packet's last symbol that still has a side to join; an empty side falls back.
    t.on_tick(_pkt(_add(6, "S", 2000, locate=2, stock="BBB")))
    assert t.on_tick(_pkt(_add(7, "B", 1060), itch.encode("D", locate=1, ref=99),
                          _add(8, "S", 2010, locate=2, stock="BBB"))) == (b"S", b"BBB     ", 2000, 300)
    assert t.stats()["unknown_ref"] == 1
    t.on_tick(_pkt(_add(9, "S", 500, locate=3, stock="CCC")))
    assert t.on_tick(_pkt(itch.encode("D", locate=3, ref=9))) is None            # nothing left to join
    assert t.stats()["no_quote"] == 1 and t.stats()["orders"] == 3


def test_malformed_packets_are_counted_by_kind_and_skipped():
    t = TouchMaker()
    good = _pkt(_add(1, "B", 1000))
    assert t.on_tick(b"\x00" * 5) is None
    assert t.on_tick(good[:-3]) is None                                          # block runs past the end
    assert t.on_tick(_pkt(_add(2, "B", 1000)[:-1])) is None                      # an 'A' one byte short
    assert t.on_tick(_pkt(b"z" + bytes(20))) is None                             # unknown type
    assert t.on_tick(_pkt(_add(3, "Q", 1000))) is None                           # side neither B nor S
    assert t.on_tick(mold.encode_end_of_session("TEST000001", 9)) is None
    assert t.on_tick(good) == (b"B", b"AAA     ", 1000, 100)
    assert t.on_tick(good) is not None and t.stats()["duplicate_ref"] == 1
    c = t.stats()
    assert (c["short_packet"], c["bad_block"], c["bad_length"], c["unknown_type"], c["bad_side"],
            c["end_of_session"]) == (1, 1, 1, 1, 1, 1)
    assert c["packets"] == 8 and t.bbo(1) == (1000, None)


def test_order_packet_is_a_soupbintcp_unsequenced_enter_order():
    raw = order_packet(42, b"S", b"AAA     ", 1234500, 300)
    assert len(raw) == ORDER_SIZE == 50
    pkt = sbt.decode_packet(raw)
    assert pkt["type"] == "U"
    o = ouch.decode_inbound(pkt["payload"])
    assert (o["type"], o["user_ref_num"], o["side"], o["quantity"], o["symbol"], o["price"]) == \
        ("O", 42, "S", 300, "AAA", 1234500)
    assert (o["time_in_force"], o["display"], o["capacity"], o["cl_ord_id"]) == ("0", "Y", "P", "R0000000000042")


@pytest.mark.parametrize("kw, what", [
    ({"ticks": 0, "pace_per_s": 100}, "ticks"), ({"ticks": 5, "pace_per_s": 0}, "pace_per_s"),
    ({"ticks": 5, "pace_per_s": 100, "order_every": 0}, "order_every"),
    ({"ticks": 5, "pace_per_s": 100, "timeout_s": 0}, "timeout_s"),
])
def test_bad_arguments_are_refused_before_anything_starts(kw, what):
    with pytest.raises(ValueError, match=what):
        run_ray_design(make_packets(5), **kw)
    with pytest.raises(ValueError, match="packet"):
        run_ray_design([], ticks=5, pace_per_s=100)


def test_a_real_run_times_every_order_and_delivers_it():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install ray==2.60.0)")
    n = 40  # even: every second packet is an order tick
    r = run_ray_design(make_packets(n, seed=5), ticks=n, pace_per_s=400, order_every=2, timeout_s=90)
    assert r["design"] == "ray actor per tick (ray.get)" and r["ray_version"] == ray.__version__
    assert (r["ticks"], r["sent"], r["lost"], r["timed_out"]) == (n, n, 0, False)
    assert r["orders"] == r["actor_counts"]["orders"] == n // 2 and r["actor_counts"]["no_quote"] == 0
    assert r["sink_bytes"] == r["orders"] * ORDER_SIZE and r["sink_error"] is None
    assert 0 < r["p50_ns"] <= r["p90_ns"] <= r["p99_ns"] <= r["p99_9_ns"] <= r["max_ns"] < 90e9
    assert r["ray_init_s"] > 0 and not ray.is_initialized()
