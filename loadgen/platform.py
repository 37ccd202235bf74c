"""Where the replicas run: the local stack (its own Stack API) or Kubernetes (Deployments).

Both give the experiments the same four operations: how many replicas a service has,
scale it (and wait until the new ones are ready and served), restart it with other environment
settings (CACHE_PATTERNS), and describe its CPU limits.

On Kubernetes "ready" is not "served": the gateway finds replicas through the cluster's DNS,
so a new pod gets its first request only after DNS caches and the gateway re-resolve (up to
about 35 s with kubeadm's and kind's CoreDNS), and a leaving pod keeps answering in its preStop
sleep until then. A measurement taken in between would be credited to the wrong replica
count, so a scale waits until the gateway's answers (their `X-Served-By`) come from exactly
the Deployment's ready pods.
"""
from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .target import Target, TargetError, UsageError

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class Platform:
    name = "?"

    def replicas(self, service: str) -> int:
        raise NotImplementedError

    def scale(self, service: str, count: int) -> None:
        raise NotImplementedError

    def env(self, service: str) -> dict[str, str]:
        """The service's settings that experiments change (CACHE_PATTERNS), as they are now."""
        raise NotImplementedError

    def restart_with(self, service: str, settings: dict[str, str]) -> None:
        raise NotImplementedError

    def cpu_limits(self, service: str) -> list[str]:
        return []

    def metrics(self, services: tuple[str, ...]) -> dict[str, float] | None:
        """Summed Prometheus counters of every replica of `services`, or None when not reachable."""
        return None


def make_platform(kind: str, target: Target, namespace: str | None, prefix: str, ready_timeout: float,
                  log: Callable[[str], None]) -> Platform:
    if kind == "auto":
        kind = "k8s" if os.environ.get("KUBERNETES_SERVICE_HOST") else "local"
    if kind == "k8s":
        return KubePlatform(target, namespace, prefix, ready_timeout, log)
    return LocalPlatform(target, log)


# ------------------------------------------------------------------------------------------
# The local stack
# ------------------------------------------------------------------------------------------

class LocalPlatform(Platform):
    name = "local"

    def __init__(self, target: Target, log: Callable[[str], None]):
        try:
            from stack.control import Stack
            from stack.procs import StackError
        except ImportError:
            raise UsageError("--platform local needs the repository's `stack` package (run from the repo root)") \
                from None
        self.StackError = StackError
        self.log = log
        try:
            self.stack = Stack(log=lambda msg: log(f"[stack] {msg}"))
        except StackError as exc:
            raise UsageError(str(exc)) from None
        gateway = self.stack.layout.gateway_port
        if target.port != gateway or target.host not in ("127.0.0.1", "localhost"):
            raise UsageError(
                f"the local stack (SCALESHOP_RUN_DIR={self.stack.layout.run_dir}) has its gateway on "
                f"127.0.0.1:{gateway}, but --target is {target}: set SCALESHOP_PORT_OFFSET / SCALESHOP_RUN_DIR "
                "to the stack you target")
        if "gateway" not in self.stack.infra:
            raise TargetError("the local stack is not running: `make up` first")

    def _reload(self) -> None:
        from stack.control import Stack
        self.stack = Stack(self.stack.layout, log=self.stack.log)

    def replicas(self, service: str) -> int:
        self._reload()
        return len([r for r in self.stack.service_replicas(service) if r.proc.alive()])

    def scale(self, service: str, count: int) -> None:
        self._reload()
        self.log(f"scaling {service} to {count} (local stack)")
        try:
            self.stack.scale(service, count)
        except self.StackError as exc:
            raise TargetError(f"could not scale {service} to {count}: {exc}") from None

    def env(self, service: str) -> dict[str, str]:
        self._reload()
        overrides = dict(self.stack.env_overrides)
        return {"CACHE_PATTERNS": overrides.get("CACHE_PATTERNS", "objects,queries")} | overrides

    def restart_with(self, service: str, settings: dict[str, str]) -> None:
        """Drain the service's replicas, then start as many again with the new settings."""
        self._reload()
        counts = {s: len(self.stack.service_replicas(s)) for s in ("user", "catalog", "worker")}
        cpu = self.stack.cpu_limit
        overrides = {**self.stack.env_overrides, **settings}
        self.log(f"restarting {service} ×{counts[service]} with "
                 + ", ".join(f"{k}={v!r}" for k, v in settings.items()))
        try:
            self.stack.scale(service, 0)
            self._reload()
            self.stack.up(counts, cpu_limit=cpu, settings=overrides)
        except self.StackError as exc:
            raise TargetError(f"could not restart {service}: {exc}") from None

    def cpu_limits(self, service: str) -> list[str]:
        self._reload()
        return [r.cpu.describe() for r in self.stack.service_replicas(service)]

    def metrics(self, services: tuple[str, ...]) -> dict[str, float] | None:
        self._reload()
        totals: dict[str, float] = {}
        for service in services:
            for replica in self.stack.service_replicas(service):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{replica.port}/metrics", timeout=5) as resp:
                        text = resp.read().decode()
                except OSError:
                    return None
                for name, value in parse_counters(text).items():
                    totals[name] = totals.get(name, 0.0) + value
        return totals


