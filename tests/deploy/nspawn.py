"""A real systemd to test the unit under: a Debian rootfs (debootstrap, cached) booted with systemd-nspawn.

The host need not run systemd. The container shares the host's network (no --private-network), so
the appliance's HTTP port is reached from the test on 127.0.0.1; commands run inside it through
nsenter into its PID 1's namespaces (machinectl needs registration with a host systemd).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support import wait_for

SUITE = "bookworm"
MIRROR = os.environ.get("APPLIANCE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# procps: /bin/kill for ExecReload; the rest is what boots.
PACKAGES = "systemd,systemd-sysv,dbus,procps"
COMPLETE = ".appliance-rootfs-complete"


def require_root_and_tools(*tools: str) -> None:
    """Skip, naming what is missing, unless running as root with every tool on PATH."""
    if os.geteuid() != 0:
        pytest.skip("needs root (debootstrap and systemd-nspawn); .ci/run runs these tests as root")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pkgs = {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container", "nsenter": "util-linux",
                "systemd-sysusers": "systemd", "curl": "curl"}
        pytest.skip("not installed: " + ", ".join(f"{t} (apt-get install {pkgs.get(t, t)})" for t in missing))


def debian_rootfs(cache: Path, timeout: float = 900) -> Path:
    """A minimal Debian with systemd under `cache`, made once by debootstrap (about a minute) and reused."""
    rootfs = cache / f"{SUITE}-minbase"
    if (rootfs / COMPLETE).exists():
        return rootfs
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / f"{SUITE}-minbase.partial"
    shutil.rmtree(work, ignore_errors=True)
    cmd = ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(work), MIRROR]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        shutil.rmtree(work, ignore_errors=True)
        pytest.skip(f"debootstrap from {MIRROR} took over {timeout:.0f} s (slow or no network to the mirror)")
    if p.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        # Without the mirror there is nothing to boot: a host fact, not a defect of the unit.
        if any(s in "\n".join(tail) for s in ("Failed getting release file", "Temporary failure", "Could not resolve")):
            pytest.skip(f"debootstrap cannot reach {MIRROR}: {' | '.join(tail)}")
        pytest.fail(f"debootstrap failed ({p.returncode}):\n" + "\n".join(tail))
    (work / COMPLETE).write_text(" ".join(cmd) + "\n")
    shutil.rmtree(rootfs, ignore_errors=True)
    os.rename(work, rootfs)
    return rootfs


def copy_rootfs(src: Path, dest: Path) -> Path:
    """A private copy to install into and boot (the cached one stays clean)."""
    subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dest)], check=True, timeout=300)
    return dest


class Container:
    """One booted container: start() boots it, sh() runs a command inside, stop() always tears it down."""

    def __init__(self, root: Path, log_path: Path, binds_ro: tuple = (), binds: tuple = ()):
        self.root = root
        self.log_path = log_path
        self.binds_ro = binds_ro
        self.binds = binds
        self.proc: subprocess.Popen | None = None
        self.leader: int | None = None

    def start(self, timeout: float = 60) -> "Container":
        # CAP_IPC_LOCK is not in nspawn's default set, and without it nspawn's own seccomp filter also
        # refuses mlock: the unit grants it to the appliance, so the container must have it to give.
        cmd = ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--console=passive",
               "--capability=CAP_IPC_LOCK", "--machine", f"appliance-test-{os.getpid()}", "-D", str(self.root)]
        cmd += [f"--bind-ro={b}" for b in self.binds_ro] + [f"--bind={b}" for b in self.binds]
        self._log = open(self.log_path, "w")
        # Its own process group: teardown can reach everything nspawn started, and nothing else.
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.leader = wait_for(self._find_leader, timeout, 0.05, "the container's PID 1")
            state = wait_for(self._booted, timeout, 0.2, "the container's systemd to finish booting")
            if state not in ("running", "degraded"):
                failed = self.sh("systemctl --failed --no-pager", check=False).stdout
                pytest.fail(f"container booted into state {state!r}:\n{failed}")
        except BaseException:
            self.stop()
            raise
        return self

    def _find_leader(self) -> int | None:
        if self.proc.poll() is not None:
            pytest.fail(f"systemd-nspawn exited {self.proc.returncode}:\n{self.log()}")
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        for pid in children:
            try:
                ns = [l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("NSpid:")]
            except OSError:
                continue
            if ns and ns[0].split()[-1] == "1" and len(ns[0].split()) > 2:
                return int(pid)
        return None

    def _booted(self) -> str | None:
        # "offline" until PID 1 listens on its socket, "starting" until boot is done; the rest is final.
        p = self.sh("systemctl is-system-running", timeout=10, check=False)
        state = p.stdout.strip()
        return None if state in ("", "offline", "initializing", "starting") else state

    def sh(self, command: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """Run a shell command inside the container (all its namespaces, its root)."""
        assert self.leader, "container not started"
        p = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "/bin/sh", "-c", command],
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            pytest.fail(f"`{command}` in the container exited {p.returncode}:\n{p.stdout}{p.stderr}")
        return p

    def show(self, unit: str, *props: str) -> dict:
        """`systemctl show` properties of a unit inside the container."""
        out = self.sh(f"systemctl show {unit} --property={','.join(props)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, lines: int = 200) -> str:
        return self.sh(f"journalctl -u {unit} --no-pager -o cat -n {lines}", check=False).stdout

    def log(self) -> str:
        try:
            return self.log_path.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> None:
        """Power the container off (SIGTERM to nspawn = orderly shutdown), else kill its process group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        self.proc = None

    def __enter__(self) -> "Container":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def poll(predicate, timeout: float, what: str, interval: float = 0.25):
    """wait_for with a slower default interval (each probe is a process spawned into the container)."""
    return wait_for(predicate, timeout, interval, what)
