"""Static verification of the Helm chart (charts/scaleshop), the image's entry points and k8s/.

No cluster and no Docker engine run here, so what a cluster would reject is checked
before one is involved:

- `helm lint --strict` and `helm template` pass for every values set (defaults, the chart's
  ci/ sets, the kind and minikube values of k8s/), for Kubernetes 1.29 and for the newest
  version kubernetes-validate bundles;
- every rendered object validates strictly (no unknown field) against that version's schema;
- policy: every workload has probes, resources, a hardened security context, the standard
  labels, a PodDisruptionBudget, a safe rollout, a drain on scale-down;
- contract: the environment the chart gives user, catalog and worker is exactly what the
  code reads (`Settings` plus the names read with os.environ), it passes `Settings`, and the
  chart's commands, ports and probe paths are served by the real entry points;
- the gateway's nginx.conf is one file (files/nginx.conf) that the chart and the local stack
  both render, and nginx accepts both renders;
- the NetworkPolicies allow exactly the intended graph of who may reach whom;
- bad values are refused by the schema with a message naming the value;
- the default release fits a 2 CPU / 4 GiB kind or minikube node.

Needs helm in the cache (stack/install.sh helm, part of `make install`). Does not use the
`stack` fixture: it starts no server other than the entry points it checks, briefly.
"""
from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import kubernetes_validate
import pytest
import requests
import yaml

from services.shared.config import Settings
from services.shared.events import TOPIC_PARTITIONS
from stack.procs import free_port
from stack.servers import helm_env

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "scaleshop"
CACHE = Path(os.environ.get("SCALESHOP_CACHE", REPO / ".cache")).resolve()
HELM = CACHE / "bin" / "helm"
RELEASE, NAMESPACE = "scaleshop", "scaleshop"

OLDEST_KUBE = "1.29"
NEWEST_KUBE = ".".join(kubernetes_validate.latest_version().split(".")[:2])
KUBE_VERSIONS = (OLDEST_KUBE, NEWEST_KUBE)

VALUE_SETS = {
    "default": [],
    "minimal": [CHART / "ci" / "minimal-values.yaml"],
    "production": [CHART / "ci" / "production-values.yaml"],
    "kind": [REPO / "k8s" / "values-kind.yaml"],
    "minikube": [REPO / "k8s" / "values-minikube.yaml"],
    # This machine's cluster (make cluster-up): kind's values, then images built here and the
    # mongo-java-server engine.
    "local-cluster": [REPO / "k8s" / "values-kind.yaml", REPO / "k8s" / "values-local-cluster.yaml"],
}
# The parts of a release (values.yaml `components`), which every template ranges over.
COMPONENTS = yaml.safe_load((CHART / "values.yaml").read_text())["components"]
APP_SERVICES = tuple(name for name, c in COMPONENTS.items() if c.get("service"))
HTTP_SERVICES = tuple(name for name, c in COMPONENTS.items() if c.get("http"))
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
POD_KINDS = ("Deployment", "StatefulSet", "Job", "Pod")
STANDARD_LABELS = (
    "app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
    "app.kubernetes.io/part-of", "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)
# Workloads without a preStop hook, and why: nothing routes requests to them, so there is
# nothing to drain (the worker leaves its consumer group on SIGTERM; mongod and the Kafka
# broker shut down cleanly on SIGTERM within their grace period; Prometheus' rolling update starts
# the new pod, which scrapes on its own, before the old one goes; the console is one pod replaced
# with Recreate, so no successor takes its requests over).
NO_PRESTOP = {"worker", "mongodb", "kafka", "prometheus", "console"}
# Deployments not rolled with maxUnavailable 0, and why: two memcached pods behind one
# Service would serve stale entries (an invalidation reaches only one), so it is Recreate; the
# console keeps its marks in memory and runs one action at a time: never two pods.
RECREATE = {"memcached", "console"}
# Parts that k8s/values-local-cluster.yaml turns on only to verify them on this machine's cluster,
# beyond what a default release runs: the default release's memory bound is checked without them
# (and the whole release against the node).
LOCAL_CLUSTER_EXTRAS = {"console"}

# A one-node cluster of 2 CPUs and 4 GiB, minus what the control plane's own pods request
# (kind: etcd 100m, apiserver 250m, controller-manager 200m, scheduler 100m, 2x coredns
# 100m/70Mi, kindnet 100m/50Mi = 950m; minikube requests less).
NODE_CPU_M, NODE_MEMORY_MI = 2000, 4096
CONTROL_PLANE_CPU_M, CONTROL_PLANE_MEMORY_MI = 950, 400
MAX_DEFAULT_MEMORY_MI = 2560  # and, by the brief, well below 4 GiB: at most 2.5 GiB


# ---- helpers ------------------------------------------------------------------------------

def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run `make install` (or `bash stack/install.sh helm`)")
    result = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60, env=helm_env(CACHE))
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def value_args(files=(), sets=()) -> list[str]:
    args = []
    for f in files:
        args += ["-f", str(f)]
    for s in sets:
        args += ["--set", s]
    return args


@functools.cache
def render(value_set: str = "default", kube: str = NEWEST_KUBE, sets: tuple[str, ...] = ()) -> tuple[dict, ...]:
    out = helm("template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", kube,
               *value_args(VALUE_SETS[value_set], sets)).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def of_kind(objs, *kinds) -> list[dict]:
    return [o for o in objs if o["kind"] in kinds]


def named(objs, kind: str, name: str) -> dict:
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise AssertionError(f"no {kind} {name} in the rendered chart")


def component(obj: dict) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def pod_spec(obj: dict) -> dict:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def pod_labels(obj: dict) -> dict:
    return obj["metadata"]["labels"] if obj["kind"] == "Pod" else obj["spec"]["template"]["metadata"]["labels"]


def containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    return spec.get("initContainers", []) + spec["containers"]


def app_deployment(objs, service: str) -> dict:
    return named(objs, "Deployment", f"{RELEASE}-{service}")


def cpu_m(q) -> float:
    q = str(q)
    return float(q[:-1]) if q.endswith("m") else float(q) * 1000


def mem_mi(q) -> float:
    q = str(q)
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 ** 2, "k": 1000 / 1024 ** 2,
             "M": 1000 ** 2 / 1024 ** 2, "G": 1000 ** 3 / 1024 ** 2}
    for unit, factor in units.items():
        if q.endswith(unit):
            return float(q[: -len(unit)]) * factor
    return float(q) / 1024 ** 2


