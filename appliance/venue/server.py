"""The built-in venue: one process that plays the exchange for the appliance, its tests and benchmarks.

- market data: synthetic participants (appliance.venue.flow) trade in the matching engine, and every book
  change (theirs and the appliances') goes out as ITCH 5.0 over MoldUDP64 from a live history ring, with a
  re-request server for the newest half of it (appliance.venue.publisher);
- order entry: OUCH 5.0 over SoupBinTCP 4.x and FIX 4.4, both driving the same engine. Sessions outlive
  TCP connections: a SoupBinTCP client that logs in again is replayed its sequenced messages from the
  number it asks for, a FIX client's ResendRequest is answered from the persisted store; an OUCH Account
  Query is answered in turn with the requests before it, so a client can tell which of its requests arrived;
- fault injection (per run, from [venue]): feed packets dropped, duplicated, reordered or stalled, orders
  rejected or delayed, order-entry connections dropped after N requests.

Two threads besides the publisher's: the engine thread owns the matching engine (no locks): it runs
the synthetic flow in numba slices of about a millisecond (the GIL released) and, between slices, the
order requests queued for it; the asyncio loop (uvloop when present) owns the sockets and the
session state, and everything the engine thread sends goes to it with call_soon_threadsafe. `Venue(cfg).start()` runs it on a background thread (tests, demo,
benchmarks); `appliance venue --config FILE` runs it in the foreground until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import random
import re
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..config.schema import VenueConfig
from ..feed import itch_descriptor as itch
from ..gateway import fix44 as fx
from ..gateway import ouch_descriptor as ouch
from ..gateway import soupbintcp_descriptor as sb
from ..gateway.fix_session import ACCEPTOR, Deliver, Disconnect, FixSession, Send
from ..gateway.soupbin_session import (
    ClientLoggedIn, ClientRejected, LogoutRequested, SequencedStore, SoupServerSession, UnsequencedData,
)
from . import flow as fl
from . import matching as m
from ..runtime.libc import set_thread_name
from .publisher import CTL_END, Faults, MoldPublisher

log = logging.getLogger("appliance.venue")

TICK_S = 0.001  # the synthetic flow runs in slices this long
TIMER_S = 0.1  # session timers (heartbeats, timeouts)
MAX_SLICE = 4096  # most synthetic operations in one slice (about 1 ms: keeps order entry responsive)
OUCH_OWNER = 1
FIX_OWNER = 2
NS_PER_DAY = 86_400_000_000_000

# engine status -> OUCH reject reason (the engine's own codes have no OUCH twin; the closest is used)
OUCH_REASON = {m.ST_UNKNOWN_ORDER: ouch.REJECT_OTHER, m.ST_DUPLICATE_TOKEN: ouch.REJECT_OTHER,
               m.ST_NO_ROOM: m.REJECT_PROCESSING_ERROR}
FIX_SIDE = {b"1": m.SIDE_BUY, b"2": m.SIDE_SELL, b"5": m.SIDE_SHORT, b"6": m.SIDE_SHORT_EXEMPT}
FIX_SIDE_OUT = {v: k for k, v in FIX_SIDE.items()}
FIX_TIF = {b"0": m.TIF_DAY, b"3": m.TIF_IOC}
FAULT_REASON_TEXT = "rejected by fault injection"
# Outbound OUCH through struct packers: the venue sends one to three per order request (see ouch.packer)
PACK_ACCEPTED = ouch.packer("out", "A")
PACK_REPLACED = ouch.packer("out", "U")
PACK_CANCELED = ouch.packer("out", "C")
PACK_EXECUTED = ouch.packer("out", "E")
PACK_REJECTED = ouch.packer("out", "J")
PACK_ACCOUNT_QUERY = ouch.packer("out", "Q")
NO_CLORDID = b""


def ns_since_midnight() -> int:
    return time.time_ns() % NS_PER_DAY


def symbols_for(cfg: VenueConfig) -> list[str]:
    """The listed symbols: the configured ones, or `symbol_count` seeded tickers."""
    if cfg.symbols:
        return list(cfg.symbols)
    from .generator import _tickers
    return _tickers(np.random.default_rng(cfg.seed), cfg.symbol_count)


# ---- order-entry accounts --------------------------------------------------------------------------
@dataclass
class OuchAccount:
    """One OUCH user's session state, kept across connections: the sequenced stream and the last UserRefNum."""
    username: str
    password: str
    owner: int
    store: SequencedStore = field(default_factory=SequencedStore)
    last_user_ref: int = 0
    connection: "OuchConnection | None" = None
    # the venue's own tally for Venue.account_record (engine thread only)
    entered: int = 0  # Enter Order requests received, accepted or not
    duplicate_user_refs: int = 0  # Enter/Replace requests refused for a UserRefNum not above the last accepted
    executions: int = 0  # Order Executed messages sent
    executed_shares: int = 0
    positions: dict[str, int] = field(default_factory=dict)  # symbol -> shares bought minus shares sold


@dataclass
class FixOrder:
    """What a FIX ExecutionReport repeats about an order, by engine token."""
    cl_ord_id: bytes
    symbol: bytes
    side: bytes
    qty: int
    price: int
    cum: int = 0
    notional: int = 0  # sum of fill qty * price, for AvgPx
    pending_cl_ord_id: bytes = b""  # a cancel or replace request in flight
    orig_cl_ord_id: bytes = b""
    order_id: int = 0  # OrderID(37): the first ITCH reference, kept through replaces as FIX clients expect


class _Connection(asyncio.Protocol):
    """A TCP connection handed to a session adapter; writes and closes through the venue's loop."""

    def __init__(self, venue: "Venue"):
        self.venue = venue
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.requests = 0

    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.venue.connections.add(self)

    def connection_lost(self, exc):
        self.venue.connections.discard(self)

    def write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def count_request(self) -> bool:
        """Count an order request; True when fault injection says to drop the connection now."""
        self.requests += 1
        n = self.venue.cfg.fault_disconnect_after
        return n > 0 and self.requests >= n

    def on_timer(self, now: float) -> None:
        pass


