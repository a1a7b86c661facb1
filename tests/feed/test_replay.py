"""Day-file replay: full speed and paced, through the CLI, with gzip and a truncated tail."""

import gzip
import json
import subprocess
import sys
import time

import numpy as np

from appliance.feed import itch_descriptor as d
from appliance.feed.replay import replay

SEC = 1_000_000_000


def day(msgs):
    return b"".join(len(m).to_bytes(2, "big") + m for m in msgs)


def script(t0=34_200 * SEC, step=0):
    """A small session: directory, a few orders and an execution, timestamps `step` ns apart."""
    msgs = [("S", dict(event_code="O")), ("R", dict(locate=1, stock="AAPL")), ("R", dict(locate=2, stock="MSFT")),
            ("A", dict(locate=1, ref=1, side="B", shares=100, stock="AAPL", price=150_0000)),
            ("A", dict(locate=1, ref=2, side="S", shares=300, stock="AAPL", price=150_0100)),
            ("F", dict(locate=2, ref=3, side="B", shares=10, stock="MSFT", price=300_0000, mpid="GSCO")),
            ("E", dict(locate=1, ref=2, shares=100, match=1)),
            ("S", dict(event_code="C"))]
    return day(d.encode(t, timestamp=t0 + i * step, **kw) for i, (t, kw) in enumerate(msgs))


def test_full_speed_counts_types_and_books():
    res = replay(np.frombuffer(script(), dtype=np.uint8)).to_dict()
    assert res["messages"] == 8
    assert res["by_type"] == {"system_event": 2, "stock_directory": 2, "add": 2, "add_mpid": 1, "executed": 1}
    assert res["book"]["top"]["AAPL"] == {"bid": 150.0, "bid_size": 100, "ask": 150.01, "ask_size": 200}
    assert res["book"]["top"]["MSFT"]["bid_size"] == 10
    assert res["malformed"] == {} and res["truncated_tail_bytes"] == 0


def test_paced_replay_follows_the_timestamps():
    buf = np.frombuffer(script(step=SEC // 20), dtype=np.uint8)  # 7 gaps of 50 ms = 350 ms of market time
    replay(buf[:64], speed=1.0)  # compile outside the timing
    t0 = time.monotonic()
    res = replay(buf, speed=1.0)
    assert time.monotonic() - t0 >= 0.35 and res.stats["messages"] == 8
    fast = replay(buf, speed=1000.0)  # same books, whatever the pace (no upper time bound: the host is shared)
    assert fast.stats == res.stats and fast.bbo == res.bbo


def test_cli_json_on_gzipped_file_with_truncated_tail(tmp_path):
    path = tmp_path / "01022026.NASDAQ_ITCH50.gz"
    path.write_bytes(gzip.compress(script() + b"\x00\x24A\x00"))  # a 36-byte Add cut after 2 bytes
    out = subprocess.run([sys.executable, "-m", "appliance", "replay", str(path), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["messages"] == 8 and res["truncated_tail_bytes"] == 4
    assert res["malformed"] == {"truncated": 1}


def test_cli_report_and_missing_file(tmp_path):
    path = tmp_path / "day.itch"
    path.write_bytes(script())
    out = subprocess.run([sys.executable, "-m", "appliance", "replay", str(path), "--symbols", "MSFT"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "add_mpid" in out.stdout and "MSFT" in out.stdout and "AAPL" not in out.stdout.split("books:")[1]
    missing = subprocess.run([sys.executable, "-m", "appliance", "replay", str(tmp_path / "nope")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no such file" in missing.stderr