def container_env(objs, workload: dict, container: dict) -> dict[str, str | None]:
    """Every variable a container gets, with its value where the render knows it."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named(objs, "ConfigMap", source["configMapRef"]["name"])["data"])
        elif "secretRef" in source:
            data = named(objs, "Secret", source["secretRef"]["name"])["data"]
            env.update({k: base64.b64decode(v).decode() for k, v in data.items()})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            secret = [o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == ref["name"]]
            env[item["name"]] = base64.b64decode(secret[0]["data"][ref["key"]]).decode() if secret else None
        elif "fieldRef" in item.get("valueFrom", {}):
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.name": f"{workload['metadata']['name']}-7d9c8b6f5-x2x4q",
                                 "metadata.namespace": NAMESPACE}[path]
        else:
            raise AssertionError(f"unexpected env source {item}")
    return env


def env_names_read_by_code() -> set[str]:
    """Variables the services read directly (os.environ / os.getenv), besides Settings. Not the lab
    console's (services/console): it is no service of the shared Settings, and the chart gives it its
    own variables (tests/functional/test_chart_console.py)."""
    pattern = re.compile(
        r"""os\.(?:environ\.get|getenv|environ\[|environ\.setdefault)\(?\s*["']([A-Z][A-Z0-9_]*)["']""")
    names = set()
    for path in (REPO / "services").rglob("*.py"):
        if (REPO / "services" / "console") not in path.parents:
            names |= set(pattern.findall(path.read_text()))
    return names


def expected_env() -> set[str]:
    return {name.upper() for name in Settings.model_fields} | env_names_read_by_code()


# ---- helm lint and template ---------------------------------------------------------------

@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_strict(value_set, kube):
    result = helm("lint", "--strict", str(CHART), "--kube-version", kube, *value_args(VALUE_SETS[value_set]))
    assert "0 chart(s) failed" in result.stdout, result.stdout
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_objects_validate_strictly(value_set, kube):
    objs = render(value_set, kube)
    assert len(objs) > 20
    errors = []
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, kube, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            errors.append(f"{obj['kind']} {obj['metadata'].get('name')}: {getattr(exc, 'message', exc)}")
    assert not errors, "\n".join(errors)


def test_every_value_set_renders_the_expected_objects():
    kinds = {o["kind"] for o in render()}
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
            "Job", "Pod", "ServiceAccount", "NetworkPolicy"} <= kinds
    default = {(o["kind"], o["metadata"]["name"]) for o in render()}
    workloads = {name: c["workload"] for name, c in COMPONENTS.items() if c["workload"] != "Job"}
    assert set(workloads) == {"gateway", "user", "catalog", "worker", "mongodb", "memcached", "kafka", "console"}
    for name, kind in workloads.items():
        # The console is off by default (tests/functional/test_chart_console.py).
        assert ((kind, f"{RELEASE}-{name}") in default) == (name != "console"), name
    minimal = {(o["kind"], o["metadata"]["name"]) for o in render("minimal")}
    assert not any(kind == "StatefulSet" for kind, _ in minimal)
    assert ("Deployment", f"{RELEASE}-memcached") not in minimal
    production = render("production")
    assert {component(h) for h in of_kind(production, "HorizontalPodAutoscaler")} == {"gateway", "user", "catalog"}
    assert of_kind(production, "Job") and any(component(j) == "loadgen" for j in of_kind(production, "Job"))
    # With an HPA the Deployment leaves replicas to it (a helm upgrade must not reset them).
    assert "replicas" not in app_deployment(production, "user")["spec"]
    assert app_deployment(production, "worker")["spec"]["replicas"] == 6


# ---- policy over every workload -----------------------------------------------------------

@pytest.fixture(scope="module", params=list(VALUE_SETS))
def objs(request):
    return render(request.param)


def test_every_object_has_the_standard_labels(objs):
    for obj in objs:
        labels = obj["metadata"].get("labels", {})
        # Objects of the release as a whole (shared ConfigMap, Secrets, ServiceAccount) have no component.
        release_wide = obj["kind"] in ("ConfigMap", "Secret", "ServiceAccount")
        optional = {"app.kubernetes.io/component"} if release_wide else set()
        if obj["kind"] == "NetworkPolicy" and obj["metadata"]["name"] == f"{RELEASE}-default":
            optional = {"app.kubernetes.io/component"}  # the policy of every pod of the release
        missing = [label for label in STANDARD_LABELS if label not in labels and label not in optional]
        assert not missing, f"{obj['kind']} {obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_pods_carry_the_labels_their_selectors_and_services_use(objs):
    for obj in of_kind(objs, *WORKLOAD_KINDS):
        labels = pod_labels(obj)
        assert all(label in labels for label in STANDARD_LABELS), obj["metadata"]["name"]
        selector = obj["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), obj["metadata"]["name"]
        assert "app.kubernetes.io/version" not in selector and "helm.sh/chart" not in selector, \
            "selectors are immutable: they must not contain labels that change with the chart version"
    for svc in of_kind(objs, "Service"):
        targets = [w for w in of_kind(objs, *WORKLOAD_KINDS)
                   if svc["spec"]["selector"].items() <= pod_labels(w).items()]
        assert len(targets) == 1, f"Service {svc['metadata']['name']} selects {len(targets)} workloads"
        port_names = {p["name"] for c in containers(targets[0]) for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names, (svc["metadata"]["name"], port)


def test_every_container_has_requests_and_limits(objs):
    for obj in of_kind(objs, *POD_KINDS):
        for c in containers(obj):
            res = c.get("resources", {})
            where = f"{obj['kind']} {obj['metadata']['name']}/{c['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{where} lacks {kind}"
            assert cpu_m(res["limits"]["cpu"]) >= cpu_m(res["requests"]["cpu"]), where
            assert mem_mi(res["limits"]["memory"]) >= mem_mi(res["requests"]["memory"]), where


def test_every_pod_runs_hardened(objs):
    for obj in of_kind(objs, *POD_KINDS):
        spec = pod_spec(obj)
        where = f"{obj['kind']} {obj['metadata']['name']}"
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, where
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("enableServiceLinks") is False, where
        # loadgen scales Deployments, Prometheus discovers pods through the API, the console acts on the
        # release through it (each with a Role of its own).
        if component(obj) not in ("loadgen", "prometheus", "console"):
            assert spec.get("automountServiceAccountToken") is False, where
        # Only the volume types the "restricted" Pod Security Standard allows.
        allowed = {"configMap", "emptyDir", "persistentVolumeClaim", "secret", "downwardAPI", "projected"}
        for v in spec.get("volumes", []):
            assert set(v) - {"name"} <= allowed, (where, v)
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), where
        for c in containers(obj):
            assert not any("hostPort" in p for p in c.get("ports", [])), (where, c["name"])
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot") is True, (where, c["name"])
            assert isinstance(sc.get("runAsUser"), int) and sc["runAsUser"] > 0, (where, c["name"])
            assert sc.get("allowPrivilegeEscalation") is False, (where, c["name"])
            assert sc.get("readOnlyRootFilesystem") is True, (where, c["name"])
            assert sc.get("privileged", False) is False, (where, c["name"])
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], (where, c["name"])
            assert not sc.get("capabilities", {}).get("add"), (where, c["name"])
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{where}: unpinned {image}"


def test_every_workload_has_probes_grace_and_drain(objs):
    for obj in of_kind(objs, *WORKLOAD_KINDS):
        spec, name = pod_spec(obj), component(obj)
        grace = spec.get("terminationGracePeriodSeconds")
        assert isinstance(grace, int) and grace >= 10, f"{name}: terminationGracePeriodSeconds {grace}"
        for c in spec["containers"]:
            assert "readinessProbe" in c and "livenessProbe" in c, f"{name}/{c['name']} lacks a probe"
            pre_stop = c.get("lifecycle", {}).get("preStop")
            if name in NO_PRESTOP:
                continue
            assert pre_stop, f"{name}/{c['name']} has no preStop hook: scale-down would drop requests"
            sleep = pre_stop["exec"]["command"]
            assert sleep[0] == "sleep" and int(sleep[1]) >= 1, (name, sleep)
            assert grace > int(sleep[1]), f"{name}: grace {grace}s <= preStop {sleep[1]}s"
            if name in HTTP_SERVICES:
                env = container_env(objs, obj, c)
                drain = int(sleep[1]) + int(env["GUNICORN_GRACEFUL_TIMEOUT"])
                assert grace > drain, f"{name}: grace {grace}s <= preStop + gunicorn graceful timeout ({drain}s)"


def test_deployments_roll_without_losing_capacity(objs):
    for dep in of_kind(objs, "Deployment"):
        strategy = dep["spec"]["strategy"]
        if component(dep) in RECREATE:
            assert strategy == {"type": "Recreate"}, component(dep)
            continue
        assert strategy["type"] == "RollingUpdate", component(dep)
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0, component(dep)
        assert strategy["rollingUpdate"]["maxSurge"] in (1, "25%"), component(dep)
    for sts in of_kind(objs, "StatefulSet"):
        assert sts["spec"]["updateStrategy"]["type"] == "RollingUpdate"


def test_every_workload_has_a_disruption_budget(objs):
    pdbs = of_kind(objs, "PodDisruptionBudget")
    for obj in of_kind(objs, *WORKLOAD_KINDS):
        matching = [p for p in pdbs if p["spec"]["selector"]["matchLabels"].items() <= pod_labels(obj).items()]
        assert len(matching) == 1, f"{component(obj)} has {len(matching)} PodDisruptionBudgets"
        budget = matching[0]["spec"]
        replicas = obj["spec"].get("replicas")
        if budget.get("minAvailable") is not None and isinstance(budget["minAvailable"], int) and replicas is not None:
            assert budget["minAvailable"] < replicas or replicas == 0, \
                f"{component(obj)}: minAvailable {budget['minAvailable']} blocks every node drain"


def test_read_only_root_filesystem_has_writable_scratch(objs):
    """Where a process writes, an emptyDir (or the data volume) is mounted."""
    for obj in of_kind(objs, *WORKLOAD_KINDS, "Job"):
        spec = pod_spec(obj)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in obj["spec"].get("volumeClaimTemplates", [])}
        for c in containers(obj):
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            for path, vol in mounts.items():
                assert vol in volumes or vol in claims, f"{component(obj)}: {path} mounts unknown volume {vol}"
            if component(obj) in ("memcached",):
                continue  # memcached writes nothing
            assert "/tmp" in mounts, f"{component(obj)}/{c['name']} has no writable /tmp"
            env = container_env(objs, obj, c)
            if "PROMETHEUS_MULTIPROC_DIR" in env:
                assert env["PROMETHEUS_MULTIPROC_DIR"] in mounts, \
                    "PROMETHEUS_MULTIPROC_DIR must be a mounted emptyDir (it must exist and be writable)"
                assert volumes[mounts[env["PROMETHEUS_MULTIPROC_DIR"]]].get("emptyDir", {}).get("medium") == "Memory"


# The policies every workload of the chart keeps, for the tests of its optional parts to apply too.
WORKLOAD_POLICIES = (
    test_every_object_has_the_standard_labels, test_pods_carry_the_labels_their_selectors_and_services_use,
    test_every_container_has_requests_and_limits, test_every_pod_runs_hardened,
    test_every_workload_has_probes_grace_and_drain, test_deployments_roll_without_losing_capacity,
    test_every_workload_has_a_disruption_budget, test_read_only_root_filesystem_has_writable_scratch,
)


def test_referenced_configmaps_and_secrets_exist():
    for value_set in VALUE_SETS:
        objs = render(value_set)
        existing_secret = yaml.safe_load(VALUE_SETS[value_set][0].read_text()).get("auth", {}).get("existingSecret") \
            if VALUE_SETS[value_set] else None
        present = {(o["kind"], o["metadata"]["name"]) for o in objs}
        for obj in of_kind(objs, *POD_KINDS):
            spec = pod_spec(obj)
            for v in spec.get("volumes", []):
                if "configMap" in v:
                    assert ("ConfigMap", v["configMap"]["name"]) in present
            for c in containers(obj):
                for src in c.get("envFrom", []):
                    if "configMapRef" in src:
                        assert ("ConfigMap", src["configMapRef"]["name"]) in present
                for item in c.get("env", []):
                    ref = item.get("valueFrom", {}).get("secretKeyRef")
                    if ref and ref["name"] != existing_secret:
                        assert ("Secret", ref["name"]) in present, (value_set, ref)


# ---- contract with the services' code -----------------------------------------------------

@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_env_names_are_exactly_what_the_services_read(value_set):
    objs = render(value_set)
    expected = expected_env()
    assert "AUTH_SECRET" in expected and "PROMETHEUS_MULTIPROC_DIR" in expected
    for service in APP_SERVICES:
        dep = app_deployment(objs, service)
        (container,) = pod_spec(dep)["containers"]
        names = set(container_env(objs, dep, container))
        assert not expected - names, f"{service}: the chart does not set {sorted(expected - names)}"
        assert not names - expected, f"{service}: the chart sets {sorted(names - expected)}, which no code reads"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_rendered_settings_pass_the_services_validation(value_set, monkeypatch):
    """The values the chart renders are accepted by Settings, as the services load them."""
    from services.shared.config import load_settings

    objs = render(value_set)
    for service in APP_SERVICES:
        dep = app_deployment(objs, service)
        (container,) = pod_spec(dep)["containers"]
        env = container_env(objs, dep, container)
        for name in expected_env():
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value if value is not None else "an-existing-secret-of-32-chars!!")
        settings = load_settings()
        assert settings.bind_host == "0.0.0.0"
        assert settings.replica_id.startswith(f"{RELEASE}-{service}-")
        assert settings.port == container["ports"][0]["containerPort"] == 8080


