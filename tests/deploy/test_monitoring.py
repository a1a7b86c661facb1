"""Monitoring next to the manifests (k8s/monitoring/): the alert rules pass promtool's checks and unit
tests, and every metric and label the alerts and the Grafana dashboard query is one the appliance
exports (read from appliance/control/metrics.py's collector, so a renamed metric breaks this test).
"""

import json
import os
import re
import shutil
import subprocess

import pytest

from tests.support import require_tool

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (it comes with kubernetes-validate)")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MON = os.path.join(ROOT, "k8s", "monitoring")
ALERTS = os.path.join(MON, "alerts.yml")
ALERT_TESTS = os.path.join(MON, "alerts.test.yml")
DASHBOARD = os.path.join(MON, "grafana-dashboard.json")
# Series Prometheus itself adds to every target, and the labels its scrape attaches.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
TARGET_LABELS = {"instance", "job", "le"}


# --- what the appliance exports -----------------------------------------------------------------------


class _Anything:
    """Stands in for the running process's state: any attribute, call or key is another _Anything; it
    iterates as empty and counts as 0, so the collector builds every metric family it can export."""

    def __getattr__(self, name):
        return _Anything()

    def __call__(self, *a, **k):
        return _Anything()

    def __getitem__(self, key):
        return _Anything()

    def __iter__(self):
        return iter(())

    def __int__(self):
        return 0

    def __float__(self):
        return 0.0

    def __bool__(self):
        return True

    def __gt__(self, other):
        return False

    def __truediv__(self, other):
        return 0.0


def exported() -> tuple[set, set]:
    """(series names, label names) that appliance/control/metrics.py's collector and the process
    collector produce, with the suffixes the exposition format adds."""
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from appliance.control import metrics

    families = []

    def recorder(kind):
        class Family:
            def __init__(self, name, documentation, value=None, labels=None, **kwargs):
                families.append((kind, name, tuple(labels or ())))

            def add_metric(self, *a, **k):
                pass

        return Family

    saved = {k: getattr(metrics, k) for k in ("CounterMetricFamily", "GaugeMetricFamily",
                                                "HistogramMetricFamily", "InfoMetricFamily")}
    try:
        for k in saved:
            setattr(metrics, k, recorder(k.replace("MetricFamily", "").lower()))
        list(metrics.ApplianceCollector(_Anything()).collect())
    finally:
        for k, v in saved.items():
            setattr(metrics, k, v)
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}
    names, labels = set(), set()
    for kind, name, lab in families:
        base = name[: -len("_total")] if kind == "counter" and name.endswith("_total") else name
        names |= {base + s for s in suffixes[kind]}
        labels |= set(lab)
    reg = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=reg)
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        names |= {s.name for s in fam.samples}
    return names, labels


@pytest.fixture(scope="module")
def known():
    names, labels = exported()
    assert {"appliance_ready", "appliance_kill_switch", "appliance_tick_to_trade_latency_seconds_bucket",
            "appliance_feed_gaps_total", "process_resident_memory_bytes"} <= names, "collector not read"
    return names | PROMETHEUS_SERIES, labels | TARGET_LABELS


# --- reading PromQL --------------------------------------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
             "offset", "inf", "nan"}


def promql_names(expr: str) -> tuple[set, set]:
    """(metric names, label names) an expression refers to: identifiers that are not functions or
    keywords, and the labels in matchers and in by/without/on/ignoring clauses."""
    expr = re.sub(r"\$\{?\w+\}?", "1", expr)  # Grafana variables
    labels = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"", expr))
    for clause in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expr):
        labels |= {x.strip() for x in clause.split(",") if x.strip()}
    stripped = re.sub(r"\"(?:[^\"\\]|\\.)*\"", "", expr)  # strings
    stripped = re.sub(r"\{[^}]*\}", "", stripped)  # matchers
    stripped = re.sub(r"\[[^\]]*\]", "", stripped)  # ranges
    stripped = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", stripped):
        word, call = m.group(1), m.group(2)
        if not call and word.lower() not in _KEYWORDS and not re.fullmatch(r"\d+\w*", word):
            names.add(word)
    return names, labels


def test_promql_reader():
    names, labels = promql_names(
        'histogram_quantile(0.99, sum by (instance, le) (rate(appliance_x_bucket{instance=~"$instance",mode="a"}'
        '[$__rate_interval]))) > 50e-6 and on (instance) appliance_ready == 1')
    assert names == {"appliance_x_bucket", "appliance_ready"}
    assert labels == {"instance", "le", "mode"}


