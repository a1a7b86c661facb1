"""Tests for the strict TOML configuration (appliance.config)."""

import dataclasses
import re
from pathlib import Path

import pytest

from appliance.config import (DEFAULTS, KEYS, SCHEMA, SECTIONS, Config, ConfigError, load_config,
                              parse_config, reload_diff, render_effective)

ROOT = Path(__file__).resolve().parents[2]
CPUS = {0, 1, 2, 3}


def problems(text: str, allowed=CPUS) -> dict[str, str]:
    """Parse text expecting failure; return {path: message} and check str(error) agrees."""
    with pytest.raises(ConfigError) as info:
        parse_config(text, allowed_cpus=allowed)
    err = info.value
    assert str(err).splitlines() == [f"{p.path}: {p.message}" for p in err.problems]
    return {p.path: p.message for p in err.problems}


def test_defaults():
    cfg = load_config(None, allowed_cpus=CPUS)
    assert cfg == Config() == DEFAULTS == parse_config("", allowed_cpus=CPUS)
    assert cfg.runtime.layout == "split" and cfg.runtime.ring_slots == 4096
    assert cfg.cpu.feed == "auto" and cfg.cpu.control == "auto" and cfg.memory.lock is True
    assert cfg.hot_threads() == ("feed", "strategy", "gateway")
    assert cfg.configured_core("feed") is None and cfg.control_cores() is None
    assert all(cfg.get(k.path) == k.default for k in SCHEMA)
    assert cfg.to_dict()["health"] == {"heartbeat_timeout_ms": 500, "status_interval_s": 2.0}


def test_schema_is_complete_and_consistent():
    assert SECTIONS == ("process", "log", "runtime", "cpu", "memory", "synthetic", "feed", "book", "control",
                        "health", "numba", "venue", "strategy", "risk", "gateway", "journal")
    assert len(SCHEMA) == 125 and len(KEYS) == 125
    # Strategy parameters and risk limits are reloadable (the hot loops read them from arrays the control
    # plane rewrites); nothing that sizes memory, names a socket or changes the kernels is.
    reloadable = {k.path for k in SCHEMA if k.reloadable}
    assert reloadable - {k.path for k in SCHEMA if k.section in ("strategy", "risk")} == {
        "log.level", "synthetic.rate", "health.heartbeat_timeout_ms", "health.status_interval_s"}
    assert {"risk.max_position", "risk.order_rate", "strategy.half_spread", "strategy.quote_size"} <= reloadable
    assert not {"strategy.kind", "strategy.symbols", "strategy.signal_window"} & reloadable
    for k in SCHEMA:
        assert k.doc and k.expects
        assert k.validate(k.default) == k.default  # every default passes its own constraints


def test_reference_file_equals_defaults_and_documents_every_key():
    path = ROOT / "config" / "appliance.toml"
    assert load_config(path, allowed_cpus=CPUS) == DEFAULTS
    lines = path.read_text().splitlines()
    section = None
    for i, line in enumerate(lines):
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m[1]
        elif m := re.match(r"(\w+) = ", line):
            key = KEYS[f"{section}.{m[1]}"]
            block = []
            for prev in reversed(lines[:i]):
                if not prev.startswith("#"):
                    break
                block.append(prev)
            comment = " ".join(block)
            assert "Allowed:" in comment, key.path
            assert f"Reloadable by SIGHUP: {'yes' if key.reloadable else 'no'}." in comment, key.path
    text = path.read_text()
    for k in SCHEMA:
        assert re.search(rf"^\[{k.section}\]$(?:\n(?!\[).*)*\n{k.name} = ", text, re.M), k.path


def test_demo_file():
    cfg = load_config(ROOT / "config" / "demo.toml", allowed_cpus={0, 1})
    assert cfg.process.name == "demo" and cfg.runtime.layout == "split" and cfg.runtime.idle == "yield"
    assert cfg.trading and cfg.feed.source == "moldudp64" and cfg.strategy.kind == "market_maker"
    assert set(cfg.strategy.symbols) <= set(cfg.venue.symbols) and cfg.control.port == 0
    assert cfg.health.heartbeat_timeout_ms == 1000
    assert cfg.memory == DEFAULTS.memory and cfg.cpu == DEFAULTS.cpu


@pytest.mark.parametrize("toml, path, says", [
    ('[gateway]\nprotocol = "ouch"\n[strategy]\nkind = "market_maker"\nsymbols = ["AAA"]\n', "gateway.protocol",
     "moldudp64"),
    ('[feed]\nsource = "moldudp64"\n[gateway]\nprotocol = "ouch"\n', "strategy.kind", "no strategy"),
    ('[feed]\nsource = "moldudp64"\n[strategy]\nkind = "market_maker"\nsymbols = ["AAA"]\n', "gateway.protocol",
     "order entry"),
    ('[feed]\nsource = "moldudp64"\nsymbols = ["BBB"]\n[strategy]\nkind = "market_maker"\nsymbols = ["AAA"]\n'
     '[gateway]\nprotocol = "ouch"\n', "strategy.symbols", "AAA not booked"),
    ('[gateway]\nusername = "TOOLONGNAME"\n', "gateway.username", "6 characters"),
    ('[gateway]\nreconnect_min_ms = 500\nreconnect_max_ms = 100\n', "gateway.reconnect_max_ms", "below"),
])
def test_inconsistent_trading_config_names_the_key(toml, path, says):
    with pytest.raises(ConfigError) as e:
        parse_config(toml)
    assert path in str(e.value) and says in str(e.value)


