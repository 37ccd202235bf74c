"""loadgen/platform.py's KubePlatform: which scales are checked through the gateway."""
from __future__ import annotations

import yaml

from loadgen import platform
from stack.layout import REPO


def test_the_gateway_routed_services_are_the_charts_http_parts():
    components = yaml.safe_load((REPO / "charts" / "scaleshop" / "values.yaml").read_text())["components"]
    assert set(platform.GATEWAY_ROUTED) == {name for name, part in components.items() if part.get("http")}


class FakeApps:
    def __init__(self):
        self.patched = []

    def patch_namespaced_deployment_scale(self, name, namespace, body):
        self.patched.append((name, body["spec"]["replicas"]))


def kube_platform(waits: list) -> platform.KubePlatform:
    kube = object.__new__(platform.KubePlatform)  # without a cluster's configuration
    kube.namespace, kube.prefix, kube.log, kube.apps = "shop", "rel-", lambda msg: None, FakeApps()
    kube.ready_timeout = 5.0
    kube._wait_ready = lambda service, count: waits.append(("ready", service, count))
    pods = {f"rel-catalog-{i}" for i in range(3)}
    kube._ready_pods = lambda service: pods
    kube._served_by = lambda service, samples: waits.append(("served", service, len(pods))) or pods
    return kube


def test_a_scale_of_a_routed_service_waits_for_the_gateway_and_the_workers_for_readiness_only():
    waits: list = []
    kube = kube_platform(waits)
    kube.scale("catalog", 3)
    kube.scale("worker", 4)
    assert kube.apps.patched == [("rel-catalog", 3), ("rel-worker", 4)]
    assert waits == [("ready", "catalog", 3), ("served", "catalog", 3), ("ready", "worker", 4)]
