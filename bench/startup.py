"""Startup benchmark: the frozen binary's size, build time, and start-to-READY with a cold and a warm kernel cache.

Run from the repository root with `python3 build.py bench startup` (or `python bench/startup.py [--no-build]`).
Start-to-READY is the time from spawning `dist/appliance run` to its sd_notify READY=1 arriving on a
NOTIFY_SOCKET this script listens on: the moment systemd would call the service active. Cold: an empty
kernel cache (every hot loop compiled). Warm: the same cache again. Peers in the same run: the same
config started from source (`python -m appliance run`, its own warm cache) and the binary doing
nothing but unpack itself and print its help (the onefile floor). The last line is one JSON object.
"""

import argparse
import dataclasses
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.config import load_config, render_effective  # noqa: E402

BINARY = ROOT / "dist" / "appliance"
TARGET_WARM_READY_S = 2.0
READY_TIMEOUT_S = 900  # a cold start compiles every hot loop: minutes on a small VM
STOP_TIMEOUT_S = 30


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_config(base: str, tmp: Path) -> Path:
    """`base` with private ports and a scratch journal, so runs neither collide nor recover each other's orders."""
    cfg = load_config(base)
    r = dataclasses.replace
    cfg = r(cfg, control=r(cfg.control, port=0),
            feed=r(cfg.feed, port=free_port(socket.SOCK_DGRAM)),
            journal=r(cfg.journal, path=str(tmp / "orders.journal")))
    path = tmp / "startup.toml"
    path.write_text(render_effective(cfg))
    load_config(str(path))  # what we wrote must be what `run` accepts
    return path


def start_to_ready(cmd, env: dict, tmp: Path) -> float:
    """Seconds from spawn to READY=1 on our NOTIFY_SOCKET; then SIGTERM and require exit 0."""
    sock_path = tmp / "notify.sock"
    if sock_path.exists():
        sock_path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    env = dict(env, NOTIFY_SOCKET=str(sock_path))
    for journal in tmp.glob("orders.journal*"):
        journal.unlink()
    log = open(tmp / "run.log", "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = t0 + READY_TIMEOUT_S
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or proc.poll() is not None:
                raise RuntimeError(f"no READY=1 (exit {proc.poll()}); log: {(tmp / 'run.log').read_text()[-2000:]}")
            sock.settimeout(min(left, 1.0))
            try:
                msg = sock.recv(4096)
            except socket.timeout:
                continue
            if b"READY=1" in msg.split(b"\n"):
                ready = time.perf_counter() - t0
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        sock.close()
        log.close()
    if rc != 0:
        raise RuntimeError(f"exit status {rc} after SIGTERM; log: {(tmp / 'run.log').read_text()[-2000:]}")
    return ready


def seconds_of(cmd, env) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(c) for c in cmd], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def summary(xs) -> dict:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3),
            "runs": len(xs)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "demo.toml"),
                   help="config to start (default config/demo.toml: the trading path; no venue is needed for READY)")
    p.add_argument("--runs", type=int, default=5, help="warm starts of each kind (default 5)")
    p.add_argument("--no-build", action="store_true", help="measure the existing dist/appliance, do not rebuild it")
    p.add_argument("--no-cold", action="store_true", help="skip the cold-cache start (minutes)")
    args = p.parse_args(argv)

    build_s = None
    if not args.no_build:
        shutil.rmtree(ROOT / "build" / "pyinstaller", ignore_errors=True)  # time a build from scratch
        t0 = time.perf_counter()
        subprocess.run([sys.executable, ROOT / "build.py", "binary", "--no-smoke"], check=True, cwd=ROOT)
        build_s = time.perf_counter() - t0
        print(f"build: {build_s:.1f} s")
    if not BINARY.is_file():
        sys.exit(f"startup: no {BINARY}: run python3 build.py binary (or drop --no-build)")
    size = BINARY.stat().st_size
    print(f"binary: {size / 1e6:.1f} MB")

    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    with tempfile.TemporaryDirectory(prefix="appliance-startup-") as t:
        tmp = Path(t)
        cfg = bench_config(args.config, tmp)
        run_cmd = [BINARY, "run", "-c", cfg]
        cache = tmp / "kernel-cache"
        benv = dict(env, APPLIANCE_CACHE_DIR=str(cache))

        cold = None
        if not args.no_cold:
            cold = start_to_ready(run_cmd, benv, tmp)
            print(f"cold start to READY: {cold:.2f} s")
        else:
            subprocess.run([str(BINARY), "warmup", "-c", str(cfg)], env=benv, check=True, stdout=subprocess.DEVNULL)

        warm, source, unpack = [], [], []
        source_cmd = [sys.executable, "-m", "appliance", "run", "-c", cfg]
        senv = dict(env, PYTHONPATH=str(ROOT))
        senv.setdefault("APPLIANCE_CACHE_DIR", str(ROOT / ".cache" / "numba"))
        subprocess.run([sys.executable, "-m", "appliance", "warmup", "-c", str(cfg)], env=senv, check=True,
                       stdout=subprocess.DEVNULL, cwd=ROOT)
        for i in range(args.runs):  # interleaved, so both kinds see the same host
            warm.append(start_to_ready(run_cmd, benv, tmp))
            source.append(start_to_ready(source_cmd, senv, tmp))
            unpack.append(seconds_of([BINARY, "--help"], env))
            print(f"run {i + 1}: binary warm {warm[-1]:.2f} s, source warm {source[-1]:.2f} s, "
                  f"binary --help {unpack[-1]:.2f} s")

    w, s, u = summary(warm), summary(source), summary(unpack)
    out = {
        "bench": "startup",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
        "config": os.path.relpath(args.config, ROOT),
        "binary_bytes": size,
        "build_seconds": None if build_s is None else round(build_s, 1),
        "cold_ready_s": None if cold is None else round(cold, 2),
        "warm_ready_s": w,
        "source_warm_ready_s": s,
        "binary_help_s": u,
        "ratios": {"binary_over_source_warm": round(w["median"] / s["median"], 2),
                   "unpack_share_of_warm": round(u["median"] / w["median"], 2)},
        "targets": {"warm_ready_s": TARGET_WARM_READY_S},
        "pass": w["median"] <= TARGET_WARM_READY_S,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
