"""The console's Kubernetes controller against an in-memory Kubernetes API (the objects it reads,
the calls it makes): replicas from the release's pods, servers from their workloads, the cache
switch as a rolling update, a kill as a pod deleted, faults as a scale to zero and back, and
load runs as Jobs made from the chart's template. The real API is exercised by
tests/cluster/test_console.py."""
from __future__ import annotations

import json
from types import SimpleNamespace as NS

import pytest
from kubernetes.client.exceptions import ApiException

from services.console.actions import Console
from services.console.kube_controller import LOAD_ANNOTATION, KubernetesController

RELEASE = {"app.kubernetes.io/name": "scaleshop", "app.kubernetes.io/instance": "shop"}
TEMPLATE = {
    "apiVersion": "batch/v1", "kind": "Job",
    "metadata": {"generateName": "shop-console-load-",
                 "labels": {**RELEASE, "app.kubernetes.io/component": "console-load", "helm.sh/chart": "scaleshop-1"}},
    "spec": {"backoffLimit": 0, "template": {"spec": {"containers": [
        {"name": "loadgen", "command": ["python", "-m", "loadgen", "run"], "args": []}]}}},
}


def pod(name: str, component: str, phase: str = "Running", ready: bool = True, deleting: bool = False) -> NS:
    return NS(metadata=NS(name=name, labels={**RELEASE, "app.kubernetes.io/component": component},
                          deletion_timestamp="now" if deleting else None),
              status=NS(phase=phase, conditions=[NS(type="Ready", status="True" if ready else "False")]))


def workload(replicas: int, ready: int, env: list | None = None) -> NS:
    return NS(spec=NS(replicas=replicas, template=NS(spec=NS(containers=[NS(name="c", env=env)]))),
              status=NS(ready_replicas=ready))


class FakeKubernetes:
    """CoreV1Api, AppsV1Api and BatchV1Api in one, over dicts; `calls` records every change."""

    def __init__(self) -> None:
        self.pods = [pod("shop-catalog-a", "catalog"), pod("shop-catalog-b", "catalog", ready=False),
                     pod("shop-user-a", "user"), pod("shop-worker-a", "worker", deleting=True),
                     pod("shop-gateway-a", "gateway")]
        self.workloads = {"shop-memcached": workload(1, 1), "shop-kafka": workload(1, 0),
                          "shop-catalog": workload(2, 2, env=[NS(name="OTHER", value="x")])}
        self.jobs: list[NS] = []
        self.calls: list[tuple] = []
        self.selectors: list[str] = []

    # CoreV1Api
    def list_namespaced_pod(self, namespace, label_selector):
        self.selectors.append(label_selector)
        assert namespace == "ns"
        return NS(items=[p for p in self.pods if p.metadata.labels["app.kubernetes.io/component"] in
                         label_selector.split(" in (")[1].rstrip(")").split(",")])

    def delete_namespaced_pod(self, name, namespace, grace_period_seconds):
        self.calls.append(("delete pod", name, grace_period_seconds))

    # AppsV1Api
    def _read(self, name, namespace):
        if name not in self.workloads:
            raise ApiException(status=404, reason="Not Found")
        return self.workloads[name]

    read_namespaced_deployment = read_namespaced_stateful_set = _read
    read_namespaced_deployment_scale = read_namespaced_stateful_set_scale = _read

    def patch_namespaced_deployment_scale(self, name, namespace, body):
        self.calls.append(("scale deployment", name, body["spec"]["replicas"]))
        self.workloads[name].spec.replicas = body["spec"]["replicas"]

    def patch_namespaced_stateful_set_scale(self, name, namespace, body):
        self.calls.append(("scale statefulset", name, body["spec"]["replicas"]))
        self.workloads[name].spec.replicas = body["spec"]["replicas"]

    # BatchV1Api
    def create_namespaced_job(self, namespace, body):
        name = body["metadata"]["generateName"] + str(len(self.jobs))
        job = NS(metadata=NS(name=name, annotations=body["metadata"].get("annotations"), deletion_timestamp=None,
                             creation_timestamp=len(self.jobs), labels=body["metadata"]["labels"]),
                 status=NS(succeeded=None, failed=None, conditions=None), body=body)
        self.jobs.append(job)
        self.calls.append(("create job", name))
        return job

    def list_namespaced_job(self, namespace, label_selector):
        self.selectors.append(label_selector)
        wanted = dict(pair.split("=") for pair in label_selector.split(","))
        return NS(items=[j for j in self.jobs if wanted.items() <= j.metadata.labels.items()])

    def delete_namespaced_job(self, name, namespace, propagation_policy):
        self.calls.append(("delete job", name, propagation_policy))
        next(j for j in self.jobs if j.metadata.name == name).metadata.deletion_timestamp = "now"


class FakePlatform:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def scale(self, service, count):
        self.calls.append(("scale", service, count))

    def restart_with(self, service, settings):
        self.calls.append(("restart", service, settings))


@pytest.fixture
def kube() -> FakeKubernetes:
    return FakeKubernetes()


@pytest.fixture
def platform() -> FakePlatform:
    return FakePlatform()


@pytest.fixture
def controller(kube, platform) -> KubernetesController:
    return KubernetesController(platform, kube, kube, kube, "ns", "shop-", "http://shop-gateway.ns.svc:8080",
                                TEMPLATE, cache_default="objects,queries")


