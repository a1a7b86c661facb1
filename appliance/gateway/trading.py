"""The trading path's cold side: strategy and gateway state, journal recovery and writer, the OUCH session,
the kill switch and what the control plane reports about orders, positions and P&L.

Start-up order matters for exactness after a crash: the journal is read back through the same code
that applies live venue messages (so positions, open orders and sequence numbers are rebuilt first),
then the session logs in asking the venue to replay from the first sequence number not journaled, and
an Account Query settles what was in flight.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from ..feed.itch_feed import W_LAST_PACKET_TSC
from ..risk import checks as rk
from ..runtime.clock import read_tsc
from ..runtime.layout import CTL_KILL
from ..strategy import market_maker as mm
from ..strategy import user
from . import fix_gateway as fg
from . import orders as go
from .journal import JournalWriter, read_journal
from .fix_gateway import FixLink
from .ouch_gateway import OuchLink, default_journal_path, recover

log = logging.getLogger("appliance.trading")

KILL_REASONS = ("admin", "signal", "limit_breach", "feed_lost", "session_lost", "shutdown")


class Trading:
    """Owns everything the strategy and gateway hot loops need besides the arena and the feed."""

    def __init__(self, cfg, arena, tsc, feed):
        self.cfg = cfg
        self.symbols = tuple(cfg.strategy.symbols)
        self.tsc = tsc
        self.feed = feed
        self.ctl = arena.view("control")
        g = cfg.gateway
        self.gw = go.make_gateway_state(self.symbols, g.max_orders, g.max_open_per_symbol)
        self.limits = np.zeros(rk.L_WORDS, dtype=np.int64)
        self.user = None  # the user strategy of kind = "module"
        if cfg.strategy.kind == "module":
            # Already compiled while the config was validated: this finds it loaded.
            self.user = user.load(cfg.strategy.module)
            self.quote_fn, self.fill_fn = self.user.quote, self.user.on_fill
            log.info("strategy module %s: quote%s, parameters %s; %s in %.2f s", self.user.path,
                     " and on_fill" if self.user.has_on_fill else "", ", ".join(self.user.names) or "none",
                     "loaded from the kernel cache" if self.user.cached else "compiled", self.user.seconds)
        else:
            self.quote_fn, self.fill_fn = user.builtin()
        self.st = mm.make_strategy_state(self.symbols, cfg.book.max_symbols,
                                         len(self.user.names) if self.user is not None else 0)
        self.apply_config(cfg)
        self.journal_path = default_journal_path(cfg.journal)
        self.recovered = {"sent": 0, "received": 0, "other": 0, "last_sent_seq": 0}
        self.journal_report: dict = {}
        if os.path.exists(self.journal_path) and os.path.getsize(self.journal_path) > 0:
            records, self.journal_report = read_journal(self.journal_path)
            self.recovered = recover(self.gw, records)
            log.info("journal %s: %d records (%d sent, %d received) rebuilt %d open orders, positions %s, next "
                     "venue sequence %d, next UserRefNum %d%s", self.journal_path, len(records),
                     self.recovered["sent"], self.recovered["received"], int(self.gw.w[go.W_OPEN]),
                     {s: int(p) for s, p in zip(self.symbols, self.gw.pos) if p}, int(self.gw.w[go.W_NEXT_EXPECTED]),
                     int(self.gw.w[go.W_URN_FLOOR]),
                     f"; torn tail of {self.journal_report['torn_tail_bytes']} bytes cut"
                     if self.journal_report.get("torn_tail_bytes") else "")
        self.st.w[mm.SW_NEXT_URN] = self.gw.w[go.W_URN_FLOOR]
        if g.protocol == "fix":
            self.fx = fg.make_fix_state(g.sender_comp_id, g.target_comp_id, fg.seq_path_for(self.journal_path),
                                        self.recovered["last_sent_seq"])
        else:
            self.fx = fg.make_fix_state()
        j = cfg.journal
        self.writer = JournalWriter(self.journal_path, arena.view("journal.hdr"), arena.view("journal.slots"),
                                    fsync=j.fsync, interval_ms=j.fsync_interval_ms, text=cfg.process.name)
        self.link = FixLink(g, self.gw, self.fx, tsc.hz) if g.protocol == "fix" else OuchLink(g, self.gw, tsc.hz)
        self.kill_reason = ""
        self.kill_at: float | None = None  # monotonic time of the trigger
        self.kill_tsc = 0
        self.kill_report: dict | None = None
        self._feed_seen = (0, time.monotonic())

    # -- configuration ---------------------------------------------------------------------------

    def apply_config(self, cfg) -> None:
        """Write the reloadable [strategy] and [risk] keys where the hot loops read them."""
        rk.limits_from_config(cfg.risk, self.limits)
        mm.params_from_config(cfg.strategy, self.tsc.hz, self.st.p)
        unknown = user.write_params(self.user, dict(cfg.strategy.params), self.st.up)
        if unknown:  # the file changed on disk since start: its code and parameter list need a restart
            log.warning("strategy.params %s: not parameters of the running %s; a restart loads the changed file",
                        ", ".join(unknown), self.user.path)
        self.cfg = cfg

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.writer.start()
        self.link.start()

    def wait_logged_in(self, timeout: float) -> bool:
        """True once the session is up and reconciled (the venue answered the Account Query)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.link.up and self.gw.w[go.W_RECONCILED]:
                return True
            time.sleep(0.005)
        return False

    def cancel_all_and_wait(self, timeout: float) -> bool:
        """Clean stop, first half: trip the kill switch and wait for the venue to confirm every cancel."""
        self.kill("shutdown")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            if self.gw.w[go.W_OPEN] == 0:
                return True
            time.sleep(0.005)
        log.warning("shutdown: %d orders still open after %.1f s", int(self.gw.w[go.W_OPEN]), timeout)
        return False

    def close(self) -> None:
        """Clean stop, second half (hot threads stopped): journal flushed and closed, Logout sent."""
        self.link.stop()
        self.writer.stop()
        self.link.logout()

    # -- kill switch -----------------------------------------------------------------------------

    def kill(self, reason: str) -> bool:
        """Trip the kill switch: no new orders, every resting one canceled. False if it was already on."""
        if self.ctl[CTL_KILL] != 0:
            return False
        self.kill_tsc = int(read_tsc())
        self.kill_at = time.monotonic()
        self.kill_reason = reason
        self.kill_report = None
        self.ctl[CTL_KILL] = self.kill_tsc
        log.warning("KILL SWITCH tripped (%s): blocking new orders, canceling %d open orders", reason,
                    int(self.gw.w[go.W_OPEN]))
        return True

    def resume(self) -> bool:
        """Release the kill switch (admin only). False if it was not on."""
        if self.ctl[CTL_KILL] == 0:
            return False
        self.ctl[CTL_KILL] = 0
        log.warning("kill switch released; trading resumes")
        self.kill_reason = ""
        return True

    @property
    def open_orders(self) -> int:
        return int(self.gw.w[go.W_OPEN])

    @property
    def killed(self) -> bool:
        return bool(self.ctl[CTL_KILL] != 0)

    def poll(self) -> None:
        """Housekeeping: trip the kill switch on a breach, a lost feed or a lost session; time the kill."""
        w = self.gw.w
        r = self.cfg.risk
        now = time.monotonic()
        if not self.killed:
            if w[go.W_BREACH]:
                self.kill("limit_breach")
            elif r.kill_on_session_loss_ms and self.link.down_since is not None \
                    and now - self.link.down_since > r.kill_on_session_loss_ms / 1000 and self.link.logins > 0:
                self.kill("session_lost")
            elif r.kill_on_feed_loss_ms and self.feed is not None and self.link.up:
                last = int(self.feed.io.words[W_LAST_PACKET_TSC])
                if last != self._feed_seen[0]:
                    self._feed_seen = (last, now)
                elif now - self._feed_seen[1] > r.kill_on_feed_loss_ms / 1000:
                    self.kill("feed_lost")
        if self.killed and self.kill_report is None and w[go.W_KILL_DONE] == self.ctl[CTL_KILL] \
                and w[go.W_OPEN] == 0:
            sent_ns = max(0, int((int(w[go.W_KILL_LAST_TSC]) - self.kill_tsc) * 1e9 / self.tsc.hz))
            self.kill_report = {"reason": self.kill_reason, "cancels": int(w[go.W_KILL_CANCELS]),
                                "trigger_to_last_cancel_sent_us": round(sent_ns / 1000, 1),
                                "trigger_to_all_canceled_ms": round((now - self.kill_at) * 1000, 2)}
            log.warning("kill switch: no order left at the venue; last cancel sent %.1f us after the trigger, all "
                        "confirmed canceled within %.2f ms", sent_ns / 1000, (now - self.kill_at) * 1000)

    # -- reporting -------------------------------------------------------------------------------

    def marks(self) -> dict:
        """Mid price per traded symbol as the strategy last saw it (0 when unknown)."""
        q = self.st.q
        return {s: (int(q[i, mm.Q_BID]) + int(q[i, mm.Q_ASK])) // 2 if q[i, mm.Q_BID] > 0 and q[i, mm.Q_ASK] > 0
                else 0 for i, s in enumerate(self.symbols)}

    def status(self) -> dict:
        w = self.gw.w
        snap = go.snapshot(self.gw, self.symbols)
        marks = self.marks()
        pnl = {s: (snap["cash"][s] + snap["positions"][s] * marks[s]) / 10_000 for s in self.symbols}
        return {
            "session": {"up": self.link.up, "reconciled": bool(w[go.W_RECONCILED]), "logins": self.link.logins,
                        "login_failures": self.link.failures, "last_error": self.link.last_error,
                        "protocol": self.cfg.gateway.protocol,
                        "next_expected_sequence": int(w[go.W_NEXT_EXPECTED]), "links_lost": int(w[go.W_LINKS_LOST]),
                        **({"next_sender_seq": int(self.fx.w[fg.FX_TX_SEQ]), "fix": fg.counters(self.fx)}
                           if self.cfg.gateway.protocol == "fix" else {}),
                        "next_user_ref": int(max(w[go.W_URN_FLOOR], self.st.w[mm.SW_NEXT_URN]))},
            "orders": {"sent": int(w[go.W_SENT_NEW]), "replaces": int(w[go.W_SENT_REPLACE]),
                       "cancels": int(w[go.W_SENT_CANCEL]), "accepted": int(w[go.W_ACCEPTED]),
                       "fills": int(w[go.W_FILLS]), "filled_shares": int(w[go.W_FILLED_SHARES]),
                       "canceled": int(w[go.W_CANCELED]), "venue_rejects": int(w[go.W_VENUE_REJECTS]),
                       "lost_in_disconnect": int(w[go.W_LOST]), "open": int(w[go.W_OPEN]),
                       "unknown_messages": int(w[go.W_UNKNOWN_MSGS]), "bad_messages": int(w[go.W_BAD_MSGS])},
            "risk_rejects": self.rejects(),
            "positions": snap["positions"],
            "open_orders": snap["open_orders"],
            "pnl": {"by_symbol": pnl, "total": round(sum(pnl.values()), 4)},
            "kill_switch": {"on": self.killed, "reason": self.kill_reason, "last": self.kill_report},
            "journal": {"path": self.journal_path, "records_written": self.writer.records_written,
                        "fsyncs": self.writer.fsyncs, "recovered": self.recovered,
                        "last_error": self.writer.last_error},
            "strategy": {"book_events": int(self.st.w[mm.SW_BOOK_EVENTS]), "intents": int(self.st.w[mm.SW_INTENTS]),
                         "updates": int(self.st.w[mm.SW_UPDATES]), "refused": int(self.st.w[mm.SW_REFUSED])},
        }

    def rejects(self) -> dict:
        return {name: int(self.gw.rej[r]) for r, name in rk.REASONS.items()}
