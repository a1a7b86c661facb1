"""The systemd unit: systemd-analyze verify and security on the files, then the frozen binary as a real service.

The last test boots a Debian under systemd-nspawn, installs the binary into it with
`appliance install --systemd --root`, and drives the service with systemctl: started (Type=notify),
/readyz answered, reloaded, stopped cleanly, started again, and restarted by the watchdog when a
hot thread is made to stall.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from appliance.ops import install
from tests.deploy.nspawn import Container, copy_rootfs, poll, require_root_and_tools
from tests.support import free_tcp_port, require_tool

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "systemd"
UNIT = "appliance.service"
MAX_EXPOSURE = 2.5


def analyze(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    tool = require_tool("systemd-analyze", "not installed: systemd-analyze (apt-get install systemd)")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def stage_unit(tmp_path: Path, extra_dropin: str = "") -> Path:
    """The unit and its drop-ins in a directory of their own, the binary path pointed at a stub.

    verify checks that every Exec*= command exists; the unit names /usr/local/bin/appliance, which
    this host need not have, so the staged copy names a stub executable instead. Nothing else changes.
    """
    stage = tmp_path / "units"
    (stage / f"{UNIT}.d").mkdir(parents=True)
    stub = tmp_path / "bin" / "appliance"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = (SYSTEMD / UNIT).read_text()
    assert text.count("/usr/local/bin/appliance") >= 3  # ExecStartPre x2 and ExecStart
    (stage / UNIT).write_text(text.replace("/usr/local/bin/appliance", str(stub)))
    (stage / f"{UNIT}.d" / "10-cpu.conf").write_text(install.cpu_dropin([0, 1], "test"))
    if extra_dropin:
        (stage / f"{UNIT}.d" / "90-extra.conf").write_text(extra_dropin)
    return stage


def verify_complaints(stage: Path) -> tuple[int, list[str]]:
    """verify's exit status and every output line about our unit (verify only warns on bad keys)."""
    # The trailing colon keeps the default search path after ours, for the targets the unit names.
    p = analyze("verify", UNIT, env={"SYSTEMD_UNIT_PATH": f"{stage}:"}, cwd=stage)
    lines = (p.stdout + p.stderr).splitlines()
    return p.returncode, [l for l in lines if "appliance" in l or str(stage) in l]


def test_verify_reports_nothing_about_the_unit(tmp_path):
    if not Path("/bin/kill").exists():
        pytest.skip("not installed: /bin/kill, which ExecReload= runs (apt-get install procps)")
    rc, complaints = verify_complaints(stage_unit(tmp_path))
    assert complaints == [] and rc == 0, "\n".join(complaints)


def test_verify_check_catches_a_bad_key(tmp_path):
    # The check above must be able to fail: a misspelt key in a drop-in is only a warning, exit 0.
    rc, complaints = verify_complaints(stage_unit(tmp_path, "[Service]\nCPUAffinty=1\n"))
    assert any("Unknown key" in l and "CPUAffinty" in l for l in complaints), complaints


def exposure(stage: Path) -> tuple[float, str]:
    p = analyze("security", "--offline=true", "--no-pager", UNIT, env={"SYSTEMD_UNIT_PATH": f"{stage}:"}, cwd=stage)
    m = re.search(r"Overall exposure level for appliance\.service: (\d+\.\d)", p.stdout)
    assert m, f"no exposure level in the output ({p.returncode}):\n{p.stdout[-2000:]}{p.stderr[-2000:]}"
    return float(m.group(1)), p.stdout


def test_security_exposure_at_most_2_5(tmp_path):
    level, report = exposure(stage_unit(tmp_path))
    assert level <= MAX_EXPOSURE, report


def test_security_check_sees_the_hardening(tmp_path):
    # The score must come from this unit's settings: undoing the hardening in a drop-in raises it.
    level, _ = exposure(stage_unit(tmp_path))
    weak = ("[Service]\nProtectSystem=no\nPrivateTmp=no\nCapabilityBoundingSet=\nAmbientCapabilities=\n"
            "SystemCallFilter=\nRestrictAddressFamilies=\nProtectKernelTunables=no\nUser=root\n")
    weakened, report = exposure(stage_unit(tmp_path / "weak", weak))
    assert weakened > level + 2, report


