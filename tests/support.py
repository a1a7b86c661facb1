"""Helpers every test tier shares: wait on a condition with a deadline, never sleep and hope."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest


def require_tool(tool: str, why_missing: str) -> str:
    """The tool's path on PATH; otherwise the test skips with `why_missing` (what it is for, how to install it)."""
    path = shutil.which(tool)
    if not path:
        pytest.skip(why_missing)
    return path


def wait_for(predicate, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value or `timeout` passes (then fail the test)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing is bound to right now, for configs that need a fixed port number."""
    from appliance.runtime.net import free_port  # not at import: conftest sets the kernel cache up first

    return free_port("udp", host)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    from appliance.runtime.net import free_port

    return free_port("tcp", host)


_ITCHFEED_COUNTS = (
    "import collections, json, sys\n"
    "import itch\n"
    "assert not itch.USING_CPP_BACKEND\n"
    "from itch.parser import MessageParser\n"
    "c = collections.Counter()\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    for m in MessageParser().parse_file(f):\n"
    "        c[m.message_type.decode()] += 1\n"
    "print(json.dumps(c))\n"
)


def itchfeed_counts(path) -> dict[str, int]:
    """Per-type message counts of an ITCH day file as itchfeed (PyPI) parses it, in a child process with
    ITCH_NO_CPP=1 so that it cannot borrow a C++ parser: an implementation independent of ours."""
    out = subprocess.run([sys.executable, "-c", _ITCHFEED_COUNTS, str(path)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "ITCH_NO_CPP": "1"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def trading_config(tmp_path, feed_port: int, retrans_port: int, order_port: int, strategy: str, *, name: str,
                   protocol: str = "ouch") -> str:
    """A fused appliance trading AAA and BBB against a loopback venue, journal in tmp_path; `strategy` is the
    body of its [strategy] table (and any table that follows it, such as [strategy.params])."""
    return f"""
[process]
name = "{name}"
[runtime]
layout = "fused"
idle = "yield"
[control]
port = 0
[feed]
source = "moldudp64"
port = {feed_port}
retransmit_port = {retrans_port}
symbols = ["AAA", "BBB"]
[book]
max_orders = 65536
max_symbols = 8
[strategy]
{strategy.strip()}
[risk]
kill_on_feed_loss_ms = 0
kill_on_session_loss_ms = 0
[gateway]
protocol = "{protocol}"
port = {order_port}
reconnect_min_ms = 20
[journal]
path = "{tmp_path / 'orders.journal'}"
fsync = "none"
"""
