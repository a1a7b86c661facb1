"""User strategies (kind = "module"): loading and its errors, the compiled function, the framework turning
targets into intents, the hot loops staying cached whatever module is loaded, and an appliance process
trading a module against the real venue on loopback."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from appliance.config import ConfigError, parse_config
from appliance.gateway import orders as go
from appliance.runtime.event import EVENT_DTYPE, KIND_CANCEL, KIND_FILL, KIND_NEW, KIND_ORDER, KIND_REPLACE
from appliance.strategy import market_maker as mm
from appliance.strategy import user
from tests.support import free_tcp_port, free_udp_port, trading_config, wait_for

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "strategies" / "example_quoter.py"

# A strategy whose target is whatever its parameters say, and which records what it was given.
ECHO = '''
PARAMS = {"bid": 0, "bid_qty": 0, "ask": 0, "ask_qty": 0, "tif": 0, "act": 1}

def quote(params, state, sym, bid, bid_qty, ask, ask_qty, position, now_ns, target):
    state[0] += 1
    state[1] = now_ns
    state[2] = position
    state[3] = bid * 1000 + ask_qty
    for i in range(5):
        target[i] = int(params[i])
    return int(params[5])

def on_fill(params, state, sym, side, price, qty, position):
    state[8] = side
    state[9] = price
    state[10] = qty
    state[11] = position
'''

TRADING = '[feed]\nsource = "moldudp64"\n[gateway]\nprotocol = "ouch"\n'


def module_config(module: str, params: str = "", symbols=("AAA",)) -> str:
    table = f"[strategy.params]\n{params}\n" if params else ""
    return (f'{TRADING}[strategy]\nkind = "module"\nsymbols = {json.dumps(list(symbols))}\nmodule = "{module}"\n'
            f"refresh_us = 0\n{table}")


def write(tmp_path, text: str, name: str = "strat.py") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(toml: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(toml)
    return {p.path: p.message for p in info.value.problems}


# ---- loading and its errors ------------------------------------------------------------------------

def test_example_loads_with_defaults_completed_in_declaration_order():
    cfg = parse_config(module_config(str(EXAMPLE), "half_width = 300"))
    assert cfg.strategy.module == str(EXAMPLE)
    assert cfg.strategy.params == (("half_width", 300.0), ("quote_size", 100.0), ("max_position", 500.0),
                                   ("tick", 100.0))
    s = user.load(str(EXAMPLE))
    assert s.names == ("half_width", "quote_size", "max_position", "tick") and s.has_on_fill


BAD_MODULES = {
    "import": ("x = 1\ny = x / 0\n", "failed (line 2): ZeroDivisionError"),
    "no_function": ("PARAMS = {}\n", "defines no function quote(params, state, sym, bid"),
    "arity": ("def quote(params, state, sym):\n    return 1\n", "must take the 10 arguments"),
    "not_a_function": ("quote = 3\n", "quote is a int, not a function"),
    "params_not_dict": ("PARAMS = [1]\n" + ECHO.split("\n", 2)[2], "PARAMS must be a dict"),
    "params_not_number": ('PARAMS = {"w": "wide"}\n' + ECHO.split("\n", 2)[2], "PARAMS['w'] must be a number"),
    "typing": ("def quote(params, state, sym, bid, bid_qty, ask, ask_qty, position, now_ns, target):\n"
               "    return undefined_name + 1\n", "does not compile in numba's nopython mode"),
    "returns_a_string": ("def quote(params, state, sym, bid, bid_qty, ask, ask_qty, position, now_ns, target):\n"
                         "    return 'buy'\n", "does not compile"),
    "fill_arity": (ECHO + "\ndef on_fill(params, state):\n    pass\n", "on_fill must take the 7 arguments"),
    "objmode": ("import numba\n"
                "def quote(params, state, sym, bid, bid_qty, ask, ask_qty, position, now_ns, target):\n"
                "    with numba.objmode():\n"
                "        print('hello')\n"
                "    return 1\n", "uses numba.objmode"),
}


@pytest.mark.filterwarnings("ignore::numba.NumbaWarning")  # numba's own note on the objmode case
@pytest.mark.parametrize("case", sorted(BAD_MODULES))
def test_bad_module_is_a_config_error_naming_strategy_module(tmp_path, case):
    text, says = BAD_MODULES[case]
    path = write(tmp_path, text, f"bad_{case}.py")
    found = problems(module_config(str(path)))
    assert set(found) == {"strategy.module"}, found
    assert says in found["strategy.module"] and str(path) in found["strategy.module"]


def test_typing_error_shows_numbas_reason(tmp_path):
    path = write(tmp_path, BAD_MODULES["typing"][0])
    message = problems(module_config(str(path)))["strategy.module"]
    assert "undefined_name" in message  # numba's first lines, not just "it failed"
    assert "target: array(int64, 1d, C)) -> int64" in message  # the signature it must compile with


def test_module_and_params_keys(tmp_path):
    missing = tmp_path / "nowhere.py"
    assert "no such file" in problems(module_config(str(missing)))["strategy.module"]
    assert "required" in problems(module_config("").replace('module = ""\n', ""))["strategy.module"]
    found = problems(TRADING + f'[strategy]\nkind = "market_maker"\nsymbols = ["AAA"]\nmodule = "{EXAMPLE}"\n'
                     "[strategy.params]\nhalf_width = 1\n")
    assert "set kind = \"module\"" in found["strategy.module"] and "only kind" in found["strategy.params"]
    path = write(tmp_path, ECHO)
    found = problems(module_config(str(path), 'bid = "high"\nnope = 1\nflag = true'))
    assert set(found) == {"strategy.params.bid", "strategy.params.flag"}  # types first: nope waits for them
    assert "expected a number; got a string" in found["strategy.params.bid"]
    found = problems(module_config(str(path), "bid = 1\nnope = 2"))
    assert set(found) == {"strategy.params.nope"} and "PARAMS: bid, bid_qty" in found["strategy.params.nope"]


def test_config_check_cli_resolves_the_module_against_the_config_dir_and_exits_2(tmp_path, cache_dir):
    (tmp_path / "strategies").mkdir()
    write(tmp_path / "strategies", EXAMPLE.read_text(), "mine.py")
    conf = tmp_path / "appliance.toml"
    env = dict(os.environ, APPLIANCE_CACHE_DIR=cache_dir)

    def check(module, params=""):
        conf.write_text(module_config(module, params))
        # from elsewhere: the path must not depend on the working directory
        return subprocess.run([sys.executable, "-m", "appliance", "config", "check", str(conf)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)

    ok = check("strategies/mine.py", "half_width = 250")
    assert ok.returncode == 0, ok.stderr
    assert f'module = "{tmp_path / "strategies" / "mine.py"}"' in ok.stdout
    assert "params = {half_width = 250.0, quote_size = 100.0, max_position = 500.0, tick = 100.0}" in ok.stdout
    bad = check("strategies/missing.py")
    assert bad.returncode == 2
    assert f"strategy.module: {tmp_path / 'strategies' / 'missing.py'}: no such file" in bad.stderr
    bad = check("strategies/mine.py", "width = 1")
    assert bad.returncode == 2 and "strategy.params.width: not a parameter of" in bad.stderr


# ---- the compiled function and the framework -------------------------------------------------------

def test_compiled_example_fills_the_target_as_written():
    s = user.load(str(EXAMPLE))
    params = np.array(s.defaults)
    state = np.zeros(user.STATE_WORDS)
    target = np.zeros(user.TARGET_WORDS, dtype=np.int64)
    # the microprice of $99.00 x 1000 / $101.00 x 3000 leans to the bid: $99.50; quotes 2 cents either side
    assert s.quote.dispatcher(params, state, 0, 990_000, 1000, 1_010_000, 3000, 0, 0, target) == 1
    assert list(target[:5]) == [994_800, 100, 995_200, 100, 0]
    # at the position limit the buy side goes quiet
    s.quote.dispatcher(params, state, 0, 990_000, 1000, 1_010_000, 3000, 500, 0, target)
    assert target[1] == 0 and target[3] == 100
    s.on_fill.dispatcher(params, state, 0, 0, 994_800, 100, 100)
    assert state[0] == 1 and state[1] == 994_800


class Desk:
    """The strategy's state for one symbol, driven through decide and on_update as the hot loop does."""

    def __init__(self, strategy, kind="module"):
        cfg = parse_config(module_config(str(strategy.path)))
        self.s = strategy
        self.st = mm.make_strategy_state(("AAA",), 8, len(strategy.names))
        mm.params_from_config(cfg.strategy, 3e9, self.st.p)
        self.st.p[mm.P_KIND] = mm.KINDS[kind]
        self.gw_w = np.zeros(go.W_WORDS, dtype=np.int64)
        self.gw_w[go.W_URN_FLOOR] = 1
        self.out = np.zeros(16, dtype=EVENT_DTYPE)
        self.now = 1_000_000
        q = self.st.q
        q[0, mm.Q_BID], q[0, mm.Q_BID_QTY], q[0, mm.Q_ASK], q[0, mm.Q_ASK_QTY] = 990_000, 500, 1_010_000, 700

    def target(self, bid=0, bid_qty=0, ask=0, ask_qty=0, tif=0, act=1):
        user.write_params(self.s, dict(bid=bid, bid_qty=bid_qty, ask=ask, ask_qty=ask_qty, tif=tif, act=act),
                          self.st.up)

    def decide(self) -> list[dict]:
        self.now += 1000
        n = mm.decide(self.st, self.gw_w, 0, self.now, self.out, 0, 15, 0, 0, self.s.quote)
        return [{f: self.out[k][f].item() for f in ("kind", "side", "flags", "ref", "px", "qty", "aux")}
                for k in range(n)]

    def update(self, kind, side, urn, state=0, px=0, qty=0, leaves=0):
        ev = np.zeros(1, dtype=EVENT_DTYPE)
        ev[0]["kind"], ev[0]["side"], ev[0]["flags"], ev[0]["ref"] = kind, side, state, urn
        ev[0]["px"], ev[0]["qty"], ev[0]["qty2"] = px, qty, leaves
        assert mm.on_update(self.st, ev[0], self.out, 0, 15, self.s.on_fill) == 0

    def accept(self, intent):
        self.update(KIND_ORDER, intent["side"], intent["ref"], go.OS_NEW, intent["px"], intent["qty"])


