"""The Kubernetes manifests (k8s/): each kustomization renders, passes strict schema validation, and
its pod is Guaranteed QoS with the CPUs, HugePages, ports, paths and capabilities its own TOML needs.

Nothing here needs a cluster: `kubectl kustomize` renders offline and `kubernetes-validate` checks the
published schemas; Kubernetes' own QoS rule and the sizing rules are implemented below, and each rule
is also shown to catch a deliberately broken copy.
"""

import copy
import os
import re
import shutil
import subprocess
import sys

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML not installed (it comes with kubernetes-validate)")

from appliance.config import parse_config  # noqa: E402
from appliance.runtime.layout import HUGE_PAGE, compute_layout  # noqa: E402
from tests.support import require_tool  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K8S = os.path.join(ROOT, "k8s")
KUSTOMIZATIONS = ("base", "overlays/lab", "overlays/colo")
# Oldest Kubernetes the manifests are written for: native sidecars (initContainer restartPolicy:
# Always) are on by default from 1.29, persistentVolumeClaimRetentionPolicy is beta from 1.27.
MIN_KUBERNETES = "1.30.0"
CONFIG_KEY = "appliance.toml"
MAIN = "appliance"  # the main container's name
HOT_CAPS = {"IPC_LOCK", "SYS_NICE"}  # every capability the appliance can use


def kubectl():
    return require_tool("kubectl", "kubectl not installed: needed for `kubectl kustomize` (kubectl >= 1.27, kustomize v5)")


def validator():
    here = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
    path = here if os.path.exists(here) else shutil.which("kubernetes-validate")
    if not path:
        pytest.skip("kubernetes-validate not installed: pip install kubernetes-validate")
    return path


_rendered = {}


def render(name: str) -> str:
    """The YAML `kubectl kustomize k8s/<name>` prints (cached per run)."""
    if name not in _rendered:
        r = subprocess.run([kubectl(), "kustomize", os.path.join(K8S, name)], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, f"kubectl kustomize k8s/{name} failed:\n{r.stderr}"
        _rendered[name] = r.stdout
    return _rendered[name]


def objects(name: str) -> list:
    return [d for d in yaml.safe_load_all(render(name)) if d]


def one(objs, kind: str) -> dict:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec(objs) -> dict:
    return one(objs, "StatefulSet")["spec"]["template"]["spec"]


def config_of(objs):
    """The appliance config the rendered ConfigMap carries, parsed as the appliance parses it."""
    cm = one(objs, "ConfigMap")
    assert CONFIG_KEY in cm["data"], f"ConfigMap {cm['metadata']['name']} has no {CONFIG_KEY}"
    return parse_config(cm["data"][CONFIG_KEY], f"ConfigMap/{cm['metadata']['name']}")


def container(spec, name):
    for c in spec.get("initContainers", []) + spec["containers"]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container named {name}")


def is_sidecar(c) -> bool:
    return c.get("restartPolicy") == "Always"


# --- Kubernetes quantities and rules --------------------------------------------------------------

_SUFFIX = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30,
           "Ti": 2**40, "m": None}


