"""Static verification of the lab console in the chart (values.yaml `console`, templates/console.yaml,
templates/_console.tpl, its NetworkPolicies in templates/networkpolicy.yaml, the gateway's /console/
route in files/nginx.conf):

- off by default: no object of its own, and no /console/ route in the gateway;
- on: valid objects that pass every workload policy of tests/functional/test_chart.py; a Role with
  exactly the verbs its actions use, in the release's namespace only; the environment of the contract
  with services/console (names, values, sources); a token Secret generated at install (and kept with
  `lookup`) unless one is given; the load-run Job template as JSON, as hardened as every pod of the
  release; the gateway's /console/ route to its Service, which Debian's nginx accepts;
- it needs a Prometheus: without one it fails with a message saying which value to set;
- the NetworkPolicies add exactly gateway -> console, console -> gateway, Prometheus and the API, and
  load Job -> gateway;
- the schema refuses bad console values.

Its cluster test is tests/cluster/test_console.py (make test-cluster).
"""
from __future__ import annotations

import base64
import json
import re
import shutil

import kubernetes_validate
import pytest
import yaml

from tests.functional import test_chart as chart
from tests.functional.test_chart import (
    APP_SERVICES,
    CHART,
    NAMESPACE,
    NEWEST_KUBE,
    OLDEST_KUBE,
    RELEASE,
    chart_nginx_conf,
    container_env,
    containers,
    helm,
    intended_graph,
    named,
    of_kind,
    outward_rules,
    pod_spec,
    policy_graph,
    render,
    value_args,
)

ON = ("console.enabled=true", "monitoring.prometheus.enabled=true")
PROMETHEUS_ONLY = ("monitoring.prometheus.enabled=true",)
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
NAME = f"{RELEASE}-console"
PORT = chart.COMPONENTS["console"]["port"]
CONSOLE_FQDN = f"{NAME}.{NAMESPACE}.svc.cluster.local:{PORT}"
LOAD_JOB_PATH = "/etc/scaleshop-console/load-job.json"
EXTERNAL = ("console.enabled=true", "console.prometheusUrl=http://prometheus.monitoring:9090",
            "console.prometheusEgress[0].to[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
            "console.prometheusEgress[0].ports[0].port=9090")

# The contract with services/console (services/console/app.py, kube_controller.py).
ROLE_RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get"]},
    {"apiGroups": ["apps"], "resources": ["statefulsets/scale"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "create", "delete"]},
]
ENV = {"CONSOLE_PLATFORM", "PORT", "CONSOLE_BIND", "CONSOLE_TOKEN", "PROMETHEUS_URL", "NAMESPACE",
       "DEPLOYMENT_PREFIX", "GATEWAY_URL", "CACHE_PATTERNS", "LOAD_JOB_TEMPLATE", "HOME"}


def console_objects(objs) -> list[dict]:
    return [o for o in objs if o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
            in ("console", "console-load")]


def deployment(objs) -> dict:
    return named(objs, "Deployment", NAME)


def console_container(objs) -> dict:
    (c,) = pod_spec(deployment(objs))["containers"]
    return c


def console_env(objs) -> dict[str, str | None]:
    return container_env(objs, deployment(objs), console_container(objs))


def load_job(objs) -> dict:
    """The Job template of the ConfigMap, named as the API server names a Job from generateName."""
    job = json.loads(named(objs, "ConfigMap", f"{NAME}-load-job")["data"]["load-job.json"])
    named_job = json.loads(json.dumps(job))
    named_job["metadata"]["name"] = job["metadata"]["generateName"] + "x7k2q"
    return named_job


def with_load_job(objs) -> tuple[dict, ...]:
    return (*objs, load_job(objs))


def token(objs) -> str:
    return base64.b64decode(named(objs, "Secret", f"{NAME}-token")["data"]["CONSOLE_TOKEN"]).decode()


def names_the_console_code_requires() -> set[str]:
    """Variables services/console reads without a default (environ["NAME"])."""
    pattern = re.compile(r"""environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]""")
    return {name for path in (chart.REPO / "services" / "console").rglob("*.py")
            for name in pattern.findall(path.read_text())}


# ---- off by default -----------------------------------------------------------------------------