def test_framework_turns_targets_into_new_replace_and_cancel(tmp_path):
    desk = Desk(user.load(str(write(tmp_path, ECHO))))
    buy, sell = go.SIDE_BUY, go.SIDE_SELL

    desk.target(989_000, 100, 1_011_000, 200)
    new = desk.decide()
    assert [(i["kind"], i["side"], i["px"], i["qty"], i["flags"]) for i in new] == [
        (KIND_NEW, buy, 989_000, 100, mm.TIF_DAY), (KIND_NEW, sell, 1_011_000, 200, mm.TIF_DAY)]
    us = desk.st.us[0]
    assert us[0] == 1 and us[3] == 990_000 * 1000 + 700 and us[1] == int(desk.now * desk.st.p[mm.P_NS_PER_CYCLE])
    assert desk.decide() == []  # both sides pending: nothing more until the venue answers
    for i in new:
        desk.accept(i)
    assert desk.decide() == []  # the target already stands

    desk.target(988_000, 100, 1_011_000, 200)  # the bid moves: one replace, of the bid's order
    (rep,) = desk.decide()
    assert (rep["kind"], rep["side"], rep["px"], rep["qty"], rep["aux"]) == (KIND_REPLACE, buy, 988_000, 100,
                                                                             new[0]["ref"])
    assert rep["ref"] > new[1]["ref"]  # UserRefNums only increase
    desk.accept(rep)
    desk.target(988_000, 100, 1_011_000, 300)  # only the ask's quantity changes: replaced too
    (rep2,) = desk.decide()
    assert (rep2["kind"], rep2["side"], rep2["px"], rep2["qty"]) == (KIND_REPLACE, sell, 1_011_000, 300)
    desk.accept(rep2)

    desk.target(988_000, 0, 1_011_000, 300)  # quantity 0: the bid is canceled
    (cancel,) = desk.decide()
    assert (cancel["kind"], cancel["side"], cancel["ref"]) == (KIND_CANCEL, buy, rep["ref"])
    desk.update(KIND_ORDER, buy, rep["ref"], go.OS_CANCELED, 988_000, 0)

    desk.target(1_000_000, 50, 0, 0, act=0)  # returning 0 leaves the orders alone
    assert desk.decide() == [] and desk.st.us[0][0] == 7

    desk.update(KIND_FILL, sell, rep2["ref"], px=1_011_000, qty=40, leaves=260)  # on_fill sees each fill
    assert list(desk.st.us[0][8:12]) == [sell, 1_011_000, 40, -40]
    desk.target(1_000_000, 50, 1_011_000, 260, tif=3)  # an IOC buy; the ask already rests 260 shares there
    ioc = desk.decide()
    assert [(i["kind"], i["side"], i["px"], i["qty"], i["flags"]) for i in ioc] == [
        (KIND_NEW, buy, 1_000_000, 50, mm.TIF_IOC)]
    assert desk.st.us[0][2] == -40  # the position it was given


