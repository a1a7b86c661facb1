"""Shared fixtures: a real appliance process started from a config, with helpers to wait on it."""

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from appliance.runtime import cache as _kernel_cache
from tests.support import wait_for

# Before any test module imports a kernel: in-process kernels cache under the source fingerprint too, so
# a cached caller never runs stale code of a callee edited in another module.
_kernel_cache.configure()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """Kernel cache shared by every process a test starts (build.py points this at .cache/numba)."""
    return os.environ.get("APPLIANCE_CACHE_DIR") or str(tmp_path_factory.mktemp("numba-cache"))


class Appliance:
    """An `appliance run` subprocess: its log lines, its control-plane address, and HTTP helpers."""

    def __init__(self, config_path, env, args=()):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "run", "-c", str(config_path), *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.base = None

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_log(self, pattern: str, timeout: float = 60.0):
        rx = re.compile(pattern)

        def found():
            if self.proc.poll() is not None and not any(rx.search(l) for l in self.lines):
                pytest.fail(f"appliance exited with {self.proc.returncode} before logging {pattern!r}:\n{self.log()}")
            return next((m for m in map(rx.search, list(self.lines)) if m), None)

        return wait_for(found, timeout, what=f"log line {pattern!r}")

    def wait_ready(self, timeout: float = 120.0):
        m = self.wait_log(r"control plane listening on http://(\S+) ", timeout)
        self.base = f"http://{m.group(1)}"
        self.wait_log(r"\bready$", timeout)
        return self

    def get(self, path: str, timeout: float = 5.0):
        """(status, body) of a GET; errors with a status are returned, not raised."""
        return self.request("GET", path, timeout=timeout)

    def request(self, method: str, path: str, timeout: float = 5.0, headers=None):
        req = urllib.request.Request(self.base + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def appliance(tmp_path, cache_dir):
    """Start appliances from TOML text; every one still running at the end of the test is killed."""
    started = []

    def start(toml: str, extra_env=None, args=()):
        path = tmp_path / f"appliance-{len(started)}.toml"
        path.write_text(toml)
        env = dict(os.environ, APPLIANCE_CACHE_DIR=cache_dir, PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)
        env.update(extra_env or {})
        a = Appliance(path, env, args)
        a.config_path = path
        started.append(a)
        return a

    yield start
    for a in started:
        a.kill()
