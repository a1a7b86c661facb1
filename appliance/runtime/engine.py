"""The engine: one arena, its hot threads and their placement, for one layout; no asyncio, no HTTP."""

import logging
import os
import time

from . import libc
from .arena import Arena
from .clock import calibrate
from .cpu import Topology, format_cpulist, inspect_thread, plan
from .histogram import Snapshot
from .hotloop import kernel_calls, stall
from .layout import (
    AGENTS,
    C_BACKPRESSURE,
    C_EVENTS_IN,
    C_EVENTS_OUT,
    C_SEQUENCE_ERRORS,
    CTL_STALL,
    CTL_STOP,
    CTL_TSC_HZ,
    CTL_TSC_MULT,
    HB_BEAT,
    HB_BUSY,
    HB_STALLS,
    HB_STATE,
    HISTOGRAMS,
    IDLE_MODES,
    P_BATCH,
    P_IDLE,
    P_RATE,
    RINGS,
    THREAD_STARTING,
    compute_layout,
)
from .ring import ring_depth
from .threads import HotThread

log = logging.getLogger("appliance.runtime")
THREAD_STATES = ("starting", "running", "stalled", "stopped")


class Engine:
    """Maps the arena, places and compiles the hot loops, and starts and stops the hot threads."""

    def __init__(self, cfg, topology: Topology | None = None):
        self.cfg = cfg
        self.names = cfg.hot_threads()
        self.topology = topology or Topology.read()
        self.placement = plan(cfg.cpu, self.names, self.topology, cfg.runtime.idle)  # may raise PlacementError
        self.layout = compute_layout(self.names, cfg.runtime.ring_slots, cfg.journal.ring_slots)
        self.arena = Arena.allocate(
            self.layout,
            require_hugepages=cfg.memory.require_hugepages,
            transparent_hugepages=cfg.memory.transparent_hugepages,
            lock=cfg.memory.lock,
        )
        self.lockall = False
        if cfg.memory.lockall:
            try:
                libc.mlockall()
                self.lockall = True
            except OSError as e:
                log.warning("mlockall failed (%s); raise the memlock limit or grant CAP_IPC_LOCK", e.strerror)
        self.tsc = calibrate()
        ctl = self.arena.view("control")
        ctl[CTL_TSC_MULT] = self.tsc.mult
        ctl[CTL_TSC_HZ] = int(self.tsc.hz)
        self.apply_params(cfg)
        self.feed = None
        if cfg.feed.source == "moldudp64":
            from ..feed.itch_feed import ItchFeed

            self.feed = ItchFeed(cfg, hist=self.arena.view("hist"))
        self.trading = None
        if cfg.trading:
            from ..gateway.trading import Trading

            self.trading = Trading(cfg, self.arena, self.tsc, self.feed)
        self.calls = kernel_calls(self.arena, self.feed, self.trading)
        self.threads: list = []
        self.compile_seconds = None
        self.started_at = None

    def apply_params(self, cfg) -> None:
        """Write the parameters the hot loops read live (the reloadable ones take effect at once)."""
        params = self.arena.view("params")
        params[P_RATE] = cfg.synthetic.rate
        params[P_BATCH] = cfg.runtime.batch
        params[P_IDLE] = IDLE_MODES[cfg.runtime.idle]

    def compile(self) -> float:
        """Compile or load from cache every hot loop, by running each once with the stop flag already set."""
        t0 = time.monotonic()
        ctl = self.arena.view("control")
        ctl[CTL_STOP] = 1
        for _, kernel, args in self.calls:
            kernel(*args)
        stall(ctl, self.arena.view("heartbeat")[0], 0)  # compiled for its own dispatch too
        self.arena.view("heartbeat")[:] = 0
        self.arena.view("heartbeat")[:, HB_STATE] = THREAD_STARTING
        ctl[CTL_STOP] = 0
        self.compile_seconds = time.monotonic() - t0
        return self.compile_seconds

    def start(self) -> None:
        if self.compile_seconds is None:
            self.compile()
        fifo = self.cfg.cpu.fifo_priority if self.cfg.cpu.sched_fifo else None
        for name, kernel, args in self.calls:
            t = HotThread(name, self.placement.hot[name], kernel, args, fifo)
            t.start()
            self.threads.append(t)
            if t.error is not None:
                self.stop(1.0)
                raise RuntimeError(f"hot thread {name} could not be placed on core {t.core}: {t.error}")
        self.started_at = time.monotonic()
        if self.trading is not None:
            self.trading.start()

    def stop(self, timeout: float) -> bool:
        """Set the stop flag and wait up to `timeout` seconds in all; True if every hot thread ended.

        On the trading path resting orders are canceled first (bounded by gateway.cancel_on_stop_timeout_s),
        and after the hot threads end the journal is flushed and the session logged out."""
        if self.trading is not None and self.threads:
            self.trading.cancel_all_and_wait(self.cfg.gateway.cancel_on_stop_timeout_s)
        self.arena.view("control")[CTL_STOP] = 1
        deadline = time.monotonic() + timeout
        ok = all(t.join(max(deadline - time.monotonic(), 0.0)) for t in self.threads)
        if ok and self.trading is not None:
            self.trading.close()
        if ok and self.feed is not None:
            self.feed.close()
        return ok

    def set_stall(self, name: str, on: bool) -> None:
        """Fault injection: hold (or release) a hot thread so its heartbeat stops advancing."""
        self.arena.view("control")[CTL_STALL + self.names.index(name)] = 1 if on else 0

    # --- what the control plane reads ---------------------------------------------------------

    def beats(self) -> dict:
        hb = self.arena.view("heartbeat")
        return {n: int(hb[i, HB_BEAT]) for i, n in enumerate(self.names)}

    def pin_control_plane(self) -> tuple:
        """Confine every thread of the process so far (the main thread, the event loop's resolver pool) to the
        control cores; threads started later inherit them. Call before starting the hot threads.

        Hot threads then pin themselves to their own core, and the executor, journal writer and session
        threads never run on a hot core."""
        cores = set(self.placement.control)
        try:
            for tid in sorted(int(t) for t in os.listdir("/proc/self/task")):
                if tid not in {t.tid for t in self.threads}:
                    os.sched_setaffinity(tid, cores)
        except OSError as e:
            log.warning("could not confine the control plane to cores %s (%s)", format_cpulist(cores), e.strerror)
            return ()
        log.info("control plane confined to cores %s", format_cpulist(cores))
        return tuple(sorted(cores))

    def control_threads(self) -> list:
        """Every thread of the process that is not a hot thread, with the cores the kernel lets it use."""
        hot = {t.tid for t in self.threads if t.tid}
        try:
            tids = sorted(int(t) for t in os.listdir("/proc/self/task"))
        except OSError:
            return []
        return [inspect_thread(tid) for tid in tids if tid not in hot]

    def thread_report(self) -> list:
        """Per hot thread: planned core, what /proc says, state and loop counts."""
        hb = self.arena.view("heartbeat")
        out = []
        for i, name in enumerate(self.names):
            t = self.threads[i] if i < len(self.threads) else None
            seen = inspect_thread(t.tid) if t and t.tid and t.alive else {}
            core = self.placement.hot[name]
            out.append({
                "thread": name,
                "core": core,
                "verified": seen.get("cpus_allowed") == str(core),
                "proc": seen,
                "fifo": bool(t and t.fifo),
                "alive": bool(t and t.alive),
                "error": repr(t.error) if t and t.error else None,
                "state": THREAD_STATES[int(hb[i, HB_STATE])],
                "heartbeats": int(hb[i, HB_BEAT]),
                "busy_iterations": int(hb[i, HB_BUSY]),
                "stalls_injected": int(hb[i, HB_STALLS]),
            })
        return out

    def counters(self) -> dict:
        c = self.arena.view("counters")
        return {
            a: {
                "events_in": int(c[i, C_EVENTS_IN]),
                "events_out": int(c[i, C_EVENTS_OUT]),
                "backpressure": int(c[i, C_BACKPRESSURE]),
                "sequence_errors": int(c[i, C_SEQUENCE_ERRORS]),
            }
            for i, a in enumerate(AGENTS)
        }

    def rings(self) -> dict:
        return {
            r: {"depth": ring_depth(self.arena.view(f"ring.{r}.hdr")), "capacity": self.layout.ring_slots}
            for r in RINGS
        }

    def histograms(self) -> dict:
        h = self.arena.view("hist")
        return {name: Snapshot(h[i]) for i, name in enumerate(HISTOGRAMS)}
