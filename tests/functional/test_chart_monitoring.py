"""Static verification of the chart's monitoring (values.yaml `monitoring`, templates/prometheus-*.yaml,
files/prometheus.yml): the release's Prometheus and the Prometheus Operator's PodMonitor.

- off by default: not one object of theirs is rendered;
- on: the Deployment runs the image of `monitoring.prometheus.image` (the official one by default),
  its Role may only get, list and watch pods in the release's namespace (no ClusterRole), and every
  workload policy of tests/functional/test_chart.py holds for it;
- the scrape configuration, applied to the pods the chart renders (Prometheus' relabelling
  semantics, below), keeps user, catalog and worker on their /metrics port, labelled `service` and
  `replica` like the local stack's targets, and drops any other pod;
- the NetworkPolicies add exactly Prometheus -> the scraped services and Prometheus -> the API;
- the PodMonitor selects exactly the scraped pods, on a port they have, with the same relabelling.

The official image itself is verified here only (no registry is reachable); tests/cluster/
test_prometheus.py runs the same configuration on this machine's cluster.
"""
from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

from stack.servers import SCRAPE_INTERVAL_S
from tests.functional import test_chart as chart
from tests.functional.test_chart import (
    APP_SERVICES,
    CHART,
    NAMESPACE,
    NEWEST_KUBE,
    RELEASE,
    component,
    containers,
    helm,
    intended_graph,
    named,
    of_kind,
    outward_rules,
    pod_labels,
    pod_spec,
    policy_graph,
    render,
)

ON = ("monitoring.prometheus.enabled=true",)
PODMONITOR = ("monitoring.podMonitor.enabled=true", "monitoring.podMonitor.labels.release=kube-prometheus-stack")
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]


def prometheus_objects(objs) -> list[dict]:
    return [o for o in objs if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "prometheus"
            or o["kind"] == "PodMonitor"]


def scrape_config(objs) -> dict:
    config = yaml.safe_load(named(objs, "ConfigMap", f"{RELEASE}-prometheus")["data"]["prometheus.yml"])
    (job,) = config["scrape_configs"]
    return {"global": config["global"], **job}


# ---- Prometheus' relabelling, as documented (prometheus.io/docs, <relabel_config>) --------------

def relabel(labels: dict[str, str], rules: list[dict]) -> dict[str, str] | None:
    """Apply relabel rules (Prometheus' or the Operator's spelling) to a label set; None: dropped."""
    labels = dict(labels)
    for rule in rules:
        rule = {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key): value for key, value in rule.items()}
        action = rule.get("action", "replace").lower()
        regex = re.compile(rule.get("regex", "(.*)"))
        value = rule.get("separator", ";").join(labels.get(name, "") for name in rule.get("source_labels", []))
        if action == "keep" and not regex.fullmatch(value):
            return None
        if action == "drop" and regex.fullmatch(value):
            return None
        if action == "replace" and (match := regex.fullmatch(value)):
            replacement = re.sub(r"\$(\d+)", lambda m: match.group(int(m.group(1))) or "",
                                 rule.get("replacement", "$1"))
            if replacement:
                labels[rule["target_label"]] = replacement
            else:
                labels.pop(rule["target_label"], None)
        if action == "labeldrop":
            labels = {name: v for name, v in labels.items() if not regex.fullmatch(name)}
    return labels


