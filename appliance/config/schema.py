"""The configuration schema: every key, its type, default, constraints, reloadability and doc.

Each section is a frozen dataclass whose fields are declared with `key(...)`; `SCHEMA` (a tuple of
`Key` records) is derived from those fields, so this file is the only place a key or default lives.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, fields
from typing import Any

AUTO = "auto"
Core = int | str  # a core number, or "auto"
Cores = tuple[int, ...] | str  # core numbers, or "auto"
Symbols = tuple[str, ...]  # stock symbols
Params = tuple[tuple[str, float], ...]  # (name, value) pairs, in the user strategy's order once loaded

# Field annotation (a string, given the __future__ import) -> the `Key.type` that `Key.validate` checks.
_TYPES = {"str": "str", "int": "int", "float": "float", "bool": "bool", "Core": "core", "Cores": "cores",
          "Symbols": "symbols", "Params": "params"}
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SYMBOL_RE = re.compile(r"[A-Z0-9][A-Z0-9 .+-]{0,7}")
_PARAM_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
HOT_THREADS = {"split": ("feed", "strategy", "gateway"), "fused": ("fused",)}


def key(default: Any, doc: str, *, reloadable: bool = False, choices: tuple | None = None,
        min: float | None = None, max: float | None = None, power_of_two: bool = False,
        format: str | None = None) -> Any:
    """Declare one config key as a dataclass field with its default and constraints."""
    meta = dict(doc=doc, reloadable=reloadable, choices=choices, min=min, max=max,
                power_of_two=power_of_two, format=format)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ProcessConfig:
    """Process identity."""

    name: str = key("appliance", "Instance name used in logs and metric labels.", format="name")


@dataclass(frozen=True)
class LogConfig:
    """Logging."""

    level: str = key("info", "Lowest level of log record written.", reloadable=True,
                     choices=("debug", "info", "warning", "error"))
    format: str = key("text", "Log line format: human text or one JSON object per line.",
                      choices=("text", "json"))


@dataclass(frozen=True)
class RuntimeConfig:
    """Hot threads and rings."""

    layout: str = key("split", "split: feed, strategy and gateway hot threads on three cores; "
                      "fused: one run-to-completion hot thread.", choices=("split", "fused"))
    idle: str = key("spin", "What a hot thread does when it finds no work: spin (busy-poll), "
                    "yield (sched_yield), sleep (nanosleep 50 us).", choices=("spin", "yield", "sleep"))
    ring_slots: int = key(4096, "Slots (64 bytes each) per ring.", min=64, max=1048576, power_of_two=True)
    batch: int = key(32, "Max events a producer writes before publishing.", min=1, max=1024)
    stop_timeout_s: float = key(5.0, "Seconds SIGTERM waits for hot threads before giving up.",
                                min=0.1, max=60)


@dataclass(frozen=True)
class CpuConfig:
    """CPU placement of hot threads and the control plane."""

    feed: Core = key(AUTO, "Core for the feed hot thread (split layout).", min=0)
    strategy: Core = key(AUTO, "Core for the strategy hot thread (split layout).", min=0)
    gateway: Core = key(AUTO, "Core for the gateway hot thread (split layout).", min=0)
    fused: Core = key(AUTO, "Core for the one hot thread of the fused layout.", min=0)
    control: Cores = key(AUTO, "Cores for the control plane; auto = allowed CPUs minus the hot cores.", min=0)
    strict: bool = key(False, "Refuse to start when a hot core is not isolated or not allowed, or cores "
                       "are too few for dedicated hot threads (otherwise warn).")
    sched_fifo: bool = key(False, "Run hot threads SCHED_FIFO.")
    fifo_priority: int = key(50, "SCHED_FIFO priority of hot threads.", min=1, max=99)


@dataclass(frozen=True)
class MemoryConfig:
    """The shared-memory arena."""

    require_hugepages: bool = key(False, "Refuse to start unless the arena is on reserved HugePages (MAP_HUGETLB).")
    transparent_hugepages: bool = key(True, "Without reserved HugePages, try madvise(MADV_HUGEPAGE) before normal pages.")
    lock: bool = key(True, "mlock the arena.")
    lockall: bool = key(False, "mlockall(MCL_CURRENT|MCL_FUTURE); costs a few hundred MB resident (LLVM).")


@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic event source used until the real feed exists."""

    rate: int = key(1_000_000, "Events per second; 0 = as fast as the ring accepts.", reloadable=True,
                    min=0, max=100_000_000)


