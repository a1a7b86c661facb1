"""The control plane: the main thread's event loop that starts the engine and serves /metrics, /healthz,
/readyz, /status and the admin API, speaks sd_notify, and handles SIGTERM, SIGINT and SIGHUP."""

import asyncio
import dataclasses
import logging
import os
import signal
import time

from .. import __version__
from ..config import ConfigError, load_config, reload_diff
from ..runtime.cpu import format_cpulist
from . import logs
from .health import HeartbeatMonitor
from .http import HttpServer, Response, bearer_token_ok
from .metrics import CONTENT_TYPE, exposition, make_registry
from .sdnotify import Notifier, watchdog_interval

log = logging.getLogger("appliance.control")

ENV_ADMIN_TOKEN = "APPLIANCE_ADMIN_TOKEN"
HOUSEKEEPING_S = 0.1
EXIT_OK, EXIT_FAILURE, EXIT_HOST = 0, 1, 3


class ProcessState:
    """Everything the control plane reports about the running process."""

    def __init__(self, cfg, config_path, cache_dir):
        self.cfg = cfg
        self.config_path = config_path
        self.cache_dir = cache_dir
        self.engine = None
        self.monitor = HeartbeatMonitor(cfg.health.heartbeat_timeout_ms / 1000)
        self.ready = False
        self.stopping = False
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.started = time.monotonic()
        self.address = None

    def thread_report(self) -> list:
        return self.engine.thread_report() if self.engine else []

    def healthy(self) -> tuple[bool, list]:
        """Every hot thread alive, without error, and its heartbeat advancing; else the reasons."""
        if self.engine is None or not self.engine.threads:
            return False, ["starting: hot threads not running yet"]
        reasons = [f"{t.name}: died ({t.error!r})" for t in self.engine.threads if not t.alive and not self.stopping]
        silent = self.monitor.silent_for()
        reasons += [
            f"{n}: heartbeat silent for {silent[n] * 1000:.0f} ms (limit {self.monitor.timeout_s * 1000:.0f} ms)"
            for n in self.monitor.stalled()
        ]
        feed = self.engine.feed
        if feed is not None and not feed.healthy():
            reasons.append("feed: halted on an unrecoverable MoldUDP64 gap (feed.on_unrecoverable_gap = \"halt\")")
        return not reasons, reasons

    def status(self) -> dict:
        eng = self.engine
        ok, reasons = self.healthy()
        out = {
            "name": self.cfg.process.name,
            "version": __version__,
            "pid": os.getpid(),
            "ready": self.ready,
            "healthy": ok,
            "problems": reasons,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "layout": self.cfg.runtime.layout,
            "idle": self.cfg.runtime.idle,
            "config_path": self.config_path,
            "cache_dir": self.cache_dir,
            "control": {"address": self.address, "reloads_applied": self.reloads_ok, "reloads_rejected": self.reloads_failed},
        }
        if eng is not None:
            control_threads = eng.control_threads()
            arena = eng.arena.describe()
            arena.pop("regions")
            if eng.feed is not None:
                out["feed"] = eng.feed.stats()
            out.update({
                "compile_seconds": eng.compile_seconds,
                "arena": arena,
                "tsc": {"hz": round(eng.tsc.hz), "invariant": eng.tsc.invariant},
                "topology": eng.topology.describe(),
                "placement": {
                    "hot": eng.placement.hot,
                    "control": list(eng.placement.control),
                    "control_verified": all(t["cpus_allowed"] == format_cpulist(eng.placement.control)
                                            for t in control_threads),
                    "control_threads": control_threads,
                    "problems": list(eng.placement.problems),
                },
                "threads": self.thread_report(),
                "counters": eng.counters(),
                "rings": eng.rings(),
                "latency_ns": {name: s.summary() for name, s in eng.histograms().items()},
            })
            if eng.trading is not None:
                out["trading"] = eng.trading.status()
        return out


def _reloaded(old, new, paths):
    """`old` with only the given dotted key paths taken from `new`."""
    sections = {}
    for path in paths:
        sec, key = path.split(".", 1)
        sections.setdefault(sec, {})[key] = getattr(getattr(new, sec), key)
    return dataclasses.replace(
        old, **{sec: dataclasses.replace(getattr(old, sec), **kv) for sec, kv in sections.items()}
    )


def _admin_token(cfg) -> str:
    if os.environ.get(ENV_ADMIN_TOKEN):
        return os.environ[ENV_ADMIN_TOKEN]
    if cfg.control.admin_token_file:
        try:
            with open(cfg.control.admin_token_file) as f:
                return f.read().strip()
        except OSError as e:
            log.error("cannot read control.admin_token_file %s (%s); the admin API is disabled", cfg.control.admin_token_file, e.strerror)
    return ""


