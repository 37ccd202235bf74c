"""The Stack: starts, scales, reports on and stops the local stack, recording every pid.

State lives in `<run_dir>/state.json` (pids with their start times, ports, CPU limits),
so `down`, `status` and `scale` work from any later command. Data lives in
`<run_dir>/data` and survives `down`/`up`.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import time
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

from . import cgroups, migrate, servers
from .layout import (
    DEFAULT_REPLICAS,
    HTTP_SERVICES,
    MAX_REPLICAS,
    PASSTHROUGH_SETTINGS,
    REPO,
    SERVICES,
    STACK_DEFAULT_SETTINGS,
    Layout,
)
from .procs import Proc, StackError, http_status, listening, require_free, spawn, wait_http, wait_port

INFRA = ("database", "memcached", "kafka", "gateway", "nginx-exporter", "prometheus", "console")
# Monitoring and the lab console: started after the gateway, whose counters the exporter reads,
# and stopped first.
MONITORING = ("console", "nginx-exporter", "prometheus")
STOP_TIMEOUT = {"gateway": 15, "kafka": 40, "memcached": 10, "database": 20, "nginx-exporter": 5, "prometheus": 30,
                "console": 15}
# mongo-java-server reads its whole file and rebuilds its indexes (unique and secondary, kept in
# memory) before it listens: seconds at 10,000 products, more on a big or busy machine's file.
DATABASE_START_S = 120


def console_token(layout: Layout) -> str:
    """The lab console's operator token, generated at the first `up` into the run folder (like the
    AUTH secret); `make up` prints it."""
    path = layout.run_dir / "console_token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


@dataclass
class Replica:
    service: str
    index: int
    port: int
    proc: Proc
    cpu: cgroups.CpuLimit

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    def to_json(self) -> dict:
        return {"service": self.service, "index": self.index, "port": self.port,
                "proc": self.proc.to_json(), "cpu": self.cpu.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> Replica:
        proc = Proc.from_json(data["proc"])
        if proc is None:  # _save() always writes one
            raise StackError(f"the state file has no process for replica {data['service']}-{data['index']}")
        return cls(data["service"], data["index"], data["port"], proc, cgroups.CpuLimit.from_json(data.get("cpu")))


class Stack:
    def __init__(self, layout: Layout | None = None, log=print):
        self.layout = layout or Layout.from_env()
        try:
            self.layout.check()
        except ValueError as exc:
            raise StackError(str(exc)) from None
        self.log = log
        self.infra: dict[str, dict] = {}
        self.replicas: dict[str, Replica] = {}
        self.cpu_limit: float | None = None
        self.env_overrides: dict[str, str] = {}
        self._load()

    # ---- state ---------------------------------------------------------------------------

    def _load(self) -> None:
        if self.layout.state_file.exists():
            data = json.loads(self.layout.state_file.read_text())
            self.infra = data.get("infra", {})
            self.replicas = {name: Replica.from_json(r) for name, r in data.get("replicas", {}).items()}
            self.cpu_limit = data.get("cpu_limit")
            self.env_overrides = data.get("env", {})

    def _save(self) -> None:
        self.layout.run_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "infra": self.infra,
            "replicas": {name: r.to_json() for name, r in sorted(self.replicas.items())},
            "cpu_limit": self.cpu_limit,
            "env": self.env_overrides,
        }
        tmp = self.layout.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.layout.state_file)

    def server_proc(self, name: str) -> Proc | None:
        """The process of the server `name` (memcached, kafka, database, ...), None if it was never started."""
        return Proc.from_json(self.infra.get(name, {}).get("proc"))

    def server_alive(self, name: str) -> bool:
        proc = self.server_proc(name)
        return proc is not None and proc.alive()

    # ---- configuration handed to replicas -----------------------------------------------

    def _auth_secret(self) -> str:
        path = self.layout.run_dir / "auth_secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def replica_env(self, service: str, index: int, extra: dict[str, str] | None = None) -> dict[str, str]:
        lay = self.layout
        env = {key: value for key, value in os.environ.items() if key not in PASSTHROUGH_SETTINGS}
        env.update(
            {
                "MONGODB_URL": f"mongodb://127.0.0.1:{lay.db_port}/",
                "MONGODB_DATABASE": "scaleshop",
                "MEMCACHED_SERVERS": f"127.0.0.1:{lay.memcached_port}",
                "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{lay.kafka_port}",
                "USER_SERVICE_URL": lay.user_service_url,
                "AUTH_SECRET": self._auth_secret(),
                "REPLICA_ID": f"{service}-{index}",
                "BIND_HOST": "127.0.0.1",
                "PORT": str(lay.replica_port(service, index)),
                "PROMETHEUS_MULTIPROC_DIR": str(lay.run_dir / "metrics" / f"{service}-{index}"),
                "PYTHONUNBUFFERED": "1",
                **STACK_DEFAULT_SETTINGS,
            }
        )
        env.update(self.env_overrides)
        env.update(extra or {})
        return env

    # ---- replicas ------------------------------------------------------------------------

    def _start_replica(self, service: str, index: int, settings: dict[str, str] | None = None) -> Replica:
        name = f"{service}-{index}"
        port = self.layout.replica_port(service, index)
        require_free({name: port})
        metrics_dir = self.layout.run_dir / "metrics" / name  # fresh: samples of old pids would be summed
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        limit = cgroups.create(f"{self.layout.port_offset}-{name}", self.cpu_limit)
        argv = cgroups.wrap_command(limit, [self.layout.python, "-m", f"services.{service}"])
        proc = spawn(argv, self.layout.log_file(name), env=self.replica_env(service, index, settings), cwd=REPO)
        replica = Replica(service, index, port, proc, limit)
        self.replicas[name] = replica
        self._save()
        return replica

    def _wait_replica(self, replica: Replica, timeout: float = 60) -> None:
        wait_http(f"http://127.0.0.1:{replica.port}/healthz", timeout, replica.proc, replica.name)

    def _stop_replica(self, replica: Replica) -> None:
        grace = int(self.replica_env(replica.service, replica.index).get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
        replica.proc.stop(grace + 10)
        cgroups.remove(replica.cpu)
        self.replicas.pop(replica.name, None)
        self._save()

    def service_replicas(self, service: str) -> list[Replica]:
        return sorted((r for r in self.replicas.values() if r.service == service), key=lambda r: r.index)

    def _upstreams(self, exclude: Set[str]) -> dict[str, list[int]]:
        return {
            s: [r.port for r in self.service_replicas(s) if r.proc.alive() and r.name not in exclude]
            for s in HTTP_SERVICES
        }

    # ---- gateway -------------------------------------------------------------------------

    def _start_or_reload_gateway(self, exclude: Set[str] = frozenset()) -> None:
        servers.write_nginx_config(self.layout, self._upstreams(exclude))
        proc = self.server_proc("gateway")
        if proc is not None and proc.alive():
            self._reload_gateway(proc)
            return
        require_free(self._gateway_ports())
        proc = spawn(servers.nginx_command(self.layout), self.layout.log_file("gateway"))
        self.infra["gateway"] = {"proc": proc.to_json(), "port": self.layout.gateway_port}
        self._save()
        wait_http(f"{self.layout.gateway_url}/healthz", 15, proc, "gateway (nginx)")

    def _gateway_ports(self) -> dict[str, int]:
        """The gateway's listeners: the public one, the user service's internal address, its stub_status."""
        return {"gateway": self.layout.gateway_port, "gateway user-service": self.layout.user_service_port,
                "gateway status": self.layout.gateway_status_port}

    def _reload_gateway(self, master: Proc) -> None:
        """SIGHUP: nginx starts workers with the new config; old ones finish their requests."""
        before = set(_children(master.pid))
        master.send(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            current = set(_children(master.pid))
            if not (before & current) and current:
                return
            time.sleep(0.05)
        raise StackError("nginx did not finish reloading within 30s; see the gateway log")

    # ---- monitoring ----------------------------------------------------------------------

    def _write_scrape_targets(self, exclude: Set[str] = frozenset()) -> None:
        """Prometheus' discovery file: every live replica but `exclude`, and the nginx exporter."""
        servers.write_scrape_targets(self.layout, [(r.service, r.index) for r in self.replicas.values()
                                                   if r.proc.alive() and r.name not in exclude])

    def _start_monitoring(self) -> None:
        """Start the nginx exporter and Prometheus where they are not running (the gateway runs)."""
        lay = self.layout
        if not self.server_alive("nginx-exporter"):
            self.log(f"starting the nginx exporter on {lay.nginx_exporter_port}")
            self._spawn_infra("nginx-exporter", servers.nginx_exporter_command(lay), lay.nginx_exporter_port)
        if not self.server_alive("prometheus"):
            self.log(f"starting Prometheus on {lay.prometheus_port}")
            servers.write_prometheus_config(lay)
            self._spawn_infra("prometheus", servers.prometheus_command(lay), lay.prometheus_port)
        if not self.server_alive("console"):
            self.log(f"starting the lab console on {lay.console_port}")
            console_token(lay)
            proc = spawn(servers.console_command(lay), lay.log_file("console"), env=servers.console_env(lay), cwd=REPO)
            self.infra["console"] = {"proc": proc.to_json(), "port": lay.console_port}
            self._save()
        wait_port(lay.nginx_exporter_port, 15, self.server_proc("nginx-exporter"), "the nginx exporter")
        wait_http(f"{lay.prometheus_url}/-/ready", 60, self.server_proc("prometheus"), "Prometheus")
        wait_http(f"http://127.0.0.1:{lay.console_port}/console/api/marks", 30, self.server_proc("console"),
                  "the lab console")

    # ---- commands ------------------------------------------------------------------------

    def up(
        self,
        replicas: dict[str, int] | None = None,
        cpu_limit: float | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        """Start whatever is not running; keep what is. Data from an earlier run is kept.

        `settings` (env name -> value) go to every replica; by default those of
        PASSTHROUGH_SETTINGS found in this process's environment.
        """
        wanted = dict(DEFAULT_REPLICAS, **(replicas or {}))
        self.cpu_limit = cpu_limit
        if settings is None:
            settings = {k: os.environ[k] for k in PASSTHROUGH_SETTINGS if k in os.environ}
        self.env_overrides = dict(settings)
        self._prune_dead()
        lay = self.layout
        lay.log_dir.mkdir(parents=True, exist_ok=True)
        ports = {
            "database": lay.db_port, "memcached": lay.memcached_port, "kafka": lay.kafka_port,
            "kafka controller": lay.kafka_controller_port, **self._gateway_ports(),
            "nginx-exporter": lay.nginx_exporter_port, "prometheus": lay.prometheus_port,
            "console": lay.console_port,
        }
        require_free({name: port for name, port in ports.items()
                      if not self.server_alive(name.split()[0])})

        if not self.server_alive("kafka"):
            self.log(f"starting Kafka (KRaft) on {lay.kafka_port}")
            servers.kafka_format_storage(lay)
            self._spawn_infra("kafka", servers.kafka_command(lay), lay.kafka_port)
        if not self.server_alive("database"):
            migrate.migrate_if_needed(lay, self.log)
            self.log(f"starting the database ({servers.database_kind()}) on {lay.db_port}")
            self._spawn_infra("database", servers.database_command(lay), lay.db_port)
        if not self.server_alive("memcached"):
            self.log(f"starting memcached on {lay.memcached_port}")
            self._spawn_infra("memcached", servers.memcached_command(lay), lay.memcached_port)
        for name, timeout in (("database", DATABASE_START_S), ("memcached", 10)):
            wait_port(self.infra[name]["port"], timeout, self.server_proc(name), name)

        started = self._start_missing({s: wanted[s] for s in HTTP_SERVICES})
        wait_port(lay.kafka_port, 90, self.server_proc("kafka"), "kafka")
        servers.kafka_create_topics(lay)
        started += self._start_missing({"worker": wanted["worker"]})
        for replica in started:
            self._wait_replica(replica)
        self._start_or_reload_gateway()
        self._write_scrape_targets()
        self._start_monitoring()

    def _spawn_infra(self, name: str, argv: list[str], port: int) -> None:
        proc = spawn(argv, self.layout.log_file(name))
        self.infra[name] = {"proc": proc.to_json(), "port": port}
        self._save()

    def _start_missing(self, wanted: dict[str, int]) -> list[Replica]:
        started = []
        for service, count in wanted.items():
            running = {r.index for r in self.service_replicas(service)}
            for index in range(1, count + 1):
                if index not in running:
                    self.log(f"starting {service}-{index} on {self.layout.replica_port(service, index)}")
                    started.append(self._start_replica(service, index))
        return started

    def _prune_dead(self) -> None:
        for name, replica in list(self.replicas.items()):
            if not replica.proc.alive():
                cgroups.remove(replica.cpu)
                del self.replicas[name]
        self._save()

    def scale(self, service: str, count: int) -> None:
        """Start or drain replicas so that `count` run; no in-flight or new request fails."""
        if service not in SERVICES:
            raise StackError(f"unknown service '{service}' (one of: {', '.join(SERVICES)})")
        if not 0 <= count <= MAX_REPLICAS:
            raise StackError(f"replicas must be between 0 and {MAX_REPLICAS}, got {count}")
        if not self.server_alive("gateway"):
            raise StackError("the stack is not running: `make up` first")
        self._prune_dead()
        current = self.service_replicas(service)
        if count > len(current):
            used = {r.index for r in current}
            new_indexes = [i for i in range(1, MAX_REPLICAS + 1) if i not in used][: count - len(current)]
            started = []
            for index in new_indexes:
                self.log(f"starting {service}-{index}")
                started.append(self._start_replica(service, index))
            for replica in started:
                self._wait_replica(replica)
            if service in HTTP_SERVICES:
                self._start_or_reload_gateway()
            self._write_scrape_targets()
        elif count < len(current):
            leaving = current[count:]
            if service in HTTP_SERVICES:  # out of the gateway first, so no new request reaches them
                self._start_or_reload_gateway(exclude={r.name for r in leaving})
            self._write_scrape_targets(exclude={r.name for r in leaving})  # and out of Prometheus' targets
            for replica in leaving:  # then SIGTERM: gunicorn finishes its in-flight requests
                self.log(f"draining {replica.name}")
                self._stop_replica(replica)

    def restart(self, service: str, settings: dict[str, str]) -> None:
        """Give every replica of `service` new settings, one replica at a time, like a Deployment's
        rolling update with maxSurge 1, maxUnavailable 0: a new replica with the settings starts and
        gets ready, then the gateway and Prometheus take it instead of an old one, which drains.
        The settings stay in the stack's state (later `scale` and `up` use them; they are the stack's
        for every service, as PASSTHROUGH_SETTINGS are)."""
        if service not in SERVICES:
            raise StackError(f"unknown service '{service}' (one of: {', '.join(SERVICES)})")
        if not self.server_alive("gateway"):
            raise StackError("the stack is not running: `make up` first")
        self._prune_dead()
        self.env_overrides.update(settings)
        self._save()
        for old in self.service_replicas(service):
            used = {r.index for r in self.service_replicas(service)}
            index = next(i for i in range(1, MAX_REPLICAS + 2) if i not in used)
            self.log(f"replacing {old.name} by {service}-{index}")
            new = self._start_replica(service, index)
            self._wait_replica(new)
            if service in HTTP_SERVICES:
                self._start_or_reload_gateway(exclude={old.name})
            self._write_scrape_targets(exclude={old.name})
            self._stop_replica(old)

    def reload(self) -> None:
        """Read the state file again (another process, e.g. the console, may have changed the stack)."""
        self.infra, self.replicas = {}, {}
        self._load()

    def run_extra_replica(self, service: str, index: int, settings: dict[str, str]) -> Replica:
        """Start one replica with settings of its own, outside the gateway (for experiments and tests).

        It is listed by `status` and stopped by `down`; `stop_extra_replica` removes it.
        """
        replica = self._start_replica(service, index, settings)
        self._wait_replica(replica)
        self._write_scrape_targets()
        return replica

    def stop_extra_replica(self, name: str) -> None:
        if name in self.replicas:
            self._write_scrape_targets(exclude={name})
            self._stop_replica(self.replicas[name])

    def stop_server(self, name: str) -> None:
        """Stop one of the servers (database, memcached, kafka), as a fault to recover from."""
        proc = self.server_proc(name)
        if name not in ("database", "memcached", "kafka"):
            raise StackError(f"unknown server '{name}' (database, memcached or kafka)")
        if proc is not None:
            self.log(f"stopping {name}")
            proc.stop(STOP_TIMEOUT[name])
        self.infra.pop(name, None)
        self._save()

    def start_server(self, name: str) -> None:
        """Start a stopped server again on its port, with the data it had."""
        lay = self.layout
        if self.server_alive(name):
            return
        commands = {
            "database": lambda: servers.database_command(lay),
            "memcached": lambda: servers.memcached_command(lay),
            "kafka": lambda: servers.kafka_command(lay),
        }
        ports = {"database": lay.db_port, "memcached": lay.memcached_port, "kafka": lay.kafka_port}
        if name not in commands:
            raise StackError(f"unknown server '{name}' (database, memcached or kafka)")
        require_free({name: ports[name]})
        self.log(f"starting {name}")
        self._spawn_infra(name, commands[name](), ports[name])
        wait_port(ports[name], DATABASE_START_S if name == "database" else 90, self.server_proc(name), name)

    def down(self) -> None:
        """Stop everything this stack started, by pid: monitoring, gateway, replicas, then the servers."""
        for name in MONITORING:
            self._stop_infra(name)
        gateway = self.server_proc("gateway")
        if gateway is not None:
            self.log("stopping gateway")
            gateway.stop(STOP_TIMEOUT["gateway"], signal.SIGQUIT)
            self.infra.pop("gateway", None)
            self._save()
        for replica in list(self.replicas.values()):
            replica.proc.send(signal.SIGTERM)
        for replica in list(self.replicas.values()):
            self.log(f"stopping {replica.name}")
            self._stop_replica(replica)
        for name in ("kafka", "memcached", "database"):
            self._stop_infra(name)

    def _stop_infra(self, name: str) -> None:
        proc = self.server_proc(name)
        if proc is not None:
            self.log(f"stopping {name}")
            proc.stop(STOP_TIMEOUT[name])
            self.infra.pop(name, None)
            self._save()

    def status(self) -> list[dict]:
        rows = []
        for name in INFRA:
            entry = self.infra.get(name)
            proc = Proc.from_json(entry["proc"]) if entry else None
            alive = proc is not None and proc.alive()
            health = "-"
            if alive and name == "gateway":
                health = _health(f"{self.layout.gateway_url}/healthz")
            elif alive and name == "prometheus":
                status = http_status(f"{self.layout.prometheus_url}/-/ready")
                health = "ready" if status == 200 else f"not ready ({status or 'no answer'})"
            elif alive and entry is not None:  # entry is set whenever alive
                health = "listening" if listening(entry["port"]) else "not listening"
            rows.append({"name": name, "port": entry["port"] if entry else None, "pid": proc.pid if proc else None,
                         "state": "running" if alive else "stopped", "health": health, "cpu_limit": "none"})
            if name == "gateway":  # its second listener: the user service's internal address
                rows.append({**rows[-1], "name": "user-service",
                             "port": self.layout.user_service_port if entry else None,
                             "health": _health(f"{self.layout.user_service_url}/healthz") if alive else "-"})
        for replica in sorted(self.replicas.values(), key=lambda r: (SERVICES.index(r.service), r.index)):
            alive = replica.proc.alive()
            health = _health(f"http://127.0.0.1:{replica.port}/readyz") if alive else "-"
            rows.append({"name": replica.name, "port": replica.port, "pid": replica.proc.pid,
                         "state": "running" if alive else "dead", "health": health,
                         "cpu_limit": replica.cpu.describe()})
        return rows


def _children(pid: int) -> list[int]:
    """Pids of the live children of `pid` (nginx workers of a master)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def _health(url: str) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body = json.loads(response.read() or b"{}")
            return body.get("status", "ok")
    except Exception:  # noqa: BLE001 - any failure is reported as such
        status = http_status(url)
        return f"unhealthy ({status})" if status else "no answer"