def quantity(q) -> float:
    """A resource quantity ("4", "500m", "14Mi", 2) as a number (CPUs or bytes)."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", str(q))
    assert m and m.group(2) in _SUFFIX, f"not a quantity this test understands: {q!r}"
    n = float(m.group(1))
    return n / 1000 if m.group(2) == "m" else n * _SUFFIX[m.group(2)]


def qos_problems(spec) -> list:
    """Why a pod is not Guaranteed QoS (Kubernetes' rule: every container, init and sidecar containers
    included, has cpu and memory requests equal to limits), plus what Guaranteed pods need on top of it
    here: integer CPUs (exclusive cores from the static CPU manager) and hugepages requests == limits."""
    problems = []
    for c in spec.get("initContainers", []) + spec["containers"]:
        res = c.get("resources", {})
        req, lim = res.get("requests", {}), res.get("limits", {})
        for r in ("cpu", "memory"):
            if r not in lim:
                problems.append(f"{c['name']}: no {r} limit")
            elif quantity(req.get(r, lim[r])) != quantity(lim[r]):
                problems.append(f"{c['name']}: {r} request {req.get(r)} != limit {lim[r]}")
        if "cpu" in lim and quantity(lim["cpu"]) != int(quantity(lim["cpu"])):
            problems.append(f"{c['name']}: cpu {lim['cpu']} is not a whole number of CPUs (no exclusive cores)")
        for r in set(req) | set(lim):
            if r.startswith("hugepages-") and (r not in req or r not in lim or quantity(req[r]) != quantity(lim[r])):
                problems.append(f"{c['name']}: {r} request {req.get(r)} != limit {lim.get(r)}")
    return problems


def sizing_problems(spec, cfg) -> list:
    """Where the main container's CPUs and HugePages differ from what the config needs, and where the
    preflight and warmup initContainers do not get the same resources (they check and compile for it)."""
    problems = []
    main = container(spec, MAIN)
    lim = main["resources"]["limits"]
    cpus = len(cfg.hot_threads()) + 1  # one core per hot thread, one for the control plane
    if quantity(lim.get("cpu", 0)) != cpus:
        problems.append(f"{MAIN}: cpu {lim.get('cpu')} but the {cfg.runtime.layout} layout needs {cpus} "
                        f"({len(cfg.hot_threads())} hot + 1 control)")
    pages = compute_layout(cfg.hot_threads(), cfg.runtime.ring_slots, cfg.journal.ring_slots).hugepages
    huge = quantity(lim["hugepages-2Mi"]) if "hugepages-2Mi" in lim else None
    if huge is None and cfg.memory.require_hugepages:
        problems.append(f"{MAIN}: no hugepages-2Mi but memory.require_hugepages needs {pages * 2}Mi")
    elif huge is not None and huge != pages * HUGE_PAGE:
        problems.append(f"{MAIN}: hugepages-2Mi {lim['hugepages-2Mi']} but the arena needs {pages * 2}Mi")
    for other in ("doctor", "warmup"):
        if container(spec, other)["resources"] != main["resources"]:
            problems.append(f"{other}: resources differ from {MAIN}'s")
    return problems


# --- rendering and schema validation -----------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomize_renders_every_part(name):
    kinds = sorted(o["kind"] for o in objects(name))
    expected = {"ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy"}
    assert expected <= set(kinds), f"k8s/{name} renders {kinds}"
    if name != "base":
        assert "Namespace" in kinds
        ns = one(objects(name), "Namespace")["metadata"]["name"]
        assert all(o["metadata"].get("namespace") == ns for o in objects(name) if o["kind"] != "Namespace")


@pytest.mark.parametrize("version", [MIN_KUBERNETES, None], ids=["min", "validator-default"])
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kubernetes_validate_strict(name, version, tmp_path):
    path = tmp_path / "rendered.yaml"
    path.write_text(render(name))
    cmd = [validator(), "--strict", "--quiet"] + (["-k", version] if version else []) + [str(path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"kubernetes-validate rejected k8s/{name}:\n{r.stdout}{r.stderr}"


def test_strict_validation_rejects_an_unknown_field(tmp_path):
    objs = objects("overlays/colo")
    one(objs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "4"}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(objs))
    r = subprocess.run([validator(), "--strict", "--quiet", "-k", MIN_KUBERNETES, str(path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "limit" in r.stdout + r.stderr


# --- QoS and sizing against the TOML the pod carries -------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pod_is_guaranteed_qos_and_sized_by_its_toml(name):
    objs = objects(name)
    spec, cfg = pod_spec(objs), config_of(objs)
    assert qos_problems(spec) == []
    assert sizing_problems(spec, cfg) == []


def test_colo_needs_several_hugepages_and_four_cores():
    """The colo TOML's larger rings make the HugePages check more than a one-page formality."""
    objs = objects("overlays/colo")
    cfg = config_of(objs)
    lim = container(pod_spec(objs), MAIN)["resources"]["limits"]
    assert cfg.memory.require_hugepages and cfg.runtime.layout == "split"
    assert quantity(lim["hugepages-2Mi"]) == 7 * HUGE_PAGE and quantity(lim["cpu"]) == 4


def _break(spec, how):
    c = {"main": container(spec, MAIN), "doctor": container(spec, "doctor")}
    if how == "init memory limit":
        c["doctor"]["resources"]["limits"]["memory"] = "4Gi"
    elif how == "no cpu limit":
        del c["main"]["resources"]["limits"]["cpu"]
    elif how == "fractional cpu":
        for r in ("requests", "limits"):
            c["main"]["resources"][r]["cpu"] = "3500m"
    elif how == "hugepages request":
        c["main"]["resources"]["requests"]["hugepages-2Mi"] = "2Mi"
    return spec


@pytest.mark.parametrize("how", ["init memory limit", "no cpu limit", "fractional cpu", "hugepages request"])
def test_qos_rule_catches_a_broken_copy(how):
    spec = _break(copy.deepcopy(pod_spec(objects("overlays/colo"))), how)
    assert qos_problems(spec), f"{how}: not detected"