def test_the_console_is_off_by_default():
    assert VALUES["console"]["enabled"] is False
    for value_set in ("default", "minimal", "production", "kind", "minikube"):
        objs = render(value_set)
        assert not console_objects(objs), value_set
        assert not [o for o in objs if "console" in o["metadata"]["name"]], value_set
        assert "/console/" not in chart_nginx_conf(objs), value_set
    # This machine's cluster runs it (tests/cluster/test_console.py), with the release's Prometheus.
    assert console_objects(render("local-cluster"))
    assert console_env(render("local-cluster"))["PROMETHEUS_URL"] == f"http://{RELEASE}-prometheus:9090"


# ---- the objects ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kube", [OLDEST_KUBE, NEWEST_KUBE])
def test_the_console_renders_valid_objects_that_pass_every_workload_policy(kube):
    objs = render("default", kube, ON)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in console_objects(objs))
    assert kinds == sorted([("ConfigMap", f"{NAME}-load-job"), ("Deployment", NAME), ("NetworkPolicy", NAME),
                            ("NetworkPolicy", f"{NAME}-load"), ("PodDisruptionBudget", NAME), ("Role", NAME),
                            ("RoleBinding", NAME), ("Secret", f"{NAME}-token"), ("Service", NAME),
                            ("ServiceAccount", NAME)])
    job = load_job(objs)
    for obj in [*console_objects(objs), job]:
        kubernetes_validate.validate(obj, kube, strict=True)
    # The policies of every workload, the load Job (as the console creates it) among them.
    everything = with_load_job(objs)
    for policy in chart.WORKLOAD_POLICIES:
        policy(everything)
    result = helm("lint", "--strict", str(CHART), "--kube-version", kube, *value_args(sets=ON))
    assert "0 chart(s) failed" in result.stdout and "[WARNING]" not in result.stdout, result.stdout


