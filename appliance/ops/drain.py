"""`appliance drain`: trip a running appliance's kill switch and wait until its resting orders are canceled.

What a Kubernetes preStop hook runs (and an operator before maintenance): SIGTERM cancels too, but
this does it first, under the hook's own deadline, and says when the venue has confirmed it.
"""

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request

DESCRIPTION = """\
Find the appliance running with CONFIG (its /status on control.host:control.port, or --url), send it
SIGUSR1 (the kill switch: no new orders, every resting order canceled), and wait until /status reports
no open orders. Needs no admin token: the signal goes to the pid /status reports, so drain must run as
the appliance's user in its PID namespace (a preStop hook in the same container does).
"""

EPILOG = """\
examples:
  appliance drain -c /etc/appliance/appliance.toml              what the Kubernetes preStop hook runs
  appliance drain --url http://127.0.0.1:9100 --timeout 10

exit status: 0 drained (or no trading path: nothing to cancel); 1 orders still open at the deadline;
2 bad config or usage; 3 no appliance answered, or it could not be signalled.
"""

EXIT_OK, EXIT_OPEN, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
POLL_S = 0.05


def _status(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/status", timeout=2.0) as r:
        return json.loads(r.read())


def _open_orders(status: dict):
    """How many orders /status says are open (it lists them by UserRefNum); None when it does not say."""
    orders = (status.get("trading") or {}).get("open_orders")
    return len(orders) if isinstance(orders, dict) else orders


def drain(url: str, timeout: float, out=sys.stderr) -> int:
    try:
        st = _status(url)
    except (OSError, ValueError) as e:
        print(f"appliance drain: no appliance answered at {url}: {e}", file=out)
        return EXIT_UNREACHABLE
    trading = st.get("trading")
    if not trading:
        print(f"appliance drain: {st.get('name')} (pid {st.get('pid')}) has no trading path: nothing to cancel",
              file=out)
        return EXIT_OK
    try:
        os.kill(int(st["pid"]), signal.SIGUSR1)
    except OSError as e:
        print(f"appliance drain: cannot signal pid {st['pid']} ({e.strerror}): run as the appliance's user, "
              "in its PID namespace", file=out)
        return EXIT_UNREACHABLE
    deadline = time.monotonic() + timeout
    open_orders = _open_orders(st)
    while True:
        try:
            open_orders = _open_orders(_status(url))
        except (OSError, ValueError):
            pass  # a busy control plane; the deadline bounds the wait
        if open_orders == 0:
            print(f"appliance drain: kill switch on, no open orders (pid {st['pid']})", file=out)
            return EXIT_OK
        if time.monotonic() >= deadline:
            print(f"appliance drain: {open_orders} orders still open after {timeout:g} s", file=out)
            return EXIT_OPEN
        time.sleep(POLL_S)


def main(argv=None) -> int:
    from ..cli import ENV_CONFIG, load_or_exit

    p = argparse.ArgumentParser(prog="appliance drain", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", metavar="FILE", help=f"the appliance's TOML config (default: ${ENV_CONFIG})")
    p.add_argument("--url", help="the control plane's base URL (default: from control.host and control.port)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds to wait for the cancels (default: gateway.cancel_on_stop_timeout_s + 2)")
    args = p.parse_args(argv)
    cfg = load_or_exit(args.config or os.environ.get(ENV_CONFIG) or None, "appliance drain")
    url = args.url
    if not url:
        if cfg.control.port == 0:
            p.error("control.port is 0 (ephemeral) in the config: give --url")
        host = cfg.control.host if cfg.control.host not in ("0.0.0.0", "::") else "127.0.0.1"
        url = f"http://{host}:{cfg.control.port}"
    timeout = args.timeout if args.timeout is not None else cfg.gateway.cancel_on_stop_timeout_s + 2.0
    return drain(url, timeout)


if __name__ == "__main__":
    sys.exit(main())
