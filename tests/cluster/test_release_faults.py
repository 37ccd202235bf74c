"""`make test-cluster`, part two: faults and operations a release must survive, on the installed release.

Only the Kubernetes API (client and `kubectl`), `helm` and HTTP on GATEWAY_URL (tests/cluster/conftest.py):

1. a worker pod deleted while a 10,000-product import runs on the workers (10 chunks through
   Kafka), the job still running when the pod is gone: the import succeeds, every product once;
2. a `helm upgrade` that changes one setting of the services' config, and the upgrade back to the
   release's own values, each under an open-loop read load: every user, catalog and worker pod is
   replaced, and every read is a 200;
3. the PodDisruptionBudgets: one per workload, and the Eviction API honours catalog's: with its two
   pods serving, one eviction is allowed and the next, at once, refused with 429, under an open-loop
   read load with zero failed reads;
4. the HorizontalPodAutoscaler: turned on for catalog by a `helm upgrade`, it scales catalog out
   under an open-loop read load and back to its minimum after it; turned off again after.

The release is left as found: replica counts are restored, and the upgrade back re-applies the
release's user-supplied values (`helm get values`) exactly. Each load's counts are printed at the end.
"""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.conftest import (
    KUBE_CONTEXT,
    LOAD_REPORTS,
    NAMESPACE,
    RELEASE,
    ROLLOUT_TIMEOUT,
    TIMEOUT,
    Account,
    Cluster,
    OpenLoopLoad,
    Periodic,
    kubectl,
)
from tests.cluster.test_release import LOAD_RATE, SERVED_BY_TIMEOUT

HELM = os.environ.get("HELM", "helm")
CHART = Path(__file__).resolve().parents[2] / "charts" / "scaleshop"
IMPORT_ITEMS = 10000          # the most one import takes: 10 chunks of the worker's CHUNK_ITEMS (1,000)
IMPORT_TIMEOUT = 300
SERVICES = ("user", "catalog", "worker")
# The setting the upgrade changes: harmless, read by every service, not its default.
CHANGED_SETTING = ("LOG_LEVEL", "DEBUG")


def report(*parts: str) -> None:
    """Print a line (and its continuation lines) and keep it for the run's summary, beside the loads'."""
    line = "\n  ".join(parts)
    LOAD_REPORTS.append(line)
    print(line, flush=True)


def get(url: str, **kwargs) -> requests.Response:
    return requests.get(url, timeout=TIMEOUT, **kwargs)


def job_status(gateway: str, owner: Account, status_url: str) -> dict:
    response = get(f"{gateway}{status_url}", headers=owner.auth)
    assert response.status_code == 200, response.text
    return response.json()


# ---- 1. a worker deleted mid-import -----------------------------------------------------------

