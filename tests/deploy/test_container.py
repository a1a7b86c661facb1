"""The container image: built with podman from the frozen binary (FROM scratch), run non-root on a read-only root.

Needs root and podman (Debian: podman, runc; .ci/run installs them when it runs as root); skips saying
which is missing. The kernel cache is warmed on the host with the same binary and mounted into the
container, as an initContainer or ExecStartPre would leave it.
"""

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.deploy.binary import ROOT
from tests.support import free_tcp_port, require_tool

TAG = "localhost/appliance:pytest"
PODMAN_RUN = ["podman", "run", "--runtime", "runc", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
APP_UID = 65532
READY_TIMEOUT_S = 180

pytestmark = pytest.mark.process


def _require_podman():
    if os.geteuid() != 0:
        pytest.skip("podman tests run as root (CI does); this is not root")
    for tool in ("podman", "runc"):
        require_tool(tool, f"{tool} is not installed (Debian: apt-get install podman runc; .ci/run does as root)")


@pytest.fixture(scope="module")
def image(request):
    _require_podman()  # before the binary: no minute of building only to skip
    binary = request.getfixturevalue("frozen_binary")
    p = subprocess.run([str(ROOT / "container" / "build.sh"), TAG], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, BINARY=str(binary)))
    assert p.returncode == 0, f"container/build.sh failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    yield TAG
    subprocess.run(["podman", "rmi", "-f", TAG], capture_output=True, timeout=120)


def _inspect(kind: str, name: str) -> dict:
    out = subprocess.run(["podman", kind, "inspect", name], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)[0]


def test_image_is_scratch_nonroot_and_holds_only_the_binary_and_its_libc(image):
    info = _inspect("image", image)
    assert info["Config"]["User"] == f"{APP_UID}:{APP_UID}"
    assert info["Config"]["Entrypoint"] == ["/appliance"]
    # FROM scratch: the image's layers are only its own two COPYs (root-owned files, the user's state
    # directories); any base image would add layers of its own.
    assert len(info["RootFS"]["Layers"]) == 2, info["RootFS"]["Layers"]
    history = subprocess.run(["podman", "history", "--no-trunc", "--format", "{{.Size}} {{.CreatedBy}}", image],
                             capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
    with_content = [h for h in history if not h.startswith("0 B")]
    assert len(with_content) == 2 and all("COPY" in h for h in with_content), history


def test_version_runs_frozen_on_a_read_only_root(image):
    p = subprocess.run(PODMAN_RUN + ["--rm", "--read-only", "--network", "none", image, "version", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout.strip().splitlines()[-1])
    assert info["frozen"] is True


def _get(url: str, timeout: float = 2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return None, ""


def test_appliance_runs_nonroot_read_only_reaches_ready_and_stops_cleanly(image, frozen_binary, tmp_path):
    binary = frozen_binary
    port = free_tcp_port()
    cfg = tmp_path / "appliance.toml"
    cfg.write_text(f"""
[process]
name = "container-test"
[runtime]
layout = "fused"
idle = "yield"
[control]
host = "127.0.0.1"
port = {port}
[memory]
lock = false
""")
    cache = tmp_path / "cache"
    cache.mkdir()
    # Warm the cache on the host with the very build the image carries (keyed on the build id inside it).
    w = subprocess.run([str(binary), "warmup", "-c", str(cfg), "--json"], capture_output=True, text=True,
                       env=dict(os.environ, APPLIANCE_CACHE_DIR=str(cache)), timeout=900)
    assert w.returncode == 0 and json.loads(w.stdout)["cache_dir"] == str(cache), w.stdout + w.stderr
    warmed = sorted(p.name for p in (cache / "frozen").iterdir())
    subprocess.run(["chown", "-R", f"{APP_UID}:{APP_UID}", str(cache)], check=True)
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, APP_UID, APP_UID)

    name = f"appliance-pytest-{os.getpid()}"
    run = subprocess.run(PODMAN_RUN + [
        "-d", "--name", name, "--read-only", "--network", "host",
        "-v", f"{cfg}:/etc/appliance/appliance.toml:ro", "-v", f"{cache}:/var/cache/appliance",
        "-v", f"{state}:/var/lib/appliance", image], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        status = None
        while time.monotonic() < deadline:
            status, _ = _get(f"http://127.0.0.1:{port}/readyz")
            if status == 200:
                break
            if _inspect("container", name)["State"]["Status"] != "running":
                break
            time.sleep(0.2)
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True, timeout=60)
        assert status == 200, f"/readyz never answered 200:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"

        info = _inspect("container", name)
        assert info["HostConfig"]["ReadonlyRootfs"] is True
        pid = info["State"]["Pid"]
        uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
        assert uids == [str(APP_UID)] * 4, f"container process runs as {uids}"
        root_mount = next(line for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                          if line.split()[4] == "/")
        assert "ro" in root_mount.split()[5].split(","), root_mount
        code, body = _get(f"http://127.0.0.1:{port}/status")
        assert code == 200 and json.loads(body)["ready"] is True
        # The journal went to the state volume, the only place the appliance may write besides /tmp and the cache.
        assert (state / "orders.journal").exists() or not json.loads(body).get("trading")

        stop = subprocess.run(["podman", "stop", "-t", "20", name], capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, stop.stderr
        assert _inspect("container", name)["State"]["ExitCode"] == 0
        # The warm cache served the container: no kernels were compiled under another build id.
        assert sorted(p.name for p in (cache / "frozen").iterdir()) == warmed
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, timeout=60)