class OuchConnection(_Connection):
    """SoupBinTCP server side of one connection, with OUCH 5.0 inside."""

    def connection_made(self, transport):
        super().connection_made(transport)
        v = self.venue
        self.account: OuchAccount | None = None
        self.sess = SoupServerSession(v.cfg.session[:10], self._authorize)
        self.sess.connection_made(time.monotonic())

    def _authorize(self, username: str, password: str) -> bool:
        acct = self.venue.ouch_accounts.get(username)
        if acct is None or acct.password != password:
            return False
        if acct.connection is not None and acct.connection is not self and not acct.connection.sess.closed:
            log.warning("OUCH: %s is already logged in; refusing a second connection from %s", username, self.peer)
            return False
        self.sess.store = acct.store  # the session's numbered stream outlives this connection
        self.account = acct
        acct.connection = self
        return True

    def data_received(self, data):
        now = time.monotonic()
        for ev in self.sess.on_bytes(data, now):
            if isinstance(ev, UnsequencedData):
                self.venue.submit(self, ev.payload)
            elif isinstance(ev, ClientLoggedIn):
                log.info("OUCH: %s logged in from %s, replaying from %d (%d messages)", ev.username, self.peer,
                         ev.sequence, ev.replayed)
            elif isinstance(ev, ClientRejected):
                log.warning("OUCH: login of %r from %s rejected (%s)", ev.username, self.peer,
                            sb.REJECT_REASONS.get(ev.reason, ev.reason))
            elif isinstance(ev, LogoutRequested):
                log.info("OUCH: %s logged out", self.sess.username)
        self._flush()

    def _flush(self):
        self.write(self.sess.data_to_send())
        if self.sess.closed:
            if self.sess.close_reason not in ("logout", ""):
                log.info("OUCH: closing %s: %s", self.peer, self.sess.close_reason)
            self.close()

    def connection_lost(self, exc):
        super().connection_lost(exc)
        self.sess.connection_lost(time.monotonic())
        if self.account is not None and self.account.connection is self:
            self.account.connection = None

    def on_timer(self, now):
        self.write(self.sess.on_timer(now))
        if self.sess.closed:
            self.close()

    def send(self, payload: bytes) -> None:
        self.sess.send_sequenced(payload)
        self.write(self.sess.data_to_send())


class FixConnection(_Connection):
    """FIX 4.4 acceptor side of one connection: picks the session by the Logon's SenderCompID."""

    def connection_made(self, transport):
        super().connection_made(transport)
        self.sess: FixSession | None = None
        self.pending = b""

    def data_received(self, data):
        if self.sess is None:
            self.pending += data
            if b"\x0110=" not in self.pending:
                if len(self.pending) > 65536:
                    self.close()
                return
            found = re.search(rb"\x0149=([^\x01]*)\x01", self.pending)
            sender = found[1] if found else b""
            sess = self.venue.fix_sessions.get(sender.decode("ascii", "replace"))
            if sess is None or self.venue.fix_owner_conn.get(sender) not in (None, self):
                why = "unknown SenderCompID" if sess is None else "session already connected"
                log.warning("FIX: %s from %s: %s; Logout and close", sender, self.peer, why)
                self.write(fx.encode(fx.MSG_LOGOUT, [(fx.TAG_TEXT, why)], self.venue.cfg.fix_comp_id, sender or b"?",
                                     1, time.time()))
                self.close()
                return
            self.sess = sess
            self.venue.fix_owner_conn[sender] = self
            self._act(sess.connect())
            data, self.pending = self.pending, b""
        self._act(self.sess.on_bytes(data))

    def _act(self, events):
        for ev in events:
            if isinstance(ev, Send):
                self.write(ev.data)
            elif isinstance(ev, Deliver):
                self.venue.submit(self, ev.message)
            elif isinstance(ev, Disconnect):
                log.info("FIX: disconnecting %s: %s", self.peer, ev.reason)
                self.close()

    def connection_lost(self, exc):
        super().connection_lost(exc)
        if self.sess is not None:
            self._act(self.sess.on_disconnect())
            for k, c in list(self.venue.fix_owner_conn.items()):
                if c is self:
                    del self.venue.fix_owner_conn[k]

    def on_timer(self, now):
        if self.sess is not None:
            self._act(self.sess.on_timer())

    def send(self, msg_type: bytes, fields) -> None:
        if self.sess is not None:
            self._act(self.sess.send(msg_type, fields))


