"""Prometheus exposition: a collector that reads the arena's counters and histograms at scrape time.

Nothing on the hot path knows about Prometheus: each scrape copies the single-writer counters and
histogram buckets out of the arena, so a scrape costs the hot threads nothing but a cache miss.
"""

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily

from .. import __version__
from ..runtime.arena import MODES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HOP_RINGS = {"hop_feed_to_strategy": "feed_to_strategy", "hop_strategy_to_gateway": "strategy_to_gateway"}
STATES = ("starting", "running", "stalled", "stopped")
STAGES = {"feed_decode": "feed_decode", "feed_book": "book_update", "strategy_decide": "strategy_decide",
          "risk_check": "risk_check", "send_call": "send"}


class ApplianceCollector:
    """Reads one running process's engine and control-plane state into metric families."""

    def __init__(self, state):
        self.state = state  # control.plane.ProcessState

    def collect(self):
        st = self.state
        eng = st.engine
        cfg = st.cfg
        info = InfoMetricFamily("appliance", "Build and identity of this appliance process.")
        info.add_metric([], {"version": __version__, "name": cfg.process.name, "layout": cfg.runtime.layout})
        yield info
        yield GaugeMetricFamily("appliance_ready", "1 once every hot loop is compiled and running.", value=int(st.ready))
        reloads = CounterMetricFamily("appliance_config_reloads", "Config reloads by outcome.", labels=["outcome"])
        reloads.add_metric(["applied"], st.reloads_ok)
        reloads.add_metric(["rejected"], st.reloads_failed)
        yield reloads
        if eng is None:
            return

        arena = eng.arena
        mode = GaugeMetricFamily("appliance_arena_mode", "Memory backing the arena (1 for the mode in force).", labels=["mode"])
        for m in MODES:
            mode.add_metric([m], int(arena.mode == m))
        yield mode
        yield GaugeMetricFamily("appliance_arena_bytes", "Size of the arena.", value=arena.layout.size)
        yield GaugeMetricFamily("appliance_arena_huge_bytes", "Arena bytes backed by huge pages.", value=arena.huge_bytes)
        yield GaugeMetricFamily("appliance_arena_locked", "1 if the arena is mlocked.", value=int(arena.locked))
        yield GaugeMetricFamily("appliance_tsc_hertz", "Calibrated time-stamp counter frequency.", value=eng.tsc.hz)

        beats = CounterMetricFamily("appliance_hot_thread_heartbeats", "Loop iterations of each hot thread.", labels=["thread"])
        busy = CounterMetricFamily("appliance_hot_thread_busy_iterations", "Loop iterations that found work.", labels=["thread"])
        core = GaugeMetricFamily("appliance_hot_thread_core", "Core each hot thread is pinned to.", labels=["thread"])
        placed = GaugeMetricFamily(
            "appliance_hot_thread_placement_verified", "1 if /proc shows the thread allowed only on its core.", labels=["thread"]
        )
        state = GaugeMetricFamily("appliance_hot_thread_state", "1 for each hot thread's current state.", labels=["thread", "state"])
        stalled = GaugeMetricFamily(
            "appliance_hot_thread_stalled", "1 if the heartbeat has not advanced within health.heartbeat_timeout_ms.", labels=["thread"]
        )
        silent = st.monitor.silent_for()
        timeout = st.monitor.timeout_s
        for t in st.thread_report():
            n = t["thread"]
            beats.add_metric([n], t["heartbeats"])
            busy.add_metric([n], t["busy_iterations"])
            core.add_metric([n], t["core"])
            placed.add_metric([n], int(t["verified"]))
            for s in STATES:
                state.add_metric([n, s], int(t["state"] == s))
            stalled.add_metric([n], int(silent.get(n, 0.0) > timeout))
        yield from (beats, busy, core, placed, state, stalled)

        names = {
            "events_in": ("appliance_events_received", "Events an agent consumed from its input ring."),
            "events_out": ("appliance_events_published", "Events an agent published to its output ring."),
            "backpressure": ("appliance_ring_backpressure", "Times an agent found its output ring full."),
            "sequence_errors": ("appliance_sequence_errors", "Events that arrived out of order or after a gap."),
        }
        fams = {k: CounterMetricFamily(m, h, labels=["agent"]) for k, (m, h) in names.items()}
        for agent, values in eng.counters().items():
            for k, v in values.items():
                fams[k].add_metric([agent], v)
        yield from fams.values()

        depth = GaugeMetricFamily("appliance_ring_depth", "Events published and not yet consumed.", labels=["ring"])
        cap = GaugeMetricFamily("appliance_ring_capacity", "Slots in the ring.", labels=["ring"])
        for ring, r in eng.rings().items():
            depth.add_metric([ring], r["depth"])
            cap.add_metric([ring], r["capacity"])
        yield depth
        yield cap

        hop = HistogramMetricFamily(
            "appliance_ring_hop_latency_seconds", "From the producer's publication to the consumer's read, per ring.", labels=["ring"]
        )
        snaps = eng.histograms()
        for name, ring in HOP_RINGS.items():
            s = snaps[name]
            hop.add_metric([ring], s.prometheus_buckets(), s.sum_ns / 1e9)
        yield hop
        pipe = HistogramMetricFamily(
            "appliance_pipeline_latency_seconds", "From the source stamping an event to the sink consuming it."
        )
        s = snaps["pipeline"]
        pipe.add_metric([], s.prometheus_buckets(), s.sum_ns / 1e9)
        yield pipe
        stages = HistogramMetricFamily(
            "appliance_stage_latency_seconds", "Time spent in each stage of the trading path (per packet, event or "
            "order).", labels=["stage"])
        for name, stage in STAGES.items():
            s = snaps[name]
            stages.add_metric([stage], s.prometheus_buckets(), s.sum_ns / 1e9)
        yield stages
        for name, metric, doc in (
            ("tick_to_trade", "appliance_tick_to_trade_latency_seconds",
             "From an ITCH packet's arrival in user space to send() returning for the order it caused."),
            ("tick_to_send", "appliance_tick_to_send_latency_seconds",
             "From an ITCH packet's arrival in user space to its order's bytes being handed to send()."),
            ("order_ack", "appliance_order_ack_latency_seconds", "From send() of an order to the venue's Accepted."),
        ):
            h = HistogramMetricFamily(metric, doc)
            s = snaps[name]
            h.add_metric([], s.prometheus_buckets(), s.sum_ns / 1e9)
            yield h
        if eng.feed is not None:
            yield from feed_metrics(eng.feed.stats())
        if eng.trading is not None:
            yield from trading_metrics(eng.trading.status())


