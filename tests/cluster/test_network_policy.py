"""`make test-cluster`: the chart's NetworkPolicies are enforced (networkPolicy.enabled, the default).

A probe pod runs in the release's namespace: the chart's own `helm test` pod (its image, security
context and limits, read from the release's hooks with helm) with `sleep` as its command, a readiness
gate nobody sets (so it is never Ready and no Service ever sends it traffic) and labels the test
changes. From it, through the Services' DNS names, as any pod of the namespace would connect:

1. with a label no policy names, its connections to the user service and to the database are
   refused (the user pods admit only the gateway and catalog, the database only the services);
2. relabelled with the gateway Deployment's selector labels (what the user policy admits), the user
   service answers /healthz, and the database still refuses it (the gateway has no edge to it);
3. relabelled as catalog, the user service answers and the database accepts the connection.

On a cluster whose network plugin ignores NetworkPolicies, step 1 fails: the connections go through.
The probe pod is deleted after the test, pass or fail. Only helm, kubectl and the Kubernetes API.
"""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from tests.cluster.conftest import KUBE_CONTEXT, NAMESPACE, RELEASE, Cluster, kubectl

HELM = os.environ.get("HELM", "helm")
CONNECT_TIMEOUT = 3       # seconds for curl's TCP connect: a refused one fails at once (REJECT) or times out (DROP)
RELABEL_TIMEOUT = 30      # seconds for the enforcer to see a pod's new labels
PROBE_LABEL = "scaleshop.test/network-probe"   # the probe's own label: no NetworkPolicy names it


@dataclass(frozen=True)
class Attempt:
    """One curl from the probe: its exit code, the TCP connect time (0: never connected) and HTTP status."""
    target: str
    exit_code: int
    time_connect: float
    http_code: str
    stderr: str

    @property
    def connected(self) -> bool:
        return self.time_connect > 0

    @property
    def refused(self) -> bool:
        """No connection, and for the network's reason: not a name that did not resolve (curl exit 6)."""
        return not self.connected and self.exit_code in (7, 28)


def chart_test_pod() -> dict:
    """The release's `helm test` pod, as the chart rendered it (helm get hooks)."""
    command = [HELM, "--kube-context", KUBE_CONTEXT, "-n", NAMESPACE, "get", "hooks", RELEASE]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{' '.join(command)} -> {result.returncode}: {result.stderr}"
    pods = [doc for doc in yaml.safe_load_all(result.stdout) if doc and doc.get("kind") == "Pod"
            and "test" in doc["metadata"].get("annotations", {}).get("helm.sh/hook", "")]
    assert pods, f"no helm test pod in the hooks of release {RELEASE}"
    return pods[0]


def service_address(cluster: Cluster, component: str) -> str:
    """host:port of the release's Service for `component` (its DNS name in the namespace): the one with a
    cluster IP where there is one (user: kube-proxy's DNAT on the way), else the headless one (MongoDB)."""
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"
    services = cluster.core.list_namespaced_service(NAMESPACE, label_selector=selector).items
    assert services, f"no Service matches {selector}"
    service = min(services, key=lambda found: found.spec.cluster_ip == "None")
    return f"{service.metadata.name}:{service.spec.ports[0].port}"


def selector_labels(cluster: Cluster, component: str) -> dict[str, str]:
    """The labels the component's Deployment selects its pods by: what the policies name it by."""
    return dict(cluster.deployment(cluster.deployment_name(component)).spec.selector.match_labels)


@pytest.fixture
def probe(cluster: Cluster) -> Iterator[str]:
    """The probe pod's name; it is deleted after the test, pass or fail."""
    template = chart_test_pod()
    name = f"{RELEASE}-network-probe-{uuid.uuid4().hex[:6]}"
    spec = template["spec"]
    container = dict(spec["containers"][0], command=["sleep", "600"])
    container.pop("args", None)
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {PROBE_LABEL: "outsider"}},
        "spec": {**spec, "containers": [container], "restartPolicy": "Never", "activeDeadlineSeconds": 600,
                 "terminationGracePeriodSeconds": 0,
                 # never Ready: no Service sends it traffic whatever labels it carries
                 "readinessGates": [{"conditionType": "scaleshop.test/never-ready"}]},
    }
    cluster.core.create_namespaced_pod(NAMESPACE, pod)
    try:
        kubectl("wait", "--for=condition=ContainersReady", f"pod/{name}", "--timeout=120s")
        yield name
    finally:
        kubectl("delete", "pod", name, "--grace-period=0", "--ignore-not-found", "--wait=true")


def attempt(pod: str, target: str, path: str = "/") -> Attempt:
    """curl http://<target><path> from inside the probe pod (kubectl exec)."""
    command = ["kubectl", "--context", KUBE_CONTEXT, "-n", NAMESPACE, "exec", pod, "--",
               "curl", "-sS", "-o", "/dev/null", "--connect-timeout", str(CONNECT_TIMEOUT),
               "--max-time", str(CONNECT_TIMEOUT + 3), "-w", "%{time_connect} %{http_code}", f"http://{target}{path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    time_connect, _, http_code = result.stdout.strip().partition(" ")
    assert time_connect, f"no curl output: {' '.join(command)} -> {result.returncode}: {result.stderr}"
    tried = Attempt(target, result.returncode, float(time_connect), http_code, result.stderr.strip())
    print(f"{pod}: {tried}", flush=True)   # the evidence, shown with pytest -s
    return tried


def relabel(cluster: Cluster, pod: str, labels: dict[str, str]) -> None:
    """Replace the probe's labels: the probe's own label goes, `labels` come."""
    cluster.core.patch_namespaced_pod(pod, NAMESPACE, {"metadata": {"labels": {PROBE_LABEL: None, **labels}}})


def until_connected(pod: str, target: str, path: str = "/") -> Attempt:
    """Retry while the enforcer catches up with new labels; the last attempt either way."""
    deadline = time.monotonic() + RELABEL_TIMEOUT
    while not (result := attempt(pod, target, path)).connected and time.monotonic() < deadline:
        time.sleep(1)
    return result


def test_network_policies_refuse_what_they_do_not_allow(cluster: Cluster, probe: str):
    user, database = service_address(cluster, "user"), service_address(cluster, "mongodb")

    # 1. a pod of the namespace that no policy names
    for target in (user, database):
        outsider = attempt(probe, target)
        assert outsider.refused, f"an unlabelled pod reached {target}: NetworkPolicies not enforced? {outsider}"

    # 2. the gateway's labels: the user service lets it in, the database does not
    relabel(cluster, probe, selector_labels(cluster, "gateway"))
    as_gateway = until_connected(probe, user, "/healthz")
    assert as_gateway.connected and as_gateway.http_code == "200", as_gateway
    to_database = attempt(probe, database)
    assert to_database.refused, f"a pod with the gateway's labels reached the database: {to_database}"

    # 3. catalog's labels: catalog -> user and catalog -> database are both edges of the chart
    relabel(cluster, probe, selector_labels(cluster, "catalog"))
    as_catalog = until_connected(probe, database)
    assert as_catalog.connected, f"a pod with catalog's labels could not reach the database: {as_catalog}"
    to_user = attempt(probe, user, "/healthz")
    assert to_user.connected and to_user.http_code == "200", to_user