# ---- the venue ------------------------------------------------------------------------------------
class Venue:
    """The venue: `start()` (background thread) or `run()` (foreground), then `stop()`."""

    def __init__(self, cfg: VenueConfig | None = None):
        self.cfg = cfg = cfg or VenueConfig()
        self.symbols = symbols_for(cfg)
        self.locates = {s: i + 1 for i, s in enumerate(self.symbols)}
        self.symbol_bytes = [s.encode("ascii") for s in self.symbols]
        self.eng = m.make_engine(self.symbols, max_orders=cfg.max_orders)
        self.out = m.make_out(1 << 22, 1 << 14)
        self.flow = fl.make_flow(self.eng, seed=cfg.seed)
        self.pub = MoldPublisher(
            None, (cfg.feed_address, cfg.feed_port), session=cfg.session, max_payload=cfg.max_payload,
            heartbeat_s=cfg.heartbeat_ms / 1000, retrans_bind=(cfg.retransmit_host, cfg.retransmit_port),
            interface=None if cfg.feed_interface == "0.0.0.0" else cfg.feed_interface,
            history_messages=cfg.history_messages,
            faults=Faults(drop=cfg.fault_drop, duplicate=cfg.fault_duplicate, reorder=cfg.fault_reorder,
                          stall_at=cfg.fault_stall_at, stall_s=cfg.fault_stall_ms / 1000, seed=cfg.seed))
        self.ouch_accounts = {cfg.ouch_username: OuchAccount(cfg.ouch_username, cfg.ouch_password, OUCH_OWNER)}
        os.makedirs(cfg.state_dir, exist_ok=True)
        self.fix_sessions = {cfg.fix_client_comp_id: FixSession(
            ACCEPTOR, cfg.fix_comp_id, cfg.fix_client_comp_id,
            os.path.join(cfg.state_dir, f"fix-{cfg.fix_comp_id}-{cfg.fix_client_comp_id}"))}
        self.fix_owner_conn: dict[bytes, FixConnection] = {}
        self.fix_orders: dict[int, FixOrder] = {}  # token -> order
        self.fix_tokens: dict[bytes, int] = {}  # ClOrdID -> token (the FIX client's ids, day-unique)
        self.fix_next_token = 1
        # the venue's own tally of the FIX client for Venue.fix_record (engine thread only)
        self.fix_positions: dict[str, int] = {}
        self.fix_executions = 0
        self.fix_executed_shares = 0
        self.fix_duplicate_cl_ord_ids = 0  # NewOrderSingle / replace requests refused for a ClOrdID used before
        self.fix_exec_id = 0
        self.connections: set[_Connection] = set()
        self.counters = {"orders": 0, "cancels": 0, "replaces": 0, "rejects": 0, "fills": 0, "bad_requests": 0,
                         "account_queries": 0, "fault_rejects": 0, "fault_disconnects": 0, "flow_throttled": 0}
        self._rng = random.Random(cfg.seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list = []
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.ouch_address: tuple[str, int] | None = None
        self.fix_address: tuple[str, int] | None = None
        self._flow_done = 0
        self._t0 = 0.0
        self._ended = False
        self._requests: collections.deque = collections.deque()
        self._engine: threading.Thread | None = None
        self._engine_stop = False
        self._warm()

    # -- addresses and state --
    @property
    def feed_address(self) -> tuple[str, int]:
        return self.pub.dest

    @property
    def retrans_address(self) -> tuple[str, int]:
        return self.pub.retrans_address

    def stats(self) -> dict:
        return {"feed": self.pub.counters(), "flow": fl.stats(self.flow), "orders": dict(self.counters),
                "engine": {k: v for k, v in m.stats(self.eng).items() if k != "symbols"}}

    def _warm(self):
        """Compile (or load) the flow and engine kernels before the first packet: numba compiles on first call."""
        scratch_eng = m.make_engine(self.symbols[:1], max_orders=1024)
        scratch = m.make_out(1 << 16, 64)
        fl.flow_step(scratch_eng, scratch, fl.make_flow(scratch_eng), 64, 0)
        m.enter(scratch_eng, scratch, 0, 1, 1, 1, m.SIDE_BUY, 100, 1000000, m.TIF_DAY, m.DISPLAY_VISIBLE, 0)
        m.replace_token(scratch_eng, scratch, 0, 1, 1, 2, 100, 1000100)
        m.cancel_token(scratch_eng, scratch, 0, 1, 2, 0, m.REASON_USER)
        m.find_token(scratch_eng, 1, 2)
        m.order_leaves(scratch_eng, 1)

    # -- feed --
    def _publish_directory(self):
        ts = ns_since_midnight()
        frames = [itch.encode("S", timestamp=ts, event_code="O")]
        for sym, loc in self.locates.items():
            frames.append(itch.encode("R", locate=loc, timestamp=ts, stock=sym, market_category="Q",
                                      financial_status="N", round_lot_size=100, round_lots_only="N",
                                      issue_classification="C", issue_subtype="Z", authenticity="P",
                                      short_sale_threshold="N", ipo_flag="N", luld_tier="1", etp_flag="N",
                                      etp_leverage=0, inverse="N"))
            frames.append(itch.encode("H", locate=loc, timestamp=ts, stock=sym, state="T", reason=""))
        frames.append(itch.encode("S", timestamp=ts, event_code="Q"))
        raw = b"".join(len(f).to_bytes(2, "big") + f for f in frames)
        self.pub.append(np.frombuffer(raw, dtype=np.uint8), len(raw))

    def _drain(self):
        """Move the engine's ITCH output to the feed and its reports to the sessions."""
        out = self.out
        nbytes = int(out.cur[m.C_BUF])
        if nbytes and not self.pub.ctl[CTL_END]:  # after the end of session the book changes go unpublished
            self.pub.append(out.buf, nbytes)
        nrep = int(out.cur[m.C_REP])
        if nrep:
            for rec in out.reports[:nrep]:
                self._report(rec)
        m.reset(out)

    def _engine_main(self):
        """The engine thread: queued requests, then a slice of synthetic flow, then publish; until stopped."""
        set_thread_name("venue-engine")
        rate = self.cfg.rate
        self._t0 = time.perf_counter()
        requests = self._requests
        try:
            while not self._engine_stop:
                busy = False
                while requests:
                    fn, args = requests.popleft()
                    fn(*args)
                    busy = True
                due = int((time.perf_counter() - self._t0) * rate) - self._flow_done if rate > 0 and not self._ended else 0
                if due > 10 * MAX_SLICE:  # far behind (a pause, a slow host): do not burst to catch up
                    self._flow_done += due - MAX_SLICE
                    due = MAX_SLICE
                if due > 0:
                    n = min(due, MAX_SLICE)
                    if self.pub.room >= 2 * n + 4096:
                        fl.flow_step(self.eng, self.out, self.flow, n, ns_since_midnight())
                        self._flow_done += n  # a short slice (output full) is not made up later
                        busy = True
                    else:  # the publisher is behind: hold the synthetic flow back
                        self.counters["flow_throttled"] += 1
                if self.out.cur[m.C_BUF] or self.out.cur[m.C_REP]:
                    self._drain()
                if not busy:
                    time.sleep(TICK_S / 4)
        except BaseException as e:  # surfaced by stop(); the venue cannot go on without its engine
            self.error = e
            log.exception("venue engine thread failed")

    def _enqueue(self, fn, *args) -> None:
        """Run fn(*args) on the engine thread (in order)."""
        self._requests.append((fn, args))

    def _post(self, fn, *args) -> None:
        """Run fn(*args) on the event loop (in order): sessions and sockets belong to it."""
        self._loop.call_soon_threadsafe(fn, *args)

    async def _timer_loop(self):
        while not self._stopping.is_set():
            await asyncio.sleep(TIMER_S)
            now = time.monotonic()
            for c in list(self.connections):
                try:
                    c.on_timer(now)
                except Exception:
                    log.exception("session timer failed for %s", c.peer)

    # -- order entry --
    def submit(self, conn: _Connection, request) -> None:
        """An order request from a session (event loop): to the engine thread, now or after the configured delay."""
        if self.cfg.fault_delay_ms > 0:
            self._loop.call_later(self.cfg.fault_delay_ms / 1000, self._enqueue, self._handle, conn, request)
        else:
            self._enqueue(self._handle, conn, request)

    def _handle(self, conn, request):
        try:
            if isinstance(conn, OuchConnection):
                self._ouch_request(conn, request)
            else:
                self._fix_request(conn, request)
            self._drain()
        except Exception:
            log.exception("order request from %s failed", conn.peer)
        if conn.count_request():
            self.counters["fault_disconnects"] += 1
            log.info("fault injection: dropping the connection from %s after %d requests", conn.peer, conn.requests)
            self._post(conn.close)

    def _fault_reject(self) -> bool:
        if self.cfg.fault_reject > 0 and self._rng.random() < self.cfg.fault_reject:
            self.counters["fault_rejects"] += 1
            return True
        return False

    # OUCH
    def _ouch_reject(self, conn, user_ref, reason, cl_ord_id=""):
        self.counters["rejects"] += 1
        self._post(conn.send, PACK_REJECTED(ns_since_midnight(), user_ref, reason, cl_ord_id.encode("ascii", "replace")[:14]))

    def _take_user_ref(self, conn, acct: OuchAccount, msg) -> bool:
        """Enter and Replace name a new UserRefNum, which must increase through the day; else Rejected."""
        urn = msg["user_ref_num"]
        if urn <= acct.last_user_ref:
            acct.duplicate_user_refs += 1
            log.warning("OUCH: %s sent UserRefNum %d, not above %d", acct.username, urn, acct.last_user_ref)
            self._ouch_reject(conn, urn, ouch.REJECT_OTHER, msg["cl_ord_id"])
            return False
        acct.last_user_ref = urn
        return True

    def _ouch_request(self, conn: OuchConnection, payload: bytes):
        acct = conn.account
        try:
            msg = ouch.decode_inbound(payload)
        except (ValueError, KeyError) as e:
            self.counters["bad_requests"] += 1
            log.warning("OUCH: undecodable message from %s (%s): %s", acct.username, e, payload[:64].hex())
            self._ouch_reject(conn, int.from_bytes(payload[1:5], "big") if len(payload) >= 5 else 0, ouch.REJECT_OTHER)
            return
        t = msg["type"]
        ts = ns_since_midnight()
        if t == "O":
            self.counters["orders"] += 1
            acct.entered += 1
            urn = msg["user_ref_num"]
            if not self._take_user_ref(conn, acct, msg):
                return
            if self._fault_reject():
                self._ouch_reject(conn, urn, ouch.REJECT_OTHER, msg["cl_ord_id"])
                return
            locate = self.locates.get(msg["symbol"], 0)
            st = m.enter(self.eng, self.out, ts, locate, acct.owner, urn, ord(msg["side"]), msg["quantity"],
                         msg["price"], ord(msg["time_in_force"]), ord(msg["display"]), 0)
            if st != m.OK:
                log.info("OUCH: %s order %d rejected: %s", acct.username, urn, m.STATUS_NAMES.get(st, st))
        elif t == "U":
            self.counters["replaces"] += 1
            urn = msg["user_ref_num"]
            if not self._take_user_ref(conn, acct, msg):
                return
            st = m.replace_token(self.eng, self.out, ts, acct.owner, msg["orig_user_ref_num"], urn, msg["quantity"],
                                 msg["price"])
            if st == m.ST_UNKNOWN_ORDER:  # the engine's reject record covers it (request 'U')
                log.info("OUCH: %s replace of unknown order %d", acct.username, msg["orig_user_ref_num"])
        elif t == "X":
            self.counters["cancels"] += 1
            urn = msg["user_ref_num"]
            ref = int(m.find_token(self.eng, acct.owner, urn))
            if ref == 0:  # OUCH has no reject for a cancel of an unknown or finished order: it is ignored
                log.info("OUCH: %s cancel of unknown order %d ignored", acct.username, urn)
                return
            leaves = int(m.order_leaves(self.eng, ref))
            target = msg["quantity"]  # the size to reduce the order *to*
            if target >= leaves:
                return
            m.cancel_token(self.eng, self.out, ts, acct.owner, urn, 0 if target == 0 else leaves - target,
                           m.REASON_USER)
        elif t == "Q":
            # Every request queued before this one has been handled and its answers posted; draining first
            # also numbers what the engine did since (a participant's fill) ahead of the response, so an
            # order the client has no answer for when the response comes never reached the venue.
            self.counters["account_queries"] += 1
            self._drain()
            self._post(conn.send, PACK_ACCOUNT_QUERY(ts, acct.last_user_ref + 1))
        else:
            self.counters["bad_requests"] += 1
            log.warning("OUCH: %s sent %r, which this venue does not take", acct.username, t)
            self._ouch_reject(conn, msg.get("user_ref_num", 0), ouch.REJECT_OTHER)

    def _ouch_report(self, acct: OuchAccount, conn: OuchConnection, r):
        k, ts, urn = int(r["kind"]), int(r["ts"]), int(r["token"])
        if k in (m.R_ACCEPTED, m.R_REPLACED):
            loc = int(r["locate"])
            sym = self.symbol_bytes[loc - 1] if 0 < loc <= len(self.symbols) else b""
            tail = (bytes((int(r["side"]),)), int(r["qty"]), sym, int(r["price"]), bytes((int(r["tif"]),)),
                    bytes((int(r["display"]),)), int(r["ref"]), b"A", b"N", b"N", bytes((int(r["state"]),)), NO_CLORDID)
            if k == m.R_ACCEPTED:
                self._post(conn.send, PACK_ACCEPTED(ts, urn, *tail))
            else:
                self._post(conn.send, PACK_REPLACED(ts, int(r["prev_token"]), urn, *tail))
        elif k == m.R_EXECUTED:
            self.counters["fills"] += 1
            qty, loc = int(r["qty"]), int(r["locate"])
            sym = self.symbols[loc - 1] if 0 < loc <= len(self.symbols) else ""
            acct.executions += 1
            acct.executed_shares += qty
            acct.positions[sym] = acct.positions.get(sym, 0) + (qty if r["side"] == m.SIDE_BUY else -qty)
            self._post(conn.send, PACK_EXECUTED(ts, urn, qty, int(r["price"]), bytes((int(r["liquidity"]),)),
                                                int(r["match"])))
        elif k == m.R_CANCELED:
            self._post(conn.send, PACK_CANCELED(ts, urn, int(r["qty"]), bytes((int(r["reason"]),))))
        elif k == m.R_REJECTED:
            if r["request"] == m.REQ_CANCEL:
                return  # no OUCH answer for a cancel of an unknown order
            st = int(r["reject"])
            self.counters["rejects"] += 1
            self._post(conn.send, PACK_REJECTED(ts, urn, OUCH_REASON.get(st, st), NO_CLORDID))

    # FIX
    def _fix_send(self, conn, msg_type, fields):
        self._post(conn.send, msg_type, fields)

    def _exec_id(self) -> bytes:
        self.fix_exec_id += 1
        return b"E%d" % self.fix_exec_id

    def _fix_er(self, conn, o: FixOrder, exec_type, ord_status, *, order_id=0, leaves=0, last_qty=0, last_px=0,
                text="", cl_ord_id=None, orig=None, rej_reason=None):
        fields = [(fx.TAG_ORDER_ID, str(order_id) if order_id else "NONE"), (fx.TAG_CL_ORD_ID, cl_ord_id or o.cl_ord_id)]
        if orig:
            fields.append((fx.TAG_ORIG_CL_ORD_ID, orig))
        fields += [(fx.TAG_EXEC_ID, self._exec_id()), (fx.TAG_EXEC_TYPE, exec_type), (fx.TAG_ORD_STATUS, ord_status),
                   (fx.TAG_SYMBOL, o.symbol), (fx.TAG_SIDE, o.side), (fx.TAG_ORDER_QTY, o.qty)]
        if o.price:
            fields.append((fx.TAG_PRICE, _px(o.price)))
        fields += [(fx.TAG_LEAVES_QTY, leaves), (fx.TAG_CUM_QTY, o.cum),
                   (fx.TAG_AVG_PX, _px(o.notional / o.cum) if o.cum else b"0")]
        if last_qty:
            fields += [(fx.TAG_LAST_QTY, last_qty), (fx.TAG_LAST_PX, _px(last_px))]
        if rej_reason is not None:
            fields.append((fx.TAG_ORD_REJ_REASON, rej_reason))
        if text:
            fields.append((fx.TAG_TEXT, text))
        self._fix_send(conn, fx.MSG_EXECUTION_REPORT, fields)

    def _fix_cancel_reject(self, conn, cl_ord_id, orig, response_to, text, order_id=0, status=b"8"):
        self.counters["rejects"] += 1
        self._fix_send(conn, fx.MSG_ORDER_CANCEL_REJECT, [
            (fx.TAG_ORDER_ID, str(order_id) if order_id else "NONE"), (fx.TAG_CL_ORD_ID, cl_ord_id),
            (fx.TAG_ORIG_CL_ORD_ID, orig), (fx.TAG_ORD_STATUS, status), (fx.TAG_CXL_REJ_RESPONSE_TO, response_to),
            (fx.TAG_CXL_REJ_REASON, 1 if "unknown" in text else 99), (fx.TAG_TEXT, text)])

    def _fix_business_reject(self, conn, msg, reason, text):
        self.counters["bad_requests"] += 1
        log.warning("FIX: %s", text)
        self._fix_send(conn, fx.MSG_BUSINESS_MESSAGE_REJECT, [
            (45, msg.seq_num or 0), (fx.TAG_REF_MSG_TYPE, msg.msg_type), (fx.TAG_BUSINESS_REJECT_REASON, reason),
            (fx.TAG_TEXT, text)])

    def _fix_request(self, conn: FixConnection, msg):
        ts = ns_since_midnight()
        t = msg.msg_type
        if t == fx.MSG_NEW_ORDER_SINGLE:
            self.counters["orders"] += 1
            cl = msg.get(fx.TAG_CL_ORD_ID)
            side = FIX_SIDE.get(msg.get(fx.TAG_SIDE))
            qty = msg.get_int(fx.TAG_ORDER_QTY, 0)
            ord_type = msg.get(fx.TAG_ORD_TYPE)
            tif = FIX_TIF.get(msg.get(fx.TAG_TIME_IN_FORCE, b"0"))
            price = m.MARKET if ord_type == b"1" else _fix_price(msg.get(fx.TAG_PRICE))
            o = FixOrder(cl, msg.get(fx.TAG_SYMBOL, b""), msg.get(fx.TAG_SIDE, b"?"), qty, 0 if price == m.MARKET else price or 0)
            problem = None
            if cl in self.fix_tokens:
                self.fix_duplicate_cl_ord_ids += 1
                problem = (6, "duplicate ClOrdID")  # OrdRejReason 6: duplicate order
            elif side is None:
                problem = (99, f"Side(54)={_text(msg.get(fx.TAG_SIDE))} not supported")
            elif ord_type not in (b"1", b"2"):
                problem = (99, f"OrdType(40)={_text(ord_type)} not supported (1 market, 2 limit)")
            elif tif is None:
                problem = (99, f"TimeInForce(59)={_text(msg.get(fx.TAG_TIME_IN_FORCE))} not supported (0 day, 3 IOC)")
            elif price is None:
                problem = (99, "Price(44) is not a valid price")
            elif self._fault_reject():
                problem = (99, FAULT_REASON_TEXT)
            if problem:
                self.counters["rejects"] += 1
                log.info("FIX: order %s rejected: %s", cl, problem[1])
                self._fix_er(conn, o, b"8", b"8", text=problem[1], rej_reason=problem[0])
                return
            token = self.fix_next_token
            self.fix_next_token += 1
            self.fix_tokens[cl] = token
            self.fix_orders[token] = o
            locate = self.locates.get(o.symbol.decode("ascii", "replace"), 0)
            m.enter(self.eng, self.out, ts, locate, FIX_OWNER, token, side, qty, price, tif, m.DISPLAY_VISIBLE, 0)
        elif t in (fx.MSG_ORDER_CANCEL_REQUEST, fx.MSG_ORDER_CANCEL_REPLACE_REQUEST):
            replace = t == fx.MSG_ORDER_CANCEL_REPLACE_REQUEST
            self.counters["replaces" if replace else "cancels"] += 1
            cl = msg.get(fx.TAG_CL_ORD_ID)
            orig = msg.get(fx.TAG_ORIG_CL_ORD_ID)
            token = self.fix_tokens.get(orig)
            response_to = b"2" if replace else b"1"
            ref = int(m.find_token(self.eng, FIX_OWNER, token)) if token else 0
            if ref == 0:
                log.info("FIX: %s of unknown or finished order %s", "replace" if replace else "cancel", orig)
                self._fix_cancel_reject(conn, cl, orig, response_to, "unknown order")
                return
            if cl in self.fix_tokens:
                self.fix_duplicate_cl_ord_ids += 1
                self._fix_cancel_reject(conn, cl, orig, response_to, "duplicate ClOrdID", order_id=ref,
                                        status=_live_status(self.fix_orders[token]))
                return
            o = self.fix_orders[token]
            o.pending_cl_ord_id, o.orig_cl_ord_id = cl, orig
            if not replace:
                m.cancel_token(self.eng, self.out, ts, FIX_OWNER, token, 0, m.REASON_USER)
                return
            price = _fix_price(msg.get(fx.TAG_PRICE)) if msg.get(fx.TAG_PRICE) else o.price
            qty = msg.get_int(fx.TAG_ORDER_QTY, o.qty)
            new_open = qty - o.cum  # OrderQty is the new total; the engine takes the open quantity
            if price is None or new_open <= 0:
                self._fix_cancel_reject(conn, cl, orig, response_to, "new OrderQty not above CumQty" if price
                                        is not None else "Price(44) is not a valid price", order_id=o.order_id or ref,
                                        status=_live_status(o))
                return
            new_token = self.fix_next_token
            self.fix_next_token += 1
            self.fix_tokens[cl] = new_token
            self.fix_orders[new_token] = FixOrder(cl, o.symbol, o.side, qty, price, o.cum, o.notional,
                                                  orig_cl_ord_id=orig, order_id=o.order_id)
            m.replace_token(self.eng, self.out, ts, FIX_OWNER, token, new_token, new_open, price)
        else:
            # (the session layer answers types outside its application set itself; this is the backstop)
            self._fix_business_reject(conn, msg, 3, f"MsgType {_text(msg.msg_type)} not supported")

    def _fix_report(self, conn: FixConnection, r):
        k = r["kind"]
        token = int(r["token"])
        o = self.fix_orders.get(token)
        if o is None:
            return
        if not o.order_id:
            o.order_id = int(r["ref"])
        ref = o.order_id
        leaves = int(r["leaves"])
        if k == m.R_ACCEPTED:
            self._fix_er(conn, o, b"0", b"0", order_id=ref, leaves=leaves)
        elif k == m.R_EXECUTED:
            self.counters["fills"] += 1
            qty, px = int(r["qty"]), int(r["price"])
            o.cum += qty
            o.notional += qty * px
            sym = o.symbol.decode("ascii", "replace")
            self.fix_executions += 1
            self.fix_executed_shares += qty
            self.fix_positions[sym] = self.fix_positions.get(sym, 0) + (qty if o.side == b"1" else -qty)
            self._fix_er(conn, o, b"F", b"2" if leaves == 0 else b"1", order_id=ref, leaves=leaves, last_qty=qty,
                         last_px=px)
        elif k == m.R_CANCELED:
            if r["reason"] == m.REASON_USER and o.pending_cl_ord_id:
                cl, orig = o.pending_cl_ord_id, o.orig_cl_ord_id or o.cl_ord_id
                o.pending_cl_ord_id = b""
                self._fix_er(conn, o, b"4", b"4", order_id=ref, leaves=0, cl_ord_id=cl, orig=orig)
            else:  # IOC remainder or a system cancel: unsolicited
                self._fix_er(conn, o, b"4", b"4", order_id=ref, leaves=0,
                             text="IOC remainder" if r["reason"] == m.REASON_IOC else "canceled by the venue")
        elif k == m.R_REPLACED:
            old = self.fix_orders.get(int(r["prev_token"]))
            if old is not None:
                old.pending_cl_ord_id = b""
            self._fix_er(conn, o, b"5", _live_status(o) if leaves else b"2", order_id=ref, leaves=leaves,
                         orig=o.orig_cl_ord_id)
        elif k == m.R_REJECTED:
            st = int(r["reject"])
            text = m.STATUS_NAMES.get(st, str(st))
            if r["request"] == m.REQ_ENTER:
                self.counters["rejects"] += 1
                reason = {m.REJECT_INVALID_SYMBOL: 1, m.REJECT_HALTED: 2, m.REJECT_INVALID_QUANTITY: 13}.get(st, 99)
                self._fix_er(conn, o, b"8", b"8", text=text, rej_reason=reason)
            else:
                old = self.fix_orders.get(int(r["prev_token"])) if r["request"] == m.REQ_REPLACE else o
                base = old or o
                cl = o.cl_ord_id if r["request"] == m.REQ_REPLACE else base.pending_cl_ord_id
                self._fix_cancel_reject(conn, cl, base.cl_ord_id,
                                        b"2" if r["request"] == m.REQ_REPLACE else b"1", text,
                                        order_id=base.order_id or int(r["prev_ref"]), status=_live_status(base))

    # reports from the engine
    def _report(self, r):
        owner = int(r["owner"])
        if owner == OUCH_OWNER:
            acct = self.ouch_accounts[self.cfg.ouch_username]
            conn = acct.connection
            # not connected: the message still takes its number, replayed at the next login
            self._ouch_report(acct, conn if conn is not None else _StoredOuch(acct.store), r)
        elif owner == FIX_OWNER:
            sender = self.cfg.fix_client_comp_id.encode()
            conn = self.fix_owner_conn.get(sender)
            self._fix_report(conn if conn is not None else _StoredFix(self.fix_sessions[self.cfg.fix_client_comp_id]), r)

    # -- lifecycle --
    async def _main(self):
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        srv = await loop.create_server(lambda: OuchConnection(self), cfg.ouch_host, cfg.ouch_port)
        self._servers.append(srv)
        self.ouch_address = srv.sockets[0].getsockname()[:2]
        srv = await loop.create_server(lambda: FixConnection(self), cfg.fix_host, cfg.fix_port)
        self._servers.append(srv)
        self.fix_address = srv.sockets[0].getsockname()[:2]
        self._publish_directory()
        self.pub.start()
        self._engine = threading.Thread(target=self._engine_main, name="venue-engine", daemon=True)
        self._engine.start()
        tasks = [asyncio.create_task(self._timer_loop())]
        log.info("venue: %d symbols; MoldUDP64 %s to %s:%d, re-requests on %s:%d; OUCH on %s:%d; FIX on %s:%d; "
                 "synthetic flow %d ops/s", len(self.symbols), cfg.session, *self.feed_address, *self.retrans_address,
                 *self.ouch_address, *self.fix_address, cfg.rate)
        self._ready.set()
        await self._stopping.wait()
        for t in tasks:
            t.cancel()
        self._engine_stop = True
        await loop.run_in_executor(None, self._engine.join, 10)
        for c in list(self.connections):
            if isinstance(c, OuchConnection) and not c.sess.closed:
                c.sess.end_session()
                c.write(c.sess.data_to_send())
            elif isinstance(c, FixConnection) and c.sess is not None and c.sess.logged_on:
                c._act(c.sess.logout("venue closing"))
            c.close()
        for srv in self._servers:
            srv.close()
        self._end_feed()
        deadline = time.monotonic() + 2
        while not self.pub.done and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # let the closing writes go out

    def _thread_main(self):
        try:
            _new_loop_policy()
            asyncio.run(self._runner())
        except BaseException as e:
            self.error = e
            self._ready.set()

    async def _runner(self):
        self._loop = asyncio.get_running_loop()
        await self._main()

    def start(self, timeout: float = 120.0) -> "Venue":
        """Run on a background thread; returns once the ports are bound and the directory is on the feed."""
        self._thread = threading.Thread(target=self._thread_main, name="venue", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"venue did not start within {timeout} s")
        if self.error is not None:
            raise self.error
        return self

    def end_session(self) -> None:
        """End the trading session: no more synthetic flow, MoldUDP64 end of session after what was
        published. Re-requests are still answered and order entry still works until stop()."""
        self._ended = True
        self._enqueue(self._end_feed)

    def _end_feed(self):
        self._drain()
        if not self.pub.ctl[CTL_END]:
            self.pub.end()

    def stop(self, timeout: float = 10.0) -> None:
        """End the sessions (OUCH End of Session, FIX Logout, MoldUDP64 end of session) and shut down."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)
        self._close()

    def _close(self) -> None:
        """The publisher's thread and sockets, and the FIX sequence stores."""
        self.pub.close()
        for s in self.fix_sessions.values():
            s.close()

    def run_forever(self) -> None:
        """Foreground: until SIGINT or SIGTERM."""
        _new_loop_policy()

        async def main():
            self._loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(sig, lambda: self._stopping.set())
            await self._main()

        try:
            asyncio.run(main())
        finally:
            self._close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- test and demo hooks (thread-safe) --
    def participant_order(self, symbol: str, side: str, qty: int, price: int, tif: str = "0") -> None:
        """Enter an order for a synthetic participant (owner 0), as if it came from the market."""
        def enter():
            m.enter(self.eng, self.out, ns_since_midnight(), self.locates[symbol], 0, 0, ord(side), qty, price,
                    ord(tif), m.DISPLAY_VISIBLE, 0)
        self._enqueue(enter)

    def account_record(self, username: str | None = None, timeout: float = 10.0) -> dict:
        """The venue's own record of one OUCH account (default: the configured one), to check a client's against.

        {"open_orders": {user_ref_num: {"symbol", "side" ('B' or 'S'), "price" (1e-4), "leaves"}} as resting in
        the engine now, "positions": {symbol: shares bought - sold}, "executions", "executed_shares", "entered",
        "duplicate_user_refs", "last_user_ref", "next_sequence"}. Taken on the engine thread after the requests
        queued before the call; next_sequence on the event loop once the answers to them are numbered.
        """
        name = self.cfg.ouch_username if username is None else username
        acct = self.ouch_accounts.get(name)
        if acct is None:
            raise KeyError(f"no OUCH account {name!r}; the venue has {sorted(self.ouch_accounts)}")

        def tally():
            return {"positions": dict(acct.positions), "executions": acct.executions,
                    "executed_shares": acct.executed_shares, "entered": acct.entered,
                    "duplicate_user_refs": acct.duplicate_user_refs, "last_user_ref": acct.last_user_ref}

        def sequence():
            return {"next_sequence": acct.store.next_sequence}

        return self._record(acct.owner, int, tally, sequence, timeout)

    def fix_record(self, timeout: float = 10.0) -> dict:
        """The venue's own record of its FIX client, as account_record gives an OUCH account's: "open_orders" keyed
        by ClOrdID (as an int: the gateway's UserRefNum), "positions", "executions", "executed_shares", "duplicate_cl_ord_ids", and the
        session's "next_sender_seq" (the venue's next MsgSeqNum) and "next_target_seq" (the client's next one)."""
        sess = self.fix_sessions[self.cfg.fix_client_comp_id]

        def key(token):
            o = self.fix_orders.get(token)
            return int(o.cl_ord_id) if o is not None and o.cl_ord_id.isdigit() else -token

        def tally():
            return {"positions": dict(self.fix_positions), "executions": self.fix_executions,
                    "executed_shares": self.fix_executed_shares,
                    "duplicate_cl_ord_ids": self.fix_duplicate_cl_ord_ids}

        def sequence():
            return {"next_sender_seq": sess.next_sender_seq, "next_target_seq": sess.next_target_seq}

        return self._record(FIX_OWNER, key, tally, sequence, timeout)

    def _record(self, owner, key, tally, sequence, timeout) -> dict:
        """Resting orders of one owner and its tally from the engine thread, then sequence numbers from the loop."""
        if self._loop is None or self._engine is None or not self._engine.is_alive():
            raise RuntimeError("the venue is not running: an account record needs its engine thread and event loop")
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:  # the record completes on this loop: waiting here would block it
            raise RuntimeError("an account record blocks; call it from another thread than the venue's event loop")
        done: concurrent.futures.Future = concurrent.futures.Future()

        def take():  # engine thread
            try:
                self._drain()  # fills of operations run in this batch (a participant_order) count too
                o = self.eng.orders
                # resting means in a price level, as cancel_owner reads it
                slots = np.nonzero((o["owner"] == owner) & (o["level"] != m.NIL) & (o["ref"] != 0))[0]
                open_orders = {}
                for i in slots:
                    rec = o[i]
                    loc = int(rec["locate"])
                    open_orders[key(int(rec["token"]))] = {
                        "symbol": self.symbols[loc - 1], "side": "B" if rec["side"] == 0 else "S",
                        "price": int(rec["price"]), "leaves": int(rec["leaves"])}
                record = {"open_orders": open_orders, **tally()}
                self._post(finish, record)  # behind every answer the engine has posted so far
            except BaseException as e:
                done.set_exception(e)

        def finish(record):  # event loop: the stream belongs to it
            record.update(sequence())
            done.set_result(record)

        self._enqueue(take)
        try:
            return done.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"the venue's engine did not produce the account record within {timeout} s") from None

    def disconnect_all(self) -> int:
        """Drop every order-entry TCP connection now (the sessions survive); returns how many."""
        conns = list(self.connections)
        if self._loop is not None:
            for c in conns:
                self._loop.call_soon_threadsafe(c.close)
        return len(conns)