def meta_labels(workload: dict, pod_name: str, ip: str = "10.244.0.7", phase: str = "Running") -> list[dict]:
    """What kubernetes_sd_configs (role pod) gives for one pod of `workload`: one target per container port."""
    template = workload["spec"]["template"]["metadata"]

    def clean(name: str) -> str:
        return re.sub(r"[^a-zA-Z0-9_]", "_", name)

    base = {"__address__": ip, "__meta_kubernetes_namespace": NAMESPACE, "__meta_kubernetes_pod_name": pod_name,
            "__meta_kubernetes_pod_ip": ip, "__meta_kubernetes_pod_phase": phase, "__metrics_path__": "/metrics",
            "__scheme__": "http", "job": RELEASE}
    base |= {f"__meta_kubernetes_pod_label_{clean(k)}": v for k, v in template.get("labels", {}).items()}
    base |= {f"__meta_kubernetes_pod_annotation_{clean(k)}": str(v) for k, v in template.get("annotations", {}).items()}
    targets = []
    for c in pod_spec(workload)["containers"]:
        for port in c.get("ports", []) or [{}]:
            target = dict(base, __meta_kubernetes_pod_container_name=c["name"])
            if port:
                target |= {"__address__": f"{ip}:{port['containerPort']}",
                           "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                           "__meta_kubernetes_pod_container_port_name": port.get("name", "")}
            targets.append(target)
    return targets


def scraped_targets(objs) -> dict[str, dict[str, str]]:
    """component -> the labels of its (first) pod's target after relabelling; the dropped ones left out."""
    rules = scrape_config(objs)["relabel_configs"]
    out = {}
    for workload in of_kind(objs, "Deployment", "StatefulSet"):
        for target in meta_labels(workload, f"{workload['metadata']['name']}-5d8f7c9b4-abcde"):
            if (kept := relabel(target, rules)) is not None:
                out[component(workload)] = {k: v for k, v in kept.items() if not k.startswith("__meta_")}
    return out


# ---- off by default ---------------------------------------------------------------------------

def test_monitoring_is_off_by_default():
    assert VALUES["prometheus"]["enabled"] is False and VALUES["podMonitor"]["enabled"] is False
    for value_set in ("default", "minimal", "production", "kind", "minikube"):
        assert not prometheus_objects(render(value_set)), value_set


# ---- the release's Prometheus -----------------------------------------------------------------

def test_prometheus_runs_the_official_image_or_the_one_given():
    official = VALUES["prometheus"]["image"]
    assert official["repository"] == "prom/prometheus" and re.fullmatch(r"v\d+\.\d+\.\d+", official["tag"])
    (c,) = pod_spec(named(render("default", NEWEST_KUBE, ON), "Deployment", f"{RELEASE}-prometheus"))["containers"]
    assert c["image"] == f"prom/prometheus:{official['tag']}"
    # No command: the image's entrypoint (the prometheus binary); the configuration from the ConfigMap.
    assert "command" not in c and "--config.file=/etc/prometheus/config/prometheus.yml" in c["args"]
    assert {"name": "config", "mountPath": "/etc/prometheus/config", "readOnly": True} in c["volumeMounts"]
    other = render("default", NEWEST_KUBE, (*ON, "monitoring.prometheus.image.repository=example.org/prometheus",
                                            "monitoring.prometheus.image.tag=2.42.0"))
    (c,) = pod_spec(named(other, "Deployment", f"{RELEASE}-prometheus"))["containers"]
    assert c["image"] == "example.org/prometheus:2.42.0"


def test_prometheus_may_only_watch_the_pods_of_its_namespace():
    objs = render("default", NEWEST_KUBE, ON)
    assert not of_kind(objs, "ClusterRole", "ClusterRoleBinding")
    (role,) = [r for r in of_kind(objs, "Role") if component(r) == "prometheus"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    (binding,) = [b for b in of_kind(objs, "RoleBinding") if component(b) == "prometheus"]
    spec = pod_spec(named(objs, "Deployment", f"{RELEASE}-prometheus"))
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": spec["serviceAccountName"],
                                    "namespace": NAMESPACE}]
    # Its own account: the services' account (no token) gains nothing.
    assert spec["serviceAccountName"] != pod_spec(named(objs, "Deployment", f"{RELEASE}-user"))["serviceAccountName"]
    # Discovery stays in the namespace its Role covers.
    (sd,) = scrape_config(objs)["kubernetes_sd_configs"]
    assert sd == {"role": "pod", "namespaces": {"names": [NAMESPACE]}}