@dataclass(frozen=True)
class FeedConfig:
    """Market data in: NASDAQ TotalView-ITCH 5.0 over MoldUDP64, with gap recovery."""

    source: str = key("synthetic", "synthetic: runtime self-test events; moldudp64: ITCH 5.0 over MoldUDP64 "
                      "(UDP multicast or unicast) into the L3 book.", choices=("synthetic", "moldudp64"))
    address: str = key("127.0.0.1", "Multicast group to join, or the local unicast address to bind.", format="ip")
    port: int = key(26477, "UDP port of the MoldUDP64 stream.", min=1, max=65535)
    interface: str = key("0.0.0.0", "Local address of the interface that joins the multicast group "
                         "(0.0.0.0 = the kernel's choice).", format="ip")
    session: str = key("", "Expected MoldUDP64 session name (up to 10 characters); \"\" = the first one seen. "
                       "Packets of any other session are counted and dropped.", format="session")
    retransmit_host: str = key("127.0.0.1", "MoldUDP64 retransmission (re-request) server address.", format="ip")
    retransmit_port: int = key(0, "Re-request server UDP port; 0 = no recovery, every gap is unrecoverable "
                               "at once.", min=0, max=65535)
    request_timeout_ms: int = key(50, "A re-request not answered within this is sent again.", min=1, max=60000)
    max_retries: int = key(5, "Re-requests of one gap before it is declared unrecoverable.", min=0, max=1000)
    max_request: int = key(1000, "Most messages asked for in one re-request.", min=1, max=65534)
    gap_buffer: int = key(1048576, "Messages that may arrive past a gap and wait (64 bytes each) while it is "
                          "recovered; more makes the gap unrecoverable.", min=64, max=16777216, power_of_two=True)
    on_unrecoverable_gap: str = key("continue", "continue: count the lost messages, mark the books suspect in "
                                    "/status and go on; halt: stop applying the feed (health turns red).",
                                    choices=("continue", "halt"))
    receive_buffer: int = key(16777216, "SO_RCVBUF bytes asked for (SO_RCVBUFFORCE when root).",
                              min=65536, max=1073741824)
    max_payload: int = key(1472, "Largest MoldUDP64 datagram payload accepted, in bytes.", min=64, max=65507)
    symbols: Symbols = key((), "Stocks to book, e.g. [\"AAPL\", \"MSFT\"]; [] = every symbol in the Stock Directory.")


@dataclass(frozen=True)
class BookConfig:
    """Capacity of the L3 order books (preallocated; exceeding one is counted, never fatal)."""

    max_orders: int = key(4194304, "Live orders held across all books.", min=1024, max=268435456,
                          power_of_two=True)
    levels: int = key(256, "Price levels kept per symbol and side; orders beyond are counted as level_overflow.",
                      min=4, max=65536)
    max_symbols: int = key(12000, "Symbols booked at most (NASDAQ lists about 12,000 stock locates).",
                           min=1, max=65536)


@dataclass(frozen=True)
class ControlConfig:
    """The control plane's HTTP endpoint and admin API."""

    host: str = key("127.0.0.1", "Address the HTTP endpoint binds.", format="ip")
    port: int = key(9100, "TCP port; 0 = ephemeral (the bound port is logged).", min=0, max=65535)
    admin_token_file: str = key("", "File holding the admin API token; \"\" = admin API disabled unless "
                                "APPLIANCE_ADMIN_TOKEN is set.")
    fault_injection: bool = key(False, "Enable admin endpoints that deliberately stall a hot thread; "
                                "never in production.")