def test_sizing_rule_catches_a_pod_that_does_not_match_its_toml():
    objs = objects("overlays/colo")
    spec, cfg = pod_spec(objs), config_of(objs)
    bigger = parse_config(one(objs, "ConfigMap")["data"][CONFIG_KEY].replace("ring_slots = 65536", "ring_slots = 131072"))
    assert any("hugepages-2Mi" in p for p in sizing_problems(spec, bigger))
    fused = parse_config(one(objs, "ConfigMap")["data"][CONFIG_KEY].replace('layout = "split"', 'layout = "fused"'))
    assert any("cpu" in p for p in sizing_problems(spec, fused))
    # The lab pod carries no HugePages: fine for its TOML, not once the TOML requires them.
    lab = objects("overlays/lab")
    strict = parse_config(one(lab, "ConfigMap")["data"][CONFIG_KEY].replace("require_hugepages = false",
                                                                           "require_hugepages = true"))
    assert sizing_problems(pod_spec(lab), config_of(lab)) == []
    assert any("require_hugepages" in p for p in sizing_problems(pod_spec(lab), strict))
    spec = copy.deepcopy(spec)
    container(spec, "warmup")["resources"]["limits"]["cpu"] = "2"
    assert any("warmup" in p for p in sizing_problems(spec, cfg))


# --- the pod contract: what the manifests and the TOML must agree on ---------------------------------


def _mount_path(c, volume):
    paths = [m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] == volume]
    return paths[0] if paths else None


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_toml_and_manifests_agree(name):
    objs = objects(name)
    sts, spec, cfg = one(objs, "StatefulSet"), pod_spec(objs), config_of(objs)
    main = container(spec, MAIN)
    assert sts["spec"]["replicas"] == 1, "one appliance per session and journal"
    # Control plane: reachable on the pod IP, on the port every consumer uses.
    assert cfg.control.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports["http-metrics"] == cfg.control.port
    anno = sts["spec"]["template"]["metadata"]["annotations"]
    assert anno["prometheus.io/scrape"] == "true" and int(anno["prometheus.io/port"]) == cfg.control.port
    svc = one(objs, "Service")
    assert svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http-metrics"]
    # Config file: where the ConfigMap is mounted, in every container that reads it.
    cm_volume = next(v["name"] for v in spec["volumes"] if v.get("configMap", {}).get("name") == one(objs, "ConfigMap")["metadata"]["name"])
    for c in [main, container(spec, "doctor"), container(spec, "warmup")]:
        path = os.path.join(_mount_path(c, cm_volume), CONFIG_KEY)
        assert c["args"][1:] == ["-c", path], f"{c['name']} does not read {path}: {c['args']}"
    assert [container(spec, n)["args"][0] for n in ("doctor", "warmup", MAIN)] == ["doctor", "warmup", "run"]
    names = [c["name"] for c in spec["initContainers"]]
    assert names.index("doctor") < names.index("warmup"), "preflight first, then compile"
    # Journal on the claim that survives restarts; kernel cache on a volume warmup and run share.
    claim = sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert os.path.dirname(cfg.journal.path) == _mount_path(main, claim)
    cache = next(v["name"] for v in spec["volumes"] if "emptyDir" in v and _mount_path(main, v["name"]) == cfg.numba.cache_dir)
    assert _mount_path(container(spec, "warmup"), cache) == cfg.numba.cache_dir
    # /tmp: writable for the onefile unpack, on disk (a memory-backed one would eat the memory limit).
    tmp = next(v for v in spec["volumes"] if v["name"] == next(m["name"] for m in main["volumeMounts"] if m["mountPath"] == "/tmp"))
    assert "emptyDir" in tmp and tmp["emptyDir"].get("medium") != "Memory"
    # Cores come from the kubelet: explicit core numbers cannot be known when the manifest is written.
    for key in ("feed", "strategy", "gateway", "fused", "control"):
        assert cfg.get(f"cpu.{key}") == "auto", f"cpu.{key} must be \"auto\" in a pod (the kubelet picks cores)"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_probes_hit_real_routes(name):
    from appliance.control.plane import ControlPlane

    objs = objects(name)
    main = container(pod_spec(objs), MAIN)
    routes = ControlPlane(config_of(objs), None, "/nonexistent").server._routes
    wanted = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in wanted.items():
        get = main[probe]["httpGet"]
        assert get["path"] == path and "GET" in routes[path] and get["port"] == "http-metrics", probe


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_termination_grace_covers_the_cancels_and_the_stop(name):
    objs = objects(name)
    spec, cfg = pod_spec(objs), config_of(objs)
    main = container(spec, MAIN)
    # The preStop hook is `appliance drain` with the pod's own config: it trips the kill switch and waits
    # (at most cancel_on_stop_timeout_s + 2 s, plus the onefile unpack) for the venue's cancels.
    assert main["lifecycle"]["preStop"]["exec"]["command"] == ["/appliance", "drain"] + main["args"][1:]
    pre_stop = cfg.gateway.cancel_on_stop_timeout_s + 2 + 3
    # Then SIGTERM: cancels confirmed, hot threads stopped, journal flush, logout, the unpack dir's removal.
    needed = pre_stop + cfg.gateway.cancel_on_stop_timeout_s + cfg.runtime.stop_timeout_s + 5
    assert spec["terminationGracePeriodSeconds"] >= needed


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_security_context(name):
    objs = objects(name)
    spec, cfg = pod_spec(objs), config_of(objs)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] and pod["runAsUser"] != 0 and pod["seccompProfile"]["type"] == "RuntimeDefault"
    usable = {"IPC_LOCK"} if (cfg.memory.lock or cfg.memory.lockall) else set()
    usable |= {"SYS_NICE"} if cfg.cpu.sched_fifo else set()
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False and sc["runAsNonRoot"]
        assert sc["capabilities"]["drop"] == ["ALL"]
        added = set(sc["capabilities"].get("add") or ())
        assert added <= (usable if not is_sidecar(c) else set()), f"{c['name']}: {added} beyond what the TOML uses"
        if cfg.cpu.sched_fifo and not is_sidecar(c):
            assert "SYS_NICE" in added, f"{c['name']}: cpu.sched_fifo needs SYS_NICE"