def test_prometheus_scrapes_the_services_labelled_like_the_local_stack():
    objs = render("default", NEWEST_KUBE, ON)
    targets = scraped_targets(objs)
    assert set(targets) == set(APP_SERVICES), "only user, catalog and worker are scraped"
    for service, labels in targets.items():
        assert labels["service"] == service
        assert labels["replica"] == f"{RELEASE}-{service}-5d8f7c9b4-abcde"
        assert labels["__address__"] == f"10.244.0.7:{chart.COMPONENTS[service]['port']}"
        assert labels["__metrics_path__"] == "/metrics"
    # A pod that is not running yet (no address) or has finished is no target.
    rules = scrape_config(objs)["relabel_configs"]
    user = named(objs, "Deployment", f"{RELEASE}-user")
    for phase in ("Pending", "Succeeded", "Failed"):
        assert all(relabel(t, rules) is None for t in meta_labels(user, "u", phase=phase)), phase
    # The services' own `service` label goes, not the target's.
    assert relabel({"service": "catalog", "exported_service": "catalog"},
                   scrape_config(objs)["metric_relabel_configs"]) == {"service": "catalog"}


def test_prometheus_scrapes_as_often_as_the_local_stack():
    config = scrape_config(render("default", NEWEST_KUBE, ON))
    assert VALUES["scrapeInterval"] == f"{SCRAPE_INTERVAL_S}s"
    assert config["global"]["scrape_interval"] == config["global"]["scrape_timeout"] == VALUES["scrapeInterval"]


def test_prometheus_service_serves_its_port():
    objs = render("default", NEWEST_KUBE, ON)
    service = named(objs, "Service", f"{RELEASE}-prometheus")
    assert service["spec"]["ports"] == [{"name": "http", "port": 9090, "targetPort": "http", "protocol": "TCP"}]
    (c,) = pod_spec(named(objs, "Deployment", f"{RELEASE}-prometheus"))["containers"]
    assert {"name": "http", "containerPort": 9090, "protocol": "TCP"} in c["ports"]
    assert "--web.listen-address=:9090" in c["args"]


@pytest.mark.parametrize("kube", chart.KUBE_VERSIONS)
def test_prometheus_objects_lint_and_validate_strictly(kube):
    sets = [arg for s in ON + PODMONITOR for arg in ("--set", s)]
    result = helm("lint", "--strict", str(CHART), "--kube-version", kube, *sets)
    assert "0 chart(s) failed" in result.stdout and "[WARNING]" not in result.stdout, result.stdout
    errors = []
    for obj in render("default", kube, ON):
        try:
            kubernetes_validate.validate(obj, kube, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
            errors.append(f"{obj['kind']} {obj['metadata'].get('name')}: {getattr(exc, 'message', exc)}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("policy", chart.WORKLOAD_POLICIES, ids=lambda f: f.__name__.removeprefix("test_"))
def test_the_workload_policies_hold_for_prometheus(policy):
    objs = render("default", NEWEST_KUBE, ON)
    assert of_kind(prometheus_objects(objs), "Deployment")
    policy(objs)


def test_the_network_policies_add_only_the_scrapes_and_the_api():
    objs = render("default", NEWEST_KUBE, ON)
    assert policy_graph(objs) == intended_graph() | {("prometheus", s, 8080) for s in APP_SERVICES}
    values = yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicy"]
    dns = {"to": [values["dns"]], "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    assert outward_rules(objs)["prometheus"] == [dns, values["kubernetesApiEgress"]]
    # Who may query it: only the peers given.
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "grafana"}}}
    opened = render("default", NEWEST_KUBE, (*ON, "monitoring.prometheus.ingressFrom[0].namespaceSelector"
                                             ".matchLabels.kubernetes\\.io/metadata\\.name=grafana"))
    policy = named(opened, "NetworkPolicy", f"{RELEASE}-prometheus")
    assert policy["spec"]["ingress"] == [{"from": [peer], "ports": [{"port": 9090, "protocol": "TCP"}]}]
    assert policy_graph(opened) == policy_graph(objs) | {("outside", "prometheus", 9090)}  # from those peers only