def service_settings(objs, service: str, monkeypatch) -> Settings:
    """The Settings one service's container loads from the environment the chart gives it."""
    from services.shared.config import load_settings

    dep = app_deployment(objs, service)
    (container,) = pod_spec(dep)["containers"]
    for name in expected_env():
        monkeypatch.delenv(name, raising=False)
    for name, value in container_env(objs, dep, container).items():
        monkeypatch.setenv(name, value if value is not None else "an-existing-secret-of-32-chars!!")
    return load_settings()


def test_the_chart_defaults_are_the_code_defaults(monkeypatch):
    """Every tunable setting of a default release has the default Settings declares (the
    chart's `config` values are derived from it; here they also survive rendering: numbers
    stay integers, lists stay comma-separated)."""
    from services.shared.config import tunable_settings

    objs = render()
    for service in APP_SERVICES:
        settings = service_settings(objs, service, monkeypatch)
        for name, info in tunable_settings().items():
            assert getattr(settings, name.lower()) == info.default, (service, name)


def test_a_service_config_overrides_the_release_config_for_that_service_only(monkeypatch):
    objs = render("default", NEWEST_KUBE, ("config.LOG_LEVEL=DEBUG", "config.CACHE_PATTERNS=objects",
                                           "user.config.GUNICORN_THREADS=7"))
    loaded = {service: service_settings(objs, service, monkeypatch) for service in APP_SERVICES}
    assert {s.log_level for s in loaded.values()} == {"DEBUG"}
    assert {s.cache_patterns for s in loaded.values()} == {frozenset({"objects"})}
    assert loaded["user"].gunicorn_threads == 7
    default_threads = Settings.model_fields["gunicorn_threads"].default
    others = [s for s in APP_SERVICES if s != "user"]
    assert [loaded[s].gunicorn_threads for s in others] == [default_threads] * len(others)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_commands_ports_and_probes_match_the_code(value_set):
    import importlib.util

    objs = render(value_set)
    for service in APP_SERVICES:
        dep = app_deployment(objs, service)
        (c,) = pod_spec(dep)["containers"]
        assert c["command"] == ["python", "-m", f"services.{service}"]
        assert importlib.util.find_spec(f"services.{service}.__main__") is not None
        env = container_env(objs, dep, c)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": int(env["PORT"])}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        # /readyz waits up to MONGODB_TIMEOUT_MS for the database: the probe must wait longer.
        assert c["readinessProbe"]["timeoutSeconds"] * 1000 > int(env["MONGODB_TIMEOUT_MS"])
    # The gateway upstreams reach the services' container port through the headless Services.
    for service in HTTP_SERVICES:
        headless = named(objs, "Service", f"{RELEASE}-{service}-headless")
        assert headless["spec"]["clusterIP"] == "None"
        assert headless["spec"]["ports"][0]["port"] == 8080


