"""`appliance install --systemd --root DIR`: what lands where, with which modes, and what is never overwritten."""

import os
import shutil
import stat
from pathlib import Path

import pytest

from appliance.ops import install
from appliance.runtime.cpu import parse_cpulist

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
[process]
name = "installed"
[runtime]
layout = "fused"
ring_slots = 1048576
"""


@pytest.fixture
def stub_binary(tmp_path):
    """An executable standing in for the frozen binary (install only copies it)."""
    path = tmp_path / "dist" / "appliance"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\necho stub\n")
    path.chmod(0o755)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    return path


def run_install(capsys, *args):
    try:
        rc = install.main(["--systemd", *map(str, args)])
    except SystemExit as e:  # argparse and load_or_exit exit on bad usage or config
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_install_into_root(tmp_path, stub_binary, capsys):
    root = tmp_path / "root"
    cfg = tmp_path / "my.toml"
    cfg.write_text(CONFIG)
    rc, out, err = run_install(capsys, "--root", root, "--binary", stub_binary, "--config", cfg, "--cpus", "0-1,3")
    assert rc == 0, err

    binary = root / "usr/local/bin/appliance"
    assert binary.read_bytes() == stub_binary.read_bytes()
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    # The copy keeps the build's mtime (ls -l says when it was built).
    assert int(binary.stat().st_mtime) == 1_700_000_000

    unit = root / "etc/systemd/system/appliance.service"
    assert unit.read_text() == (ROOT / "systemd/appliance.service").read_text()
    dropin = (root / "etc/systemd/system/appliance.service.d/10-cpu.conf").read_text()
    assert "[Service]\nCPUAffinity=0-1 3\n" in dropin

    # vm.nr_hugepages is sized for the installed config's arena (a 1 Mi-slot ring needs many pages).
    from appliance.config import load_config
    from appliance.runtime.layout import compute_layout

    c = load_config(str(cfg))
    pages = compute_layout(c.hot_threads(), c.runtime.ring_slots, c.journal.ring_slots).hugepages
    assert pages > 1
    sysctl = (root / "etc/sysctl.d/60-appliance.conf").read_text()
    assert f"\nvm.nr_hugepages = {pages}\n" in sysctl
    assert sysctl.count("vm.nr_hugepages =") == 1

    config = root / "etc/appliance/appliance.toml"
    assert config.read_text() == CONFIG
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert (root / "etc/sysusers.d/appliance.conf").read_text() == (ROOT / "systemd/sysusers.d/appliance.conf").read_text()
    assert "systemctl enable --now appliance.service" in out


def test_user_created_and_config_shared_with_its_group(tmp_path, stub_binary, capsys):
    if os.geteuid() != 0 or not shutil.which("systemd-sysusers"):
        pytest.skip("needs root and systemd-sysusers (apt-get install systemd) to create the user in a root")
    root = tmp_path / "root"
    rc, out, err = run_install(capsys, "--root", root, "--binary", stub_binary)
    assert rc == 0, err
    users = {l.split(":")[0]: l.split(":") for l in (root / "etc/passwd").read_text().splitlines()}
    assert "appliance" in users, (root / "etc/passwd").read_text()
    assert users["appliance"][6] == "/usr/sbin/nologin"
    assert int(users["appliance"][2]) < 1000  # a system user
    gid = install.Installer(root, False).group_id("appliance")
    config = root / "etc/appliance/appliance.toml"
    assert (config.stat().st_uid, config.stat().st_gid) == (0, gid)
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o750
    # No --config: the reference config, every key at its default.
    assert config.read_text() == (ROOT / "config/appliance.toml").read_text()


def test_existing_config_is_never_overwritten(tmp_path, stub_binary, capsys):
    root = tmp_path / "root"
    mine = root / "etc/appliance/appliance.toml"
    mine.parent.mkdir(parents=True)
    mine.write_text("# the operator's\n")
    cfg = tmp_path / "new.toml"
    cfg.write_text(CONFIG)
    rc, out, err = run_install(capsys, "--root", root, "--binary", stub_binary, "--config", cfg)
    assert rc == 0, err
    assert mine.read_text() == "# the operator's\n"
    assert "never overwritten" in out and "not installed" in out
    # Everything else is replaced on a reinstall.
    unit = root / "etc/systemd/system/appliance.service"
    unit.write_text("stale")
    rc, out, err = run_install(capsys, "--root", root, "--binary", stub_binary, "--cpus", "1")
    assert rc == 0, err
    assert unit.read_text() == (ROOT / "systemd/appliance.service").read_text()
    assert "CPUAffinity=1\n" in (root / "etc/systemd/system/appliance.service.d/10-cpu.conf").read_text()


def test_default_cpus_are_every_online_cpu(tmp_path, stub_binary, capsys):
    root = tmp_path / "root"
    rc, out, err = run_install(capsys, "--root", root, "--binary", stub_binary)
    assert rc == 0, err
    line = next(l for l in (root / "etc/systemd/system/appliance.service.d/10-cpu.conf").read_text().splitlines()
                if l.startswith("CPUAffinity="))
    with open("/sys/devices/system/cpu/online") as f:
        online = parse_cpulist(f.read().strip())
    assert parse_cpulist(line.split("=", 1)[1].replace(" ", ",")) == online


def test_dry_run_changes_nothing(tmp_path, stub_binary, capsys):
    root = tmp_path / "root"
    rc, out, err = run_install(capsys, "--root", root, "--binary", stub_binary, "--dry-run")
    assert rc == 0, err
    assert not root.exists()
    assert f"would copy {stub_binary} -> {root}/usr/local/bin/appliance" in out
    assert f"would write {root}/etc/systemd/system/appliance.service" in out


@pytest.mark.parametrize("args,message", [
    ((), "pass --binary"),
    (("--binary", "/nonexistent/appliance"), "not an executable file"),
    (("--binary", "{stub}", "--config", "/nonexistent.toml"), "no such file"),
    (("--binary", "{stub}", "--cpus", "two"), "--cpus"),
])
def test_bad_usage_exits_2(tmp_path, stub_binary, capsys, args, message):
    args = [a.replace("{stub}", str(stub_binary)) for a in args]
    rc, out, err = run_install(capsys, "--root", tmp_path / "root", *args)
    assert rc == 2
    assert message in err
    assert not (tmp_path / "root").exists()


def test_bad_config_exits_2_before_writing(tmp_path, stub_binary, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[runtime]\nlayout = \"sideways\"\n")
    rc, out, err = run_install(capsys, "--root", tmp_path / "root", "--binary", stub_binary, "--config", cfg)
    assert rc == 2
    assert "runtime.layout" in err
    assert not (tmp_path / "root").exists()


def test_now_is_refused_with_root(tmp_path, stub_binary, capsys):
    rc, out, err = run_install(capsys, "--root", tmp_path / "root", "--binary", stub_binary, "--now")
    assert rc == 2
    assert "--now" in err


def test_install_files_ship_with_the_source_tree():
    # build.py freezes systemd/ and config/ into the binary; from source they are read from the repository.
    assert install.data_dir("systemd") == ROOT / "systemd"
    for rel in ("appliance.service", "sysusers.d/appliance.conf", "sysctl.d/60-appliance.conf",
                "appliance.service.d/10-cpu.conf"):
        assert (ROOT / "systemd" / rel).is_file(), rel


def test_dry_run_on_this_host_plans_the_real_paths(tmp_path, stub_binary, capsys):
    if Path("/etc/systemd/system/appliance.service").exists():
        pytest.skip("the appliance is installed on this host; the check below needs a host without it")
    rc, out, err = run_install(capsys, "--binary", stub_binary, "--dry-run")
    assert rc == 0, err
    assert f"would copy {stub_binary} -> /usr/local/bin/appliance" in out
    assert "would write /etc/systemd/system/appliance.service.d/10-cpu.conf" in out
    assert not Path("/etc/systemd/system/appliance.service").exists()
