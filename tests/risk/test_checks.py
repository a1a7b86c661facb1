"""Pre-trade risk, end to end: each check refuses the order that breaches it, lets the one just inside
through to the venue (a real OUCH session on loopback) and counts the refusal by reason; the kill switch
cancels every resting order at the venue and reports how long that took."""

import pytest

from appliance.config.schema import VenueConfig
from appliance.gateway import orders as go
from appliance.venue.server import Venue
from tests.gateway.harness import DOLLAR, GatewayHarness
from tests.support import free_udp_port

BUY, SELL = go.SIDE_BUY, go.SIDE_SELL
PX = 10 * DOLLAR  # $10.00


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    v = Venue(VenueConfig(symbols=("AAA", "BBB"), rate=0, max_orders=4096, history_messages=4096,
                          feed_port=free_udp_port(), retransmit_port=0, ouch_port=0, fix_port=0,
                          state_dir=str(tmp_path_factory.mktemp("venue-state")))).start()
    yield v
    v.stop()


@pytest.fixture
def harness(venue, tmp_path, request):
    h = GatewayHarness(venue, ["AAA", "BBB"], tmp_path / "orders.journal", risk=getattr(request, "param", {}))
    yield h
    h.kill()  # leave nothing resting for the next test
    h.pump(lambda: h.gw.w[go.W_OPEN] == 0, what="cleanup cancels")
    h.close()


def _rejects(h, reason):
    from appliance.risk.checks import REASONS
    return int(h.gw.rej[[k for k, v in REASONS.items() if v == reason][0]])


@pytest.mark.parametrize("harness", [{"max_order_qty": 100}], indirect=True)
def test_max_order_qty(harness):
    assert harness.outcome(harness.new("AAA", BUY, PX, 101)) == "rejected:max_order_qty"
    assert harness.outcome(harness.new("AAA", BUY, PX, 100)) == "new"
    assert _rejects(harness, "max_order_qty") == 1


@pytest.mark.parametrize("harness", [{"max_notional": 1000.0}], indirect=True)
def test_max_notional(harness):
    assert harness.outcome(harness.new("AAA", BUY, PX + 1, 100)) == "rejected:max_notional"  # $1000.01
    assert harness.outcome(harness.new("AAA", BUY, PX, 100)) == "new"  # $1000.00 exactly
    assert _rejects(harness, "max_notional") == 1


@pytest.mark.parametrize("harness", [{"max_position": 300}], indirect=True)
def test_max_position_counts_open_orders(harness):
    assert harness.outcome(harness.new("AAA", BUY, PX, 200)) == "new"
    assert harness.outcome(harness.new("AAA", BUY, PX, 101)) == "rejected:max_position"  # 200 open + 101 > 300
    assert harness.outcome(harness.new("AAA", BUY, PX, 100)) == "new"  # exactly 300
    assert harness.outcome(harness.new("AAA", SELL, PX + 500, 300)) == "new"  # the short side has its own room
    assert harness.outcome(harness.new("AAA", SELL, PX + 500, 1)) == "rejected:max_position"


@pytest.mark.parametrize("harness", [{"max_gross_position": 300}], indirect=True)
def test_max_gross_position_across_symbols(harness):
    assert harness.outcome(harness.new("AAA", BUY, PX, 200)) == "new"
    assert harness.outcome(harness.new("BBB", SELL, PX + 500, 101)) == "rejected:max_gross_position"
    assert harness.outcome(harness.new("BBB", SELL, PX + 500, 100)) == "new"


