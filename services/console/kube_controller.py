"""The console's Controller for a release in Kubernetes: the Kubernetes API, through the console's
own ServiceAccount, whose Role (charts/scaleshop/templates/console.yaml) is limited to the
release's namespace and to the verbs used here.

- replicas: the pods of the user, catalog and worker Deployments, with their readiness;
- scale and the cache switch: the load generator's own KubePlatform (loadgen/platform.py): a scale
  waits until the gateway serves the service from exactly its ready pods, the cache switch sets
  CACHE_PATTERNS on the catalog Deployment (a rolling update) and waits for it the same way;
- kill a replica: its pod deleted at once (grace 0), like a node or a container dying; its
  Deployment makes another;
- pause memcached / stop Kafka for N seconds: the memcached Deployment / Kafka StatefulSet scaled
  to zero, then back to the replicas it had;
- a load run: a Job made from the chart's template (LOAD_JOB_TEMPLATE: the pod of every other
  Job of the release, rendered by the chart), running `python -m loadgen run` against the
  in-cluster gateway; stopped by deleting the Job.
"""
from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from loadgen.platform import pod_ready

from .actions import SCALABLE as SERVICES

LOAD_ANNOTATION = "scaleshop.io/console-load"  # the run's rate, mix and duration, as JSON
LOAD_DEADLINE_MARGIN_S = 120  # a load Job may run this long past its duration (start, summary) before it is ended
LOAD_OUT = "/tmp/console-load"  # the run's result.json, in the pod's /tmp (the console keeps no report)
SELECTOR_KEYS = ("app.kubernetes.io/name", "app.kubernetes.io/instance")


class Platform(Protocol):
    """What the console needs of loadgen.platform.KubePlatform."""

    def scale(self, service: str, count: int) -> None: ...

    def restart_with(self, service: str, settings: dict[str, str]) -> None: ...