def test_a_worker_pod_deleted_mid_import_the_import_completes_exactly_once(gateway, cluster: Cluster,
                                                                            restore_replicas, seller):
    worker = cluster.deployment_name("worker")
    restore_replicas(worker)
    replicas = cluster.replicas(worker)
    workers = cluster.wait_until_only(worker, replicas)
    assert replicas >= 2, f"{worker} has {replicas} replica(s): the import needs another worker to finish it"
    category = f"ck{uuid.uuid4().hex[:10]}"
    items: list[dict[str, Any]] = [{"name": f"Chunked {i:04d}", "description": "Imported while a worker is deleted.",
              "price_cents": 100 + i, "currency": "EUR", "category": category, "stock": 1}
             for i in range(IMPORT_ITEMS)]
    started = time.monotonic()
    accepted = requests.post(f"{gateway}/v1/imports", json=items, headers=seller.auth, timeout=60)
    posted_in = time.monotonic() - started
    assert accepted.status_code == 202, accepted.text
    status_url = accepted.json()["status_url"]
    job_id = accepted.json()["job_id"]

    deadline = time.monotonic() + IMPORT_TIMEOUT
    job = job_status(gateway, seller, status_url)
    while job["status"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.1)
        job = job_status(gateway, seller, status_url)
    assert job["status"] == "running", job
    # The pod that split the import ran its first part; else any worker.
    splitters = [name for name in sorted(workers)
                 if f"{job_id} split into" in kubectl("logs", name, "--since=5m")]
    victim = (splitters or sorted(workers))[0]
    # Its log to the end, for the report: which parts it finished before it stopped.
    victim_log = subprocess.Popen(["kubectl", "--context", KUBE_CONTEXT, "-n", NAMESPACE, "logs", "-f", victim],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    kubectl("delete", "pod", victim, "--wait=false")
    deleted_at = time.monotonic()
    at_deletion = job_status(gateway, seller, status_url)
    report(f"[worker deleted mid-import] deleted {victim} ({'it split the job' if splitters else 'any worker'}) "
          f"{deleted_at - started:.1f} s after the POST (answered in {posted_in:.1f} s); "
          f"job then {at_deletion['status']}, progress {at_deletion['progress']}")
    assert at_deletion["status"] == "running", f"the import ended before a worker could be deleted: {at_deletion}"
    while victim in {str(pod.metadata.name) for pod in cluster.pods(worker)} and time.monotonic() < deadline:
        time.sleep(0.1)
    gone_at = time.monotonic()
    at_gone = job_status(gateway, seller, status_url)
    report(f"[worker deleted mid-import] {victim} gone {gone_at - deleted_at:.1f} s after the deletion; job then "
          f"{at_gone['status']}, progress {at_gone['progress']}")
    try:
        victim_lines = [line for line in victim_log.communicate(timeout=10)[0].splitlines() if job_id in line]
    except subprocess.TimeoutExpired:
        victim_log.kill()
        victim_lines = [line for line in victim_log.communicate()[0].splitlines() if job_id in line]
    report(f"[worker deleted mid-import] {victim}'s log lines about the job: {len(victim_lines)}",
          *victim_lines[-12:])
    assert at_gone["status"] == "running", f"the import ended before the deleted worker was gone: {at_gone}"

    while job["status"] not in {"succeeded", "failed"} and time.monotonic() < deadline:
        time.sleep(0.5)
        job = job_status(gateway, seller, status_url)
    finished_at = time.monotonic()
    after = cluster.wait_until_only(worker, replicas)
    listed = get(f"{gateway}/v1/products", params={"category": category, "per_page": 1}).json()
    result = job.get("result") or {}
    report(f"[worker deleted mid-import] job {job['status']} {finished_at - started:.1f} s after the POST "
          f"({finished_at - deleted_at:.1f} s after the deletion); result imported "
          f"{result.get('imported')}, rejected {len(result.get('rejected', []))}, "
          f"progress {job['progress']}; products in the category {listed.get('total')}; "
          f"workers now {sorted(after)}")
    assert job["status"] == "succeeded", job
    assert job["result"]["imported"] == IMPORT_ITEMS and job["result"]["rejected"] == [], job["result"]
    assert job["progress"] == {"done": IMPORT_ITEMS, "total": IMPORT_ITEMS}, job
    assert listed["total"] == IMPORT_ITEMS, listed
    categories = get(f"{gateway}/v1/categories").json()["items"]
    assert [c["product_count"] for c in categories if c["slug"] == category] == [IMPORT_ITEMS], categories
    assert victim not in after, after


# ---- 2. a config change rolled out by helm under load -------------------------------------------

def helm(*args: str) -> str:
    """Run helm on the release's context and namespace; fail the test with its output on error."""
    command = [HELM, "--kube-context", KUBE_CONTEXT, "-n", NAMESPACE, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=ROLLOUT_TIMEOUT * 3)
    assert result.returncode == 0, f"{' '.join(command)} -> {result.returncode}: {result.stdout}{result.stderr}"
    return result.stdout


def pod_uids(cluster: Cluster, deployments: list[str]) -> dict[str, str]:
    """uid -> name of the serving pods of `deployments`."""
    return {str(pod.metadata.uid): str(pod.metadata.name) for deployment in deployments
            for pod in cluster.pods(deployment) if str(pod.metadata.name) in cluster.serving_pod_names(deployment)}


def upgrade_under_load(gateway: str, cluster: Cluster, paths: list[str], label: str, *helm_args: str) -> None:
    """`helm upgrade --wait` under an open-loop read load: every service's pods replaced, every read a 200."""
    deployments = [cluster.deployment_name(service) for service in SERVICES]
    replicas = {deployment: cluster.replicas(deployment) for deployment in deployments}
    for deployment, count in replicas.items():
        cluster.wait_until_only(deployment, count)
    before = pod_uids(cluster, deployments)
    with OpenLoopLoad(gateway, paths, rate=LOAD_RATE, max_seconds=ROLLOUT_TIMEOUT * 3) as load:
        time.sleep(3)
        upgrade_started = time.monotonic()
        helm("upgrade", RELEASE, str(CHART), "--wait", f"--timeout={ROLLOUT_TIMEOUT}s", *helm_args)
        upgraded_in = time.monotonic() - upgrade_started
        after_names = {deployment: cluster.wait_until_only(deployment, count) for deployment, count in replicas.items()}
        settled_in = time.monotonic() - upgrade_started
        after = pod_uids(cluster, deployments)
        new_http = {name for deployment in deployments[:2] for name in after_names[deployment]}
        seen = load.wait_until_served_by(new_http, upgrade_started, SERVED_BY_TIMEOUT)
        time.sleep(3)
    load.summary(f"{label}: {len(before)} pods -> {len(set(after) - set(before))} new; helm --wait "
                 f"{upgraded_in:.0f} s, old pods gone {settled_in:.0f} s")
    assert not set(before) & set(after), f"pods not replaced: {sorted(before[u] for u in set(before) & set(after))}"
    assert len(after) == sum(replicas.values()), after
    assert new_http <= seen, f"new user/catalog pods {sorted(new_http)}; answered: {sorted(seen)}"
    assert not load.failures(), load.failures()[:20]
    assert len(load.answers()) == load.sent > LOAD_RATE * 10


def setting(cluster: Cluster, name: str) -> dict[str, str]:
    """The value of setting `name` in each service's ConfigMap (<deployment>-config), by service."""
    return {service: kubectl("get", "configmap", f"{cluster.deployment_name(service)}-config",
                             "-o", f"jsonpath={{.data.{name}}}") for service in SERVICES}


@pytest.mark.timeout(8 * ROLLOUT_TIMEOUT)  # two upgrades under load, each awaiting the old pods' preStop sleep
def test_a_helm_upgrade_of_the_config_and_back_rolls_every_service_under_load_failing_no_read(
        gateway, cluster: Cluster, seller, product, tmp_path):
    name, value = CHANGED_SETTING
    original = setting(cluster, name)
    assert all(original.values()) and value not in original.values(), f"{name}: {original}: pick another change"
    release_values = tmp_path / "release-values.yaml"
    release_values.write_text(helm("get", "values", RELEASE, "-o", "yaml"))
    paths = [f"/v1/products/{product['id']}", f"/v1/products?category={product['category']}",
             f"/v1/users/{seller.id}"]
    try:
        upgrade_under_load(gateway, cluster, paths, f"helm upgrade {name}={value}",
                           "-f", str(release_values), "--set", f"config.{name}={value}")
        assert setting(cluster, name) == dict.fromkeys(SERVICES, value)
    finally:
        upgrade_under_load(gateway, cluster, paths, "helm upgrade back to the release's values",
                           "-f", str(release_values))
    assert setting(cluster, name) == original


# ---- 3. PodDisruptionBudgets -------------------------------------------------------------------

def evict(cluster: Cluster, pod: str) -> None:
    cluster.core.create_namespaced_pod_eviction(pod, NAMESPACE, client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod, namespace=NAMESPACE)))


