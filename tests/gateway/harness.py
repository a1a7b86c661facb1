"""A gateway driven from the test thread: the real numba gateway agent, a real OUCH or FIX session to a real venue
on loopback, the real journal writer; the test plays the strategy by writing intents into the ring and reading
the updates that come back."""

from __future__ import annotations

import numpy as np

from appliance.config.loader import parse_config
from appliance.gateway import fix_gateway as fg
from appliance.gateway import orders as go
from appliance.gateway.journal import JournalWriter, read_journal
from appliance.gateway.ouch_gateway import OuchLink, gateway_work, recover
from appliance.risk import checks as rk
from appliance.runtime.clock import calibrate, read_tsc
from appliance.runtime.event import EVENT_DTYPE, KIND_CANCEL, KIND_NEW, KIND_REPLACE
from appliance.runtime.histogram import HIST_WORDS
from appliance.runtime.layout import CTL_KILL, CTL_TSC_MULT, HISTOGRAMS, RING_HDR_WORDS
from appliance.runtime.ring import ring_available, ring_head, ring_publish, ring_release, ring_tail
from tests.support import wait_for

DOLLAR = 10_000


class GatewayHarness:
    """One gateway logged in to `venue` for `symbols`; [risk] keys from `risk` (a dict) override the defaults.
    With venue=None nothing logs in: a test attaches a socket it plays the venue on (`attach`)."""

    def __init__(self, venue, symbols, journal_path, risk: dict | None = None, protocol: str = "ouch",
                 recover_journal: bool = False):
        risk_toml = "\n".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in (risk or {}).items())
        self.cfg = parse_config(f"""
[feed]
source = "moldudp64"
[strategy]
kind = "market_maker"
symbols = {list(symbols)!r}
[gateway]
protocol = "{protocol}"
port = {1 if venue is None else venue.ouch_address[1] if protocol == "ouch" else venue.fix_address[1]}
sender_comp_id = "{"APPLIANCE" if venue is None else venue.cfg.fix_client_comp_id}"
target_comp_id = "{"VENUE" if venue is None else venue.cfg.fix_comp_id}"
venue_clock_tolerance_ms = 0
[risk]
{risk_toml}
""".replace("'", '"'))
        self.symbols = list(symbols)
        self.tsc = calibrate()
        self.gw = go.make_gateway_state(self.symbols, 4096, 16)
        self.limits = np.zeros(rk.L_WORDS, dtype=np.int64)
        rk.limits_from_config(self.cfg.risk, self.limits)
        self.ctl = np.zeros(32, dtype=np.int64)
        self.ctl[CTL_TSC_MULT] = self.tsc.mult
        self.counters = np.zeros(16, dtype=np.int64)
        self.hist = np.zeros((len(HISTOGRAMS), HIST_WORDS), dtype=np.int64)
        self.r_in = (np.zeros(RING_HDR_WORDS, dtype=np.int64), np.zeros(256, dtype=EVENT_DTYPE))
        self.r_up = (np.zeros(RING_HDR_WORDS, dtype=np.int64), np.zeros(1024, dtype=EVENT_DTYPE))
        self.r_jr = (np.zeros(RING_HDR_WORDS, dtype=np.int64), np.zeros((1024, 128), dtype=np.uint8))
        self.writer = JournalWriter(journal_path, *self.r_jr, fsync="none")
        self.recovered = {"last_sent_seq": 0}
        if recover_journal:  # as Trading does at start-up
            records, _ = read_journal(journal_path)
            self.recovered = recover(self.gw, records)
        if protocol == "fix":
            g = self.cfg.gateway
            self.fx = fg.make_fix_state(g.sender_comp_id, g.target_comp_id, fg.seq_path_for(str(journal_path)),
                                        self.recovered["last_sent_seq"])
            self.link = fg.FixLink(g, self.gw, self.fx, self.tsc.hz)
        else:
            self.fx = fg.make_fix_state()
            self.link = OuchLink(self.cfg.gateway, self.gw, self.tsc.hz)
        self.updates: list[dict] = []
        self.next_urn = 1
        self.step()  # compile (or load) the agent before logging in: the venue drops a silent session
        if venue is None:
            return
        self.link.login()
        self.pump(lambda: self.gw.w[go.W_RECONCILED], what="reconciliation (Account Query or TestRequest answer)")
        self.next_urn = int(self.gw.w[go.W_URN_FLOOR])  # the venue's account outlives the harness

    def attach(self, sock, next_expected: int = 1, fence: int = 1):
        """Hand the hot agent a connected socket as a FIX logon would (the test plays the venue on its peer)."""
        w, f = self.gw.w, self.fx.w
        sock.setblocking(False)
        self._sock = sock
        f[fg.FX_FENCE_ID] = fence
        w[go.W_NEXT_EXPECTED] = next_expected
        w[go.W_FD] = sock.fileno()
        w[go.W_NEED_QUERY] = 1
        w[go.W_RECONCILED] = 0
        w[go.W_LAST_RECV] = 0
        w[go.W_LINK] = go.LINK_UP

    # -- playing the strategy --------------------------------------------------------------------

    def _intent(self, kind, sym, side, urn, px, qty, aux=0, bid=0, ask=0, t_in=0):
        hdr, slots = self.r_in
        pos = ring_tail(hdr)
        ev = slots[pos & (slots.shape[0] - 1)]
        ev["kind"], ev["side"], ev["flags"], ev["symbol"] = kind, side, 0, self.symbols.index(sym)
        ev["seq"], ev["t_in"], ev["t_hop"], ev["ref"] = 0, t_in, read_tsc(), urn
        ev["px"], ev["qty"], ev["px2"], ev["qty2"], ev["aux"] = px, qty, bid, ask, aux
        ring_publish(hdr, 1)

    def new(self, sym, side, px, qty, *, bid=10 * DOLLAR, ask=10 * DOLLAR + 100):
        """Send a new order intent (side 0 buy, 1 sell) with the given reference touch; its UserRefNum."""
        urn = self.next_urn
        self.next_urn += 1
        self._intent(KIND_NEW, sym, side, urn, px, qty, bid=bid, ask=ask)
        return urn

    def replace(self, sym, old, px, qty, *, bid=10 * DOLLAR, ask=10 * DOLLAR + 100):
        urn = self.next_urn
        self.next_urn += 1
        self._intent(KIND_REPLACE, sym, 0, urn, px, qty, aux=old, bid=bid, ask=ask)
        return urn

    def cancel(self, sym, urn):
        self._intent(KIND_CANCEL, sym, 0, urn, 0, 0)

    # -- driving the agent -----------------------------------------------------------------------

    def step(self) -> int:
        work = gateway_work(self.ctl, self.gw, self.fx, self.limits, self.counters, *self.r_in, *self.r_up, *self.r_jr,
                            self.hist, self.tsc.mult, 32)
        hdr, slots = self.r_up
        n = ring_available(hdr)
        pos = ring_head(hdr)
        for k in range(n):
            ev = slots[(pos + k) & (slots.shape[0] - 1)]
            self.updates.append({f: ev[f].item() for f in EVENT_DTYPE.names})
        ring_release(hdr, n)
        self.writer.drain()
        self.link.poll()
        return work + n

    def pump(self, until, timeout: float = 10.0, what: str = "condition"):
        def once():
            self.step()
            return until()
        return wait_for(once, timeout, interval=0.001, what=what)

    def state_of(self, urn) -> str:
        i = go.slot_of(self.gw, urn)
        return go.STATE_NAMES[int(self.gw.o_state[i])] if i >= 0 else "unknown"

    def outcome(self, urn, timeout: float = 10.0) -> str:
        """Pump until the order is answered: 'new' (accepted), 'rejected:<reason>' or another final state."""
        def answered():
            for u in self.updates:
                if u["ref"] == urn and u["kind"] == 20 and u["flags"] != go.OS_PENDING_NEW:
                    return u
            return None
        u = self.pump(answered, timeout, what=f"an answer to order {urn}")
        if u["flags"] == go.OS_REJECTED:
            reason = u["aux"]
            return "rejected:" + rk.REASONS.get(reason, f"venue {reason - go.REASON_VENUE}")
        return go.STATE_NAMES[u["flags"]]

    def kill(self) -> int:
        t = int(read_tsc())
        self.ctl[CTL_KILL] = t
        return t

    def crash(self):
        """Die without a Logout: the socket closes, the journal keeps what was written."""
        if self.link.sock is not None:
            self.link.sock.close()
            self.link.sock = None
        self.gw.w[go.W_LINK] = go.LINK_DOWN
        self.writer.stop()

    def close(self):
        self.link.logout()
        self.writer.stop()
