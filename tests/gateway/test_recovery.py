"""Crash recovery, end to end: the appliance trades against the venue; it is SIGKILLed mid-session (with
fills in flight and more arriving while it is dead) and restarted, and the venue drops its session; each
time the appliance's positions, open orders and sequence numbers must come back equal to the venue's own
record, and no order may be sent twice (the venue counts reused UserRefNums; the journal holds each order
once). A clean SIGTERM then leaves nothing resting at the venue."""

import collections
import json
import re
import signal

import pytest

from appliance.config.schema import VenueConfig
from appliance.gateway import ouch_descriptor as oc
from appliance.gateway.journal import K_SENT, read_journal
from appliance.venue.server import Venue
from tests.support import free_tcp_port, free_udp_port, trading_config, wait_for

pytestmark = pytest.mark.process

SYMBOLS = ("AAA", "BBB")
TOKEN = "recovery-test-token"


MARKET_MAKER = """
kind = "market_maker"
symbols = ["AAA", "BBB"]
half_spread = 100
quote_size = 100
refresh_us = 0
skew_per_share = 0.5
"""


def _config(tmp_path, feed_port, retrans_port, ouch_port, protocol="ouch"):
    return trading_config(tmp_path, feed_port, retrans_port, ouch_port, MARKET_MAKER, name="recovery",
                          protocol=protocol)


def _status(a):
    code, body = a.get("/status")
    assert code == 200, body
    return json.loads(body)


def _appliance_view(a):
    t = _status(a).get("trading")
    if t is None:
        return None
    orders = {int(u): {k: o[k] for k in ("symbol", "side", "price", "leaves")} for u, o in t["open_orders"].items()}
    return {"open_orders": orders, "positions": {s: p for s, p in t["positions"].items() if p},
            "next_sequence": t["session"]["next_expected_sequence"], "up": t["session"]["up"] and
            t["session"]["reconciled"], "fills": t["orders"]["fills"]}


def _venue_view(venue):
    r = venue.account_record()
    orders = {int(u): dict(o) for u, o in r["open_orders"].items()}
    return {"open_orders": orders, "positions": {s: p for s, p in r["positions"].items() if p},
            "next_sequence": r["next_sequence"], "duplicate_user_refs": r["duplicate_user_refs"]}


def _agree(a, venue):
    """Both records, once they agree (the appliance reconciled and no message in flight); else None."""
    mine, theirs = _appliance_view(a), _venue_view(venue)
    if mine is None or not mine["up"]:
        return None
    same = all(mine[k] == theirs[k] for k in ("open_orders", "positions", "next_sequence"))
    return (mine, theirs) if same else None


def _wait(a, predicate, timeout, what):
    """wait_for, with the appliance's log and status in the failure."""
    try:
        return wait_for(predicate, timeout, what=what)
    except BaseException:
        print(a.log()[-6000:])
        print(_status(a).get("trading"))
        raise


def _quoting(a, n=4):
    v = _appliance_view(a)
    return v is not None and v["up"] and len(v["open_orders"]) >= n


def _hit(venue, side, px):
    """A participant takes our quote: sell 100 at or below `px` (side "S") or buy at or above it."""
    for sym in SYMBOLS:
        venue.participant_order(sym, side, 100, px, tif="3")


def _market(tmp_path, protocol):
    feed, retrans, port = free_udp_port(), free_udp_port(), free_tcp_port()
    venue = Venue(VenueConfig(symbols=SYMBOLS, rate=0, max_orders=65536, history_messages=65536,
                              feed_port=feed, retransmit_port=retrans, ouch_port=port if protocol == "ouch" else 0,
                              fix_port=port if protocol == "fix" else 0,
                              state_dir=str(tmp_path / "venue-state"))).start()
    for sym in SYMBOLS:  # a two-sided market, $9.90 / $10.10, for the market maker to quote inside
        venue.participant_order(sym, "B", 1000, 99_000)
        venue.participant_order(sym, "S", 1000, 101_000)
    return venue, _config(tmp_path, feed, retrans, port, protocol)