def test_restricted_namespace_holds_a_restricted_pod():
    """The lab namespace enforces the "restricted" Pod Security Standard; its pod must pass it."""
    objs = objects("overlays/lab")
    assert one(objs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    spec = pod_spec(objs)
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    for c in spec.get("initContainers", []) + spec["containers"]:
        assert set(c["securityContext"]["capabilities"].get("add") or ()) <= {"NET_BIND_SERVICE"}, c["name"]
        assert "hostPort" not in str(c.get("ports", ""))
    assert not any("hostPath" in v for v in spec["volumes"])


def test_colo_runs_on_the_host_network_of_dedicated_nodes():
    objs = objects("overlays/colo")
    spec = pod_spec(objs)
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert one(objs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    key, value = next(iter(spec["nodeSelector"].items()))
    assert any(t["key"] == key and t.get("value") == value and t["effect"] == "NoSchedule" for t in spec["tolerations"])
    # The documented NetworkPolicy names the ports the TOML uses.
    cfg = config_of(objs)
    pol = one(objs, "NetworkPolicy")["spec"]
    ingress = {(p["protocol"], p["port"]) for rule in pol["ingress"] for p in rule["ports"]}
    egress = {(p["protocol"], p["port"]) for rule in pol["egress"] for p in rule["ports"]}
    assert {("UDP", cfg.feed.port), ("TCP", cfg.control.port)} <= ingress
    assert {("UDP", cfg.feed.retransmit_port), ("TCP", cfg.gateway.port)} <= egress


def test_lab_venue_sidecar_serves_what_the_appliance_dials():
    objs = objects("overlays/lab")
    spec, cfg = pod_spec(objs), config_of(objs)
    venue = container(spec, "venue")
    names = [c["name"] for c in spec["initContainers"]]
    assert is_sidecar(venue) and names.index("venue") > names.index("warmup")
    assert venue["args"][0] == "venue" and venue["startupProbe"]["tcpSocket"]["port"] == cfg.venue.ouch_port
    assert (cfg.gateway.host, cfg.gateway.port) == (cfg.venue.ouch_host, cfg.venue.ouch_port)
    assert (cfg.feed.address, cfg.feed.port) == (cfg.venue.feed_address, cfg.venue.feed_port)
    assert (cfg.feed.retransmit_host, cfg.feed.retransmit_port) == (cfg.venue.retransmit_host, cfg.venue.retransmit_port)
    assert _mount_path(venue, "venue-state") == cfg.venue.state_dir


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pdb_service_and_policy_select_the_pod(name):
    objs = objects(name)
    labels = one(objs, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "PodDisruptionBudget": one(objs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        "Service": one(objs, "Service")["spec"]["selector"],
        "NetworkPolicy": one(objs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    }
    for kind, sel in selectors.items():
        assert sel and all(labels.get(k) == v for k, v in sel.items()), f"{kind} does not select the pod"
    cfg = config_of(objs)
    pol = one(objs, "NetworkPolicy")["spec"]
    assert any(p == {"protocol": "TCP", "port": cfg.control.port} for rule in pol["ingress"] for p in rule["ports"])