# MoldUDP64 session counters exported one metric each: (counter, metric suffix, help).
_MOLD = (
    ("packets", "packets", "MoldUDP64 datagrams received."),
    ("bytes", "bytes", "Bytes of MoldUDP64 datagrams received."),
    ("messages", "messages", "ITCH messages delivered in sequence to the book."),
    ("heartbeats", "heartbeats", "MoldUDP64 heartbeat packets."),
    ("dup_packets", "duplicate_packets", "Packets entirely below the expected sequence (duplicates, late)."),
    ("dup_messages", "duplicate_messages", "Messages already delivered or already waiting."),
    ("gaps", "gaps", "Times a packet revealed missing messages."),
    ("gap_messages", "gap_messages", "Messages those gaps spanned."),
    ("requests", "rerequests", "Re-request packets sent to the retransmission server."),
    ("timeouts", "rerequest_timeouts", "Re-requests that timed out."),
    ("recovered", "recovered_messages", "Missing messages that arrived later (retransmitted or reordered)."),
    ("unrecoverable", "unrecoverable_messages", "Messages declared lost."),
    ("loss_events", "unrecoverable_gaps", "Gaps declared unrecoverable."),
)
_MOLD_MALFORMED = {"bad_truncated": "truncated_packet", "bad_overrun": "block_overrun",
                   "bad_session": "wrong_session", "oversize": "oversize_message"}


