"""Where the replicas run: the local stack (its own Stack API) or Kubernetes (Deployments).

Both give the experiments the same operations: how many replicas a service has, scale it (and
wait until the new ones are ready and served), restart it with other environment settings
(CACHE_PATTERNS), describe its CPU limits, and (locally only) sample the CPU its replicas, the
gateway, the load generator and the machine use (`cpu_sampler`; `cpu_usage` turns two samples
into CPUs used beside the CPU available, `baseline_check` says what limited a point).

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
# The services the gateway routes to (the `http` parts of the chart's components map; a unit test
# checks the two agree): only their scale can be seen in the gateway's answers. The worker serves
# no public route, so its scale is done when its pods are ready.
GATEWAY_ROUTED = ("user", "catalog")


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

    def cpu_sampler(self, service: str) -> CpuSampler | None:
        """A function returning the cumulative CPU of the service's replicas (and of what they share the
        machine with) each time it is called; None where it cannot be measured."""
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

    def cpu_sampler(self, service: str) -> CpuSampler | None:
        self._reload()
        return stack_cpu_sampler(self.stack, service)

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
# CPU: what the replicas may use and what they used (the local stack only)
# ------------------------------------------------------------------------------------------

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CpuSampler = Callable[[], dict]
SATURATED = 0.9  # a CPU budget counts as used up at this share: the quota, the generator's process, the cores


def _stat_fields(pid: int, proc: Path) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None if it is gone."""
    try:
        return (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu_seconds(pid: int, proc: Path = PROC) -> float:
    """User + system CPU of a live process and of its children it has reaped; 0 when it is gone."""
    fields = _stat_fields(pid, proc)
    if fields is None:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS  # utime, stime, cutime, cstime


def process_tree(pid: int, proc: Path = PROC) -> list[int]:
    """`pid` and every live descendant (gunicorn's workers, nginx's workers)."""
    parents: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name), proc)
            if fields is not None and fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += parents.get(current, [])
    return tree