@pytest.mark.parametrize("harness", [{"price_collar_bps": 100}], indirect=True)
def test_price_collar_against_the_touch(harness):
    bid, ask = PX, PX + 100  # $10.00 / $10.01: a buy may go to $10.1101, a sell down to $9.90
    assert harness.outcome(harness.new("AAA", BUY, 101_200, 10, bid=bid, ask=ask)) == "rejected:price_collar"
    assert harness.outcome(harness.new("AAA", BUY, 101_100, 10, bid=bid, ask=ask)) == "new"
    assert harness.outcome(harness.new("BBB", SELL, 98_900, 10, bid=bid, ask=ask)) == "rejected:price_collar"
    assert harness.outcome(harness.new("BBB", SELL, 99_000, 10, bid=bid, ask=ask)) == "new"
    assert harness.outcome(harness.new("AAA", BUY, PX, 10, bid=0, ask=0)) == "rejected:no_reference_price"
    # with one side of the book empty, the other side is the reference
    assert harness.outcome(harness.new("AAA", BUY, 101_000, 10, bid=bid, ask=0)) == "new"
    assert harness.outcome(harness.new("AAA", BUY, 101_100, 10, bid=bid, ask=0)) == "rejected:price_collar"


@pytest.mark.parametrize("harness", [{"order_rate": 1, "order_burst": 3}], indirect=True)
def test_order_rate_token_bucket(harness):
    urns = [harness.new("AAA", BUY, PX - 100 * i, 10) for i in range(4)]
    assert [harness.outcome(u) for u in urns] == ["new", "new", "new", "rejected:order_rate"]
    harness.cancel("AAA", urns[0])  # cancels are never rate-limited
    harness.pump(lambda: harness.state_of(urns[0]) == "canceled", what="the cancel")


@pytest.mark.parametrize("harness", [{"max_open_orders": 2}], indirect=True)
def test_max_open_orders(harness):
    assert harness.outcome(harness.new("AAA", BUY, PX, 10)) == "new"
    assert harness.outcome(harness.new("BBB", BUY, PX, 10)) == "new"
    assert harness.outcome(harness.new("AAA", BUY, PX - 100, 10)) == "rejected:max_open_orders"


def test_self_cross_prevention(harness):
    assert harness.outcome(harness.new("AAA", SELL, PX, 10)) == "new"
    assert harness.outcome(harness.new("AAA", BUY, PX, 10)) == "rejected:self_cross"
    assert harness.outcome(harness.new("AAA", BUY, PX - 100, 10)) == "new"  # one tick below our offer
    assert harness.outcome(harness.new("BBB", BUY, PX, 10)) == "new"  # another symbol is not a cross


def test_replace_is_checked_like_an_order(harness):
    old = harness.new("AAA", BUY, PX, 100)
    assert harness.outcome(old) == "new"
    big = harness.replace("AAA", old, PX, 1001)  # default max_order_qty 1000
    assert harness.outcome(big) == "rejected:max_order_qty"
    assert harness.state_of(old) == "new"  # the refused replace leaves the order as it was
    ok = harness.replace("AAA", old, PX - 100, 1000)
    assert harness.outcome(ok) == "new"
    assert harness.state_of(old) == "replaced"


def test_kill_switch_cancels_everything_at_the_venue(harness, venue):
    urns = [harness.new(sym, side, PX - 100 * i if side == BUY else PX + 100 * (i + 1), 10)
            for i in range(6) for sym, side in (("AAA", BUY), ("BBB", SELL))]
    assert all(harness.outcome(u) == "new" for u in urns)
    assert len(venue.account_record()["open_orders"]) == len(urns)
    trigger = harness.kill()
    harness.pump(lambda: harness.gw.w[go.W_OPEN] == 0, what="every order canceled")
    last = int(harness.gw.w[go.W_KILL_LAST_TSC])
    us = (last - trigger) / harness.tsc.hz * 1e6
    print(f"kill switch: {len(urns)} cancels, last sent {us:.1f} us after the trigger")
    assert last > trigger and us < 1_000_000
    assert int(harness.gw.w[go.W_KILL_CANCELS]) == len(urns)
    assert venue.account_record()["open_orders"] == {}
    assert harness.outcome(harness.new("AAA", BUY, PX, 10)) == "rejected:kill_switch"