def test_values_are_read_and_converted():
    cfg = parse_config("""
        [runtime]
        layout = "fused"
        stop_timeout_s = 2          # an int is accepted where a float is expected
        [cpu]
        fused = 3
        feed = 3                    # the split layout's keys are ignored under fused
        control = [0, 1]
        [control]
        host = "::1"
    """, allowed_cpus=CPUS)
    assert cfg.runtime.stop_timeout_s == 2.0 and isinstance(cfg.runtime.stop_timeout_s, float)
    assert cfg.hot_threads() == ("fused",) and cfg.configured_core("fused") == 3
    assert cfg.control_cores() == (0, 1) and cfg.to_dict()["cpu"]["control"] == [0, 1]
    assert cfg.control.host == "::1"


@pytest.mark.parametrize("text, path, expected", [
    ("[bogus]\nx = 1", "bogus", "unknown section (known sections: process, log,"),
    ("layout = 'split'", "layout", "unknown top-level key"),
    ("cpu = 3", "cpu", "expected a table [cpu]; got an integer (3)"),
    ("[cpu]\nbogus = 1", "cpu.bogus", "unknown key (known keys in [cpu]: feed, strategy, gateway,"),
    ("[cpu]\nstratgy = 1", "cpu.stratgy", "did you mean 'strategy'?"),
    ("[runtime]\nbatch = true", "runtime.batch", "expected an integer between 1 and 1024; got a boolean (true)"),
    ("[runtime]\nbatch = 1.0", "runtime.batch", "got a float (1.0)"),
    ("[runtime]\nbatch = '32'", "runtime.batch", "got a string ('32')"),
    ("[runtime]\nstop_timeout_s = true", "runtime.stop_timeout_s", "got a boolean (true)"),
    ("[cpu]\nstrict = 1", "cpu.strict", "expected true or false; got an integer (1)"),
    ("[runtime]\nbatch = 0", "runtime.batch", "expected an integer between 1 and 1024; got 0"),
    ("[runtime]\nstop_timeout_s = 61.5", "runtime.stop_timeout_s", "between 0.1 and 60; got 61.5"),
    ("[control]\nport = 65536", "control.port", "between 0 and 65535; got 65536"),
    ("[runtime]\nlayout = 'triple'", "runtime.layout", "expected one of 'split', 'fused'; got 'triple'"),
    ("[log]\nlevel = 'INFO'", "log.level", "expected one of 'debug', 'info', 'warning', 'error'; got 'INFO'"),
    ("[runtime]\nring_slots = 1000", "runtime.ring_slots",
     "expected a power of two between 64 and 1048576; got 1000"),
    ("[runtime]\nring_slots = 32", "runtime.ring_slots", "got 32"),
    ("[cpu]\nfeed = 'any'", "cpu.feed", "expected 'auto' or a core number >= 0; got 'any'"),
    ("[cpu]\nfeed = -1", "cpu.feed", "got -1"),
    ("[cpu]\ncontrol = []", "cpu.control", "non-empty list"),
    ("[cpu]\ncontrol = [0, 0]", "cpu.control", "distinct"),
    ("[cpu]\ncontrol = [0, true]", "cpu.control", "got [0, true]"),
    ("[process]\nname = 'has space'", "process.name", "1 to 64 characters"),
    ("[feed]\nsymbols = ['AAPL', 'aapl']", "feed.symbols", "list of distinct stock symbols"),
    ("[feed]\nsymbols = ['AAPL', 'AAPL']", "feed.symbols", "got ['AAPL', 'AAPL']"),
    ("[feed]\nsymbols = 'AAPL'", "feed.symbols", "got a string ('AAPL')"),
    ("[feed]\nsession = 'ELEVENCHARS'", "feed.session", "up to 10 printable ASCII characters"),
    ("[feed]\naddress = 'localhost'", "feed.address", "address literal"),
    ("[book]\nmax_orders = 1000000", "book.max_orders", "power of two"),
    ("[process]\nname = ''", "process.name", "got ''"),
    ("[process]\nname = '" + "x" * 65 + "'", "process.name", "1 to 64 characters"),
    ("[control]\nhost = 'localhost'", "control.host", "IPv4 or IPv6 address literal"),
])
def test_each_error_names_its_key_path(text, path, expected):
    found = problems(text)
    assert list(found) == [path]
    assert expected in found[path]


