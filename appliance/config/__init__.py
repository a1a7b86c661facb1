"""Strict, typed, frozen TOML configuration: one schema, validated once, reloadable keys marked.

    cfg = load_config("config/appliance.toml")      # or parse_config(text); None = defaults
    cfg.runtime.layout, cfg.cpu.feed                # frozen dataclasses, one per section
    for key in SCHEMA: key.path, key.type, key.default, key.reloadable, key.expects, key.doc
"""

from .loader import ConfigError, Problem, load_config, parse_config, reload_diff, render_effective
from .schema import AUTO, DEFAULTS, HOT_THREADS, KEYS, SCHEMA, SECTIONS, Config, Key

__all__ = ["AUTO", "DEFAULTS", "HOT_THREADS", "KEYS", "SCHEMA", "SECTIONS", "Config", "ConfigError",
           "Key", "Problem", "load_config", "parse_config", "reload_diff", "render_effective"]