@pytest.fixture
def market(tmp_path):
    venue, toml = _market(tmp_path, "ouch")
    yield venue, toml
    venue.stop()


@pytest.fixture
def fix_market(tmp_path):
    venue, toml = _market(tmp_path, "fix")
    yield venue, toml
    venue.stop()


def test_sigkill_restart_and_venue_disconnect_rebuild_the_venues_record(market, appliance, tmp_path):
    venue, toml = market
    env = {"APPLIANCE_ADMIN_TOKEN": TOKEN}
    a = appliance(toml, env).wait_ready(timeout=600)
    _wait(a, lambda: _quoting(a), 60, what="the market maker quoting both sides of both symbols")
    for px in (99_000, 101_000, 99_000):  # fills, re-quotes and replaces
        _hit(venue, "S" if px < 100_000 else "B", px)
        _wait(a, lambda: _quoting(a), 30, what="quotes after a fill")
    before = _appliance_view(a)
    assert before["fills"] >= 2  # which quotes the takers meet depends on timing; that some did is enough

    # SIGKILL with a fill in flight, then more fills while the appliance is dead
    _hit(venue, "B", 101_000)
    a.kill()
    _hit(venue, "S", 99_000)
    b = appliance(toml, env).wait_ready(timeout=600)
    mine, theirs = _wait(b, lambda: _agree(b, venue), 60, what="the restarted appliance agreeing with the venue")
    assert theirs["duplicate_user_refs"] == 0
    assert "journal" in b.log() and "rebuilt" in b.log()

    # the venue drops the session while fills happen
    _wait(b, lambda: _quoting(b), 30, what="quotes after the restart")
    _hit(venue, "S", 99_000)
    assert venue.disconnect_all() >= 1
    _hit(venue, "B", 101_000)
    mine, theirs = _wait(b, lambda: _agree(b, venue) if _appliance_view(b)["fills"] > mine["fills"] else None, 60,
                         what="agreement after the venue-side disconnect")
    assert theirs["duplicate_user_refs"] == 0
    st = _status(b)["trading"]
    assert st["session"]["logins"] >= 2

    # the kill switch through the admin API: nothing left resting, the time it took reported, metrics say so
    auth = {"Authorization": f"Bearer {TOKEN}"}
    _wait(b, lambda: _quoting(b), 30, what="quotes before the kill switch")
    assert b.request("POST", "/admin/kill", headers={"Authorization": "Bearer wrong"})[0] == 401
    code, body = b.request("POST", "/admin/kill", headers=auth)
    assert code == 200 and json.loads(body)["tripped_now"] is True, body
    report = _wait(b, lambda: _status(b)["trading"]["kill_switch"]["last"], 30, what="the kill switch's report")
    assert report["reason"] == "admin" and report["cancels"] >= 1 and report["trigger_to_all_canceled_ms"] > 0
    assert venue.account_record()["open_orders"] == {}
    code, metrics = b.get("/metrics")
    assert "appliance_kill_switch 1.0" in metrics
    # (in this quiet market most orders follow order updates, not ticks: tick-to-trade may have no sample)
    assert re.search(r"^appliance_tick_to_trade_latency_seconds_count \d", metrics, re.M)
    assert re.search(r'^appliance_stage_latency_seconds_count\{stage="feed_decode"\} [1-9]', metrics, re.M)
    assert re.search(r'^appliance_stage_latency_seconds_count\{stage="send"\} [1-9]', metrics, re.M)
    assert re.search(r'^appliance_orders_total\{event="filled"\} [1-9]', metrics, re.M)
    assert b.request("POST", "/admin/resume", headers=auth)[0] == 200
    _wait(b, lambda: _quoting(b), 30, what="quotes after the kill switch is released")

    # clean stop: resting orders canceled before the logout
    b.signal(signal.SIGTERM)
    assert b.wait_exit(timeout=30) == 0, b.log()
    assert venue.account_record()["open_orders"] == {}

    # every order the journal holds was sent once
    records, report = read_journal(tmp_path / "orders.journal")
    assert report["bad_crc"] == 0
    urns = collections.Counter(oc.decode_inbound(r.payload)["user_ref_num"] for r in records
                               if r.kind == K_SENT and r.payload[:1] in (b"O", b"U"))
    assert urns and max(urns.values()) == 1
    assert venue.account_record()["duplicate_user_refs"] == 0