def alert_rules() -> list:
    with open(ALERTS) as f:
        return [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]


def dashboard_exprs(dash) -> list:
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out.append((p["title"], t["expr"]))
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            out.append((f"variable {v['name']}", v["definition"]))
    return out


def unknown_references(exprs, known) -> list:
    names, labels = known
    bad = []
    for where, expr in exprs:
        n, lab = promql_names(expr)
        # label_values(metric, label) in a Grafana variable: the metric and the label
        for metric, label in re.findall(r"label_values\(\s*(\w+)\s*,\s*(\w+)\s*\)", expr):
            n, lab = {metric}, lab | {label}
        bad += [f"{where}: metric {x}" for x in sorted(n - names)]
        bad += [f"{where}: label {x}" for x in sorted(lab - labels)]
    return bad


# --- dashboard ---------------------------------------------------------------------------------------


def test_dashboard_is_valid_and_queries_only_exported_metrics(known):
    with open(DASHBOARD) as f:
        dash = json.load(f)
    assert dash["title"] and dash["uid"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = [p for p in dash["panels"] if p["type"] != "row"]
    assert graphs and all(p.get("targets") for p in graphs), "a panel without a query"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in graphs), "panels must use the datasource variable"
    exprs = dashboard_exprs(dash)
    assert unknown_references(exprs, known) == []
    # Every part the alerts cover is on the dashboard too.
    shown = set().union(*(promql_names(e)[0] for _, e in exprs))
    for metric in ("appliance_tick_to_trade_latency_seconds_bucket", "appliance_feed_gaps_total",
                   "appliance_kill_switch", "appliance_hot_thread_heartbeats_total"):
        assert metric in shown


def test_a_misspelt_metric_or_label_is_caught(known):
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = dashboard_exprs(dash)
    where, expr = next((w, e) for w, e in exprs if "appliance_kill_switch" in e)
    assert unknown_references([(where, expr.replace("appliance_kill_switch", "appliance_killswitch"))], known)
    assert unknown_references([("x", "sum by (instance, stages) (appliance_stage_latency_seconds_count)")], known)


# --- alert rules -------------------------------------------------------------------------------------


def test_alerts_query_only_exported_metrics(known):
    rules = alert_rules()
    assert len(rules) >= 10
    assert unknown_references([(r["alert"], r["expr"]) for r in rules], known) == []
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]


def test_every_alert_has_a_firing_and_a_quiet_case():
    with open(ALERT_TESTS) as f:
        tests = yaml.safe_load(f)["tests"]
    fired, quiet = set(), set()
    for t in tests:
        instances = {m.group(1) for s in t["input_series"] for m in [re.search(r'instance="([^"]*)"', s["series"])] if m}
        for case in t["alert_rule_test"]:
            got = {a["exp_labels"].get("instance") for a in case["exp_alerts"]}
            if case["exp_alerts"]:
                fired.add(case["alertname"])
            if not case["exp_alerts"] or instances - got:
                quiet.add(case["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - fired == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"


def promtool():
    return require_tool("promtool", "promtool not installed: apt-get install --no-install-recommends prometheus")


def test_promtool_check_rules():
    r = subprocess.run([promtool(), "check", "rules", ALERTS], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in r.stdout


def test_promtool_unit_tests_pass():
    r = subprocess.run([promtool(), "test", "rules", os.path.basename(ALERT_TESTS)], cwd=MON,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests_catch_a_broken_rule(tmp_path):
    """A kill-switch alert that can never fire makes the unit tests fail."""
    with open(ALERTS) as f:
        text = f.read()
    assert "appliance_kill_switch == 1" in text
    (tmp_path / "alerts.yml").write_text(text.replace("appliance_kill_switch == 1", "appliance_kill_switch == 2"))
    shutil.copy(ALERT_TESTS, tmp_path / "alerts.test.yml")
    r = subprocess.run([promtool(), "test", "rules", "alerts.test.yml"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "ApplianceKillSwitchOn" in r.stdout + r.stderr


def test_servicemonitor_scrapes_the_services_port():
    with open(os.path.join(MON, "servicemonitor.yaml")) as f:
        sm = yaml.safe_load(f)
    with open(os.path.join(ROOT, "k8s", "base", "service.yaml")) as f:
        svc = yaml.safe_load(f)
    assert sm["kind"] == "ServiceMonitor"
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in svc["spec"]["ports"]]