def disruptions_allowed(name: str, timeout: float) -> int:
    """The budget's allowed disruptions once its controller has seen every pod (observedGeneration)."""
    policy = client.PolicyV1Api()
    deadline = time.monotonic() + timeout
    while True:
        budget: Any = policy.read_namespaced_pod_disruption_budget(name, NAMESPACE)
        allowed = int(budget.status.disruptions_allowed or 0)
        if allowed > 0 or time.monotonic() > deadline:
            return allowed
        time.sleep(0.5)


def test_every_workload_has_a_pod_disruption_budget_and_an_eviction_honours_catalogs(gateway, cluster: Cluster,
                                                                                      restore_replicas, product):
    selector = f"app.kubernetes.io/instance={RELEASE}"
    policy = client.PolicyV1Api()
    budgets: list[Any] = policy.list_namespaced_pod_disruption_budget(NAMESPACE, label_selector=selector).items
    workloads: list[Any] = [*cluster.apps.list_namespaced_deployment(NAMESPACE, label_selector=selector).items,
                 *cluster.apps.list_namespaced_stateful_set(NAMESPACE, label_selector=selector).items]
    covered = {str(w.metadata.name) for w in workloads for b in budgets
               if b.spec.selector.match_labels.items() <= w.spec.template.metadata.labels.items()}
    assert covered == {str(w.metadata.name) for w in workloads}, \
        f"workloads {sorted(str(w.metadata.name) for w in workloads)}; with a budget: {sorted(covered)}"

    catalog = cluster.deployment_name("catalog")
    restore_replicas(catalog)
    budget: Any = next(b for b in budgets if b.spec.selector.match_labels.items()
                  <= cluster.deployment(catalog).spec.template.metadata.labels.items())
    pods = sorted(cluster.wait_until_only(catalog, cluster.replicas(catalog)))
    assert len(pods) == 2, f"{catalog} runs {pods}: the test needs it at 2 replicas"
    assert disruptions_allowed(budget.metadata.name, ROLLOUT_TIMEOUT) == 1, budget.spec
    with OpenLoopLoad(gateway, [f"/v1/products/{product['id']}"], rate=LOAD_RATE) as load:
        time.sleep(3)
        evict(cluster, pods[0])
        with pytest.raises(ApiException) as refused:
            evict(cluster, pods[1])
        refused_at = time.monotonic()
        allowed_again = disruptions_allowed(budget.metadata.name, ROLLOUT_TIMEOUT)
        allowed_in = time.monotonic() - refused_at
        serving = cluster.wait_until_only(catalog, 2)
        time.sleep(3)
    load.summary(f"{pods[0]} evicted, {pods[1]} refused")
    report(f"[eviction] {pods[0]} evicted; {pods[1]} refused with {refused.value.status} "
          f"({budget.metadata.name}: {budget.spec.to_dict()}); allowed {allowed_again} again {allowed_in:.0f} s "
          f"later (the replacement ready); the evicted pod gone after {time.monotonic() - refused_at - 3:.0f} s; "
          f"serving {sorted(serving)}")
    assert refused.value.status == 429, f"{refused.value.status}: {refused.value.body}"
    assert "disruption budget" in str(refused.value.body), refused.value.body
    assert pods[1] in serving and pods[0] not in serving, serving
    assert allowed_again == 1
    assert not load.failures(), load.failures()[:20]
    assert len(load.answers()) == load.sent > LOAD_RATE * 10