def cgroup_cpu(path: Path, proc: Path = PROC) -> dict:
    """Cumulative CPU seconds of a cgroup and how they were read, with its throttling counters.

    cgroup v2 and a v1 group with cpuacct mounted beside cpu keep the usage themselves; a v1 cpu-only
    group (as here) does not, so its processes' /proc/<pid>/stat are summed (a gunicorn master reaps
    its workers, so their time stays counted in its cutime). nr_periods/nr_throttled (both versions'
    cpu.stat) say in how many scheduling periods the group ran out of its quota."""
    stat: dict[str, int] = {}
    try:
        for line in (path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                stat[key] = int(value)
    except OSError:
        pass
    throttle = {"periods": stat.get("nr_periods"), "throttled": stat.get("nr_throttled")}
    if "usage_usec" in stat:
        return {"cpu_s": stat["usage_usec"] / 1e6, "method": "cgroup v2 cpu.stat usage_usec", **throttle}
    try:
        return {"cpu_s": int((path / "cpuacct.usage").read_text()) / 1e9, "method": "cgroup v1 cpuacct.usage",
                **throttle}
    except (OSError, ValueError):
        pass
    try:
        pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        pids = []
    return {"cpu_s": sum(process_cpu_seconds(p, proc) for p in pids),
            "method": "/proc/<pid>/stat of the cgroup's processes (cgroup v1 without cpuacct)", **throttle}


def machine_cpu_seconds(proc: Path = PROC) -> float:
    """CPU seconds the machine's cores have been busy (not idle, not waiting for I/O) since boot."""
    try:
        values = [int(v) for v in (proc / "stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return 0.0
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


def interrupt_cpu_seconds(proc: Path = PROC) -> float:
    """CPU seconds spent in interrupts and softirqs since boot (loopback networking is mostly here)."""
    try:
        values = [int(v) for v in (proc / "stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return 0.0
    return (values[5] + values[6]) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """This process's CPU and that of its children it has waited for (the load generator's processes)."""
    import resource
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def replica_cpu(replica, proc: Path = PROC) -> dict:
    """One stack replica's cumulative CPU: from its cgroup where a limit is applied, else its process tree."""
    limit = replica.cpu
    if limit.applied and limit.path:
        return {**cgroup_cpu(Path(limit.path), proc), "quota_cpus": limit.cpus}
    return {"cpu_s": sum(process_cpu_seconds(p, proc) for p in process_tree(replica.proc.pid, proc)),
            "method": "/proc/<pid>/stat of the replica's process tree (no CPU limit applied)", "quota_cpus": None}


def stack_cpu_sampler(stack, service: str, proc: Path = PROC) -> CpuSampler:
    """Samples of the local stack's CPU: `service`'s replicas, the other replicas, the gateway, this
    load generator and the whole machine (the replicas are those running when this is called)."""
    replicas = list(stack.replicas.values())
    gateway = stack.infra.get("gateway")
    gateway_pid = gateway["proc"]["pid"] if gateway else None
    servers = {name: entry["proc"]["pid"] for name, entry in stack.infra.items()
               if name != "gateway" and entry.get("proc")}  # memcached, the database, Kafka

    def sample() -> dict:
        gateway_tree = process_tree(gateway_pid, proc) if gateway_pid else []
        return {"t": time.monotonic(), "service": service,
                "replicas": {r.name: replica_cpu(r, proc) for r in replicas if r.service == service},
                "others": {r.name: replica_cpu(r, proc) for r in replicas if r.service != service},
                "gateway": {"cpu_s": sum(process_cpu_seconds(p, proc) for p in gateway_tree),
                            "workers": max(1, len(gateway_tree) - 1)},
                "servers": {name: sum(process_cpu_seconds(p, proc) for p in process_tree(pid, proc))
                            for name, pid in servers.items()},
                "loadgen": own_cpu_seconds(), "machine": machine_cpu_seconds(proc),
                "interrupts": interrupt_cpu_seconds(proc)}
    return sample


def _rate(before: dict, after: dict, wall: float) -> float:
    return round(max(0.0, after["cpu_s"] - before["cpu_s"]) / wall, 3)


def _throttled(before: dict, after: dict) -> float | None:
    if after.get("periods") is None or before.get("periods") is None:
        return None
    periods = after["periods"] - before["periods"]
    return round((after["throttled"] - before["throttled"]) / periods, 3) if periods > 0 else None


def cpu_usage(before: dict, after: dict, cores: int, loadgen_processes: int = 1) -> dict:
    """CPUs used between two samples (CPU-seconds per second), beside the CPU available to the replicas:
    the sum of their quotas as applied, capped by the machine's cores (the cores when one is unlimited)."""
    wall = max(after["t"] - before["t"], 1e-6)
    names = [n for n in after["replicas"] if n in before["replicas"]]
    per_replica = {n: _rate(before["replicas"][n], after["replicas"][n], wall) for n in names}
    quotas = [after["replicas"][n]["quota_cpus"] for n in names]
    available = min(sum(quotas), cores) if quotas and None not in quotas else float(cores)
    used = round(sum(per_replica.values()), 3)
    others = {n: {"used_cpus": _rate(before["others"][n], after["others"][n], wall),
                  "quota_cpus": after["others"][n]["quota_cpus"]}
              for n in after["others"] if n in before["others"]}
    gateway = _rate(before["gateway"], after["gateway"], wall)
    loadgen = round(max(0.0, after["loadgen"] - before["loadgen"]) / wall, 3)
    machine = round(max(0.0, after["machine"] - before["machine"]) / wall, 3)
    servers = {name: round(max(0.0, seconds - before.get("servers", {}).get(name, seconds)) / wall, 3)
               for name, seconds in after.get("servers", {}).items()}
    interrupts = round(max(0.0, after.get("interrupts", 0.0) - before.get("interrupts", 0.0)) / wall, 3)
    throttled = [t for t in (_throttled(before["replicas"][n], after["replicas"][n]) for n in names) if t is not None]
    return {"wall_s": round(wall, 2), "cores": cores, "replicas": len(names),
            "quota_cpus": None if None in quotas else round(sum(quotas), 3), "available_cpus": round(available, 3),
            "used_cpus": used, "share_of_available": round(used / available, 3) if available else None,
            "per_replica": per_replica, "throttled_share": round(sum(throttled) / len(throttled), 3)
            if throttled else None,
            "methods": sorted({after["replicas"][n]["method"] for n in names}), "others": others,
            "gateway_cpus": gateway, "gateway_workers": after["gateway"]["workers"], "loadgen_cpus": loadgen,
            "loadgen_processes": loadgen_processes, "machine_busy_cpus": machine, "servers_cpus": servers,
            "interrupts_cpus": interrupts,
            "other_processes_cpus": round(max(0.0, machine - used - gateway - loadgen - interrupts
                                              - sum(o["used_cpus"] for o in others.values())
                                              - sum(servers.values())), 3)}


def cpu_told(cpu: dict) -> str:
    """'used X of Y CPU available (Z%, throttled in T% of its scheduling periods)'."""
    throttled = cpu.get("throttled_share")
    return (f"used {cpu['used_cpus']:.2f} of {cpu['available_cpus']:.2f} CPU available "
            f"({100 * (cpu['share_of_available'] or 0.0):.0f}%"
            + (f", throttled in {100 * throttled:.0f}% of its scheduling periods" if throttled is not None else "")
            + ")")


def baseline_check(cpu: dict | None) -> dict:
    """Whether a replica-count point (the 1-replica one above all) was limited by the replicas' own CPU;
    if not, what else saturated: the load generator, the gateway, a neighbouring replica, the machine.

    `external` is True when something outside the replicas limited it: then a speed-up over this point
    measures that limit, not what replicas add."""
    if cpu is None:
        return {"cpu_bound": None, "external": None, "limited_by": "not measured",
                "text": "CPU not measured on this platform: the point cannot be checked against the CPU available."}
    used, available = cpu["used_cpus"], cpu["available_cpus"]
    share = cpu["share_of_available"] or 0.0
    told = cpu_told(cpu)
    if share >= SATURATED:
        return {"cpu_bound": True, "external": False, "limited_by": "its own CPU",
                "text": f"{cpu['replicas']} replica(s) {told}: CPU-bound, a fair point to compare."}
    found = []
    if cpu["loadgen_cpus"] >= SATURATED * cpu["loadgen_processes"]:
        found.append(f"the load generator ({cpu['loadgen_cpus']:.2f} CPU in {cpu['loadgen_processes']} "
                     "process(es))")
    if cpu["gateway_cpus"] >= SATURATED * cpu["gateway_workers"]:
        found.append(f"the gateway ({cpu['gateway_cpus']:.2f} CPU in {cpu['gateway_workers']} worker(s))")
    for name, other in cpu["others"].items():
        if other["quota_cpus"] and other["used_cpus"] >= SATURATED * other["quota_cpus"]:
            found.append(f"{name} ({other['used_cpus']:.2f} of its {other['quota_cpus']:g} CPU)")
    idle = max(0.0, cpu["cores"] - cpu["machine_busy_cpus"])
    # the machine is used up when its cores are, or when less than half the CPU the replicas were allowed
    # but did not use was idle on it (unlimited replicas share the cores with everything else)
    if cpu["machine_busy_cpus"] >= SATURATED * cpu["cores"] or idle < (available - used) / 2:
        servers = "".join(f", {name} {value:.2f}" for name, value in (cpu.get("servers_cpus") or {}).items())
        interrupts = f", interrupts {cpu['interrupts_cpus']:.2f}" if cpu.get("interrupts_cpus") is not None else ""
        neighbours = sum(o["used_cpus"] for o in cpu["others"].values())
        found.append(f"the machine ({cpu['machine_busy_cpus']:.2f} of {cpu['cores']} cores busy, {idle:.2f} idle "
                     f"of the {available - used:.2f} CPU the replicas left unused: replicas {used:.2f}, other "
                     f"replicas {neighbours:.2f}, gateway {cpu['gateway_cpus']:.2f}, load generator "
                     f"{cpu['loadgen_cpus']:.2f}{servers}{interrupts}, other processes "
                     f"{cpu['other_processes_cpus']:.2f})")
    if found:
        return {"cpu_bound": False, "external": True, "limited_by": "; ".join(found),
                "text": f"{cpu['replicas']} replica(s) {told}: not CPU-bound; limited by {'; '.join(found)}."}
    return {"cpu_bound": False, "external": False, "limited_by": "latency, not CPU",
            "text": f"{cpu['replicas']} replica(s) {told}: not CPU-bound, and no other CPU measured was used up "
                    "(load generator, gateway, neighbours, the machine): the SLO broke on latency first "
                    "(queueing in gunicorn's threads, the database or memcached)."}


# ------------------------------------------------------------------------------------------
# Kubernetes
# ------------------------------------------------------------------------------------------

def pod_ready(pod: Any) -> bool:
    """The pod's Ready condition is True (a Kubernetes client model)."""
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


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
        return {str(pod.metadata.name) for pod in pods if pod.metadata.deletion_timestamp is None and pod_ready(pod)}

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
        if service not in GATEWAY_ROUTED:
            return  # no answer of the gateway comes from it: ready is done
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