def test_one_pod_replaced_whole_and_never_blocking_a_drain():
    objs = render("default", NEWEST_KUBE, ON)
    spec = deployment(objs)["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    # Its budget lets the one pod go: a node drain is never blocked by it.
    budget = named(objs, "PodDisruptionBudget", NAME)["spec"]
    assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget


def test_the_role_allows_exactly_the_console_actions_in_the_namespace():
    objs = render("default", NEWEST_KUBE, ON)
    assert not of_kind(objs, "ClusterRole", "ClusterRoleBinding")
    role = named(objs, "Role", NAME)
    assert role["rules"] == ROLE_RULES
    assert "namespace" not in role["metadata"]  # the release's namespace (helm install -n)
    binding = named(objs, "RoleBinding", NAME)
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
    # Its own account, whose token only its pod mounts; the services' account gains nothing.
    assert named(objs, "ServiceAccount", NAME)["automountServiceAccountToken"] is False
    spec = pod_spec(deployment(objs))
    assert spec["serviceAccountName"] == NAME and spec["automountServiceAccountToken"] is True
    assert spec["serviceAccountName"] != pod_spec(named(objs, "Deployment", f"{RELEASE}-user"))["serviceAccountName"]


def test_the_console_runs_with_the_environment_of_the_contract():
    objs = render("default", NEWEST_KUBE, ON)
    c = console_container(objs)
    assert c["command"] == ["python", "-m", "services.console"]
    assert c["image"] == containers(named(objs, "Deployment", f"{RELEASE}-user"))[0]["image"]
    assert c["ports"] == [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/console/", "port": "http"}, probe
    env = console_env(objs)
    assert set(env) == ENV
    assert not names_the_console_code_requires() - set(env), "the console reads variables the chart does not set"
    gateway = named(objs, "Service", f"{RELEASE}-gateway")["spec"]["ports"][0]["port"]
    assert env == {
        "CONSOLE_PLATFORM": "kubernetes",
        "PORT": str(PORT),
        "CONSOLE_BIND": "0.0.0.0",
        "CONSOLE_TOKEN": token(objs),
        "PROMETHEUS_URL": f"http://{RELEASE}-prometheus:{VALUES['monitoring']['prometheus']['service']['port']}",
        "NAMESPACE": NAMESPACE,
        "DEPLOYMENT_PREFIX": f"{RELEASE}-",
        "GATEWAY_URL": f"http://{RELEASE}-gateway.{NAMESPACE}.svc.cluster.local:{gateway}",
        "CACHE_PATTERNS": VALUES["config"]["CACHE_PATTERNS"],
        "LOAD_JOB_TEMPLATE": LOAD_JOB_PATH,
        "HOME": "/tmp",
    }
    sources = {e["name"]: e.get("valueFrom") for e in c["env"]}
    assert sources["CONSOLE_TOKEN"] == {"secretKeyRef": {"name": f"{NAME}-token", "key": "CONSOLE_TOKEN"}}
    assert sources["NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # The Prometheus Service and the Deployments the variables name are the release's.
    assert named(objs, "Service", f"{RELEASE}-prometheus")["spec"]["ports"][0]["port"] == 9090
    assert {f"{env['DEPLOYMENT_PREFIX']}{s}" for s in APP_SERVICES} <= {d["metadata"]["name"]
                                                                         for d in of_kind(objs, "Deployment")}
    # The load-job template is the ConfigMap's key, mounted read-only at that path.
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    mount = mounts[LOAD_JOB_PATH.rsplit("/", 1)[0]]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod_spec(deployment(objs))["volumes"] if v["name"] == mount["name"]]
    assert volume == {"name": mount["name"], "configMap": {"name": f"{NAME}-load-job"}}
    assert LOAD_JOB_PATH.rsplit("/", 1)[1] in named(objs, "ConfigMap", f"{NAME}-load-job")["data"]
    assert mounts["/tmp"]["name"] in {v["name"] for v in pod_spec(deployment(objs))["volumes"] if "emptyDir" in v}


def test_cache_patterns_is_what_the_catalog_runs_with(monkeypatch):
    for sets, expected in (((), "objects,queries"), (("config.CACHE_PATTERNS=queries",), "queries"),
                           (("config.CACHE_PATTERNS=queries", "catalog.config.CACHE_PATTERNS=objects"), "objects"),
                           (("user.config.CACHE_PATTERNS=queries",), "objects,queries")):
        objs = render("default", NEWEST_KUBE, (*ON, *sets))
        assert console_env(objs)["CACHE_PATTERNS"] == expected, sets
        catalog = chart.service_settings(objs, "catalog", monkeypatch)
        assert catalog.cache_patterns == frozenset(expected.split(",")), sets


def test_the_prometheus_is_the_releases_unless_a_url_is_given():
    assert console_env(render("default", NEWEST_KUBE, EXTERNAL))["PROMETHEUS_URL"] == "http://prometheus.monitoring:9090"
    # Without either, it refuses to render, saying what to set.
    result = helm("template", RELEASE, str(CHART), *value_args(sets=("console.enabled=true",)), check=False)
    assert result.returncode != 0
    assert ("console.enabled needs a Prometheus for its panels: set monitoring.prometheus.enabled=true "
            "(the release's own) or console.prometheusUrl (one elsewhere)") in result.stderr, result.stderr


def test_the_token_is_generated_and_kept_unless_given():
    template = (CHART / "templates" / "console.yaml").read_text()
    assert 'lookup "v1" "Secret"' in template and "randAlphaNum 32" in template, "a generated token survives upgrades"
    first = token(render("default", NEWEST_KUBE, ON))
    second = token(render("default", NEWEST_KUBE, (*ON, "console.token=")))
    assert re.fullmatch(r"[A-Za-z0-9]{32}", first) and re.fullmatch(r"[A-Za-z0-9]{32}", second)
    assert first != second
    given = "an-operator-token-of-my-own"
    objs = render("default", NEWEST_KUBE, (*ON, f"console.token={given}"))
    assert token(objs) == console_env(objs)["CONSOLE_TOKEN"] == given
    # A new token given rolls the pod (the variable is read at start).
    before = deployment(render("default", NEWEST_KUBE, ON))["spec"]["template"]["metadata"]["annotations"]
    after = deployment(objs)["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/token"] != after["checksum/token"]


def test_the_load_job_template_runs_loadgen_hardened_as_every_pod():
    from loadgen.cli import build_parser

    objs = render("default", NEWEST_KUBE, ON)
    raw = named(objs, "ConfigMap", f"{NAME}-load-job")["data"]["load-job.json"]
    job = json.loads(raw)
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["generateName"] == f"{RELEASE}-console-load-" and "name" not in job["metadata"]
    labels = dict(deployment(objs)["metadata"]["labels"], **{"app.kubernetes.io/component": "console-load"})
    assert job["metadata"]["labels"] == labels
    assert "annotations" not in job["metadata"]  # the console adds the run's
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and spec["ttlSecondsAfterFinished"] == 600
    assert "activeDeadlineSeconds" not in spec  # the console sets it per run
    assert spec["template"]["metadata"]["labels"] == labels
    pod = spec["template"]["spec"]
    default_account = pod_spec(named(objs, "Deployment", f"{RELEASE}-user"))["serviceAccountName"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == default_account and pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == VALUES["console"]["runAsUser"]
    (c,) = pod["containers"]
    assert c["name"] == "loadgen" and c["command"] == ["python", "-m", "loadgen", "run"] and c["args"] == []
    assert build_parser().parse_args(c["command"][3:]).command == "run"
    assert c["image"] == console_container(objs)["image"] and c["imagePullPolicy"] == "IfNotPresent"
    assert c["env"] == [{"name": "HOME", "value": "/tmp"}]
    assert c["resources"] == VALUES["console"]["load"]["resources"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    # Changing the template rolls the console, which reads it at start.
    changed = render("default", NEWEST_KUBE, (*ON, "console.load.resources.limits.cpu=2"))
    key = "checksum/load-job"
    assert deployment(changed)["spec"]["template"]["metadata"]["annotations"][key] != \
        deployment(objs)["spec"]["template"]["metadata"]["annotations"][key]
    assert load_job(changed)["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] in (2, "2")


def test_scheduling_and_pull_secrets_reach_the_console_and_its_load_jobs():
    objs = render("default", NEWEST_KUBE, (*ON, "console.nodeSelector.disk=ssd",
                                           "console.tolerations[0].key=lab", "console.tolerations[0].operator=Exists",
                                           "imagePullSecrets[0].name=registry"))
    for spec in (pod_spec(deployment(objs)), load_job(objs)["spec"]["template"]["spec"]):
        assert spec["nodeSelector"] == {"disk": "ssd"}
        assert spec["tolerations"] == [{"key": "lab", "operator": "Exists"}]
        assert spec["imagePullSecrets"] == [{"name": "registry"}]


# ---- the gateway's route ------------------------------------------------------------------------

def test_the_gateway_routes_console_to_the_console_service(tmp_path):
    objs = render("default", NEWEST_KUBE, ON)
    conf = chart_nginx_conf(objs)
    (route,) = re.findall(r"location \^~ /console/ \{(.*?)\}\n", conf)
    assert f"set $console_upstream {CONSOLE_FQDN};" in route and "proxy_pass http://$console_upstream;" in route
    # Looked up per request (the gateway starts before the name resolves): the resolver is there.
    assert re.search(r"^\s*resolver \S+ valid=5s", conf, re.M)
    service = named(objs, "Service", NAME)["spec"]
    assert service["type"] == "ClusterIP"
    assert service["ports"] == [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}]
    # gateway.consoleUpstream wins (the local stack's loopback console).
    given = chart_nginx_conf(render("default", NEWEST_KUBE, (*ON, "gateway.consoleUpstream=10.0.0.7:9000")))
    assert "set $console_upstream 10.0.0.7:9000;" in given and CONSOLE_FQDN not in given
    # Debian's nginx accepts the render, with the console's name left as it is (nothing resolves it
    # at start); the replicas' `resolve` (nginx >= 1.27.3) replaced as in test_chart.py.
    conf = re.sub(r"server \S+:8080 resolve ", "server 127.0.0.1:8080 ", conf)
    conf = re.sub(r"resolver \S+ ", "resolver 127.0.0.1 ", conf).replace("/tmp/", f"{tmp_path}/")
    result = chart.nginx_test(conf, tmp_path)
    assert result.returncode == 0, result.stderr


# ---- NetworkPolicies ------------------------------------------------------------------------------

def test_network_policies_add_exactly_the_consoles_edges():
    objs = with_load_job(render("default", NEWEST_KUBE, ON))
    scrapes = {("prometheus", s, 8080) for s in APP_SERVICES}
    prometheus_port = VALUES["monitoring"]["prometheus"]["service"]["port"]
    console_edges = {("gateway", "console", PORT), ("console", "gateway", 8080),
                     ("console", "prometheus", prometheus_port), ("console-load", "gateway", 8080)}
    assert policy_graph(objs) == intended_graph() | scrapes | console_edges
    assert policy_graph(objs) - policy_graph(render("default", NEWEST_KUBE, PROMETHEUS_ONLY)) == console_edges
    # Beyond the release's pods: DNS for both, the Kubernetes API for the console only.
    np = VALUES["networkPolicy"]
    dns = {"to": [np["dns"]], "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    outward = outward_rules(objs)
    assert outward["console"] == [dns, np["kubernetesApiEgress"]]
    assert outward["console-load"] == [dns]
    # Prometheus is queried by the console and nobody else of the release.
    assert {a for a, b, _ in policy_graph(objs) if b == "prometheus"} == {"console"}


def test_network_policies_for_a_prometheus_elsewhere():
    objs = with_load_job(render("default", NEWEST_KUBE, (*EXTERNAL, *PROMETHEUS_ONLY)))
    # It reads the one given, so the release's Prometheus does not let it in.
    assert ("console", "prometheus", 9090) not in policy_graph(objs)
    rule = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "ports": [{"port": 9090}]}  # EXTERNAL's console.prometheusEgress
    assert rule in outward_rules(objs)["console"]
    # Without egress rules for it, the chart says what is missing.
    result = helm("template", RELEASE, str(CHART),
                  *value_args(sets=("console.enabled=true", "console.prometheusUrl=http://prometheus.monitoring:9090")),
                  check=False)
    assert result.returncode != 0
    assert "networkPolicy.enabled with console.prometheusUrl needs console.prometheusEgress" in result.stderr
    off = render("default", NEWEST_KUBE, ("console.enabled=true", "console.prometheusUrl=http://prometheus.monitoring:9090",
                                          "networkPolicy.enabled=false"))
    assert console_objects(off) and not of_kind(off, "NetworkPolicy")


# ---- NOTES and bad values -------------------------------------------------------------------------

def notes(tmp_path, sets: tuple[str, ...]) -> str:
    """NOTES.txt rendered through a copy of the chart (helm template does not render it)."""
    copy = tmp_path / "chart"
    shutil.copytree(CHART, copy)
    for path in list((copy / "templates").rglob("*.yaml")):
        path.unlink()
    text = (copy / "templates" / "NOTES.txt").read_text()
    (copy / "templates" / "NOTES.txt").unlink()
    (copy / "templates" / "_notes.tpl").write_text('{{- define "test.notes" -}}\n' + text + "{{- end }}\n")
    (copy / "templates" / "notes.yaml").write_text('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n'
                                                   'data:\n  notes: {{ include "test.notes" . | toJson }}\n')
    out = helm("template", RELEASE, str(copy), "-n", NAMESPACE, *value_args(sets=sets)).stdout
    return yaml.safe_load(out)["data"]["notes"]


def test_notes_tell_how_to_open_the_console_and_read_its_token(tmp_path):
    text = notes(tmp_path, ON)
    assert "/console/" in text
    assert (f"kubectl get secret {NAME}-token -n {NAMESPACE} -o jsonpath='{{.data.CONSOLE_TOKEN}}' | base64 -d"
            in text), text
    assert "console" not in notes(tmp_path / "off", ()).lower()


BAD_VALUES = [
    (("console.enabled=yes",), "at '/console/enabled'"),
    (("console.token=short",), "at '/console/token'"),
    (("console.token=a token with blanks in it",), "at '/console/token'"),
    (("console.prometheusUrl=prometheus:9090",), "at '/console/prometheusUrl'"),
    (("console.runAsUser=0",), "at '/console/runAsUser'"),
    (("console.replicaCount=2",), "at '/console': additional properties 'replicaCount' not allowed"),
    (("console.load.resources=null",), "at '/console/load"),
    (("console.resources.requests=null",), "at '/console/resources'"),
]


@pytest.mark.parametrize("sets,message", BAD_VALUES, ids=[",".join(s) for s, _ in BAD_VALUES])
def test_bad_console_values_are_rejected(sets, message):
    result = helm("template", RELEASE, str(CHART), *value_args(sets=(*sets, *PROMETHEUS_ONLY)), check=False)
    assert result.returncode != 0, f"helm template accepted {sets}"
    assert message in result.stderr, result.stderr