class _StoredOuch:
    """Sends to an OUCH account with no connection: the message is numbered and stored for replay."""

    def __init__(self, store: SequencedStore):
        self.store = store

    def send(self, payload: bytes) -> None:
        self.store.append(payload)


class _StoredFix:
    """Sends to a FIX session with no connection: numbered and stored, resent on the client's ResendRequest."""

    def __init__(self, sess: FixSession):
        self.sess = sess

    def send(self, msg_type, fields) -> None:
        self.sess.send(msg_type, fields)


def _live_status(o: FixOrder) -> bytes:
    """OrdStatus(39) of a working order: 1 partially filled, else 0 new (FIX 4.4 no longer uses 5)."""
    return b"1" if o.cum else b"0"


def _text(raw: bytes | None) -> str:
    return "(missing)" if raw is None else repr(raw.decode("ascii", "replace"))


def _px(value) -> bytes:
    """A 1e-4 fixed-point price as a FIX decimal."""
    v = int(round(value))
    return b"%d.%04d" % divmod(v, 10_000) if v >= 0 else b"-" + _px(-v)


def _fix_price(raw: bytes | None) -> int | None:
    """A FIX decimal price in 1e-4 dollars (None when malformed, negative or finer than the 4th decimal)."""
    if raw is None:
        return None
    try:
        text = raw.decode("ascii")
        whole, _, frac = text.partition(".")
        if not whole.isdigit() or (frac and not frac.isdigit()) or len(frac.rstrip("0")) > 4:
            return None
        return int(whole) * 10_000 + int((frac + "0000")[:4] or 0)
    except (UnicodeDecodeError, ValueError):
        return None


def _new_loop_policy():
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio works too
        pass


def main(argv: list[str] | None = None) -> int:
    """`appliance venue --config FILE`: run the venue in the foreground."""
    import argparse
    import sys

    from ..config.loader import ConfigError, load_config

    ap = argparse.ArgumentParser(prog="appliance venue", description="Run the built-in venue: ITCH 5.0 over "
                                 "MoldUDP64 out, OUCH 5.0 (SoupBinTCP) and FIX 4.4 order entry in, from the "
                                 "[venue] section of a config file.")
    ap.add_argument("--config", "-c", help="TOML file with a [venue] section (default: built-in defaults)")
    ap.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)-7s venue %(name)s: %(message)s")
    try:
        cfg = load_config(args.config).venue
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    venue = Venue(cfg)
    venue.run_forever()
    print(venue.stats())
    return 0