def parse_counters(text: str) -> dict[str, float]:
    """Totals of the counters experiments use, from Prometheus text format."""
    wanted = {"scaleshop_db_round_trips_total": "db_round_trips",
              "scaleshop_http_requests_total": "http_requests"}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            try:
                value = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            out[wanted[name]] = out.get(wanted[name], 0.0) + value
        elif name == "scaleshop_cache_requests_total":
            labels = line.split("{", 1)[1].split("}", 1)[0] if "{" in line else ""
            result = next((p.split("=", 1)[1].strip('"') for p in labels.split(",") if p.startswith("result=")), "")
            try:
                out[f"cache_{result}"] = out.get(f"cache_{result}", 0.0) + float(line.rsplit(" ", 1)[1])
            except ValueError:
                continue
    return out


# ------------------------------------------------------------------------------------------
# Kubernetes
# ------------------------------------------------------------------------------------------

class KubePlatform(Platform):
    name = "k8s"

    def __init__(self, target: Target, namespace: str | None, prefix: str, ready_timeout: float,
                 log: Callable[[str], None]):
        try:
            from kubernetes import client, config
        except ImportError:
            raise UsageError("--platform k8s needs the `kubernetes` package") from None
        try:
            config.load_incluster_config()
        except Exception:  # noqa: BLE001 - not in a pod: try the user's kubeconfig
            try:
                config.load_kube_config()
            except Exception as exc:  # noqa: BLE001
                raise TargetError(f"no Kubernetes configuration found (in-cluster or kubeconfig): {exc}") from None
        if namespace is None:
            namespace = (SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
                         if SERVICE_ACCOUNT_NAMESPACE.exists() else "default")
        self.target, self.namespace, self.prefix = target, namespace, prefix
        self.ready_timeout, self.log = ready_timeout, log
        self.apps = client.AppsV1Api()
        self.core = client.CoreV1Api()
        self.client = client

    def _name(self, service: str) -> str:
        return f"{self.prefix}{service}"

    def _get(self, service: str):
        from kubernetes.client.exceptions import ApiException
        try:
            return self.apps.read_namespaced_deployment(self._name(service), self.namespace)
        except ApiException as exc:
            raise TargetError(f"cannot read Deployment {self.namespace}/{self._name(service)}: "
                              f"{exc.status} {exc.reason} (see --namespace, --deployment-prefix)") from None

    def replicas(self, service: str) -> int:
        return self._get(service).spec.replicas or 0

    def _wait_ready(self, service: str, count: int) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            dep = self._get(service)
            status = dep.status
            if (dep.metadata.generation or 0) <= (status.observed_generation or 0) \
                    and (status.ready_replicas or 0) == count and (status.updated_replicas or 0) >= count \
                    and (status.replicas or 0) == count:
                return
            time.sleep(1)
        raise TargetError(f"Deployment {self._name(service)} did not get {count} ready replicas within "
                          f"{self.ready_timeout:g}s")

    def scale(self, service: str, count: int) -> None:
        from kubernetes.client.exceptions import ApiException
        self.log(f"scaling Deployment {self.namespace}/{self._name(service)} to {count}")
        try:
            self.apps.patch_namespaced_deployment_scale(self._name(service), self.namespace,
                                                        {"spec": {"replicas": count}})
        except ApiException as exc:
            raise TargetError(f"cannot scale {self._name(service)}: {exc.status} {exc.reason}") from None
        self._wait_ready(service, count)
        self._wait_served(service, count)

    def _ready_pods(self, service: str) -> set[str]:
        """Names of the Deployment's pods that are Ready and not being deleted."""
        labels = self._get(service).spec.selector.match_labels or {}
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        pods: list[Any] = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        return {str(pod.metadata.name) for pod in pods if pod.metadata.deletion_timestamp is None
                and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])}

    def _served_by(self, service: str, samples: int) -> set[str]:
        """Which replicas answer `samples` requests for the service's OpenAPI document through the gateway."""
        seen = set()
        for _ in range(samples):
            request = urllib.request.Request(f"{self.target.url}/openapi/{service}.json")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    seen.add(response.headers.get("X-Served-By", "?"))
            except OSError as exc:
                seen.add(f"error: {exc}")
        return seen

    def _wait_served(self, service: str, count: int) -> None:
        deadline = time.monotonic() + self.ready_timeout
        started = time.monotonic()
        ready: set[str] = set()
        seen: set[str] = set()
        while time.monotonic() < deadline:
            ready = self._ready_pods(service)
            seen = self._served_by(service, samples=8 * max(count, 1))
            if len(ready) == count and seen == ready:
                self.log(f"the gateway serves {service} from exactly its {count} ready pods "
                         f"({time.monotonic() - started:.0f}s after they were ready)")
                return
            time.sleep(1)
        raise TargetError(f"the gateway did not serve {self._name(service)} from exactly its ready pods within "
                          f"{self.ready_timeout:g}s (ready: {sorted(ready)}, answering: {sorted(seen)})")

    def env(self, service: str) -> dict[str, str]:
        dep = self._get(service)
        container = dep.spec.template.spec.containers[0]
        env = {e.name: e.value for e in (container.env or []) if e.value is not None}
        env.setdefault("CACHE_PATTERNS", "objects,queries")
        return env

    def restart_with(self, service: str, settings: dict[str, str]) -> None:
        from kubernetes.client.exceptions import ApiException
        dep = self._get(service)
        container = dep.spec.template.spec.containers[0]
        env = [{"name": k, "value": v} for k, v in settings.items()]
        patch = {"spec": {"template": {"spec": {"containers": [{"name": container.name, "env": env}]}}}}
        self.log(f"rolling {self._name(service)} with " + ", ".join(f"{k}={v!r}" for k, v in settings.items()))
        try:
            self.apps.patch_namespaced_deployment(self._name(service), self.namespace, patch)
        except ApiException as exc:
            raise TargetError(f"cannot patch {self._name(service)}: {exc.status} {exc.reason}") from None
        self._wait_ready(service, dep.spec.replicas or 0)
        self._wait_served(service, dep.spec.replicas or 0)

    def cpu_limits(self, service: str) -> list[str]:
        dep = self._get(service)
        resources = dep.spec.template.spec.containers[0].resources
        limit = (resources.limits or {}).get("cpu") if resources else None
        return [f"{limit} CPU (resources.limits.cpu)" if limit else "none"] * (dep.spec.replicas or 0)
