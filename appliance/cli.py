"""The `appliance` command line (also `python -m appliance`)."""

import argparse
import json
import os
import sys

from . import __version__

EXIT_CONFIG = 2
ENV_CONFIG = "APPLIANCE_CONFIG"
REPO_CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config")

EPILOG = """\
examples:
  appliance config check config/appliance.toml   validate a config and print the effective one
  appliance run --config /etc/appliance/appliance.toml
  appliance demo --seconds 20                    trade against the built-in venue in both layouts, with a report
  appliance doctor -c /etc/appliance/appliance.toml   can this node run that config? (--json for machines)
  appliance warmup -c /etc/appliance/appliance.toml   fill the kernel cache before the first start
  curl -s localhost:9100/metrics                 Prometheus metrics of a running process

exit status: 0 ok; 1 runtime failure; 2 bad config or usage; 3 the host cannot satisfy the config
(memory.require_hugepages, cpu.strict). Documentation: README.md and config/appliance.toml.
"""


def load_or_exit(path, parser_prog="appliance"):
    """Load and validate a config; on any problem print every key path and exit 2 before touching anything."""
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as e:
        print(f"{parser_prog}: invalid configuration {path or '(defaults)'}:\n{e}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def _default_demo_config():
    path = os.path.join(REPO_CONFIG_DIR, "demo.toml")
    return path if os.path.exists(path) else None


def cmd_run(args) -> int:
    path = args.config or os.environ.get(ENV_CONFIG) or None
    cfg = load_or_exit(path)
    from .control import logs
    from .runtime import cache

    logs.configure(cfg.log.level, cfg.log.format, cfg.process.name)
    cache_dir = cache.configure(cfg.numba.cache_dir)
    from .control.plane import serve

    return serve(cfg, path, cache_dir)


def cmd_demo(args) -> int:
    path = args.config or _default_demo_config()
    cfg = load_or_exit(path)
    from .control import logs
    from .runtime import cache

    logs.configure(cfg.log.level if not args.json else "warning", cfg.log.format, cfg.process.name)
    cache.configure(cfg.numba.cache_dir)
    from .demo import demo

    layouts = ("split", "fused") if args.layout == "both" else (args.layout,)
    if cfg.trading:
        from .demo import trading_demo

        return trading_demo(cfg, args.seconds, layouts, args.json, None if args.png == "" else args.png)
    return demo(cfg, args.seconds, layouts, args.json)


def cmd_config_check(args) -> int:
    from .config import render_effective

    cfg = load_or_exit(args.file)
    if args.json:
        print(json.dumps(cfg.to_dict(), indent=2))
    else:
        sys.stdout.write(render_effective(cfg))
        print(f"# {args.file}: valid", file=sys.stderr)
    return 0


def _build_id():
    """The frozen binary's build id (its kernel cache is keyed on it); None from source."""
    if not getattr(sys, "frozen", False):
        return None
    from .runtime.cache import frozen_build_id

    return frozen_build_id()


def cmd_version(args) -> int:
    import platform

    import llvmlite
    import numba
    import numpy

    info = {
        "appliance": __version__,
        "python": platform.python_version(),
        "numba": numba.__version__,
        "llvmlite": llvmlite.__version__,
        "numpy": numpy.__version__,
        "frozen": bool(getattr(sys, "frozen", False)),
        "build": _build_id(),
        "machine": platform.machine(),
    }
    print(json.dumps(info) if args.json else " ".join(f"{k} {v}" for k, v in info.items()))
    return 0


def _delegate(module: str, argv: list[str]) -> int:
    """Run a tool whose module has its own `main(argv)` (imported only when used: it compiles kernels)."""
    import importlib

    if module in COMPILING_TOOLS:
        from .runtime import cache

        # Their kernels are decorated at import, and numba picks a cache locator then (the frozen binary's too).
        cache.configure()
    return importlib.import_module(module).main(argv) or 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="appliance",
        description="Low-latency trading appliance: feed, strategy and gateway on pinned GIL-free threads.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run the appliance until SIGTERM or SIGINT (SIGHUP reloads the config)",
                       description="Run the appliance: map the arena, compile the hot loops, pin the hot threads, "
                       "serve /metrics /healthz /readyz /status, and notify systemd when ready.")
    r.add_argument("-c", "--config", metavar="FILE", help=f"TOML config (default: ${ENV_CONFIG}, else built-in defaults)")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="trade against the built-in venue in the split and fused layouts and print a report",
                       description="Start the built-in venue and the appliance on loopback and let the market maker "
                       "trade (ITCH/MoldUDP64 in, OUCH/SoupBinTCP out) in each layout; report messages, orders, fills, "
                       "position, P&L, risk rejects and tick-to-trade percentiles, and write a latency plot (PNG). "
                       "A config without a gateway runs the runtime self-test on synthetic events instead.")
    d.add_argument("-c", "--config", metavar="FILE", help="TOML config (default: config/demo.toml)")
    d.add_argument("--seconds", type=float, default=20.0,
                   help="trading seconds, shared between the layouts (default 20); synthetic: per layout")
    d.add_argument("--png", metavar="FILE", default="demo-latency.png",
                   help="where the latency plot goes (default demo-latency.png; \"\" for none)")
    d.add_argument("--layout", choices=("split", "fused", "both"), default="both", help="which layouts (default both)")
    d.add_argument("--json", action="store_true", help="print the report as one JSON object")
    d.set_defaults(func=cmd_demo)

    # Tools with their own argument parsers: everything after the command word is theirs.
    rp = sub.add_parser("replay", help="replay an ITCH 5.0 day file through the decoder and L3 book",
                        add_help=False)
    rp.add_argument("args", nargs=argparse.REMAINDER)
    rp.set_defaults(func=lambda a: _delegate(TOOLS["replay"], a.args))
    gp = sub.add_parser("generate", help="write a synthetic ITCH 5.0 day file (seeded, realistic order flow)",
                        add_help=False)
    gp.add_argument("args", nargs=argparse.REMAINDER)
    gp.set_defaults(func=lambda a: _delegate(TOOLS["generate"], a.args))
    vp = sub.add_parser("venue", help="run the built-in venue (ITCH/MoldUDP64 out, OUCH and FIX order entry in) "
                        "from a config's [venue] section", add_help=False)
    vp.add_argument("args", nargs=argparse.REMAINDER)
    vp.set_defaults(func=lambda a: _delegate(TOOLS["venue"], a.args))
    for name, text in OPS_HELP.items():
        op = sub.add_parser(name, help=text, add_help=False)
        op.add_argument("args", nargs=argparse.REMAINDER)
        op.set_defaults(func=lambda a, name=name: _delegate(TOOLS[name], a.args))

    c = sub.add_parser("config", help="configuration tools", description="Configuration tools.")
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    cc = csub.add_parser("check", help="validate a config file and print the effective config",
                         description="Validate FILE strictly (unknown keys, types, ranges, core consistency) and "
                         "print the effective config with every default filled in. Exit 2 naming each bad key path.")
    cc.add_argument("file", metavar="FILE")
    cc.add_argument("--json", action="store_true", help="print the effective config as JSON")
    cc.set_defaults(func=cmd_config_check)
    c.set_defaults(func=lambda a: (c.print_help(), EXIT_CONFIG)[1])

    v = sub.add_parser("version", help="print versions of the appliance and its compiler stack")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_version)
    return p


# Operations tools (appliance/ops/): what an installer, ExecStartPre or an initContainer runs.
OPS_HELP = {
    "doctor": "check that this node can run the config: isolated cores, HugePages, memlock, NIC, clock, ...",
    "warmup": "compile every hot loop the config needs into the kernel cache, so the next start is fast",
    "install": "install the systemd service (unit, drop-ins, user, config) on this host",
    "drain": "trip a running appliance's kill switch and wait until its resting orders are canceled (preStop)",
}
TOOLS = {"replay": "appliance.feed.replay", "generate": "appliance.venue.generator", "venue": "appliance.venue.server",
         "doctor": "appliance.ops.doctor", "warmup": "appliance.ops.warmup", "install": "appliance.ops.install",
         "drain": "appliance.ops.drain"}
COMPILING_TOOLS = {TOOLS["replay"], TOOLS["generate"], TOOLS["venue"]}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:  # before argparse, which would take the tool's own options for ours
        return _delegate(TOOLS[argv[0]], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
