"""Static verification of the chart's optional Grafana (values.yaml `monitoring.grafana`,
templates/grafana-*.yaml): off by default; on, it runs the pinned official image, passes every
workload policy of tests/functional/test_chart.py and validates strictly, is provisioned with a
Prometheus datasource (the release's, or the URL given) and with the dashboard file byte for byte,
and the NetworkPolicies let it (and nothing else new) query the release's Prometheus.
"""
from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

from tests.functional import test_chart as chart
from tests.functional.test_chart import CHART, NEWEST_KUBE, OLDEST_KUBE, RELEASE, component, named, pod_spec, render

DASHBOARD = CHART / "files" / "grafana" / "scaleshop-dashboard.json"
GRAFANA = ("monitoring.grafana.enabled=true",)
WITH_PROMETHEUS = (*GRAFANA, "monitoring.prometheus.enabled=true")
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())["monitoring"]


def grafana_objects(objs) -> list[dict]:
    return [o for o in objs if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "grafana"]


def provisioning(objs) -> dict:
    return named(objs, "ConfigMap", f"{RELEASE}-grafana-provisioning")["data"]


def datasource(sets: tuple[str, ...]) -> dict:
    (source,) = yaml.safe_load(provisioning(render("default", NEWEST_KUBE, sets))["datasources.yaml"])["datasources"]
    return source


def test_grafana_is_off_by_default():
    assert VALUES["grafana"]["enabled"] is False
    for value_set in ("default", "minimal", "production", "kind", "minikube"):
        assert not grafana_objects(render(value_set)), value_set


@pytest.mark.parametrize("kube", [OLDEST_KUBE, NEWEST_KUBE])
def test_grafana_renders_valid_objects_that_pass_every_workload_policy(kube):
    objs = render("default", kube, WITH_PROMETHEUS)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in grafana_objects(objs))
    name = f"{RELEASE}-grafana"
    assert kinds == sorted([("ConfigMap", f"{name}-dashboards"), ("ConfigMap", f"{name}-provisioning"),
                            ("Deployment", name), ("NetworkPolicy", name), ("PodDisruptionBudget", name),
                            ("Secret", f"{name}-admin"), ("Service", name)])
    for obj in grafana_objects(objs):
        kubernetes_validate.validate(obj, kube, strict=True)
    for policy in chart.WORKLOAD_POLICIES:
        policy(objs)


def test_grafana_runs_the_pinned_official_image():
    image = VALUES["grafana"]["image"]
    assert image["repository"] == "grafana/grafana" and re.fullmatch(r"\d+\.\d+\.\d+", image["tag"])
    (c,) = pod_spec(named(render("default", NEWEST_KUBE, GRAFANA), "Deployment", f"{RELEASE}-grafana"))["containers"]
    assert c["image"] == f"grafana/grafana:{image['tag']}"


def test_the_provisioned_dashboard_is_the_file_byte_for_byte():
    objs = render("default", NEWEST_KUBE, GRAFANA)
    data = named(objs, "ConfigMap", f"{RELEASE}-grafana-dashboards")["data"]
    assert data == {"scaleshop-dashboard.json": DASHBOARD.read_text()}
    (c,) = pod_spec(named(objs, "Deployment", f"{RELEASE}-grafana"))["containers"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    providers = yaml.safe_load(provisioning(objs)["dashboards.yaml"])["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana-dashboards"]
    assert mounts["/var/lib/grafana-dashboards"]["name"] == "dashboards"


def test_the_datasource_is_the_releases_prometheus_unless_a_url_is_given():
    source = datasource(WITH_PROMETHEUS)
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == f"http://{RELEASE}-prometheus:9090"
    assert source["jsonData"]["timeInterval"] == VALUES["scrapeInterval"]  # $__rate_interval: 4 scrapes
    given = (*GRAFANA, "monitoring.grafana.datasourceUrl=http://prometheus.monitoring:9090")
    assert datasource(given)["url"] == "http://prometheus.monitoring:9090"


def test_the_admin_password_is_a_generated_secret_unless_one_is_given():
    objs = render("default", NEWEST_KUBE, GRAFANA)
    secret = named(objs, "Secret", f"{RELEASE}-grafana-admin")
    (c,) = pod_spec(named(objs, "Deployment", f"{RELEASE}-grafana"))["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"], "key": "GF_SECURITY_ADMIN_PASSWORD"}
    assert len(secret["data"]["GF_SECURITY_ADMIN_PASSWORD"]) >= 24
    assert env["GF_AUTH_ANONYMOUS_ENABLED"]["value"] == "false"
    mine = render("default", NEWEST_KUBE, (*GRAFANA, "monitoring.grafana.admin.existingSecret=my-grafana"))
    assert not [o for o in mine if o["kind"] == "Secret" and "grafana" in o["metadata"]["name"]]
    (c,) = pod_spec(named(mine, "Deployment", f"{RELEASE}-grafana"))["containers"]
    password = {e["name"]: e for e in c["env"]}["GF_SECURITY_ADMIN_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"]["name"] == "my-grafana"


def test_network_policies_add_exactly_grafana_to_prometheus():
    without = chart.policy_graph(render("default", NEWEST_KUBE, ("monitoring.prometheus.enabled=true",)))
    with_grafana = render("default", NEWEST_KUBE, WITH_PROMETHEUS)
    assert chart.policy_graph(with_grafana) - without == {("grafana", "prometheus", 9090)}
    assert without - chart.policy_graph(with_grafana) == set()
    # Nobody reaches Grafana's UI through the policies unless monitoring.grafana.ingressFrom says so.
    assert named(with_grafana, "NetworkPolicy", f"{RELEASE}-grafana")["spec"]["ingress"] == []
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}]
    opened = render("default", NEWEST_KUBE, (*WITH_PROMETHEUS, "monitoring.grafana.ingressFrom[0].namespaceSelector"
                                             ".matchLabels.kubernetes\\.io/metadata\\.name=ops"))
    assert named(opened, "NetworkPolicy", f"{RELEASE}-grafana")["spec"]["ingress"] == [
        {"from": peers, "ports": [{"port": 3000, "protocol": "TCP"}]}]
    assert component(named(opened, "NetworkPolicy", f"{RELEASE}-grafana")) == "grafana"
