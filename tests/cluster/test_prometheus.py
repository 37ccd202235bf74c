"""`make test-cluster`: the release's Prometheus (monitoring.prometheus.enabled, on in
k8s/values-local-cluster.yaml) discovers the release's pods through the Kubernetes API and scrapes them.

Its HTTP API is reached as a user would, with `kubectl port-forward svc/<release>-prometheus` (the
NetworkPolicies admit no other client by default). Checks:

1. every serving user, catalog and worker pod is an active target, up, labelled `service` (its
   component) and `replica` (its name), as the local stack's targets are; nothing else is a target;
2. after `kubectl scale` of catalog by one, the new pod becomes a target, up, on its own: the delays
   from the scale command and from the pod's start to its appearance are measured and printed.

The catalog's replica count is put back after the test, pass or fail.
"""
from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.cluster.conftest import KUBE_CONTEXT, LOAD_REPORTS, NAMESPACE, RELEASE, Cluster, kubectl

SCRAPED = ("user", "catalog", "worker")
DISCOVERY_TIMEOUT = 60     # seconds for a serving pod to become an active target that is up
FORWARD_TIMEOUT = 30


@pytest.fixture(scope="module")
def prometheus(cluster: Cluster) -> Iterator[str]:
    """The base URL of the release's Prometheus through `kubectl port-forward` on a free loopback port."""
    service = f"{RELEASE}-prometheus"
    cluster.core.read_namespaced_service(service, NAMESPACE)  # monitoring.prometheus.enabled
    kubectl("rollout", "status", f"deployment/{service}", "--timeout=120s")
    forward = subprocess.Popen(
        ["kubectl", "--context", KUBE_CONTEXT, "-n", NAMESPACE, "port-forward", "--address", "127.0.0.1",
         f"svc/{service}", ":9090"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+) -> 9090", line)
        assert match, f"kubectl port-forward said: {line}"
        base = f"http://127.0.0.1:{match.group(1)}"
        deadline = time.monotonic() + FORWARD_TIMEOUT
        while requests.get(f"{base}/-/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "Prometheus is not ready"
            time.sleep(1)
        yield base
    finally:
        forward.terminate()
        forward.wait(timeout=10)


def active_targets(base: str) -> list[dict]:
    response = requests.get(f"{base}/api/v1/targets", params={"state": "active"}, timeout=10)
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["activeTargets"])


def up_by_replica(base: str) -> dict[str, dict]:
    """replica label -> target, for the targets whose last scrape succeeded."""
    return {t["labels"].get("replica", ""): t for t in active_targets(base) if t["health"] == "up"}


def serving_pods(cluster: Cluster) -> dict[str, set[str]]:
    return {service: cluster.serving_pod_names(cluster.deployment_name(service)) for service in SCRAPED}


def wait_for(check: Callable[[], bool], timeout: float, what: Callable[[], str]) -> float:
    """Poll `check` every 0.25 s; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what()
        time.sleep(0.25)
    return time.monotonic()


def test_every_service_pod_is_a_target_labelled_service_and_replica(cluster: Cluster, prometheus: str) -> None:
    pods = serving_pods(cluster)
    expected = {name: service for service, names in pods.items() for name in names}
    assert all(pods.values()), pods
    wait_for(lambda: set(expected) <= set(up_by_replica(prometheus)), DISCOVERY_TIMEOUT,
             lambda: f"not every pod is up as a target: {sorted(expected)} vs {sorted(up_by_replica(prometheus))}")
    targets = active_targets(prometheus)
    # Nothing but the services' pods (the gateway, databases and Prometheus itself are not annotated).
    assert {t["labels"]["service"] for t in targets} == set(SCRAPED), [t["labels"] for t in targets]
    for target in targets:
        labels, replica = target["labels"], target["labels"]["replica"]
        if replica in expected:
            assert labels["service"] == expected[replica], labels
            assert target["scrapeUrl"].endswith(":8080/metrics"), target["scrapeUrl"]
            assert target["discoveredLabels"]["__meta_kubernetes_namespace"] == NAMESPACE
    # The series carry the labels too: one `up` per pod, and the services' own metrics per replica.
    response = requests.get(f"{prometheus}/api/v1/query", params={"query": "up == 1"}, timeout=10)
    series = {(s["metric"]["service"], s["metric"]["replica"]) for s in response.json()["data"]["result"]}
    assert {(service, name) for name, service in expected.items()} <= series


def test_a_scaled_up_catalog_pod_becomes_a_target(cluster: Cluster, prometheus: str,
                                                  restore_replicas: Callable[[str], None]) -> None:
    deployment = cluster.deployment_name("catalog")
    restore_replicas(deployment)
    before = cluster.serving_pod_names(deployment)
    # Every pod there is now, a terminating one of an earlier test too (in its drain it is still
    # Running and a target): the new pod is none of them.
    existing = {str(pod.metadata.name) for pod in cluster.pods(deployment)}
    wait_for(lambda: before <= set(up_by_replica(prometheus)), DISCOVERY_TIMEOUT, lambda: "catalog pods not up")
    scaled = time.monotonic()
    kubectl("scale", f"deployment/{deployment}", f"--replicas={cluster.replicas(deployment) + 1}")

    def new_pod() -> dict | None:
        for pod in cluster.pods(deployment):
            if pod.metadata.name not in existing and pod.metadata.deletion_timestamp is None \
                    and pod.status.pod_ip and pod.status.phase == "Running":
                return {"name": pod.metadata.name, "started": pod.status.start_time}
        return None

    running = wait_for(lambda: new_pod() is not None, 180, lambda: "no new catalog pod running")
    name = str(new_pod()["name"])  # type: ignore[index]
    listed = wait_for(lambda: any(t["labels"].get("replica") == name for t in active_targets(prometheus)),
                      DISCOVERY_TIMEOUT, lambda: f"{name} is no target")
    up = wait_for(lambda: name in up_by_replica(prometheus), DISCOVERY_TIMEOUT, lambda: f"{name} is not up")
    labels = up_by_replica(prometheus)[name]["labels"]
    assert labels["service"] == "catalog" and labels["replica"] == name
    line = (f"[prometheus] catalog scaled +1: pod {name} running {running - scaled:.1f} s after `kubectl scale`, "
            f"an active target {listed - running:.1f} s later, up (first scrape) {up - running:.1f} s after running")
    LOAD_REPORTS.append(line)
    print(line, flush=True)