# ---- 4. the HorizontalPodAutoscaler ------------------------------------------------------------

HPA_LOAD_RATE = 90.0          # reads per second: under the edge's 6,000 reads per minute per client
SCALE_OUT_TIMEOUT = 240
SCALE_IN_TIMEOUT = 600        # the HPA's default scale-down stabilization is 300 s


def catalog_autoscaler(cluster: Cluster) -> Any:
    """The release's HorizontalPodAutoscaler of catalog, or None."""
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=catalog"
    found = client.AutoscalingV2Api().list_namespaced_horizontal_pod_autoscaler(NAMESPACE, label_selector=selector)
    return found.items[0] if found.items else None


def wait_for_autoscaler(cluster: Cluster, ready: Any, timeout: float) -> Any:
    """Poll catalog's autoscaler until `ready(hpa)`; fail with its status after `timeout`."""
    deadline = time.monotonic() + timeout
    while not ready(hpa := catalog_autoscaler(cluster)):
        assert time.monotonic() < deadline, f"after {timeout} s: {hpa.status if hpa else 'no autoscaler'}"
        time.sleep(1)
    return hpa


class ReplicaWatch(Periodic):
    """The distinct replica counts (spec.replicas) a Deployment has while the block runs, in order."""

    def __init__(self, cluster: Cluster, deployment: str):
        super().__init__(0.2, name="replica-watch")
        self.cluster, self.deployment, self.seen = cluster, deployment, [cluster.replicas(deployment)]

    def tick(self) -> None:
        count = self.cluster.replicas(self.deployment)
        if count != self.seen[-1]:
            self.seen.append(count)