def test_duplicate_split_cores():
    found = problems("[cpu]\nfeed = 1\nstrategy = 2\ngateway = 1\n")
    assert found == {"cpu.gateway": "core 1 is already taken by cpu.feed; "
                                    "the split layout needs a dedicated core per hot thread"}
    # The same cores are fine when the layout does not use them.
    parse_config("[runtime]\nlayout = 'fused'\n[cpu]\nfeed = 1\nstrategy = 1\ngateway = 1\n", allowed_cpus=CPUS)


def test_core_outside_allowed_cpus():
    found = problems("[cpu]\nfeed = 7\n", allowed={0, 1})
    assert found == {"cpu.feed": "core 7 is not among the CPUs this process may use (allowed: 0-1)"}
    assert "(allowed: 0-2,5)" in problems("[cpu]\ncontrol = [9]\n", allowed={0, 1, 2, 5})["cpu.control"]
    found = problems("[runtime]\nlayout = 'fused'\n[cpu]\nfused = 4\nfeed = 9\n", allowed={0, 1})
    assert list(found) == ["cpu.fused"]  # cpu.feed is outside too, but the fused layout ignores it


def test_control_overlapping_hot_core():
    found = problems("[cpu]\nstrategy = 2\ncontrol = [0, 2]\n")
    assert list(found) == ["cpu.control"] and "core 2 is the hot core of cpu.strategy" in found["cpu.control"]
    # A core that only the unused layout names is free for the control plane.
    parse_config("[cpu]\nfused = 2\ncontrol = [0, 2]\n", allowed_cpus=CPUS)


def test_toml_syntax_error():
    found = problems("[cpu\nfeed = 1\n")
    assert list(found) == ["<string>"] and "line 1" in found["<string>"]
    with pytest.raises(ConfigError) as info:
        parse_config("a = = 1", source="etc/x.toml")
    assert str(info.value).startswith("etc/x.toml: invalid TOML:")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert str(info.value).startswith(f"{tmp_path / 'nope.toml'}: cannot read")


def test_all_problems_reported_together():
    found = problems("""
        [runtime]
        layout = "triple"
        ring_slots = 1000
        [cpu]
        bogus = 1
        feed = 1
        strategy = 1
        [control]
        port = true
        [nope]
    """)
    assert set(found) == {"runtime.layout", "runtime.ring_slots", "cpu.bogus", "control.port", "nope"}
    # With a valid layout the cross-key checks join the per-key ones.
    found = problems("[runtime]\nbatch = 0\n[cpu]\nfeed = 1\nstrategy = 1\ngateway = 9\n")
    assert set(found) == {"runtime.batch", "cpu.strategy", "cpu.gateway"}


def test_render_effective_round_trips():
    cfg = parse_config("""
        [process]
        name = "x-1.a_b"
        [runtime]
        layout = "fused"
        stop_timeout_s = 0.25
        [cpu]
        fused = 3
        control = [0, 1]
        [control]
        host = "::1"
        admin_token_file = "/etc/q\\"uote\\\\d\\ttab"
    """, allowed_cpus=CPUS)
    text = render_effective(cfg)
    assert text.startswith("#")
    assert parse_config(text, allowed_cpus=CPUS) == cfg
    assert parse_config(render_effective(DEFAULTS), allowed_cpus=CPUS) == DEFAULTS
    assert all(f"\n{k.name} = " in text for k in SCHEMA)
    assert 'name = "x-1.a_b"  # default "appliance"' in text


def test_reload_diff():
    old = parse_config("", allowed_cpus=CPUS)
    new = parse_config("""
        [log]
        level = "debug"
        [synthetic]
        rate = 5
        [runtime]
        batch = 64
        [cpu]
        feed = 2
    """, allowed_cpus=CPUS)
    assert reload_diff(old, new) == (["log.level", "synthetic.rate"], ["runtime.batch", "cpu.feed"])
    assert reload_diff(new, new) == ([], [])


def test_strategy_params_are_a_table_of_numbers_reported_per_name():
    key = KEYS["strategy.params"]
    assert key.reloadable and key.default == () and key.validate({"a": 1, "b": 2.5}) == (("a", 1.0), ("b", 2.5))
    found = problems('[strategy.params]\nwidth = "2"\nok = 1\nflag = false\n[strategy.params.deep]\nx = 1\n')
    assert set(found) == {"strategy.params.width", "strategy.params.flag", "strategy.params.deep"}
    assert found["strategy.params.width"] == "expected a number; got a string ('2')"
    found = problems("[strategy]\nparams = [1, 2]\n")
    assert found["strategy.params"] == "expected a table of parameter names to numbers; got an array ([1, 2])"
    # with a built-in kind the table is an error too (the module's own checks are in tests/strategy)
    assert "only kind" in problems("[strategy.params]\nwidth = 2\n")["strategy.params"]


def test_frozen():
    cfg = parse_config("", allowed_cpus=CPUS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.runtime.layout = "fused"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.runtime = cfg.runtime  # type: ignore[misc]
    assert hash(cfg) == hash(parse_config("", allowed_cpus=CPUS))


def test_configured_core_rejects_unknown_role():
    with pytest.raises(ValueError):
        DEFAULTS.configured_core("control")
