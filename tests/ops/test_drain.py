"""`appliance drain` (the Kubernetes preStop hook) against a real appliance trading with the venue on loopback:
the kill switch goes on, every resting order is canceled at the venue, and drain returns only then."""

import json
import signal
import subprocess
import sys

import pytest

from tests.gateway.test_recovery import _market, _quoting, _status, _wait

pytestmark = pytest.mark.process


@pytest.fixture
def market(tmp_path):
    venue, toml = _market(tmp_path, "ouch")
    yield venue, toml
    venue.stop()


def _drain(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "appliance", "drain", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_drain_cancels_every_resting_order_before_it_returns(market, appliance):
    venue, toml = market
    a = appliance(toml).wait_ready(timeout=600)  # a cold kernel cache compiles the trading path first
    _wait(a, lambda: _quoting(a), 60, what="the market maker resting quotes at the venue")
    assert venue.account_record()["open_orders"], "nothing resting at the venue to drain"

    p = _drain("-c", str(a.config_path), "--url", a.base, "--timeout", "20")
    assert p.returncode == 0, p.stderr
    assert "no open orders" in p.stderr
    # Returned only once the venue had confirmed every cancel, and the appliance sends nothing new.
    assert venue.account_record()["open_orders"] == {}
    trading = _status(a)["trading"]
    assert trading["kill_switch"]["on"] is True
    assert json.loads(a.get("/status")[1])["trading"]["open_orders"] == {}

    a.signal(signal.SIGTERM)
    assert a.wait_exit(timeout=30) == 0, a.log()


def test_drain_says_when_no_appliance_answers(tmp_path):
    from tests.support import free_tcp_port

    p = _drain("--url", f"http://127.0.0.1:{free_tcp_port()}", "--timeout", "1")
    assert p.returncode == 3
    assert "no appliance answered" in p.stderr


def test_drain_of_an_appliance_without_trading_is_a_no_op(appliance):
    a = appliance('[process]\nname = "selftest"\n[runtime]\nlayout = "fused"\nidle = "yield"\n[control]\nport = 0\n'
                  ).wait_ready(timeout=600)
    p = _drain("--url", a.base, "--timeout", "1")
    assert p.returncode == 0, p.stderr
    assert "nothing to cancel" in p.stderr
    assert a.proc.poll() is None  # not signalled