def test_unit_names_what_the_appliance_needs():
    # What the rest of the project relies on, read from the unit as systemd would parse it.
    text = (SYSTEMD / UNIT).read_text()
    keys = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            keys.setdefault(k.strip(), []).append(v.strip())
    assert keys["Type"] == ["notify"]
    assert keys["NotifyAccess"] == ["all"]  # the onefile bootloader is the main PID, Python its child
    assert keys["UnsetEnvironment"] == ["WATCHDOG_PID"]
    assert keys["KillMode"] == ["mixed"]
    assert [v.split()[1] for v in keys["ExecStartPre"]] == ["doctor", "warmup"]
    assert keys["ExecStart"][0].split()[1] == "run"
    assert "MemoryDenyWriteExecute" not in keys  # numba's JIT needs W+X memory
    assert "CPUAffinity" not in keys  # per host, in 10-cpu.conf: hot and control cores together
    assert set(keys["CapabilityBoundingSet"][0].split()) == {"CAP_IPC_LOCK", "CAP_SYS_NICE"}
    assert keys["StateDirectory"] == ["appliance"] and keys["CacheDirectory"] == ["appliance"]
    assert "APPLIANCE_CACHE_DIR=/var/cache/appliance" in keys["Environment"]


# --- the frozen binary under a real systemd ------------------------------------------------------

SERVICE_CONFIG = """\
# A light config for a 2-vCPU test host: one hot thread that yields, synthetic events, no venue.
[process]
name = "nspawn"
[runtime]
layout = "fused"
idle = "yield"
stop_timeout_s = 5.0
[feed]
source = "synthetic"
[synthetic]
rate = 10000
[gateway]
protocol = "none"
[control]
host = "127.0.0.1"
port = {port}
admin_token_file = "/etc/appliance/admin-token"
fault_injection = true
[health]
heartbeat_timeout_ms = 300
"""
TOKEN = "nspawn-test-token"


def http(method: str, url: str, token: str = "", timeout: float = 5.0) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def prepare_binary(frozen_binary: Path, tmp_path: Path) -> Path:
    """A copy named `appliance`, as installed (the kernel cache is keyed on the build id inside it)."""
    dest = tmp_path / "bin" / "appliance"
    dest.parent.mkdir()
    shutil.copy2(frozen_binary, dest)
    return dest