@dataclass(frozen=True)
class HealthConfig:
    """Liveness and status reporting."""

    heartbeat_timeout_ms: int = key(500, "A hot thread whose heartbeat has not advanced this long is stalled.",
                                    reloadable=True, min=10, max=60000)
    status_interval_s: float = key(2.0, "Seconds between systemd STATUS= updates and stats log lines.",
                                   reloadable=True, min=0.1, max=60)


@dataclass(frozen=True)
class NumbaConfig:
    """Compiled-kernel cache."""

    cache_dir: str = key("", "Kernel cache directory; \"\" = $APPLIANCE_CACHE_DIR, $NUMBA_CACHE_DIR, "
                         "$XDG_CACHE_HOME/appliance or ~/.cache/appliance.")


@dataclass(frozen=True)
class VenueConfig:
    """The built-in venue (`appliance venue`): ITCH 5.0 over MoldUDP64 out, OUCH 5.0 and FIX 4.4 order entry in."""

    symbols: Symbols = key((), "Listed stocks (stock locates 1..n in this order); [] = `symbol_count` generated "
                           "tickers.")
    symbol_count: int = key(100, "Generated tickers when `symbols` is empty.", min=1, max=65535)
    seed: int = key(1, "Seed of the synthetic participants (same seed, same order flow).", min=0, max=2**62)
    rate: int = key(100000, "Synthetic participant operations per second (enter, cancel, replace, take); "
                    "each makes about one ITCH message. 0 = only the appliances' orders.", min=0, max=50000000)
    max_orders: int = key(1048576, "Resting orders the matching engine holds.", min=1024, max=67108864)
    feed_address: str = key("127.0.0.1", "Where the MoldUDP64 stream goes: a unicast address or a multicast "
                            "group.", format="ip")
    feed_port: int = key(26477, "UDP port of the MoldUDP64 stream.", min=1, max=65535)
    feed_interface: str = key("0.0.0.0", "Local address of the interface multicast leaves by (0.0.0.0 = the "
                              "kernel's choice).", format="ip")
    session: str = key("VENUE00001", "MoldUDP64 session name (up to 10 characters).", format="session")
    retransmit_host: str = key("127.0.0.1", "Address the re-request server binds.", format="ip")
    retransmit_port: int = key(26478, "Re-request server UDP port (0 = any free port).", min=0, max=65535)
    history_messages: int = key(1048576, "Messages kept for re-requests (64 bytes each; the newest half is "
                                "served).", min=1024, max=67108864, power_of_two=True)
    max_payload: int = key(1472, "Largest MoldUDP64 datagram payload sent, in bytes.", min=64, max=65507)
    heartbeat_ms: int = key(1000, "MoldUDP64 heartbeat after this long without data.", min=10, max=60000)
    ouch_host: str = key("127.0.0.1", "Address the OUCH 5.0 (SoupBinTCP 4.x) port binds.", format="ip")
    ouch_port: int = key(26400, "OUCH TCP port (0 = any free port).", min=0, max=65535)
    ouch_username: str = key("APPL01", "SoupBinTCP username the OUCH port accepts (up to 6 characters).")
    ouch_password: str = key("secret", "Its password (up to 10 characters).")
    fix_host: str = key("127.0.0.1", "Address the FIX 4.4 acceptor binds.", format="ip")
    fix_port: int = key(26401, "FIX TCP port (0 = any free port).", min=0, max=65535)
    fix_comp_id: str = key("VENUE", "The venue's SenderCompID(49).", format="name")
    fix_client_comp_id: str = key("APPLIANCE", "The one client SenderCompID the acceptor takes.", format="name")
    state_dir: str = key("venue-state", "Directory for persisted FIX sequence numbers and messages.")
    fault_drop: float = key(0.0, "Share of feed data packets never sent first time (recoverable by re-request).",
                            min=0.0, max=1.0)
    fault_duplicate: float = key(0.0, "Share of feed data packets sent twice.", min=0.0, max=1.0)
    fault_reorder: float = key(0.0, "Share of feed data packets held back and sent after the next.", min=0.0,
                               max=1.0)
    fault_stall_at: int = key(0, "Stall the feed once at this sequence number (0 = never).", min=0, max=2**62)
    fault_stall_ms: int = key(0, "How long that stall lasts.", min=0, max=600000)
    fault_reject: float = key(0.0, "Share of new orders rejected on purpose (OUCH reason 'other', FIX "
                              "OrdRejReason 99).", min=0.0, max=1.0)
    fault_delay_ms: int = key(0, "Hold every order request this long before the engine sees it.", min=0,
                              max=60000)
    fault_disconnect_after: int = key(0, "Drop an order-entry connection after this many order requests on it "
                                      "(0 = never); the session survives for the reconnect.", min=0, max=2**31)


