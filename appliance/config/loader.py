"""Load, validate, render and diff the TOML configuration described by `schema`."""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from typing import Any, Iterable

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from .schema import KEYS, SCHEMA, SECTION_TYPES, SECTIONS, Config, EntryError, describe


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration, at a dotted key path (or the file name)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class ConfigError(ValueError):
    """A configuration was rejected; `.problems` lists everything found wrong, one line each."""

    def __init__(self, problems: Iterable[Problem], source: str = "<string>") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(map(str, self.problems)))


def load_config(path: str | os.PathLike[str] | None, *, allowed_cpus: set[int] | None = None) -> Config:
    """Load and validate a TOML config file; None means all defaults."""
    if path is None:
        return parse_config("", "<defaults>", allowed_cpus=allowed_cpus)
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise ConfigError([Problem(source, f"cannot read: {e.strerror or e}")], source) from None
    except UnicodeDecodeError as e:
        raise ConfigError([Problem(source, f"not valid UTF-8 ({e.reason} at byte {e.start})")], source) from None
    return parse_config(text, source, allowed_cpus=allowed_cpus)


def parse_config(text: str, source: str = "<string>", *, allowed_cpus: set[int] | None = None) -> Config:
    """Parse and validate TOML text; raise ConfigError listing every problem found."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([Problem(source, f"invalid TOML: {e}")], source) from None
    problems: list[Problem] = []
    bad: set[str] = set()  # key paths whose values were rejected (they keep their defaults below)
    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for section, table in data.items():
        if section not in SECTION_TYPES:
            what = "top-level key; keys belong in a section" if not isinstance(table, dict) else "section"
            problems.append(Problem(section, f"unknown {what} (known sections: {', '.join(SECTIONS)})"))
            continue
        if not isinstance(table, dict):
            problems.append(Problem(section, f"expected a table [{section}]; got {describe(table)}"))
            continue
        for name, raw in table.items():
            path = f"{section}.{name}"
            if path not in KEYS:
                problems.append(Problem(path, _unknown_key(section, name)))
                continue
            try:
                values[section][name] = KEYS[path].validate(raw)
            except EntryError as e:
                problems += [Problem(f"{path}.{entry}", message) for entry, message in e.entries]
                bad.add(path)
            except ValueError as e:
                problems.append(Problem(path, str(e)))
                bad.add(path)
    cfg = Config(**{s: cls(**values[s]) for s, cls in SECTION_TYPES.items()})
    allowed = _allowed_cpus() if allowed_cpus is None else set(allowed_cpus)
    problems += _core_problems(cfg, allowed, check_hot="runtime.layout" not in bad)
    problems += _trading_problems(cfg)
    cfg, found = _strategy_module(cfg, source)
    problems += found
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _trading_problems(cfg: Config) -> list[Problem]:
    """Cross-key checks on the trading path: it needs the live feed, a strategy and symbols the feed books."""
    problems: list[Problem] = []
    if cfg.gateway.protocol != "none":
        if cfg.feed.source != "moldudp64":
            problems.append(Problem("gateway.protocol", f"{cfg.gateway.protocol!r} needs feed.source = "
                                    f"\"moldudp64\" (the strategy trades on the live book); got "
                                    f"{cfg.feed.source!r}"))
        if cfg.strategy.kind == "none":
            problems.append(Problem("strategy.kind", "a gateway is configured but no strategy: set "
                                    "strategy.kind to \"market_maker\", \"mean_reversion\" or \"module\""))
    if cfg.gateway.protocol == "fix":
        for name in ("sender_comp_id", "target_comp_id"):
            v = getattr(cfg.gateway, name)
            if len(v) > 32:
                problems.append(Problem(f"gateway.{name}", f"{len(v)} characters; a FIX CompID here takes at most 32"))
    if cfg.strategy.kind != "none":
        if cfg.gateway.protocol == "none":
            problems.append(Problem("gateway.protocol", f"strategy {cfg.strategy.kind!r} needs order entry: "
                                    "set gateway.protocol = \"ouch\" or \"fix\""))
        if not cfg.strategy.symbols:
            problems.append(Problem("strategy.symbols", "no symbols to trade: list at least one stock"))
        elif len(cfg.strategy.symbols) > 1024:
            problems.append(Problem("strategy.symbols", f"{len(cfg.strategy.symbols)} symbols; at most 1024"))
        missing = [s for s in cfg.strategy.symbols if cfg.feed.symbols and s not in cfg.feed.symbols]
        if missing:
            problems.append(Problem("strategy.symbols", f"{', '.join(missing)} not booked: add to feed.symbols "
                                    "(or leave feed.symbols empty to book every stock)"))
    if len(cfg.gateway.username) > 6:
        problems.append(Problem("gateway.username", f"{cfg.gateway.username!r} is longer than SoupBinTCP's "
                                "6 characters"))
    if len(cfg.gateway.password) > 10:
        problems.append(Problem("gateway.password", "longer than SoupBinTCP's 10 characters"))
    if cfg.gateway.reconnect_max_ms < cfg.gateway.reconnect_min_ms:
        problems.append(Problem("gateway.reconnect_max_ms", f"{cfg.gateway.reconnect_max_ms} is below "
                                f"gateway.reconnect_min_ms ({cfg.gateway.reconnect_min_ms})"))
    return problems


def _strategy_module(cfg: Config, source: str) -> tuple[Config, list[Problem]]:
    """kind = "module": resolve strategy.module against the config file's directory, load and compile it (its
    errors are config errors), and complete strategy.params with its defaults, in its declaration order."""
    s = cfg.strategy
    if s.kind != "module":
        problems = []
        if s.module:
            problems.append(Problem("strategy.module", f"set, but strategy.kind is {s.kind!r}: set kind = "
                                    "\"module\" to trade it"))
        if s.params:
            problems.append(Problem("strategy.params", f"only kind = \"module\" takes parameters; strategy.kind "
                                    f"is {s.kind!r}"))
        return cfg, problems
    if not s.module:
        return cfg, [Problem("strategy.module", "required with kind = \"module\": the path of the strategy's "
                             "Python file")]
    from ..runtime import cache
    from ..strategy import user

    path = user.resolve_path(s.module, source)
    cache.configure(cfg.numba.cache_dir)  # the compiled strategy is cached where the kernels are
    try:
        strategy = user.load(path)
    except user.StrategyError as e:
        return cfg, [Problem(e.key, str(e))]
    given = dict(s.params)
    declared = ", ".join(strategy.names) or "none"
    problems = [Problem(f"strategy.params.{name}", f"not a parameter of {path} (its PARAMS: {declared})")
                for name in given if name not in strategy.names]
    params = tuple((name, given.get(name, default)) for name, default in zip(strategy.names, strategy.defaults))
    return dataclasses.replace(cfg, strategy=dataclasses.replace(s, module=path, params=params)), problems


def _unknown_key(section: str, name: str) -> str:
    known = [k.name for k in SCHEMA if k.section == section]
    guess = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {guess[0]!r}?" if guess else ""
    return f"unknown key (known keys in [{section}]: {', '.join(known)}){hint}"


def _allowed_cpus() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))  # platforms without affinity (macOS)


def _ranges(cpus: Iterable[int]) -> str:
    """Render CPUs as a cpuset list, e.g. "0-3,8"."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs) or "none"