def test_builtin_kinds_never_call_the_user_function(tmp_path):
    desk = Desk(user.load(str(write(tmp_path, ECHO))), kind="market_maker")
    desk.st.f[0, mm.F_FAIR] = 1_000_000
    desk.target(989_000, 100, 1_011_000, 200)
    intents = desk.decide()
    assert intents and all(i["qty"] == 100 for i in intents)  # the market maker's quote_size, not the target
    desk.update(KIND_FILL, go.SIDE_BUY, intents[0]["ref"], px=989_000, qty=10, leaves=90)
    assert not desk.st.us.any()


# ---- kernel cache --------------------------------------------------------------------------------

def _probe(tmp_path, cache_dir, layout: str, module: str) -> dict:
    """Build the engine for a module config in a fresh process and compile every hot loop; numba's stats."""
    conf = tmp_path / f"probe-{layout}.toml"
    conf.write_text(f"""
[runtime]
layout = "{layout}"
idle = "sleep"
[memory]
lock = false
[feed]
source = "moldudp64"
port = {free_udp_port()}
symbols = ["AAA"]
[book]
max_orders = 1024
max_symbols = 8
[journal]
path = "{tmp_path / 'probe.journal'}"
fsync = "none"
""" + module_config(module).replace(TRADING, '[gateway]\nprotocol = "ouch"\n'))
    out = subprocess.run([sys.executable, "-m", "tests.strategy.kernel_cache_probe", str(conf)], cwd=ROOT,
                         env=dict(os.environ, APPLIANCE_CACHE_DIR=cache_dir), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_loading_another_module_reuses_the_cached_hot_loops(tmp_path, cache_dir):
    echo = write(tmp_path, ECHO, "echo.py")
    for layout, kernel in (("split", "run_strategy_trading"), ("fused", "run_fused_trading")):
        _probe(tmp_path, cache_dir, layout, str(EXAMPLE))  # warms the cache (compiles if it is cold)
        other = _probe(tmp_path, cache_dir, layout, str(echo))
        print(layout, other)
        assert other[kernel] == {"hits": 1, "misses": 0}, other
    # the user's own function is cached too, and an edited file recompiles
    again = _probe(tmp_path, cache_dir, "fused", str(echo))
    assert again["quote"] == {"hits": 1, "misses": 0} and again["user_cached"]
    echo.write_text(ECHO.replace("state[0] += 1", "state[0] += 2"))
    edited = _probe(tmp_path, cache_dir, "fused", str(echo))
    print("edited", edited)
    assert edited["quote"] == {"hits": 0, "misses": 1} and edited["run_fused_trading"] == {"hits": 1, "misses": 0}


# ---- end to end ----------------------------------------------------------------------------------

SYMBOLS = ("AAA", "BBB")


def _appliance_config(tmp_path, feed, retrans, ouch, params: str) -> str:
    strategy = f"""
kind = "module"
symbols = ["AAA", "BBB"]
module = "strategies/example_quoter.py"
refresh_us = 0
[strategy.params]
{params}
"""
    return trading_config(tmp_path, feed, retrans, ouch, strategy, name="user-strategy")


def _resting(venue) -> dict:
    """The venue's record of our resting orders: {(symbol, side): (price, shares)}."""
    return {(o["symbol"], o["side"]): (o["price"], o["leaves"]) for o in venue.account_record()["open_orders"].values()}


def test_appliance_trades_the_example_module_against_the_venue(tmp_path, appliance):
    from appliance.config.schema import VenueConfig
    from appliance.venue.server import Venue

    feed, retrans, ouch = free_udp_port(), free_udp_port(), free_tcp_port()
    venue = Venue(VenueConfig(symbols=SYMBOLS, rate=0, max_orders=65536, history_messages=65536, feed_port=feed,
                              retransmit_port=retrans, ouch_port=ouch, fix_port=0,
                              state_dir=str(tmp_path / "venue-state"))).start()
    try:
        for sym in SYMBOLS:  # $9.90 x 1000 / $10.10 x 1000: microprice $10.00
            venue.participant_order(sym, "B", 1000, 99_000)
            venue.participant_order(sym, "S", 1000, 101_000)
        # the appliance's config sits in tmp_path; the module path is relative to it
        (tmp_path / "strategies").mkdir()
        (tmp_path / "strategies" / "example_quoter.py").write_text(EXAMPLE.read_text())
        a = appliance(_appliance_config(tmp_path, feed, retrans, ouch, "half_width = 1500")).wait_ready(timeout=600)

        def quotes(bid, ask, size=100):
            want = {(s, side): (px, size) for s in SYMBOLS for side, px in (("B", bid), ("S", ask))}

            def same():
                return _resting(venue) == want
            try:
                wait_for(same, 60, what=f"the venue to hold our quotes at {bid} / {ask}")
            except BaseException:
                print(a.log()[-6000:], _resting(venue))
                raise

        # 15 cents either side of $10.00, outside the participants' touch so our own quotes do not move it
        quotes(98_500, 101_500)

        def nudge():
            """Reloaded parameters apply at the next touch change: deepen both sides (the microprice stays)."""
            for sym in SYMBOLS:
                venue.participant_order(sym, "B", 1000, 99_000)
                venue.participant_order(sym, "S", 1000, 101_000)
        assert "strategy module" in a.log() and "example_quoter.py" in a.log()

        # the parameters are reloadable: a narrower width replaces every quote
        a.config_path.write_text(_appliance_config(tmp_path, feed, retrans, ouch, "half_width = 1200"))
        a.signal(signal.SIGHUP)
        a.wait_log(r"config reloaded from .*: applied strategy\.params", 30)
        nudge()
        quotes(98_800, 101_200)
        # a position limit of 0 leaves no side to quote: every order is canceled
        a.config_path.write_text(_appliance_config(tmp_path, feed, retrans, ouch,
                                                   "half_width = 1200\nmax_position = 0"))
        a.signal(signal.SIGHUP)
        wait_for(lambda: len([ln for ln in a.lines if "applied strategy.params" in ln]) == 2, 30, what="the reload")
        nudge()
        wait_for(lambda: _resting(venue) == {}, 60, what="the strategy's cancels at the venue")

        a.signal(signal.SIGTERM)
        assert a.wait_exit(timeout=30) == 0, a.log()
        record = venue.account_record()
        assert record["open_orders"] == {} and record["duplicate_user_refs"] == 0
    finally:
        venue.stop()