@dataclass(frozen=True)
class StrategyConfig:
    """The strategy on the strategy hot thread: what it trades and its parameters (prices in 1e-4 dollars)."""

    kind: str = key("none", "none: no trading (the runtime's self-test pipeline or feed only); market_maker: "
                    "quotes both sides around mid or microprice; mean_reversion: takes liquidity when the "
                    "window's mean strays from its median; module: your own quote function from "
                    "strategy.module.", choices=("none", "market_maker", "mean_reversion", "module"))
    symbols: Symbols = key((), "Stocks the strategy trades (at most 1024); each must be booked by the feed.")
    module: str = key("", "The Python file of a strategy of kind = \"module\" (README: Writing a strategy), "
                      "relative to this config file's directory; it is compiled when the config is validated.")
    params: Params = key((), "The module's parameters, a table of numbers ([strategy.params] name = value); "
                         "names must be in its PARAMS, the others keep its defaults.", reloadable=True)
    fair_value: str = key("mid", "Fair value the quotes centre on.", reloadable=True,
                          choices=("mid", "microprice"))
    quote_size: int = key(100, "Shares per quote (market maker) or per order (mean reversion).",
                          reloadable=True, min=1, max=1_000_000)
    half_spread: int = key(100, "Minimum distance of each quote from fair value (1e-4 dollars).",
                           reloadable=True, min=0, max=10_000_000)
    vol_multiplier: float = key(2.0, "Extra half-spread per unit of short-term volatility (EWMA of |fair "
                                "value change|).", reloadable=True, min=0.0, max=1000.0)
    vol_alpha: float = key(0.05, "Weight of the newest fair-value change in the volatility EWMA.",
                           reloadable=True, min=0.0, max=1.0)
    skew_per_share: float = key(0.5, "Quotes move against inventory by this much (1e-4 dollars) per share "
                                "held.", reloadable=True, min=0.0, max=1_000_000.0)
    max_position: int = key(1000, "The strategy stops adding on a side at this many shares long or short "
                            "(risk.max_position is the hard limit).", reloadable=True, min=0, max=100_000_000)
    replace_ticks: int = key(1, "Replace a quote once its target moved at least this many ticks.",
                             reloadable=True, min=1, max=1_000_000)
    refresh_us: int = key(200, "Least time between two actions on one side of one symbol.", reloadable=True,
                          min=0, max=60_000_000)
    tick_size: int = key(100, "Price increment (1e-4 dollars; 100 = one cent).", reloadable=True, min=1,
                         max=1_000_000)
    signal_window: int = key(32, "Mid prices in the mean-reversion window (mean minus median).", min=3, max=64)
    signal_threshold: float = key(1.0, "Mean reversion trades when |mean - median| exceeds this many ticks.",
                                  reloadable=True, min=0.0, max=1_000_000.0)
    signal_weight: float = key(0.0, "Market maker: shift fair value by this times (median - mean).",
                               reloadable=True, min=-1000.0, max=1000.0)


