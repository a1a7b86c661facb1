"""`appliance venue --config FILE` as a process: starts from TOML, logs where it listens, stops on SIGTERM;
a bad [venue] key exits with status 2 naming the key path before anything starts."""

import os
import signal
import subprocess
import sys
import threading

from tests.support import free_udp_port, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(tmp_path, body):
    cfg = tmp_path / "venue.toml"
    cfg.write_text(body)
    return subprocess.Popen([sys.executable, "-m", "appliance", "venue", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_venue_process_starts_from_toml_and_stops_on_sigterm(tmp_path):
    proc = _run(tmp_path, f"""
[venue]
symbols = ["AAA", "BBB"]
rate = 1000
feed_port = {free_udp_port()}
retransmit_port = 0
ouch_port = 0
fix_port = 0
state_dir = "{tmp_path / 'state'}"
""")
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("venue: 2 symbols" in ln for ln in lines) or proc.poll() is not None, 180,
                 what="the venue's listening line")
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    text = "".join(lines)
    assert "OUCH on 127.0.0.1:" in text and "FIX on 127.0.0.1:" in text
    assert "'messages'" in text  # the final stats line


def test_bad_venue_key_exits_2_naming_the_key(tmp_path):
    proc = _run(tmp_path, "[venue]\nrate = -5\nfault_drop = 2.0\n")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "venue.rate" in out and "venue.fault_drop" in out