class KubernetesController:
    """A release's Deployments, pods and Jobs in one namespace (see the module's docstring)."""

    def __init__(self, platform: Platform, core: Any, apps: Any, batch: Any, namespace: str, prefix: str,
                 gateway_url: str, load_job: Mapping[str, Any], cache_default: str,
                 log: Callable[[str], None] = lambda msg: None):
        self.platform, self.core, self.apps, self.batch = platform, core, apps, batch
        self.namespace, self.prefix, self.gateway_url = namespace, prefix, gateway_url
        self.load_job, self.cache_default, self.log = load_job, cache_default, log
        labels = load_job["metadata"]["labels"]
        self._release = {key: labels[key] for key in SELECTOR_KEYS}
        self._load_labels = {**self._release, "app.kubernetes.io/component": labels["app.kubernetes.io/component"]}
        self._scaled_to_zero: dict[str, int] = {}  # memcached / kafka: the replicas they had
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, log: Callable[[str], None] = print
                 ) -> KubernetesController:
        """In a pod of the chart: NAMESPACE, DEPLOYMENT_PREFIX, GATEWAY_URL, LOAD_JOB_TEMPLATE and
        CACHE_PATTERNS (the catalog's setting while the console has not changed it)."""
        from kubernetes import client

        from loadgen.platform import KubePlatform
        from loadgen.target import parse_target

        platform = KubePlatform(parse_target(environ["GATEWAY_URL"]), environ["NAMESPACE"],
                                environ["DEPLOYMENT_PREFIX"], ready_timeout=300.0, log=log)
        template = json.loads(Path(environ["LOAD_JOB_TEMPLATE"]).read_text())
        return cls(platform, client.CoreV1Api(), client.AppsV1Api(), client.BatchV1Api(), environ["NAMESPACE"],
                   environ["DEPLOYMENT_PREFIX"], environ["GATEWAY_URL"], template,
                   environ.get("CACHE_PATTERNS", "objects,queries"), log)

    def _selector(self, labels: Mapping[str, str]) -> str:
        return ",".join(f"{key}={value}" for key, value in labels.items())

    # ---- the state --------------------------------------------------------------------------

    def replicas(self) -> dict[str, list[dict]]:
        selector = self._selector(self._release) + f",app.kubernetes.io/component in ({','.join(SERVICES)})"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        out: dict[str, list[dict]] = {service: [] for service in SERVICES}
        for pod in sorted(pods, key=lambda p: p.metadata.name):
            service = (pod.metadata.labels or {}).get("app.kubernetes.io/component")
            if service in out:
                out[service].append({"name": pod.metadata.name, "state": _pod_state(pod), "ready": pod_ready(pod)})
        return out

    def servers(self) -> dict[str, str]:
        """memcached and kafka: "running" (a ready replica), "starting", "stopped" (scaled to zero)
        or "external" (not part of the release)."""
        return {"memcached": self._server_state(self.apps.read_namespaced_deployment, "memcached"),
                "kafka": self._server_state(self.apps.read_namespaced_stateful_set, "kafka")}

    def _server_state(self, read: Callable[..., Any], server: str) -> str:
        try:
            workload = read(self.prefix + server, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return "external"
            raise
        if not workload.spec.replicas:
            return "stopped"
        return "running" if (workload.status.ready_replicas or 0) > 0 else "starting"

    def cache_patterns(self) -> str:
        """CACHE_PATTERNS on the catalog Deployment's container (the console's switch), else the
        release's setting (its ConfigMap, as the console was given it)."""
        deployment = self.apps.read_namespaced_deployment(self.prefix + "catalog", self.namespace)
        for var in deployment.spec.template.spec.containers[0].env or []:
            if var.name == "CACHE_PATTERNS" and var.value is not None:
                return str(var.value)
        return self.cache_default

    # ---- actions ----------------------------------------------------------------------------

    def scale(self, service: str, count: int) -> None:
        self.platform.scale(service, count)

    def set_cache_patterns(self, patterns: str) -> None:
        self.platform.restart_with("catalog", {"CACHE_PATTERNS": patterns})

    def kill_replica(self, name: str) -> None:
        running = {r["name"] for rs in self.replicas().values() for r in rs if r["state"] == "running"}
        if name not in running:
            raise ValueError(f"no running replica '{name}'")
        self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)

    def pause_memcached(self) -> None:
        self._to_zero("memcached", self.apps.read_namespaced_deployment_scale,
                      self.apps.patch_namespaced_deployment_scale)

    def resume_memcached(self) -> None:
        self._back("memcached", self.apps.patch_namespaced_deployment_scale)

    def stop_kafka(self) -> None:
        self._to_zero("kafka", self.apps.read_namespaced_stateful_set_scale,
                      self.apps.patch_namespaced_stateful_set_scale)

    def start_kafka(self) -> None:
        self._back("kafka", self.apps.patch_namespaced_stateful_set_scale)

    def _to_zero(self, server: str, read: Callable[..., Any], patch: Callable[..., Any]) -> None:
        name = self.prefix + server
        try:
            replicas = read(name, self.namespace).spec.replicas or 0
        except ApiException as exc:
            if exc.status == 404:
                raise ValueError(f"{server} is not part of this release") from None
            raise
        if replicas == 0:
            raise ValueError(f"{server} is already scaled to zero")
        self._scaled_to_zero[server] = replicas
        self.log(f"scaling {name} to 0 (from {replicas})")
        patch(name, self.namespace, {"spec": {"replicas": 0}})

    def _back(self, server: str, patch: Callable[..., Any]) -> None:
        replicas = self._scaled_to_zero.pop(server, 1)
        self.log(f"scaling {self.prefix + server} back to {replicas}")
        patch(self.prefix + server, self.namespace, {"spec": {"replicas": replicas}})

    # ---- load runs --------------------------------------------------------------------------

    def start_load(self, rate: float, mix: str, duration: int) -> str:
        with self._lock:
            if self.load() is not None:
                raise ValueError("a load run is already running: stop it first")
            job = copy.deepcopy(dict(self.load_job))
            job["metadata"].setdefault("annotations", {})[LOAD_ANNOTATION] = json.dumps(
                {"rate": rate, "mix": mix, "duration": duration})
            job["spec"]["activeDeadlineSeconds"] = duration + LOAD_DEADLINE_MARGIN_S
            job["spec"]["template"]["spec"]["containers"][0]["args"] = [
                "--target", self.gateway_url, "--rate", f"{rate:g}", "--mix", mix, "--duration", str(duration),
                "--no-report", "--quiet", "--out", LOAD_OUT]
            created = self.batch.create_namespaced_job(self.namespace, job)
            self.log(f"load run started: Job {created.metadata.name}")
            return str(created.metadata.name)

    def _running_loads(self) -> list[Any]:
        jobs = self.batch.list_namespaced_job(self.namespace, label_selector=self._selector(self._load_labels)).items
        running = [job for job in jobs if job.metadata.deletion_timestamp is None and not _job_finished(job)]
        return sorted(running, key=lambda job: job.metadata.creation_timestamp or 0)

    def load(self) -> dict | None:
        running = self._running_loads()
        if not running:
            return None
        job = running[-1]
        run = json.loads((job.metadata.annotations or {}).get(LOAD_ANNOTATION, "{}"))
        return {"pid": job.metadata.name, **run}

    def stop_load(self) -> bool:
        with self._lock:
            running = self._running_loads()
            for job in running:  # the pods go with their Job
                self.batch.delete_namespaced_job(job.metadata.name, self.namespace, propagation_policy="Background")
            return bool(running)


def _pod_state(pod: Any) -> str:
    if pod.metadata.deletion_timestamp is not None:
        return "terminating"
    return str(pod.status.phase or "Pending").lower()


def _job_finished(job: Any) -> bool:
    status = job.status
    if status is None:
        return False
    if status.succeeded or status.failed:
        return True
    return any(c.type in ("Complete", "Failed") and c.status == "True" for c in status.conditions or [])