@dataclass(frozen=True)
class RiskConfig:
    """Pre-trade risk, enforced by the gateway before anything reaches the wire; and the kill switch."""

    max_order_qty: int = key(1000, "Largest order, in shares.", reloadable=True, min=1, max=100_000_000)
    max_notional: float = key(1_000_000.0, "Largest order value, in dollars (price x shares).", reloadable=True,
                              min=0.01, max=1e12)
    max_position: int = key(2000, "Largest position per symbol, long or short, counting every open order as "
                            "if it filled.", reloadable=True, min=0, max=1_000_000_000)
    max_gross_position: int = key(20000, "Largest sum over symbols of |position| plus all open order shares.",
                                  reloadable=True, min=0, max=1_000_000_000)
    price_collar_bps: int = key(500, "A buy may not be priced above the best offer (a sell below the best bid) "
                                "by more than this many basis points.", reloadable=True, min=0, max=100_000)
    order_rate: int = key(1000, "Orders and replaces per second (token bucket refill); cancels are never "
                          "limited.", reloadable=True, min=1, max=10_000_000)
    order_burst: int = key(100, "Token bucket size: orders that may go at once after a quiet spell.",
                           reloadable=True, min=1, max=10_000_000)
    max_open_orders: int = key(200, "Open orders across all symbols.", reloadable=True, min=1, max=1_000_000)
    self_cross_prevention: bool = key(True, "Refuse an order that would trade against one of our own.",
                                      reloadable=True)
    kill_on_feed_loss_ms: int = key(2000, "Trip the kill switch when no market data arrived for this long "
                                    "while trading (0 = never).", reloadable=True, min=0, max=3_600_000)
    kill_on_session_loss_ms: int = key(2000, "Trip the kill switch when the order session has been down "
                                       "this long (0 = never).", reloadable=True, min=0, max=3_600_000)


@dataclass(frozen=True)
class GatewayConfig:
    """Order entry out: OUCH 5.0 over SoupBinTCP, or FIX 4.4, to the venue."""

    protocol: str = key("none", "none: no order entry; ouch: OUCH 5.0 over SoupBinTCP 4.x from the gateway hot "
                        "thread; fix: FIX 4.4 initiator session from the gateway hot thread.",
                        choices=("none", "ouch", "fix"))
    host: str = key("127.0.0.1", "Venue order-entry address.", format="ip")
    port: int = key(26400, "Venue order-entry TCP port (the venue's OUCH or FIX port).", min=1, max=65535)
    username: str = key("APPL01", "SoupBinTCP username (up to 6 characters; OUCH).")
    password: str = key("secret", "SoupBinTCP password (up to 10 characters; OUCH).")
    sender_comp_id: str = key("APPLIANCE", "Our SenderCompID(49) (FIX; up to 32 characters).", format="name")
    target_comp_id: str = key("VENUE", "The venue's CompID, our TargetCompID(56) (FIX; up to 32 characters).",
                              format="name")
    connect_timeout_ms: int = key(2000, "Give up one connection attempt (TCP connect plus login) after this.",
                                  min=10, max=60000)
    reconnect_min_ms: int = key(100, "First wait before reconnecting; doubles after each failure.", min=1,
                                max=60000)
    reconnect_max_ms: int = key(5000, "Longest wait between reconnect attempts.", min=1, max=600000)
    heartbeat_ms: int = key(1000, "Send a client heartbeat after this long without sending (FIX: HeartBtInt, "
                            "rounded to whole seconds, at least 1).", min=50, max=60000)
    idle_timeout_ms: int = key(15000, "Declare the session lost after hearing nothing for this long.",
                               min=100, max=600000)
    venue_clock_tolerance_ms: int = key(500, "How far the venue's clock may lag ours: an Account Query answer "
                                        "stamped earlier than our login minus this is an old session's.", min=0,
                                        max=60000)
    max_orders: int = key(65536, "Orders the gateway's order table holds (by UserRefNum).", min=1024,
                          max=16777216, power_of_two=True)
    max_open_per_symbol: int = key(16, "Open orders one symbol may have (bounds the self-cross check's scan).",
                                   min=1, max=256)
    cancel_on_stop_timeout_s: float = key(3.0, "On SIGTERM, wait this long for resting orders to be "
                                          "confirmed canceled before logging out.", min=0.0, max=60.0)