class ControlPlane:
    """Owns the event loop's tasks: the HTTP server, housekeeping (health, watchdog, STATUS) and signals."""

    def __init__(self, cfg, config_path, cache_dir):
        self.state = ProcessState(cfg, config_path, cache_dir)
        self.notifier = Notifier()
        self.registry = make_registry(self.state)
        self.token = _admin_token(cfg)
        self.stop_event = asyncio.Event()
        self.server = HttpServer()
        for path, handler in (
            ("/metrics", self.metrics),
            ("/healthz", self.healthz),
            ("/readyz", self.readyz),
            ("/status", self.status),
        ):
            self.server.route("GET", path, handler)
        self.server.route("POST", "/admin/reload", self.admin_reload)
        self.server.route("POST", "/admin/stall", self.admin_stall)
        self.server.route("POST", "/admin/kill", self.admin_kill)
        self.server.route("POST", "/admin/resume", self.admin_resume)

    # --- HTTP handlers ---------------------------------------------------------------------------

    async def metrics(self, req):
        return Response(200, exposition(self.registry), content_type=CONTENT_TYPE)

    async def healthz(self, req):
        ok, reasons = self.state.healthy()
        return Response(200, "ok\n") if ok else Response(503, "\n".join(reasons) + "\n")

    async def readyz(self, req):
        ok, reasons = self.state.healthy()
        if self.state.ready and ok and not self.state.stopping:
            return Response(200, "ready\n")
        why = ["stopping"] if self.state.stopping else (reasons or ["not ready"])
        return Response(503, "\n".join(why) + "\n")

    async def status(self, req):
        return Response.json(self.state.status())

    def _authorized(self, req):
        if not self.token:
            return Response(403, f"admin API disabled: set control.admin_token_file or {ENV_ADMIN_TOKEN}\n")
        if not bearer_token_ok(req, self.token):
            return Response(401, "missing or wrong bearer token\n", headers={"WWW-Authenticate": "Bearer"})
        return None

    async def admin_reload(self, req):
        denied = self._authorized(req)
        if denied:
            return denied
        return Response.json(self.reload())

    async def admin_stall(self, req):
        """Fault injection: ?thread=NAME&on=1|0 holds or releases a hot thread (control.fault_injection only)."""
        denied = self._authorized(req)
        if denied:
            return denied
        if not self.state.cfg.control.fault_injection:
            return Response(403, "fault injection is disabled (control.fault_injection = false)\n")
        eng = self.state.engine
        name = req.query.get("thread", "")
        if eng is None or name not in eng.names:
            return Response(400, f"thread must be one of {', '.join(eng.names if eng else ())}\n")
        on = req.query.get("on", "1") not in ("0", "false", "no")
        eng.set_stall(name, on)
        log.warning("fault injection: hot thread %s %s", name, "stalled" if on else "released")
        return Response.json({"thread": name, "stalled": on})

    def _trading(self, req):
        """(trading, None) for an authorized admin request on the trading path, else (None, the refusal)."""
        denied = self._authorized(req)
        if denied:
            return None, denied
        trading = self.state.engine.trading if self.state.engine else None
        if trading is None:
            return None, Response(409, "no trading path configured (gateway.protocol = \"none\")\n")
        return trading, None

    async def admin_kill(self, req):
        """Trip the kill switch: block new orders and cancel every resting one."""
        trading, refusal = self._trading(req)
        if refusal:
            return refusal
        tripped = trading.kill("admin")
        return Response.json({"kill_switch": True, "tripped_now": tripped, "open_orders": trading.open_orders})

    async def admin_resume(self, req):
        """Release the kill switch."""
        trading, refusal = self._trading(req)
        if refusal:
            return refusal
        return Response.json({"kill_switch": False, "released_now": trading.resume()})

    def _on_kill_signal(self):
        trading = self.state.engine.trading if self.state.engine else None
        if trading is None:
            log.warning("SIGUSR1 (kill switch) received, but no trading path is configured")
            return
        trading.kill("signal")

    # --- reload ------------------------------------------------------------------------------

    def reload(self) -> dict:
        """Re-read the config file; apply the reloadable keys that changed, report those that need a restart."""
        st = self.state
        if not st.config_path:
            log.warning("reload requested but the process was started without a config file")
            return {"applied": [], "restart_required": [], "error": "no config file"}
        self.notifier.reloading()
        try:
            new = load_config(st.config_path)
        except ConfigError as e:
            st.reloads_failed += 1
            log.error("reload of %s rejected; the running config stays in force:\n%s", st.config_path, e)
            self.notifier.ready()
            return {"applied": [], "restart_required": [], "error": str(e)}
        applied, restart = reload_diff(st.cfg, new)
        st.cfg = _reloaded(st.cfg, new, applied)
        logs.set_level(st.cfg.log.level)
        st.monitor.timeout_s = st.cfg.health.heartbeat_timeout_ms / 1000
        if st.engine is not None:
            st.engine.apply_params(st.cfg)
            if st.engine.trading is not None:
                st.engine.trading.apply_config(st.cfg)
        st.reloads_ok += 1
        log.info(
            "config reloaded from %s: applied %s; changed but need a restart: %s",
            st.config_path, ", ".join(applied) or "nothing", ", ".join(restart) or "nothing",
        )
        self.notifier.ready()
        return {"applied": applied, "restart_required": restart, "error": None}

    # --- lifecycle ---------------------------------------------------------------------------

    async def housekeeping(self):
        """Every 100 ms: observe heartbeats, feed the watchdog only while all advance, send STATUS periodically."""
        interval = watchdog_interval()
        last_ping = last_status = 0.0
        withheld = False
        while True:
            st = self.state
            if st.engine is not None and st.engine.threads:
                st.monitor.observe(st.engine.beats())
                if st.engine.trading is not None and not st.stopping:
                    st.engine.trading.poll()
                ok, reasons = st.healthy()
                now = time.monotonic()
                if interval and ok and now - last_ping >= interval:
                    self.notifier.watchdog()
                    last_ping = now
                if not ok and not withheld:
                    log.error("hot path unhealthy, withholding the watchdog: %s", "; ".join(reasons))
                elif ok and withheld:
                    log.info("hot path healthy again")
                withheld = not ok
                if now - last_status >= st.cfg.health.status_interval_s:
                    last_status = now
                    if st.engine.feed is not None:
                        for line in st.engine.feed.new_problems():
                            log.warning("feed: %s", line)
                    text = self.status_line()
                    self.notifier.status(text)
                    log.debug("%s", text)
            await asyncio.sleep(HOUSEKEEPING_S)

    def status_line(self) -> str:
        eng = self.state.engine
        c = eng.counters()
        p = eng.histograms()["pipeline"]
        up = max(time.monotonic() - (eng.started_at or time.monotonic()), 1e-9)
        return (
            f"{'ready' if self.state.ready else 'starting'}: {self.state.cfg.runtime.layout} layout, "
            f"{c['gateway']['events_in'] / up / 1e6:.2f} M events/s, pipeline p50 {p.percentile(50):.0f} ns "
            f"p99 {p.percentile(99):.0f} ns"
        )

    async def run(self) -> int:
        from ..runtime.arena import HugePagesUnavailable
        from ..runtime.cpu import PlacementError
        from ..runtime.engine import Engine

        loop = asyncio.get_running_loop()
        st = self.state
        cfg = st.cfg
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGUSR1, self._on_kill_signal)
        host, port = await self.server.start(cfg.control.host, cfg.control.port)
        st.address = f"{host}:{port}"
        log.info("control plane listening on http://%s (metrics, healthz, readyz, status)", st.address)
        self.notifier.status("starting: mapping the arena and compiling the hot loops")
        try:
            st.engine = engine = Engine(cfg)
        except (HugePagesUnavailable, PlacementError) as e:
            log.error("cannot start: %s", e)
            await self.server.stop()
            return EXIT_HOST
        arena = engine.arena.describe()
        log.info(
            "arena: %d KiB in %s pages (%d KiB huge), %s; TSC %.3f GHz%s",
            arena["size_bytes"] >> 10, arena["mode"], arena["huge_bytes"] >> 10,
            "locked" if arena["locked"] else "NOT locked", engine.tsc.hz / 1e9,
            "" if engine.tsc.invariant else " (not invariant: latency figures are unreliable)",
        )
        for problem in engine.placement.problems:
            log.warning("placement: %s", problem)
        engine.pin_control_plane()  # before the executor, journal and session threads exist: they inherit it
        housekeeping = asyncio.create_task(self.housekeeping())
        seconds = await loop.run_in_executor(None, engine.compile)
        log.info("hot loops compiled or loaded from %s in %.2f s", st.cache_dir, seconds)
        if not self.stop_event.is_set():
            engine.start()
            for t in engine.thread_report():
                proc = t["proc"]
                log.info(
                    "hot thread %-8s tid %s pinned to core %d (kernel says cpus %s, last ran on %s, policy %s)%s",
                    t["thread"], proc.get("tid"), t["core"], proc.get("cpus_allowed"), proc.get("last_cpu"),
                    proc.get("policy"), "" if t["verified"] else "  <-- NOT VERIFIED",
                )
            st.monitor.observe(engine.beats())
            st.ready = True
            self.notifier.ready(f"ready: {cfg.runtime.layout} layout on cores {engine.placement.hot}")
            log.info("ready")
        await self.stop_event.wait()

        st.stopping = True
        st.ready = False
        self.notifier.stopping()
        stopped = engine.stop(cfg.runtime.stop_timeout_s)
        housekeeping.cancel()
        await self.server.stop()
        if not stopped:
            log.error("hot threads did not stop within runtime.stop_timeout_s = %s", cfg.runtime.stop_timeout_s)
            return EXIT_FAILURE
        c = engine.counters()
        log.info("stopped cleanly: %d events through the pipeline", c["gateway"]["events_in"])
        return EXIT_OK

    def _on_stop(self, sig):
        log.info("%s received: stopping", signal.Signals(sig).name)
        self.stop_event.set()


def serve(cfg, config_path, cache_dir) -> int:
    """Run the process until SIGTERM or SIGINT, under uvloop; returns the exit status."""
    import uvloop

    return uvloop.run(ControlPlane(cfg, config_path, cache_dir).run())