@pytest.mark.timeout(SCALE_OUT_TIMEOUT + SCALE_IN_TIMEOUT + 4 * ROLLOUT_TIMEOUT)
def test_the_autoscaler_scales_catalog_out_under_load_and_back(gateway, cluster: Cluster, restore_replicas,
                                                                product, tmp_path):
    catalog = cluster.deployment_name("catalog")
    restore_replicas(catalog)
    replicas = cluster.replicas(catalog)
    cluster.wait_until_only(catalog, replicas)
    assert catalog_autoscaler(cluster) is None, "autoscaling is on already: the test turns it on itself"
    release_values = tmp_path / "release-values.yaml"
    release_values.write_text(helm("get", "values", RELEASE, "-o", "yaml"))
    paths = [f"/v1/products/{product['id']}", f"/v1/products?category={product['category']}"]
    try:
        with ReplicaWatch(cluster, catalog) as enabling:
            helm("upgrade", RELEASE, str(CHART), "--wait", f"--timeout={ROLLOUT_TIMEOUT}s",
                 "-f", str(release_values), "--set", "catalog.autoscaling.enabled=true")
            hpa = wait_for_autoscaler(cluster, lambda h: h and h.status.current_metrics, ROLLOUT_TIMEOUT)
        minimum, target = hpa.spec.min_replicas, hpa.spec.metrics[0].resource.target.average_utilization
        idle = hpa.status.current_metrics[0].resource.current.average_utilization
        with OpenLoopLoad(gateway, paths, rate=HPA_LOAD_RATE, max_seconds=SCALE_OUT_TIMEOUT) as load:
            started = time.monotonic()
            hpa = wait_for_autoscaler(cluster, lambda h: h.status.desired_replicas > minimum, SCALE_OUT_TIMEOUT)
            decided_in = time.monotonic() - started
            busy = hpa.status.current_metrics[0].resource.current.average_utilization
            out = hpa.status.desired_replicas
            serving = cluster.wait_until_only(catalog, cluster.replicas(catalog))
            scaled_out_in = time.monotonic() - started
            seen = load.wait_until_served_by(serving, started, SERVED_BY_TIMEOUT)
            all_answered_in = time.monotonic() - started
        load.summary(f"HPA {minimum} -> {out} catalog replicas (CPU target {target}%, idle {idle}%, "
                     f"under load {busy}%)")
        stopped = time.monotonic()
        hpa = wait_for_autoscaler(cluster, lambda h: h.status.desired_replicas == minimum, SCALE_IN_TIMEOUT)
        back = cluster.wait_until_only(catalog, minimum, SCALE_IN_TIMEOUT)
        scaled_in_in = time.monotonic() - stopped
        report(f"[HPA] catalog {minimum} -> {len(serving)} serving pods: decided {decided_in:.0f} s and serving "
              f"{scaled_out_in:.0f} s after the load began ({HPA_LOAD_RATE:.0f} reads/s), all answering after "
              f"{all_answered_in:.0f} s; back to {len(back)} "
              f"{scaled_in_in:.0f} s after it stopped; CPU {idle}% idle, {busy}% under load (target {target}%); "
              f"replicas while autoscaling was enabled: {enabling.seen}")
        assert min(enabling.seen) >= replicas, f"enabling autoscaling set catalog's replicas {enabling.seen}"
        assert len(serving) > minimum and serving <= seen, f"serving {sorted(serving)}; answered {sorted(seen)}"
        assert not load.failures(), load.failures()[:20]
        assert len(back) == minimum
    finally:
        helm("upgrade", RELEASE, str(CHART), "--wait", f"--timeout={ROLLOUT_TIMEOUT}s", "-f", str(release_values))
        cluster.wait_until_only(catalog, replicas)
    assert catalog_autoscaler(cluster) is None