def test_the_release_still_fits_one_small_node_with_prometheus():
    cpu, mem = chart.requested(render("local-cluster", NEWEST_KUBE, ON))
    assert cpu <= chart.NODE_CPU_M - chart.CONTROL_PLANE_CPU_M and mem <= chart.MAX_DEFAULT_MEMORY_MI, (cpu, mem)


# ---- the Prometheus Operator's PodMonitor -----------------------------------------------------

RELABEL_FIELDS = {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"}
RELABEL_ACTIONS = {"replace", "keep", "drop", "hashmod", "labelmap", "labeldrop", "labelkeep", "lowercase",
                   "uppercase", "keepequal", "dropequal"}


def selects(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels, matchExpressions with In/NotIn/Exists/DoesNotExist) against labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        value, present = labels.get(e["key"]), e["key"] in labels
        ok = {"In": present and value in e.get("values", []), "NotIn": value not in e.get("values", []),
              "Exists": present, "DoesNotExist": not present}[e["operator"]]
        if not ok:
            return False
    return True


def test_the_pod_monitor_scrapes_the_services_with_the_same_labels():
    objs = render("default", NEWEST_KUBE, PODMONITOR)
    (monitor,) = of_kind(objs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert set(spec) == {"namespaceSelector", "selector", "podMetricsEndpoints"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selected = [w for w in of_kind(objs, "Deployment", "StatefulSet", "Job")
                if selects(spec["selector"], pod_labels(w))]
    assert sorted(component(w) for w in selected) == sorted(APP_SERVICES)
    (endpoint,) = spec["podMetricsEndpoints"]
    assert endpoint["interval"] == endpoint["scrapeTimeout"] == VALUES["scrapeInterval"]
    for workload in selected:
        assert endpoint["port"] in {p["name"] for c in containers(workload) for p in c.get("ports", [])}
        assert endpoint["path"] == workload["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
    for rule in endpoint["relabelings"] + endpoint["metricRelabelings"]:
        assert set(rule) <= RELABEL_FIELDS and rule.get("action", "replace").lower() in RELABEL_ACTIONS, rule
    # The labels the chart's own Prometheus gives: the same rules, in the Operator's spelling.
    own = scrape_config(render("default", NEWEST_KUBE, ON))
    as_operator = [{re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): v for k, v in r.items()}
                   for r in own["relabel_configs"]]
    assert endpoint["relabelings"] == [r for r in as_operator if r.get("targetLabel") in ("service", "replica")]
    assert [{re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): v for k, v in r.items()}
            for r in own["metric_relabel_configs"]] == endpoint["metricRelabelings"]
    catalog = named(objs, "Deployment", f"{RELEASE}-catalog")
    (target,) = meta_labels(catalog, "scaleshop-catalog-1")
    assert relabel(target, endpoint["relabelings"])["service"] == "catalog"
    assert relabel(target, endpoint["relabelings"])["replica"] == "scaleshop-catalog-1"
    # The PodMonitor alone deploys no Prometheus.
    assert not of_kind(prometheus_objects(objs), "Deployment")


# ---- the image of this machine's cluster ------------------------------------------------------

def test_the_local_cluster_image_is_the_release_of_the_official_image():
    """k8s/images/prometheus builds the Prometheus module whose version is the official image's tag
    (module v0.MMP.P is Prometheus M.MP.P), so the cluster runs what users' clusters pull."""
    go_mod = (chart.REPO / "k8s" / "images" / "prometheus" / "module" / "go.mod").read_text()
    (module,) = re.findall(r"^\s*github\.com/prometheus/prometheus (v0\.\d+\.\d+)", go_mod, re.M)
    major, minor, patch = re.fullmatch(r"v0\.(\d)(\d\d)\.(\d+)", module).groups()  # type: ignore[union-attr]
    assert f"v{major}.{int(minor)}.{patch}" == VALUES["prometheus"]["image"]["tag"]
    (c,) = pod_spec(named(render("local-cluster"), "Deployment", f"{RELEASE}-prometheus"))["containers"]
    assert c["image"] == "scaleshop/prometheus:dev" and c["imagePullPolicy"] == "Never"