def _core_problems(cfg: Config, allowed: set[int], check_hot: bool) -> list[Problem]:
    """Cross-key checks on explicitly configured cores: allowed, distinct, and not shared with control."""
    problems: list[Problem] = []
    outside = f"is not among the CPUs this process may use (allowed: {_ranges(allowed)})"
    taken: dict[int, str] = {}
    # Only the layout in force matters: operators keep the other layout's cores set when switching.
    for role in cfg.hot_threads() if check_hot else ():
        path, core = f"cpu.{role}", cfg.configured_core(role)
        if core is None:
            continue
        if core not in allowed:
            problems.append(Problem(path, f"core {core} {outside}"))
        if core in taken:
            problems.append(Problem(path, f"core {core} is already taken by {taken[core]}; "
                                          "the split layout needs a dedicated core per hot thread"))
        else:
            taken[core] = path
    for core in cfg.control_cores() or ():
        if core not in allowed:
            problems.append(Problem("cpu.control", f"core {core} {outside}"))
        if core in taken:
            problems.append(Problem("cpu.control", f"core {core} is the hot core of {taken[core]}; "
                                                   "the control plane must stay off hot cores"))
    return problems


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # TOML basic string: escape quote, backslash and every control character.
    return '"' + "".join(f"\\{c}" if c in '"\\' else f"\\u{ord(c):04x}" if c < " " or c == "\x7f" else c
                         for c in value) + '"'


def _toml_table(pairs) -> str:
    """(name, value) pairs as a TOML inline table."""
    return "{" + ", ".join(f"{name} = {_toml_value(value)}" for name, value in pairs) + "}"


def render_effective(cfg: Config) -> str:
    """The effective configuration as TOML (every key), noting reloadable keys and non-defaults."""
    lines = ["# Effective appliance configuration: every key with the value in force.",
             "# 'reloadable' keys take effect on SIGHUP; the others need a restart."]
    section = None
    for k in SCHEMA:
        if k.section != section:
            section = k.section
            lines += ["", f"[{section}]"]
        value = cfg.get(k.path)
        notes = ["reloadable"] if k.reloadable else []
        show = _toml_table if k.type == "params" else _toml_value
        if value != k.default:
            notes.append(f"default {show(k.default)}")
        lines.append(f"{k.name} = {show(value)}" + (f"  # {'; '.join(notes)}" if notes else ""))
    return "\n".join(lines) + "\n"


def reload_diff(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """Changed key paths split into (reloadable, needing a restart), in schema order."""
    changed = [k for k in SCHEMA if old.get(k.path) != new.get(k.path)]
    return [k.path for k in changed if k.reloadable], [k.path for k in changed if not k.reloadable]