@pytest.mark.parametrize("service", APP_SERVICES)
def test_entry_points_serve_the_chart_probes(service, tmp_path):
    """Run the chart's command with the chart's environment (dependencies unreachable, port
    moved to a free one): /healthz answers 200, /readyz answers as the probes expect, /metrics
    answers, and SIGTERM stops the process."""
    objs = render("default")
    dep = app_deployment(objs, service)
    (c,) = pod_spec(dep)["containers"]
    env = {k: v for k, v in os.environ.items() if k not in expected_env()}
    env.update({k: v for k, v in container_env(objs, dep, c).items() if v is not None})
    port = free_port()
    env.update({
        "BIND_HOST": "127.0.0.1", "PORT": str(port),  # a free loopback port instead of 0.0.0.0:8080
        "MONGODB_URL": "mongodb://127.0.0.1:9/", "MONGODB_TIMEOUT_MS": "100",  # nothing listens on 9
        "MEMCACHED_SERVERS": "127.0.0.1:9", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"), "GUNICORN_WORKERS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"])  # the chart mounts an emptyDir there
    argv = [sys.executable if c["command"][0] == "python" else c["command"][0], *c["command"][1:]]
    log = (tmp_path / "log").open("w+")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                health = requests.get(base + c["livenessProbe"]["httpGet"]["path"], timeout=2)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"{' '.join(argv)} did not serve on {port}:\n{log.read()[-3000:]}")
                time.sleep(0.1)
        assert health.status_code == 200, health.text
        ready = requests.get(base + c["readinessProbe"]["httpGet"]["path"], timeout=5)
        if service in HTTP_SERVICES:
            assert ready.status_code == 503, ready.text  # MongoDB is unreachable: not ready
            assert "mongodb" in ready.json().get("dependencies", ready.json()), ready.text
        else:
            assert ready.status_code == 200, ready.text  # the worker is degraded, not unready
        assert requests.get(base + "/metrics", timeout=5).status_code == 200
    finally:
        # gunicorn (user, catalog) drains and exits at once when idle. The worker may sit up to
        # ~30 s in kafka-python's bootstrap back-off when the broker is unreachable before it
        # sees SIGTERM (reported to the services' owners); the test does not wait that long.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10 if service in HTTP_SERVICES else 3)
            stopped = True
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            stopped = False
        log.close()
    if service in HTTP_SERVICES:
        assert stopped, f"{service} did not stop within 10 s of SIGTERM"
        assert proc.returncode == 0, f"{service} exited with {proc.returncode} on SIGTERM"


@pytest.mark.parametrize("value_set", ["default", "production"])
def test_shell_scripts_in_containers_parse(value_set):
    scripts = 0
    for obj in of_kind(render(value_set, NEWEST_KUBE, ("loadgen.enabled=true",)), *POD_KINDS):
        for c in containers(obj):
            argv = c.get("command", []) + c.get("args", [])
            if argv[:1] == ["/bin/sh"]:
                script = argv[2]
                result = subprocess.run(["sh", "-n", "-c", script], capture_output=True, text=True, timeout=10)
                assert result.returncode == 0, f"{component(obj)}: {result.stderr}"
                scripts += 1
    assert scripts >= 3  # kafka, kafka-topics, the helm test


def test_topics_job_creates_the_topics_of_the_code():
    objs = render()
    jobs = [j for j in of_kind(objs, "Job") if component(j) == "kafka-topics"]
    assert len(jobs) == 1
    job = jobs[0]
    assert set(job["metadata"]["annotations"]["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    script = " ".join(pod_spec(job)["containers"][0]["command"])
    created = {name: int(n) for name, n in re.findall(r'--topic "([^"]+)" --partitions (\d+)', script)}
    assert created == TOPIC_PARTITIONS
    # The broker never creates topics on its own, like the local stack's.
    props = named(objs, "ConfigMap", f"{RELEASE}-kafka")["data"]["server.properties"]
    assert "auto.create.topics.enable=false" in props
    assert "image: apache/kafka:3.9.1" in yaml.safe_dump(named(objs, "StatefulSet", f"{RELEASE}-kafka"))


# ---- the gateway: one nginx.conf for the chart and the local stack -------------------------

NGINX_TEMPLATE = CHART / "files" / "nginx.conf"
NGINX = CACHE / "debian" / "usr" / "sbin" / "nginx"
NGINX_DIRECTIVES = re.compile(r"\b(proxy_pass|error_page|upstream \w+ \{|location [=~@/])")


def chart_nginx_conf(objs) -> str:
    return named(objs, "ConfigMap", f"{RELEASE}-gateway")["data"]["nginx.conf"]


def local_layout(run_dir: Path):
    from stack.layout import Layout

    return Layout(run_dir=run_dir, cache_dir=CACHE)  # nothing listens: `nginx -t` binds no port


def nginx_servers(conf: str) -> list[str]:
    """The `server { ... }` blocks of an nginx.conf (the gateway's have no nested braces but locations')."""
    return re.findall(r"\n    server \{\n(.*?)\n    \}", conf, re.S)


def nginx_test(conf: str, prefix: Path) -> subprocess.CompletedProcess:
    assert NGINX.exists(), f"{NGINX} is missing: run `make install` (stack/install.sh debian)"
    (prefix / "nginx.conf").write_text(conf)
    return subprocess.run([str(NGINX), "-t", "-q", "-p", str(prefix), "-e", "stderr", "-c", str(prefix / "nginx.conf")],
                          capture_output=True, text=True, timeout=30)


def test_the_gateway_config_is_one_file_that_the_chart_and_the_local_stack_render(tmp_path, monkeypatch):
    """files/nginx.conf is the only nginx configuration: the chart's ConfigMap renders it with tpl, the
    local stack renders that ConfigMap with helm. A line added to the file appears in both renders."""
    from stack import servers

    assert 'tpl (.Files.Get "files/nginx.conf") .' in (CHART / "templates" / "gateway-configmap.yaml").read_text()
    elsewhere = [path for path in [*(CHART / "templates").iterdir(), *(REPO / "stack").glob("*.py")]
                 if path.is_file() and NGINX_DIRECTIVES.search(path.read_text())]
    assert not elsewhere, f"nginx directives outside {NGINX_TEMPLATE}: {elsewhere}"

    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    marker = f"# marker {time.time_ns()}"
    (copy / "files" / "nginx.conf").write_text(NGINX_TEMPLATE.read_text() + marker + "\n")
    out = helm("template", RELEASE, str(copy), "-n", NAMESPACE).stdout
    chart = chart_nginx_conf([doc for doc in yaml.safe_load_all(out) if doc])
    monkeypatch.setattr(servers, "CHART", copy)
    local = servers.nginx_config(local_layout(tmp_path / "stack"), {"user": [8101], "catalog": [8201]})
    assert marker in chart and marker in local
    # What differs comes from values: the local stack gives only gateway.* values of its own.
    assert set(servers.gateway_values(local_layout(tmp_path), {})) == {"gateway"}


def test_nginx_accepts_the_local_and_the_chart_renders(tmp_path):
    """Debian's nginx (the local stack's) checks both. It is 1.22, older than the `resolve` upstream
    parameter (1.27.3, in the chart's 1.28 image), so the chart's render is checked with the
    replicas' DNS names replaced by an address and `resolve` removed."""
    from stack import servers

    layout = local_layout(tmp_path / "stack")
    # The stack's own path: rendered by helm, then `nginx -t` before it replaces the running config.
    servers.write_nginx_config(layout, {"user": [layout.replica_port("user", 1)], "catalog": []})
    local = (layout.run_dir / "nginx" / "nginx.conf").read_text()
    assert f"listen 127.0.0.1:{layout.gateway_port} " in local
    assert f"server 127.0.0.1:{layout.replica_port('user', 1)} " in local
    assert "server 127.0.0.1:9 down;" in local  # no catalog replica: the upstream is marked down
    assert "resolver" not in local and " resolve " not in local
    assert nginx_test(local, layout.run_dir / "nginx").returncode == 0

    chart = chart_nginx_conf(render())
    for service in HTTP_SERVICES:
        assert re.search(rf"server {RELEASE}-{service}-headless\.{NAMESPACE}\.svc\.cluster\.local:8080 resolve ", chart)
    assert "resolver kube-dns.kube-system.svc.cluster.local valid=5s" in chart
    chart = re.sub(r"server \S+:8080 resolve ", "server 127.0.0.1:8080 ", chart)
    chart = re.sub(r"resolver \S+ ", "resolver 127.0.0.1 ", chart).replace("/tmp/", f"{tmp_path}/")
    result = nginx_test(chart, tmp_path)
    assert result.returncode == 0, result.stderr


def test_only_the_local_gateway_has_the_internal_user_address(tmp_path):
    """Locally USER_SERVICE_URL is a second listener of the gateway that proxies only to the user
    replicas; in a cluster the user Service is that address, so the chart renders one server."""
    from stack import servers

    layout = local_layout(tmp_path)
    (edge, internal, status) = nginx_servers(servers.nginx_config(layout, {"user": [8101], "catalog": [8201]}))
    assert f"listen 127.0.0.1:{layout.gateway_port} " in edge and "proxy_pass http://catalog" in edge
    assert f"listen 127.0.0.1:{layout.user_service_port} " in internal
    assert re.findall(r"proxy_pass (\S+);", internal) == ["http://user"]
    # The third, the nginx exporter's stub_status (gateway.statusListen), proxies nowhere.
    assert f"listen 127.0.0.1:{layout.gateway_status_port};" in status
    assert "stub_status" in status and "proxy_pass" not in status and "stub_status" not in edge + internal
    assert layout.user_service_url == f"http://127.0.0.1:{layout.user_service_port}" != layout.gateway_url

    (chart_edge,) = nginx_servers(chart_nginx_conf(render()))
    assert "listen 8080 " in chart_edge
    assert yaml.safe_load((CHART / "values.yaml").read_text())["gateway"]["userServiceListen"] == ""


def test_the_gateway_error_bodies_are_written_once():
    """The gateway's JSON errors come from one format string in files/nginx.conf, for every status."""
    conf = chart_nginx_conf(render())
    bodies = re.findall(r"return (\d+) '(\{\"error\".*?)';", conf)
    assert {status for status, _ in bodies} == {"400", "404", "413", "414", "431", "503"}
    for _, body in bodies:
        error = json.loads(body)["error"]
        assert set(error) == {"code", "message", "details"} and error["details"] == []
    template = NGINX_TEMPLATE.read_text()
    assert template.count('{"error": {"code": "%s", "message": "%s", "details": []}}') == 1
    assert template.count('"error"') == 1


# ---- NetworkPolicies ------------------------------------------------------------------------

def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the chart selects by labels only
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def policy_rules(objs, labels: dict, direction: str) -> list[dict] | None:
    """The rules that apply to a pod's `direction` ("Ingress"/"Egress"), or None if nothing isolates it."""
    policies = [p for p in of_kind(objs, "NetworkPolicy")
                if selects(p["spec"]["podSelector"], labels) and direction in p["spec"]["policyTypes"]]
    if not policies:
        return None
    return [rule for p in policies for rule in p["spec"].get(direction.lower(), [])]


def rule_allows(rule: dict, peers_key: str, peer_labels: dict | None, port: int, protocol: str = "TCP") -> bool:
    """Does one rule allow this peer (labels of a pod of the release; None = anything else) on this port?"""
    if "ports" in rule and not any(p["port"] == port and p.get("protocol", "TCP") == protocol for p in rule["ports"]):
        return False
    if peers_key not in rule:
        return True
    for peer in rule[peers_key]:
        if set(peer) == {"podSelector"}:
            if peer_labels is not None and selects(peer["podSelector"], peer_labels):
                return True
        elif peer_labels is None:
            return True  # namespaceSelector or ipBlock: something outside the release's pods
    return False


def release_pods(objs) -> dict[str, tuple[dict, set[int]]]:
    """component -> (pod labels, container ports) of every pod the release creates."""
    return {component(o): (pod_labels(o), {p["containerPort"] for c in containers(o) for p in c.get("ports", [])})
            for o in of_kind(objs, *POD_KINDS)}


def policy_graph(objs) -> set[tuple[str, str, int]]:
    """(from, to, port): every connection the NetworkPolicies allow between pods of the release,
    "outside" standing for anything that is not one of them."""
    pods = release_pods(objs)
    graph = set()
    for a, (a_labels, _) in [*pods.items(), ("outside", (None, set()))]:
        for b, (b_labels, ports) in pods.items():
            for port in ports:
                egress = policy_rules(objs, a_labels, "Egress") if a_labels else None
                ingress = policy_rules(objs, b_labels, "Ingress")
                if ((egress is None or any(rule_allows(r, "to", b_labels, port) for r in egress))
                        and (ingress is None or any(rule_allows(r, "from", a_labels, port) for r in ingress))):
                    graph.add((a, b, port))
    return graph


def outward_rules(objs) -> dict[str, list[dict]]:
    """component -> the egress rules that reach beyond the release's pods."""
    out = {}
    for name, (labels, _) in release_pods(objs).items():
        rules = policy_rules(objs, labels, "Egress")
        assert rules is not None, f"{name}: egress not restricted"
        out[name] = [r for r in rules if "to" not in r or any(set(p) != {"podSelector"} for p in r["to"])]
    return out


def intended_graph(loadgen: bool = False) -> set[tuple[str, str, int]]:
    edges = {("outside", "gateway", 8080), ("gateway", "user", 8080), ("gateway", "catalog", 8080),
             ("catalog", "user", 8080), ("test", "gateway", 8080),
             ("kafka-topics", "kafka", 9092), ("kafka", "kafka", 9092)}
    edges |= {(service, server, port) for service in APP_SERVICES
              for server, port in (("mongodb", 27017), ("memcached", 11211), ("kafka", 9092))}
    if loadgen:
        edges.add(("loadgen", "gateway", 8080))
    return edges


@pytest.mark.parametrize("loadgen", [False, True], ids=["default", "loadgen"])
def test_network_policies_allow_exactly_the_intended_graph(loadgen):
    objs = render("default", NEWEST_KUBE, ("loadgen.enabled=true",) if loadgen else ())
    assert policy_graph(objs) == intended_graph(loadgen)
    values = yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicy"]
    dns = {"to": [values["dns"]], "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    expected = {name: [dns] for name in release_pods(objs)}
    if loadgen:
        expected["loadgen"].append(values["kubernetesApiEgress"])
    assert outward_rules(objs) == expected


def test_network_policies_let_the_services_reach_external_servers():
    objs = render("minimal")
    assert policy_graph(objs) == intended_graph() - {
        (a, b, p) for a, b, p in intended_graph() if {a, b} & {"mongodb", "memcached", "kafka"}}
    (external,) = yaml.safe_load((CHART / "ci" / "minimal-values.yaml").read_text())["networkPolicy"]["externalEgress"]
    for name, rules in outward_rules(objs).items():
        assert (external in rules) == (name in (*APP_SERVICES, "kafka-topics")), name


def test_network_policies_can_be_switched_off():
    assert of_kind(render(), "NetworkPolicy")
    objs = render("default", NEWEST_KUBE, ("networkPolicy.enabled=false",))
    assert not of_kind(objs, "NetworkPolicy")
    # Switched off, external servers need no egress rules.
    external = ("mongodb.enabled=false", "externalMongodbUrl=mongodb://db.example.internal:27017/",
                "networkPolicy.enabled=false")
    assert not of_kind(render("default", NEWEST_KUBE, external), "NetworkPolicy")


def test_loadgen_job_runs_the_load_generator_against_the_gateway():
    objs = render("default", NEWEST_KUBE, ("loadgen.enabled=true",))
    (job,) = [j for j in of_kind(objs, "Job") if component(j) == "loadgen"]
    (c,) = pod_spec(job)["containers"]
    assert c["command"] == ["python", "-m", "loadgen"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    gateway = named(objs, "Service", f"{RELEASE}-gateway")
    assert env["LOADGEN_TARGET"] == (f"http://{RELEASE}-gateway.{NAMESPACE}.svc.cluster.local:"
                                     f"{gateway['spec']['ports'][0]['port']}")
    assert env["DEPLOYMENT_PREFIX"] == f"{RELEASE}-" and app_deployment(objs, "catalog")
    # It may scale this release's Deployments, and nothing else.
    role = named(objs, "Role", f"{RELEASE}-loadgen")
    assert {r for rule in role["rules"] for r in rule["resources"]} == {"deployments", "deployments/scale", "pods"}
    binding = named(objs, "RoleBinding", f"{RELEASE}-loadgen")
    assert pod_spec(job)["serviceAccountName"] == binding["subjects"][0]["name"]
    from loadgen.cli import build_parser

    for value_set, sets in (("default", ("loadgen.enabled=true",)), ("production", ())):
        (job,) = [j for j in of_kind(render(value_set, NEWEST_KUBE, sets), "Job") if component(j) == "loadgen"]
        (c,) = pod_spec(job)["containers"]
        env = {e["name"]: e.get("value") or "x" for e in c["env"]}
        args = [re.sub(r"\$\((\w+)\)", lambda m, env=env: env[m.group(1)], a) for a in c["args"]]
        build_parser().parse_args(args)  # exits (SystemExit) on arguments loadgen does not accept


def test_loadgen_measures_the_system_not_the_rate_limiter(monkeypatch):
    """The per-client limits hold at the edge on every cluster (kind, minikube, this machine's);
    a release with a loadgen Job runs its services with loadgen.rateLimits instead: every rule of
    the policy raised far above what one pod sends, but still on (counted, its cost measured).
    The Job's load still goes through the gateway, which drops any service identity sent to it,
    and it waits for the services' rollout to those limits before it sends anything."""
    from loadgen.rollout import build_parser
    from services.shared.ratelimit import POLICY

    raised = yaml.safe_load((CHART / "values.yaml").read_text())["loadgen"]["rateLimits"]
    assert set(raised) == {rule.setting.upper() for rule in POLICY}, "every rule of the policy, no other setting"
    for value_set in ("default", "kind", "minikube", "local-cluster"):
        objs = render(value_set)
        for service in HTTP_SERVICES:
            settings = service_settings(objs, service, monkeypatch)
            for rule in POLICY:
                default = Settings.model_fields[rule.setting].default
                assert getattr(settings, rule.setting) == default > 0, (value_set, service, rule.name)
        # A service's own limit is overridden for the run too.
        sets = ("loadgen.enabled=true", "user.config.RATE_LIMIT_AUTH_PER_MINUTE=10")
        loaded = render(value_set, NEWEST_KUBE, sets)
        for service in APP_SERVICES:
            settings = service_settings(loaded, service, monkeypatch)
            for rule in POLICY:
                default = Settings.model_fields[rule.setting].default
                assert getattr(settings, rule.setting) == raised[rule.setting.upper()] >= 100 * default, \
                    (value_set, service, rule.name)
            # Its settings changed, so it rolls: the Job's wait below is for that rollout.
            annotation = "checksum/config"
            before = app_deployment(objs, service)["spec"]["template"]["metadata"]["annotations"][annotation]
            assert app_deployment(loaded, service)["spec"]["template"]["metadata"]["annotations"][annotation] != before

    objs = render("local-cluster", NEWEST_KUBE, ("loadgen.enabled=true",))
    (job,) = [j for j in of_kind(objs, "Job") if component(j) == "loadgen"]
    # Through the edge, like any client: it may reach the gateway and nothing else of the release.
    assert {(a, b, port) for a, b, port in policy_graph(objs) if a == "loadgen"} == {("loadgen", "gateway", 8080)}
    (edge,) = nginx_servers(chart_nginx_conf(objs))
    assert 'set $service_token "";' in edge
    assert "proxy_set_header X-Service-Token $service_token;" in chart_nginx_conf(objs)
    # It waits until every Deployment of the release has rolled out.
    (wait,) = pod_spec(job)["initContainers"]
    assert wait["command"][:3] == ["python", "-m", "loadgen.rollout"]
    args = build_parser().parse_args(wait["command"][3:])
    assert args.namespace == NAMESPACE and args.timeout < job["spec"]["activeDeadlineSeconds"]
    selector = dict(pair.split("=") for pair in args.selector.split(","))
    deployments = {d["metadata"]["name"]: d["metadata"]["labels"] for d in of_kind(objs, "Deployment")}
    matched = {name for name, labels in deployments.items() if selector.items() <= labels.items()}
    assert matched == set(deployments) >= {f"{RELEASE}-{s}" for s in APP_SERVICES}
    role = named(objs, "Role", f"{RELEASE}-loadgen")
    assert any("deployments" in r["resources"] and "list" in r["verbs"] for r in role["rules"])
    assert pod_spec(job)["automountServiceAccountToken"] is True
    # Without its RBAC it cannot read the Deployments: it does not wait (values.yaml says so).
    no_rbac = render("default", NEWEST_KUBE, ("loadgen.enabled=true", "loadgen.rbac.create=false"))
    (job,) = [j for j in of_kind(no_rbac, "Job") if component(j) == "loadgen"]
    assert "initContainers" not in pod_spec(job)


def test_notes_tell_how_to_reach_the_gateway_and_scale(tmp_path):
    """NOTES.txt is not rendered by `helm template`: render it through a copy of the chart."""
    import shutil

    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    for path in list((chart / "templates").rglob("*.yaml")):
        path.unlink()
    notes = (chart / "templates" / "NOTES.txt")
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "test.notes" -}}\n' + notes.read_text() + "{{- end }}\n")
    notes.unlink()
    (chart / "templates" / "notes.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n'
        'data:\n  notes: {{ include "test.notes" . | toJson }}\n')
    for value_set, expected in (("kind", "http://127.0.0.1:8090"), ("default", "port-forward svc/scaleshop-gateway"),
                                ("production", "EXTERNAL-IP")):
        out = helm("template", RELEASE, str(chart), "-n", NAMESPACE, *value_args(VALUE_SETS[value_set])).stdout
        text = yaml.safe_load(out)["data"]["notes"]
        assert expected in text, text
        assert f"scale deployment/{RELEASE}-user --replicas=" in text
        assert f"helm test {RELEASE}" in text


# ---- the auth secret ----------------------------------------------------------------------

def test_auth_secret_is_random_unless_given():
    def secret(objs):
        return base64.b64decode(named(objs, "Secret", f"{RELEASE}-auth")["data"]["AUTH_SECRET"]).decode()

    first, second = secret(render("default", NEWEST_KUBE, ("auth.secret=",))), secret(render("default"))
    assert first != second and len(first) >= 32 and len(second) >= 32
    given = "a-secret-of-at-least-16-characters"
    assert secret(render("default", NEWEST_KUBE, (f"auth.secret={given}",))) == given
    production = render("production")
    assert not [s for s in of_kind(production, "Secret") if "AUTH_SECRET" in s.get("data", {})]
    (c,) = pod_spec(app_deployment(production, "user"))["containers"]
    ref = next(i for i in c["env"] if i["name"] == "AUTH_SECRET")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "scaleshop-signing-key", "key": "AUTH_SECRET"}
    assert "lookup" in (CHART / "templates" / "secret.yaml").read_text(), "the generated key must survive upgrades"


# ---- bad values ---------------------------------------------------------------------------

BAD_VALUES = [
    (("user.replicaCount=-1",), "at '/user/replicaCount': minimum: got -1, want 0"),
    (("worker.replicaCount=1000",), "at '/worker/replicaCount': maximum"),
    (("replicas=3",), "additional properties 'replicas' not allowed"),
    (("catalog.replica=3",), "at '/catalog': additional properties 'replica' not allowed"),
    (("config.CACHE_PATTERNS=everything",), "at '/config/CACHE_PATTERNS'"),
    (("config.LOG_LEVEL=LOUD",), "at '/config/LOG_LEVEL'"),
    (("config.NO_SUCH_SETTING=1",), "at '/config': additional properties 'NO_SUCH_SETTING' not allowed"),
    (("config.AUTH_SECRET=a-secret-in-a-configmap",), "at '/config': additional properties 'AUTH_SECRET' not allowed"),
    (("user.config.GUNICORN_WORKERS=0",), "at '/user/config/GUNICORN_WORKERS': minimum"),
    (("components.user.workload=Pod",), "at '/components/user/workload'"),
    (("auth.secret=short",), "at '/auth/secret'"),
    (("image.tag=latest",), "at '/image/tag'"),
    (("user.resources.requests=null",), "at '/user/resources'"),
    (("gateway.service.type=Ingress",), "at '/gateway/service/type'"),
    (("mongodb.enabled=false",), "mongodb.enabled=false needs externalMongodbUrl"),
    (("kafka.enabled=false",), "kafka.enabled=false needs externalKafkaBootstrapServers"),
    (("user.autoscaling.enabled=true", "user.autoscaling.maxReplicas=1"),
     "maxReplicas (1) must be >= user.autoscaling.minReplicas (2)"),
    (("catalog.terminationGracePeriodSeconds=20",), "catalog.terminationGracePeriodSeconds (20) must be larger"),
    (("gateway.maxBodyMb=4",), "MAX_IMPORT_BYTES (16777216) is larger than the gateway accepts"),
    (("mongodb.enabled=false", "externalMongodbUrl=mongodb://db.example.internal:27017/"),
     "networkPolicy.enabled with mongodb outside the release needs networkPolicy.externalEgress"),
    (("gateway.upstreamServers.user[0]=nowhere",), "at '/gateway/upstreamServers/user/0'"),
    (("mongodb.engine=ferretdb",), "at '/mongodb/engine'"),
    (("mongodb.javaServer.command={}",), "at '/mongodb/javaServer/command"),
    (("catalog.config.GUNICORN_GRACEFUL_TIMEOUT=40",), "catalog.terminationGracePeriodSeconds (75) must be larger"),
]


@pytest.mark.parametrize("sets,message", BAD_VALUES, ids=[",".join(s) for s, _ in BAD_VALUES])
def test_bad_values_are_rejected_with_a_clear_message(sets, message):
    templated = helm("template", RELEASE, str(CHART), *value_args(sets=sets), check=False)
    assert templated.returncode != 0, f"helm template accepted {sets}"
    assert message in templated.stderr, templated.stderr
    if message.startswith("at '"):
        linted = helm("lint", "--strict", str(CHART), *value_args(sets=sets), check=False)
        assert linted.returncode != 0 and message in linted.stdout + linted.stderr, linted.stdout


# ---- capacity of one small node -----------------------------------------------------------

def requested(objs, without=()) -> tuple[float, float]:
    """CPU (millicores) and memory (MiB) requested by every pod of a release at once (but the
    components `without`)."""
    cpu = mem = 0.0
    for obj in of_kind(objs, *POD_KINDS):
        if component(obj) in without:
            continue
        count = obj["spec"].get("replicas", 1) if obj["kind"] in WORKLOAD_KINDS else 1
        main = pod_spec(obj)["containers"]
        inits = pod_spec(obj).get("initContainers", [])
        pod_cpu = max([sum(cpu_m(c["resources"]["requests"]["cpu"]) for c in main)] +
                      [cpu_m(c["resources"]["requests"]["cpu"]) for c in inits])
        pod_mem = max([sum(mem_mi(c["resources"]["requests"]["memory"]) for c in main)] +
                      [mem_mi(c["resources"]["requests"]["memory"]) for c in inits])
        cpu += count * pod_cpu
        mem += count * pod_mem
    return cpu, mem


@pytest.mark.parametrize("sets", [(), ("loadgen.enabled=true",)], ids=["defaults", "defaults+loadgen"])
@pytest.mark.parametrize("value_set", ["default", "kind", "minikube", "local-cluster"])
def test_default_release_fits_one_small_node(value_set, sets):
    objs = render(value_set, NEWEST_KUBE, sets)
    cpu, mem = requested(objs)
    assert cpu <= NODE_CPU_M - CONTROL_PLANE_CPU_M, f"requests {cpu:.0f}m CPU: pods would stay Pending"
    assert mem <= NODE_MEMORY_MI - CONTROL_PLANE_MEMORY_MI, f"requests {mem:.0f}Mi memory: pods would stay Pending"
    _, default_mem = requested(objs, without=LOCAL_CLUSTER_EXTRAS)
    assert default_mem <= MAX_DEFAULT_MEMORY_MI <= NODE_MEMORY_MI - CONTROL_PLANE_MEMORY_MI, \
        f"requests {default_mem:.0f}Mi memory"


# ---- the database engines, and the images of this machine's cluster -----------------------

LOCAL_CLUSTER_VALUES = REPO / "k8s" / "values-local-cluster.yaml"


def database_container(objs) -> dict:
    (container,) = pod_spec(named(objs, "StatefulSet", f"{RELEASE}-mongodb"))["containers"]
    return container


def test_both_database_engines_serve_the_same_address_on_the_same_volume(monkeypatch):
    """mongodb.engine picks the server; the services, the Service, the port, the volume and the
    TCP probes (neither mongosh nor any client is in the java image) are the same for both."""
    from stack.servers import MONGO_DATA_FILE

    values = yaml.safe_load((CHART / "values.yaml").read_text())["mongodb"]
    assert values["engine"] == "mongodb", "users' clusters run mongod of the official image by default"
    port = COMPONENTS["mongodb"]["port"]
    engines = {"mongodb": render(),
               "mongo-java-server": render("default", NEWEST_KUBE, ("mongodb.engine=mongo-java-server",))}
    mongod, java = (database_container(objs) for objs in engines.values())
    official, java_image = values["image"], values["javaServer"]["image"]
    assert mongod["name"] == "mongod" and mongod["image"] == f"{official['repository']}:{official['tag']}"
    assert mongod["command"][0] == "mongod" and f"--port={port}" in mongod["command"]
    assert java["name"] == "mongo-java-server" and java["image"].startswith(java_image["repository"] + ":")
    assert java["command"] == values["javaServer"]["command"]
    assert java["args"] == ["--host", "0.0.0.0", "--port", str(port), "--file", f"/data/db/{MONGO_DATA_FILE}"]
    for container in (mongod, java):
        assert {"name": "mongodb", "containerPort": port, "protocol": "TCP"} in container["ports"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert set(container[probe]) - {"periodSeconds", "timeoutSeconds", "failureThreshold"} == {"tcpSocket"}
        assert {"name": "data", "mountPath": "/data/db"} in container["volumeMounts"]
    assert "configdb" not in {m["name"] for m in java["volumeMounts"]}  # mongod's alone
    # The services connect to the same URL whichever engine answers it.
    urls = {engine: str(service_settings(objs, "catalog", monkeypatch).mongodb_url) for engine, objs in engines.items()}
    assert len(set(urls.values())) == 1, urls


def test_the_java_engine_arguments_start_the_local_stack_server(tmp_path):
    """The chart's arguments for mongo-java-server, given to the launcher the local stack runs
    (address and port moved to a free loopback one, the file into a temp folder): it serves the
    wire protocol, keeps a write in its file, and stops cleanly on SIGTERM (the pod's stop).
    The image's `scaleshop-mongo` hands its arguments to that same launcher."""
    from pymongo import MongoClient

    from stack.servers import java_binary

    java = database_container(render("local-cluster"))
    launcher = REPO / "k8s" / "images" / "mongo-java-server" / "bin" / java["command"][0]
    assert launcher.exists() and re.search(r'^exec java .* ScaleshopMongo "\$@"$', launcher.read_text(), re.M)
    classes = CACHE / "mongo" / "classes"
    if not (classes / "ScaleshopMongo.class").exists():
        pytest.fail(f"{classes} is missing: run `make install` (stack/install.sh mongo)")
    args = dict(zip(java["args"][::2], java["args"][1::2], strict=True))
    port, data = free_port(), tmp_path / Path(args["--file"]).name
    args.update({"--host": "127.0.0.1", "--port": str(port), "--file": str(data)})
    argv = [java_binary(), "-Xmx256m", "-cp", f"{classes}:{CACHE / 'mongo' / 'libs'}/*", "ScaleshopMongo",
            *(item for pair in args.items() for item in pair)]
    log = (tmp_path / "log").open("w+")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=30_000)
        assert client.admin.command("ping")["ok"] == 1
        client.scaleshop.chart_check.insert_one({"_id": "written", "engine": "mongo-java-server"})
        assert client.scaleshop.chart_check.find_one({"_id": "written"})["engine"] == "mongo-java-server"
        client.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.seek(0)
        output = log.read()
        log.close()
    assert proc.returncode in (0, 143), f"exit {proc.returncode}:\n{output[-2000:]}"
    assert data.exists() and data.stat().st_size > 0


def image_values(values: dict, path: str = "") -> dict[str, dict]:
    """Every `image` block of a values tree: dotted path of its owner -> {repository, tag, pullPolicy}."""
    found = {}
    for key, value in values.items():
        if key == "image" and isinstance(value, dict):
            found[path or "."] = value
        elif isinstance(value, dict):
            found.update(image_values(value, f"{path}.{key}".lstrip(".")))
    return found


def leaf_paths(values: dict, path: str = "") -> list[str]:
    """The dotted path of every value that is not a mapping."""
    paths = []
    for key, value in values.items():
        here = f"{path}.{key}".lstrip(".")
        paths += leaf_paths(value, here) if isinstance(value, dict) else [here]
    return paths


def test_the_local_cluster_values_change_only_images_and_the_engine():
    """Images, the database engine, and the one thing that follows from the gateway's image: Debian 12's
    nginx (1.22) has no `resolve` in upstream blocks, so its replicas are resolved per request. And the
    release's Prometheus and the lab console are on, to verify them on this cluster."""
    values = yaml.safe_load(LOCAL_CLUSTER_VALUES.read_text())
    image_keys = re.compile(r"^(.+\.)?image\.(repository|tag|pullPolicy)$")
    assert [p for p in leaf_paths(values) if not image_keys.match(p)] == \
        ["gateway.dnsBalancing", "mongodb.engine", "monitoring.prometheus.enabled", "console.enabled"]
    assert values["monitoring"]["prometheus"]["enabled"] is True
    assert values["gateway"]["dnsBalancing"] == "request"
    assert values["mongodb"]["engine"] == "mongo-java-server"
    for owner, image in image_values(values).items():
        assert image["pullPolicy"] in ("Never", "IfNotPresent"), owner  # no registry here
        assert image["tag"] and image["tag"] != "latest", owner


def test_the_local_cluster_runs_only_images_named_in_its_values():
    """With k8s/values-local-cluster.yaml every container of the release (services, gateway,
    memcached, Kafka and its topics Job, the database, the loadgen Job, the helm test pod) runs
    an image built here: no default such as docker.io/library/mongo is left to pull."""
    named_images = {f"{i['repository']}:{i['tag']}": i["pullPolicy"]
                    for i in image_values(yaml.safe_load(LOCAL_CLUSTER_VALUES.read_text())).values()}
    objs = render("local-cluster", NEWEST_KUBE, ("loadgen.enabled=true",))
    used = {}
    for obj in of_kind(objs, *POD_KINDS):
        for c in containers(obj):
            used[c["image"]] = c["imagePullPolicy"]
            where = f"{obj['kind']} {obj['metadata']['name']}/{c['name']}"
            assert c["image"] in named_images, f"{where} runs {c['image']}, not named in {LOCAL_CLUSTER_VALUES.name}"
            assert c["imagePullPolicy"] == named_images[c["image"]], where
    assert set(used) == set(named_images), f"named but unused: {set(named_images) - set(used)}"
    assert {component(o) for o in of_kind(objs, *POD_KINDS)} >= {*COMPONENTS, "kafka-topics", "test"}
    # Every image reference in the templates goes through a value (the release's or a part's `image`).
    for path in (CHART / "templates").rglob("*.yaml"):
        for line in re.findall(r"^\s*image: (.*)$", path.read_text(), re.M):
            through_a_value = r'\{\{ include "scaleshop\.(imageRef|appImage)" .* \| quote \}\}'
            assert re.fullmatch(through_a_value, line), (path.name, line)


# ---- image and cluster files --------------------------------------------------------------

def test_dockerfile_builds_one_non_root_image_from_a_pinned_base():
    text = (REPO / "Dockerfile").read_text()
    bases = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)  # the default base (this machine builds its own)
    assert bases and re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-bookworm", bases[0]), bases
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage"
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert int(users[-1].split(":")[0]) == yaml.safe_load((CHART / "values.yaml").read_text())["runAsUser"]
    assert "requirements.txt" in text
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*" and {"!services/", "!loadgen/", "!requirements.txt"} <= set(ignore)


def test_kind_config_publishes_the_gateway_node_port():
    kind = yaml.safe_load((REPO / "k8s" / "kind-config.yaml").read_text())
    assert kind["kind"] == "Cluster" and kind["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    mappings = kind["nodes"][0]["extraPortMappings"]
    gateway = named(render("kind"), "Service", f"{RELEASE}-gateway")
    assert gateway["spec"]["type"] == "NodePort"
    assert [m["containerPort"] for m in mappings] == [gateway["spec"]["ports"][0]["nodePort"]]
    makefile = (REPO / "Makefile").read_text()
    for target in ("kind-up", "minikube-up", "kube-scale", "kube-load", "kind-down"):
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile lacks {target}"