def _fix_agree(a, venue):
    """As _agree, for the FIX session: open orders by ClOrdID, positions, and both sides' MsgSeqNums."""
    t = _status(a).get("trading")
    if t is None or not (t["session"]["up"] and t["session"]["reconciled"]):
        return None
    mine = {"open_orders": {int(u): {k: o[k] for k in ("symbol", "side", "price", "leaves")}
                            for u, o in t["open_orders"].items()},
            "positions": {s: p for s, p in t["positions"].items() if p},
            "seqs": (t["session"]["next_expected_sequence"], t["session"]["next_sender_seq"]),
            "fills": t["orders"]["fills"]}
    r = venue.fix_record()
    theirs = {"open_orders": r["open_orders"], "positions": {s: p for s, p in r["positions"].items() if p},
              "seqs": (r["next_sender_seq"], r["next_target_seq"]), "record": r}
    same = all(mine[k] == theirs[k] for k in ("open_orders", "positions", "seqs"))
    return (mine, theirs) if same else None


def test_fix_session_sigkill_restart_and_venue_disconnect_rebuild_the_venues_record(fix_market, appliance,
                                                                                     tmp_path):
    venue, toml = fix_market
    a = appliance(toml).wait_ready(timeout=600)
    _wait(a, lambda: _quoting(a), 60, what="the market maker quoting over FIX")
    for px in (99_000, 101_000):
        _hit(venue, "S" if px < 100_000 else "B", px)
        _wait(a, lambda: _quoting(a), 30, what="quotes after a fill")

    # SIGKILL with a fill in flight, more fills while the appliance is dead
    _hit(venue, "B", 101_000)
    a.kill()
    _hit(venue, "S", 99_000)
    b = appliance(toml).wait_ready(timeout=600)
    mine, theirs = _wait(b, lambda: _fix_agree(b, venue), 60, what="the restarted appliance agreeing (FIX)")
    assert theirs["record"]["duplicate_cl_ord_ids"] == 0
    assert mine["fills"] >= 1

    # the venue drops the session while fills happen: the resend brings them
    _wait(b, lambda: _quoting(b), 30, what="quotes after the restart")
    _hit(venue, "S", 99_000)
    assert venue.disconnect_all() >= 1
    _hit(venue, "B", 101_000)
    mine, theirs = _wait(b, lambda: _fix_agree(b, venue) if _appliance_view(b)["fills"] > mine["fills"] else None,
                         60, what="agreement after the venue-side disconnect (FIX)")
    st = _status(b)["trading"]["session"]
    assert st["logins"] >= 2 and st["fix"]["resend_requests_sent"] >= 1
    assert theirs["record"]["duplicate_cl_ord_ids"] == 0

    # clean stop: resting orders canceled, then Logout
    b.signal(signal.SIGTERM)
    assert b.wait_exit(timeout=30) == 0, b.log()
    assert venue.fix_record()["open_orders"] == {}
    records, report = read_journal(tmp_path / "orders.journal")
    assert report["bad_crc"] == 0
    urns = collections.Counter(oc.decode_inbound(r.payload)["user_ref_num"] for r in records
                               if r.kind == K_SENT and r.payload[:1] in (b"O", b"U"))
    assert urns and max(urns.values()) == 1