def test_frozen_binary_installs_itself(frozen_binary, tmp_path):
    # The unit, drop-ins and reference config travel inside the binary (build.py FROZEN_DATA).
    root = tmp_path / "root"
    p = subprocess.run([str(frozen_binary), "install", "--systemd", "--root", str(root), "--cpus", "0"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (root / "etc/systemd/system" / UNIT).read_text() == (SYSTEMD / UNIT).read_text()
    assert (root / "etc/appliance/appliance.toml").read_text() == (ROOT / "config/appliance.toml").read_text()
    installed = root / "usr/local/bin/appliance"
    assert installed.read_bytes() == frozen_binary.read_bytes()  # default --binary: itself
    assert installed.stat().st_mtime_ns == frozen_binary.stat().st_mtime_ns


@pytest.mark.process
def test_frozen_binary_as_a_notify_service_with_watchdog(frozen_binary, debian_rootfs, tmp_path):
    require_root_and_tools("systemd-nspawn", "nsenter", "systemd-sysusers")
    binary = prepare_binary(frozen_binary, tmp_path)
    port = free_tcp_port()
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(SERVICE_CONFIG.format(port=port))

    # Warm the kernel cache on the host with the same binary: a cold compile inside would take minutes.
    # The cache is keyed on the binary, so the shared one (build.py's) is safe to reuse across runs.
    cache = Path(os.environ.get("APPLIANCE_CACHE_DIR") or ROOT / ".cache" / "numba")
    p = subprocess.run([str(binary), "warmup", "-c", str(cfg), "--json"], capture_output=True, text=True,
                       timeout=900, env={**os.environ, "APPLIANCE_CACHE_DIR": str(cache)})
    assert p.returncode == 0, p.stderr[-3000:]

    root = copy_rootfs(debian_rootfs, tmp_path / "rootfs")
    # Installed by this tree's installer (the binary's own is tested above), so the unit under test is
    # the one in systemd/ even when the binary was built from an older tree.
    p = subprocess.run([sys.executable, "-m", "appliance", "install", "--systemd", "--root", str(root),
                        "--binary", str(binary), "--config", str(cfg)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    gid = install.Installer(root, False).group_id("appliance")
    uid = int(next(l for l in (root / "etc/passwd").read_text().splitlines() if l.startswith("appliance:")).split(":")[2])
    token = root / "etc/appliance/admin-token"
    token.write_text(TOKEN + "\n")
    os.chown(token, 0, gid)
    token.chmod(0o640)
    shutil.copytree(cache, root / "var/cache/appliance", symlinks=True)
    for d, _, files in os.walk(root / "var/cache/appliance"):
        for name in [d, *(os.path.join(d, f) for f in files)]:
            os.chown(name, uid, gid)

    base = f"http://127.0.0.1:{port}"
    with Container(root, tmp_path / "nspawn.log") as box:
        def state():
            return box.show(UNIT, "ActiveState", "SubState", "Result", "MainPID", "NRestarts", "ExecMainStatus")

        def wait_active(what, timeout=300, not_pid=None):
            def active():
                s = state()
                if s["ActiveState"] == "failed" or (s["ActiveState"] == "inactive" and s["Result"] != "success"):
                    pytest.fail(f"{UNIT} failed while {what}: {s}\n{box.journal(UNIT)}")
                return s if s["ActiveState"] == "active" and s["MainPID"] not in ("0", not_pid) else None
            return poll(active, timeout, f"{UNIT} active ({what})")

        try:
            # The installed unit verifies in the real Debian root too (binary, /bin/kill and user present).
            p = box.sh(f"systemd-analyze verify {UNIT}", check=False)
            assert p.returncode == 0 and "appliance" not in p.stdout + p.stderr, p.stdout + p.stderr

            box.sh(f"systemctl start --no-block {UNIT}")
            s = wait_active("first start")
            # systemd in the container parsed the unit without complaint.
            pid1 = box.sh("journalctl -b _PID=1 --no-pager -o cat", check=False).stdout
            assert not [l for l in pid1.splitlines() if UNIT in l and ("nknown" in l or "gnoring" in l)], pid1
            assert s["NRestarts"] == "0"
            status, body = poll(lambda: (r := http("GET", f"{base}/readyz"))[0] == 200 and r, 60, "/readyz 200")
            assert body.strip() == "ready"
            # It runs as the unprivileged user with only the two capabilities, everywhere in the tree.
            main = int(s["MainPID"])
            procs = box.sh(f"cat /sys/fs/cgroup/systemd/system.slice/{UNIT}/cgroup.procs 2>/dev/null || "
                           f"cat /sys/fs/cgroup/system.slice/{UNIT}/cgroup.procs").stdout.split()
            assert str(main) in procs and len(procs) >= 2, procs  # bootloader + Python child
            for pid in procs:
                st = dict(l.split(":\t", 1) for l in box.sh(f"cat /proc/{pid}/status").stdout.splitlines() if ":\t" in l)
                assert st["Uid"].split()[0] == str(uid), st["Uid"]
                assert int(st["CapEff"], 16) == (1 << 14) | (1 << 23), st["CapEff"]  # CAP_IPC_LOCK, CAP_SYS_NICE
            status_json = json.loads(http("GET", f"{base}/status")[1])
            assert status_json, status_json

            # ExecReload: SIGHUP through the bootloader to the child, which re-reads the config.
            box.sh(f"systemctl reload {UNIT}", timeout=60)
            poll(lambda: "config reloaded from /etc/appliance/appliance.toml" in box.journal(UNIT), 30, "reload logged")
            assert state()["MainPID"] == str(main)

            # A clean stop: SIGTERM, STOPPING=1, hot threads joined, exit 0.
            box.sh(f"systemctl stop {UNIT}", timeout=90)
            s = state()
            assert (s["ActiveState"], s["Result"], s["ExecMainStatus"]) == ("inactive", "success", "0"), s
            assert "stopped cleanly" in box.journal(UNIT)
            assert http("GET", f"{base}/readyz")[0] == 0  # nothing listens any more

            # Start again, stall the hot thread: WATCHDOG=1 is withheld, systemd kills and restarts it.
            box.sh(f"systemctl start --no-block {UNIT}")
            s = wait_active("second start")
            before = s["MainPID"]
            restarts = int(s["NRestarts"])
            poll(lambda: http("GET", f"{base}/readyz")[0] == 200, 60, "/readyz 200 after the restart")
            # While every heartbeat advances, WATCHDOG=1 arrives (systemd stamps each one): twice, so the
            # restart below is the stall's doing and not a watchdog that was never fed.
            stamp = int(box.show(UNIT, "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"])
            for _ in range(2):
                stamp = poll(lambda: (t := int(box.show(UNIT, "WatchdogTimestampMonotonic")
                                            ["WatchdogTimestampMonotonic"])) > stamp and t, 15, "a WATCHDOG=1 ping")
            assert state()["MainPID"] == before
            assert http("POST", f"{base}/admin/stall?thread=fused&on=1")[0] == 401  # the token is required
            code, body = http("POST", f"{base}/admin/stall?thread=fused&on=1", TOKEN)
            assert code == 200, body
            poll(lambda: "Watchdog timeout" in box.journal(UNIT), 30, "systemd's watchdog to fire")
            s = wait_active("restart after the watchdog", not_pid=before)
            assert int(s["NRestarts"]) == restarts + 1, s
            log = box.journal(UNIT)
            assert "Failed with result 'watchdog'" in log, log
            assert "withholding the watchdog" in log, log
            poll(lambda: http("GET", f"{base}/readyz")[0] == 200, 60, "/readyz 200 from the restarted process")
            box.sh(f"systemctl stop {UNIT}", timeout=90)
        except BaseException:
            print(box.journal(UNIT, 400))
            raise