def feed_metrics(st: dict):
    """Metric families of the live ITCH feed: MoldUDP64 counters, ITCH per type, malformed input by kind."""
    mold = st["mold"]
    for key, name, doc in _MOLD:
        yield CounterMetricFamily(f"appliance_feed_{name}", doc, value=mold[key])
    bad = CounterMetricFamily("appliance_feed_malformed", "Bad input counted and skipped, by kind.", labels=["kind"])
    for key, kind in _MOLD_MALFORMED.items():
        bad.add_metric([kind], mold[key])
    for kind, n in st["book"]["malformed"].items():
        bad.add_metric([kind], n)
    yield bad
    by_type = CounterMetricFamily("appliance_feed_itch_messages", "ITCH messages applied, by type.", labels=["type"])
    for t, n in st["book"]["by_type"].items():
        by_type.add_metric([t], n)
    yield by_type
    book = st["book"]
    yield GaugeMetricFamily("appliance_book_symbols", "Symbols with a book.", value=book["symbols"])
    yield GaugeMetricFamily("appliance_book_live_orders", "Orders resting in the books.", value=book["live_orders"])
    yield CounterMetricFamily("appliance_book_bbo_changes", "Best bid/offer changes published.", value=book["bbo_events"])
    yield CounterMetricFamily("appliance_book_trades", "Trades seen on the feed.", value=book["trades"])
    yield GaugeMetricFamily("appliance_feed_expected_sequence", "Next MoldUDP64 sequence number expected.",
                            value=st["expected_seq"])
    yield GaugeMetricFamily("appliance_feed_loss", "1 once messages were declared unrecoverable.", value=int(st["loss"]))
    yield GaugeMetricFamily("appliance_feed_halted", "1 when the feed halted on an unrecoverable gap.",
                            value=int(st["halted"]))


_ORDER_EVENTS = (("sent", "sent"), ("replaces", "replace_sent"), ("cancels", "cancel_sent"),
                 ("accepted", "accepted"), ("fills", "filled"), ("canceled", "canceled"),
                 ("venue_rejects", "rejected_by_venue"), ("lost_in_disconnect", "lost_in_disconnect"))


def trading_metrics(st: dict):
    """Metric families of the trading path: orders, risk rejects by reason, positions, P&L, session, kill switch."""
    orders = CounterMetricFamily("appliance_orders", "Order messages and venue answers, by event.", labels=["event"])
    for key, event in _ORDER_EVENTS:
        orders.add_metric([event], st["orders"][key])
    yield orders
    yield GaugeMetricFamily("appliance_open_orders", "Orders open at the venue (as the gateway knows them).",
                            value=st["orders"]["open"])
    rej = CounterMetricFamily("appliance_risk_rejects", "Orders refused before the wire, by reason.", labels=["reason"])
    for reason, n in st["risk_rejects"].items():
        rej.add_metric([reason], n)
    yield rej
    pos = GaugeMetricFamily("appliance_position_shares", "Signed position per symbol.", labels=["symbol"])
    pnl = GaugeMetricFamily("appliance_pnl_dollars", "Cash plus position marked at mid, per symbol.", labels=["symbol"])
    for sym, shares in st["positions"].items():
        pos.add_metric([sym], shares)
        pnl.add_metric([sym], st["pnl"]["by_symbol"][sym])
    yield pos
    yield pnl
    sess = st["session"]
    yield GaugeMetricFamily("appliance_session_up", "1 while the order session is logged in and reconciled.",
                            value=int(sess["up"] and sess["reconciled"]))
    yield CounterMetricFamily("appliance_session_logins", "Logins to the venue (reconnects included).",
                              value=sess["logins"])
    yield CounterMetricFamily("appliance_session_losses", "Times the order session was lost.", value=sess["links_lost"])
    yield GaugeMetricFamily("appliance_kill_switch", "1 while the kill switch is on.", value=int(st["kill_switch"]["on"]))
    j = st["journal"]
    yield CounterMetricFamily("appliance_journal_records", "Records appended to the order journal.",
                              value=j["records_written"])


def make_registry(state) -> CollectorRegistry:
    """A registry with the appliance collector and the standard process metrics (CPU, memory, fds)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ApplianceCollector(state))
    ProcessCollector(registry=reg)
    return reg


def exposition(registry) -> bytes:
    return generate_latest(registry)
