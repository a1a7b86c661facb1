"""Run as a script by test_user_strategy: build the engine for a config and compile (or load) every hot loop,
then print what numba's dispatchers say about the cache as one JSON line."""

import json
import sys
import time

from appliance.runtime import cache

cache.configure()  # before any kernel module is imported, as `appliance run` does

from appliance.config import load_config  # noqa: E402
from appliance.runtime import hotloop  # noqa: E402
from appliance.runtime.engine import Engine  # noqa: E402


def stats(dispatcher) -> dict:
    return {"hits": sum(dispatcher.stats.cache_hits.values()), "misses": sum(dispatcher.stats.cache_misses.values())}


def main(path: str) -> None:
    t0 = time.monotonic()
    cfg = load_config(path)  # loads and compiles the user module
    validated = time.monotonic() - t0
    engine = Engine(cfg)
    seconds = engine.compile()
    report = {"validate_s": round(validated, 3), "compile_s": round(seconds, 3),
              "run_strategy_trading": stats(hotloop.run_strategy_trading),
              "run_fused_trading": stats(hotloop.run_fused_trading)}
    user = engine.trading.user
    if user is not None:
        report["quote"] = stats(user.quote.dispatcher)
        report["user_cached"] = user.cached
    engine.feed.close()
    engine.trading.writer.stop()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
