"""`make test-cluster`: the lab console of a release (console.enabled, on in
k8s/values-local-cluster.yaml), through the gateway's /console/, driving the Kubernetes API with
its own ServiceAccount (services/console/kube_controller.py).

1. The browser journey of tests/functional/test_console_browser.py, unchanged, against the
   release: a load run (a Job), catalog scaled 2→3 until the new pod's throughput shows and back,
   the cache switched off (a rolling update of the catalog Deployment) until the hit ratio is 0,
   then on; screenshots in reports/browser/test_the_console_journey_in_the_cluster/.
2. Its API: every action needs the token; a load run is a Job of the release and its stop deletes
   it; a kill deletes the pod and its Deployment makes another; memcached paused and Kafka
   stopped for a few seconds are scaled to zero and back, and serve again.

It seeds the products its load runs read first (as the local test does). Put back after the
module, pass or fail: no load Job, the cache on, catalog at 2 replicas.
"""
from __future__ import annotations

import base64
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from stack.layout import REPO
from tests.cluster.conftest import GATEWAY_URL, NAMESPACE, RELEASE, Cluster, kubectl
from tests.functional.browser import BrowserPage
from tests.functional.console_api import ConsoleAt
from tests.functional.test_console_browser import SEED, console_journey

LOAD_COMPONENT = "console-load"
TIMEOUT = 240  # seconds for an effect in the cluster: a rollout, a new pod served, Prometheus' rate window


@pytest.fixture(scope="module")
def console(cluster: Cluster) -> Iterator[ConsoleAt]:
    kubectl("rollout", "status", f"deployment/{RELEASE}-console", "--timeout=120s")
    # The load runs' journeys read seeded products (seeding is idempotent: an earlier test's are kept).
    subprocess.run([sys.executable, "-m", "loadgen", "seed", "--target", GATEWAY_URL, *SEED],
                   check=True, cwd=REPO, capture_output=True, timeout=300)
    secret = cluster.core.read_namespaced_secret(f"{RELEASE}-console-token", NAMESPACE)
    found = ConsoleAt(GATEWAY_URL, base64.b64decode(secret.data["CONSOLE_TOKEN"]).decode())
    try:
        yield found
    finally:
        found.restore()


def load_jobs(cluster: Cluster) -> dict[str, object]:
    """The release's load Jobs by name, finished ones (kept 10 minutes) too, not those being deleted."""
    from kubernetes import client

    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={LOAD_COMPONENT}"
    return {job.metadata.name: job for job in client.BatchV1Api().list_namespaced_job(
        NAMESPACE, label_selector=selector).items if job.metadata.deletion_timestamp is None}


def wait_for(check, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout:.0f}s"
        time.sleep(1)
    return time.monotonic() - started


def act(console: ConsoleAt, method: str, path: str, body: dict | None = None) -> dict:
    response = requests.request(method, console.api(f"actions/{path}"), json=body, headers=console.headers(),
                                timeout=30)
    assert response.status_code in (200, 201, 202), response.text
    return response.json()


def test_the_console_journey_in_the_cluster(console: ConsoleAt, browser_page: BrowserPage):
    console.restore()
    try:
        # Rollouts here wait for pods' start, their 40 s drain and the gateway's DNS: the load outlasts them.
        console_journey(console, browser_page, timeout=TIMEOUT, load_seconds=600)
    finally:
        console.restore()  # its load stopped


def test_every_action_needs_the_token_and_bad_input_is_a_json_4xx(console: ConsoleAt):
    assert requests.get(f"{GATEWAY_URL}/console/", timeout=10).status_code == 200
    refused = requests.post(console.api("actions/scale"), json={"service": "catalog", "replicas": 3}, timeout=10)
    assert refused.status_code == 401 and refused.json()["error"]["code"], refused.text
    bad = requests.post(console.api("actions/scale"), json={"service": "gateway", "replicas": 3},
                        headers=console.headers(), timeout=10)
    assert bad.status_code == 422 and "service" in bad.text, bad.text
    state = console.state()
    assert state["running"] is None
    for service in ("user", "catalog", "worker"):
        assert state["replicas"][service] and all(r["name"].startswith(f"{RELEASE}-{service}-")
                                                  for r in state["replicas"][service]), state["replicas"]
    assert state["servers"] == {"memcached": "running", "kafka": "running"}


def test_a_load_run_is_a_job_of_the_release_and_stopping_it_deletes_it(console: ConsoleAt, cluster: Cluster):
    assert console.state()["load"] is None
    before = set(load_jobs(cluster))
    act(console, "POST", "load", {"rate": 5, "mix": "browse=100", "duration": 120})
    (name,) = set(load_jobs(cluster)) - before
    assert console.state()["load"] == {"pid": name, "rate": 5.0, "mix": "browse=100", "duration": 120}
    wait_for(lambda: any(pod.status.phase == "Running" for pod in cluster.core.list_namespaced_pod(
        NAMESPACE, label_selector=f"job-name={name}").items), TIMEOUT, "the load Job's pod running")
    act(console, "DELETE", "load")
    wait_for(lambda: name not in load_jobs(cluster), 60, "the load Job deleted")
    assert console.state()["load"] is None


def test_a_killed_replica_is_replaced_by_its_deployment(console: ConsoleAt, cluster: Cluster):
    deployment = f"{RELEASE}-user"
    before = cluster.wait_until_only(deployment, cluster.replicas(deployment))
    victim = sorted(before)[0]
    act(console, "POST", "kill", {"replica": victim})
    console.wait_idle()
    after = cluster.wait_until_only(deployment, len(before))
    assert victim not in after and len(after - before) == 1


@pytest.mark.parametrize("fault, workload, seconds", [
    ("pause-memcached", "deployment/{release}-memcached", 5),
    ("stop-kafka", "statefulset/{release}-kafka", 5),
])
def test_a_fault_scales_a_server_to_zero_and_back(console: ConsoleAt, fault: str, workload: str, seconds: int):
    server = fault.split("-")[1]
    name = workload.format(release=RELEASE)
    replicas = kubectl("get", name, "-o", "jsonpath={.spec.replicas}").strip()
    act(console, "POST", fault, {"seconds": seconds})
    wait_for(lambda: kubectl("get", name, "-o", "jsonpath={.spec.replicas}").strip() == "0", 30,
             f"{name} scaled to zero")
    wait_for(lambda: console.state()["servers"][server] == "stopped", 30, f"the console showing {server} stopped")
    wait_for(lambda: kubectl("get", name, "-o", "jsonpath={.spec.replicas}").strip() == replicas, seconds + 60,
             f"{name} scaled back to {replicas}")
    kubectl("rollout", "status", name, f"--timeout={TIMEOUT}s")
    wait_for(lambda: console.state()["servers"][server] == "running", TIMEOUT, f"the console showing {server} running")
