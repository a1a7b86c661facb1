"""`appliance warmup`: compile every hot loop a config needs into the kernel cache, touching nothing else.

Run at install time, from ExecStartPre or in an initContainer, so that `appliance run` loads its
kernels instead of compiling them (seconds instead of minutes). Inside a frozen binary the cache is
keyed on the binary, so a new binary needs a new warmup; from source it is keyed on the package.
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

DESCRIPTION = """\
Compile (or load) every hot loop that `appliance run` would start for CONFIG, and write them to the
kernel cache: numba.cache_dir, else $APPLIANCE_CACHE_DIR, $NUMBA_CACHE_DIR, $XDG_CACHE_HOME/appliance
or ~/.cache/appliance. Nothing is placed, pinned or sent: no HugePages are required, no core is
pinned, no socket connects, and the journal is not opened (a scratch one is used). The second
warmup of the same binary and config finds everything cached and says so.
"""

EPILOG = """\
examples:
  appliance warmup -c /etc/appliance/appliance.toml          what ExecStartPre runs
  appliance warmup -c appliance.toml --layouts split,fused   both layouts, e.g. to switch by SIGHUP-free restart
  APPLIANCE_CACHE_DIR=/var/cache/appliance appliance warmup --json

exit status: 0 warmed; 1 compiling failed; 2 bad config or usage.
"""


def warm_config(cfg, layout: str, journal_dir: str):
    """The config `run` would use, made harmless: no HugePages or locking demanded, any core, scratch journal, ephemeral ports."""
    r = dataclasses.replace
    return r(
        cfg,
        runtime=r(cfg.runtime, layout=layout),
        memory=r(cfg.memory, require_hugepages=False, lock=False, lockall=False),
        cpu=r(cfg.cpu, strict=False, sched_fifo=False),
        # The live feed binds and may join a group: a private ephemeral port instead (same kernel types).
        feed=r(cfg.feed, address="127.0.0.1", port=0, interface="0.0.0.0"),
        journal=r(cfg.journal, path=os.path.join(journal_dir, "warmup.journal"), fsync="none"),
    )


def warm(cfg, layouts) -> dict:
    """Compile the hot loops of `cfg` for each layout; returns seconds per layout and cache hit counts."""
    from ..runtime.engine import Engine
    from ..runtime.cpu import Topology

    report = {}
    topo = Topology.read()
    with tempfile.TemporaryDirectory(prefix="appliance-warmup-") as scratch:
        for layout in layouts:
            wcfg = warm_config(cfg, layout, scratch)
            t0 = time.monotonic()
            engine = Engine(wcfg, topo)
            seconds = engine.compile()
            engine.stop(1.0)
            report[layout] = {"compile_seconds": round(seconds, 3), "total_seconds": round(time.monotonic() - t0, 3)}
    return report


def main(argv=None) -> int:
    from ..cli import ENV_CONFIG, load_or_exit

    p = argparse.ArgumentParser(prog="appliance warmup", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", metavar="FILE", help=f"TOML config (default: ${ENV_CONFIG}, else built-in defaults)")
    p.add_argument("--layouts", metavar="L[,L]", default="",
                   help="layouts to compile: split, fused or split,fused (default: the config's runtime.layout)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    args = p.parse_args(argv)
    path = args.config or os.environ.get(ENV_CONFIG) or None
    cfg = load_or_exit(path, "appliance warmup")
    layouts = [x for x in args.layouts.split(",") if x] or [cfg.runtime.layout]
    bad = [x for x in layouts if x not in ("split", "fused")]
    if bad:
        p.error(f"--layouts: {', '.join(bad)} is not a layout (expected split, fused)")

    from ..control import logs
    from ..runtime import cache

    logs.configure("warning" if args.json else cfg.log.level, cfg.log.format, "appliance-warmup")
    cache_dir = cache.configure(cfg.numba.cache_dir)
    try:
        report = warm(cfg, layouts)
    except Exception as e:  # noqa: BLE001 - one clear line for the operator, not a traceback
        print(f"appliance warmup: compiling failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    out = {"cache_dir": cache_dir, "config": path or "(defaults)", "layouts": report,
           "frozen": bool(getattr(sys, "frozen", False))}
    if args.json:
        print(json.dumps(out))
    else:
        for layout, r in report.items():
            print(f"{layout}: hot loops ready in {r['compile_seconds']:.2f} s (cache {cache_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