@dataclass(frozen=True)
class JournalConfig:
    """The order journal: every order sent and every venue message received, for crash recovery."""

    path: str = key("", "Journal file; \"\" = $STATE_DIRECTORY/orders.journal under systemd, else "
                    "./orders.journal.")
    fsync: str = key("interval", "none: a process crash loses nothing written, a power loss may lose what "
                     "the OS had not flushed; interval: a power loss loses at most fsync_interval_ms; always: "
                     "fsync before each batch is released (slowest, loses nothing).",
                     choices=("none", "interval", "always"))
    fsync_interval_ms: int = key(50, "fsync period for fsync = \"interval\".", min=1, max=60000)
    ring_slots: int = key(4096, "Records (128 bytes each) the hot gateway may queue for the writer.",
                          min=64, max=1048576, power_of_two=True)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration; `Config()` is all defaults."""

    process: ProcessConfig = field(default_factory=ProcessConfig)
    log: LogConfig = field(default_factory=LogConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    cpu: CpuConfig = field(default_factory=CpuConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    book: BookConfig = field(default_factory=BookConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    numba: NumbaConfig = field(default_factory=NumbaConfig)
    venue: VenueConfig = field(default_factory=VenueConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)

    @property
    def trading(self) -> bool:
        """True when the strategy trades through the gateway (the real trading path)."""
        return self.gateway.protocol != "none"

    def hot_threads(self) -> tuple[str, ...]:
        """Hot-thread role names, in order, for the configured layout."""
        return HOT_THREADS[self.runtime.layout]

    def configured_core(self, role: str) -> int | None:
        """The core explicitly configured for a hot-thread role, or None for "auto"."""
        if role not in HOT_THREADS["split"] + HOT_THREADS["fused"]:
            raise ValueError(f"unknown hot-thread role {role!r}")
        core = getattr(self.cpu, role)
        return None if core == AUTO else core

    def control_cores(self) -> tuple[int, ...] | None:
        """The explicitly configured control-plane cores, or None for "auto"."""
        return None if self.cpu.control == AUTO else self.cpu.control

    def get(self, path: str) -> Any:
        """The effective value at a dotted key path such as "cpu.feed"."""
        section, name = path.split(".")
        return getattr(getattr(self, section), name)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Effective values as a nested plain dict (tuples become lists, as in TOML)."""
        out: dict[str, dict[str, Any]] = {}
        for k in SCHEMA:
            value = self.get(k.path)
            if k.type == "params":
                value = dict(value)
            out.setdefault(k.section, {})[k.name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class Key:
    """One config key: dotted path, type name, default, doc and constraints."""

    path: str
    type: str  # "str", "int", "float", "bool", "core" ("auto" | int), "cores" ("auto" | list of int), "symbols"
    default: Any
    doc: str
    reloadable: bool = False
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    power_of_two: bool = False
    format: str | None = None  # "name" (process name), "ip" (address literal) or "session" (MoldUDP64)

    @property
    def section(self) -> str:
        return self.path.split(".")[0]

    @property
    def name(self) -> str:
        return self.path.split(".")[1]

    @property
    def expects(self) -> str:
        """What a valid value looks like, for error messages and docs."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.format == "name":
            return "1 to 64 characters from A-Z a-z 0-9 _ . -"
        if self.format == "session":
            return "up to 10 printable ASCII characters"
        if self.format == "ip":
            return "an IPv4 or IPv6 address literal such as '127.0.0.1' or '::1'"
        if self.type == "core":
            return f"'auto' or a core number >= {self.min}"
        if self.type == "cores":
            return f"'auto' or a non-empty list of distinct core numbers >= {self.min}"
        if self.type == "symbols":
            return "a list of distinct stock symbols, 1 to 8 characters of A-Z 0-9 . + - and space"
        if self.type == "params":
            return "a table of parameter names to numbers"
        if self.type in ("int", "float"):
            what = "a power of two" if self.power_of_two else "an integer" if self.type == "int" else "a number"
            if self.max is None:
                return f"{what} >= {self.min}"
            return f"{what} between {self.min} and {self.max}"
        return {"bool": "true or false", "str": "a string"}[self.type]

    def validate(self, value: Any) -> Any:
        """Return the value in its stored form, or raise ValueError saying what was expected and found."""
        t, ok = self.type, False
        if t == "bool":
            ok = isinstance(value, bool)
        elif t == "str":
            ok = isinstance(value, str) and (not self.choices or value in self.choices) and (
                self.format != "name" or _NAME_RE.fullmatch(value) is not None) and (
                self.format != "ip" or _is_ip(value)) and (
                self.format != "session" or len(value) <= 10 and value.isascii() and value.isprintable())
        elif t in ("core", "cores") and value == AUTO:
            ok = True
        elif t in ("int", "float", "core"):
            # TOML booleans are not integers, and a float is never silently truncated to an int.
            ok = (_is_int(value) or t == "float" and isinstance(value, float)) and self._in_range(value)
            value = float(value) if ok and t == "float" else value
        elif t == "cores" and isinstance(value, list) and value:
            ok = all(_is_int(c) and self._in_range(c) for c in value) and len(set(value)) == len(value)
            value = tuple(value) if ok else value
        elif t == "params" and isinstance(value, (dict, tuple)):
            return _validate_params(dict(value))
        elif t == "symbols" and isinstance(value, (list, tuple)):
            ok = all(isinstance(v, str) and _SYMBOL_RE.fullmatch(v) for v in value) and len(set(value)) == len(value)
            value = tuple(value) if ok else value
        if not ok:
            raise ValueError(f"expected {self.expects}; got {describe(value, self._type_ok(value))}")
        return value

    def _in_range(self, n: float) -> bool:
        return ((self.min is None or n >= self.min) and (self.max is None or n <= self.max)
                and (not self.power_of_two or n > 0 and n & (n - 1) == 0))

    def _type_ok(self, value: Any) -> bool:
        """Whether the TOML type was right (so the message need only show the value)."""
        if isinstance(value, bool):
            return self.type == "bool"
        return {"bool": False, "str": isinstance(value, str), "int": isinstance(value, int),
                "float": isinstance(value, (int, float)), "core": isinstance(value, (int, str)),
                "cores": isinstance(value, (list, str)), "symbols": isinstance(value, list),
                "params": isinstance(value, dict)}[self.type]


class EntryError(ValueError):
    """Bad entries inside a table-valued key: `entries` are (name, message), each reported at key path.name."""

    def __init__(self, entries: list[tuple[str, str]]):
        self.entries = entries
        super().__init__("; ".join(f"{n}: {m}" for n, m in entries))


def _validate_params(table: dict) -> Params:
    """[strategy.params] as (name, float) pairs; which names exist is the loaded module's to say."""
    bad = []
    for name, value in table.items():
        if not _PARAM_RE.fullmatch(name):
            bad.append((name, "not a parameter name (a letter or _, then letters, digits or _)"))
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            bad.append((name, f"expected a number; got {describe(value)}"))
    if bad:
        raise EntryError(bad)
    return tuple((name, float(value)) for name, value in table.items())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(_show, value)) + "]"
    return repr(value)


def describe(value: Any, type_ok: bool = False) -> str:
    """A found value for an error message: the value alone, or its TOML type and the value."""
    shown = _show(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    if type_ok:
        return shown
    kinds = ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
             (list, "an array"), (dict, "a table"))
    kind = next((name for cls, name in kinds if isinstance(value, cls)), "a date/time")
    return f"{kind} ({shown})"


# Section name -> section dataclass, in file order.
SECTION_TYPES: dict[str, type] = {f.name: f.default_factory for f in fields(Config)}  # type: ignore[misc]
SECTIONS: tuple[str, ...] = tuple(SECTION_TYPES)
SCHEMA: tuple[Key, ...] = tuple(
    Key(path=f"{section}.{f.name}", type=_TYPES[f.type], default=f.default, **f.metadata)
    for section, cls in SECTION_TYPES.items() for f in fields(cls))
KEYS: dict[str, Key] = {k.path: k for k in SCHEMA}
DEFAULTS = Config()