def test_replicas_are_the_release_services_pods_with_their_state_and_readiness(controller, kube):
    assert controller.replicas() == {
        "user": [{"name": "shop-user-a", "state": "running", "ready": True}],
        "catalog": [{"name": "shop-catalog-a", "state": "running", "ready": True},
                    {"name": "shop-catalog-b", "state": "running", "ready": False}],
        "worker": [{"name": "shop-worker-a", "state": "terminating", "ready": True}]}
    assert kube.selectors == ["app.kubernetes.io/name=scaleshop,app.kubernetes.io/instance=shop,"
                              "app.kubernetes.io/component in (user,catalog,worker)"]


def test_servers_say_running_starting_stopped_or_external(controller, kube):
    assert controller.servers() == {"memcached": "running", "kafka": "starting"}
    kube.workloads["shop-memcached"].spec.replicas = 0
    del kube.workloads["shop-kafka"]
    assert controller.servers() == {"memcached": "stopped", "kafka": "external"}


def test_the_cache_switch_rolls_the_catalog_and_its_setting_is_read_back_from_the_deployment(controller, kube,
                                                                                              platform):
    assert controller.cache_patterns() == "objects,queries"  # not on the Deployment: the release's setting
    controller.set_cache_patterns("")
    assert platform.calls == [("restart", "catalog", {"CACHE_PATTERNS": ""})]
    kube.workloads["shop-catalog"].spec.template.spec.containers[0].env.append(NS(name="CACHE_PATTERNS", value=""))
    assert controller.cache_patterns() == ""


def test_scale_goes_through_the_platform(controller, platform):
    controller.scale("worker", 3)
    assert platform.calls == [("scale", "worker", 3)]


def test_a_kill_deletes_a_running_replicas_pod_at_once_and_nothing_else(controller, kube):
    controller.kill_replica("shop-catalog-b")
    assert kube.calls == [("delete pod", "shop-catalog-b", 0)]
    for name in ("shop-gateway-a", "shop-worker-a", "nobody"):  # not a service's, being deleted, unknown
        with pytest.raises(ValueError):
            controller.kill_replica(name)
    assert len(kube.calls) == 1


def test_faults_scale_memcached_and_kafka_to_zero_and_back_to_what_they_had(controller, kube):
    kube.workloads["shop-memcached"].spec.replicas = 2
    controller.pause_memcached()
    with pytest.raises(ValueError, match="already scaled to zero"):
        controller.pause_memcached()
    controller.resume_memcached()
    controller.stop_kafka()
    controller.start_kafka()
    assert kube.calls == [("scale deployment", "shop-memcached", 0), ("scale deployment", "shop-memcached", 2),
                          ("scale statefulset", "shop-kafka", 0), ("scale statefulset", "shop-kafka", 1)]
    del kube.workloads["shop-kafka"]
    with pytest.raises(ValueError, match="not part of this release"):
        controller.stop_kafka()


def test_a_load_run_is_a_job_from_the_template_with_the_runs_arguments(controller, kube):
    assert controller.load() is None
    name = controller.start_load(25.0, "product=70,browse=30", 60)
    job = kube.jobs[0].body
    assert name == "shop-console-load-0"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "--target", "http://shop-gateway.ns.svc:8080", "--rate", "25", "--mix", "product=70,browse=30",
        "--duration", "60", "--no-report", "--quiet", "--out", "/tmp/console-load"]
    assert job["spec"]["activeDeadlineSeconds"] == 180
    assert json.loads(job["metadata"]["annotations"][LOAD_ANNOTATION]) == {
        "rate": 25.0, "mix": "product=70,browse=30", "duration": 60}
    assert TEMPLATE["spec"]["template"]["spec"]["containers"][0]["args"] == []  # the template is not changed
    assert controller.load() == {"pid": name, "rate": 25.0, "mix": "product=70,browse=30", "duration": 60}
    with pytest.raises(ValueError, match="already running"):
        controller.start_load(5, "browse=1", 10)
    assert kube.selectors[-1] == ("app.kubernetes.io/name=scaleshop,app.kubernetes.io/instance=shop,"
                                  "app.kubernetes.io/component=console-load")

    assert controller.stop_load() is True
    assert kube.calls[-1] == ("delete job", name, "Background")
    assert controller.load() is None and controller.stop_load() is False


def test_a_finished_load_run_is_not_running(controller, kube):
    controller.start_load(5, "browse=1", 10)
    kube.jobs[0].status.succeeded = 1
    assert controller.load() is None
    controller.start_load(5, "browse=1", 10)
    kube.jobs[1].status.conditions = [NS(type="Failed", status="True")]
    assert controller.load() is None


def test_the_console_drives_it_and_audits_each_action(controller, kube, tmp_path):
    timers: list = []
    console = Console(controller, tmp_path / "audit.jsonl", background=lambda work: work(),
                      timer=lambda seconds, action: timers.append(action))
    console.pause_memcached({"seconds": 5})
    timers.pop()()  # five seconds later
    console.kill({"replica": "shop-user-a"})
    assert [c[:2] for c in kube.calls] == [("scale deployment", "shop-memcached"),
                                           ("scale deployment", "shop-memcached"), ("delete pod", "shop-user-a")]
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(line["action"], line["result"]) for line in lines] == [
        ("pause-memcached", "ok"), ("resume-memcached", "ok"), ("kill", "ok")]
