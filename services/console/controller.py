"""What the console drives: the `Controller` interface, and `LocalController`, the local stack's.

The console's logic (services/console/actions.py) only calls a Controller: this local one, or
services/console/kube_controller.py's for a release in Kubernetes. The local one
works through the stack's own control code (stack/control.py's Stack, re-read from its state file
before every call, since `make scale` or the tests may have changed it), and keeps the load run as a
child process (`python -m loadgen run`) that it stops by pid.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

CACHE_DEFAULT = "objects,queries"


class Controller(Protocol):
    """The operations behind the console's actions; errors are raised as ValueError (bad input) or
    RuntimeError (the platform could not do it)."""

    def replicas(self) -> dict[str, list[dict]]:
        """Each service's replicas: [{"name", "state", "ready"}]."""
        ...

    def servers(self) -> dict[str, str]:
        """memcached and kafka: "running", "paused" or "stopped" (in a cluster also "starting", "external")."""
        ...

    def scale(self, service: str, count: int) -> None: ...

    def cache_patterns(self) -> str: ...

    def set_cache_patterns(self, patterns: str) -> None:
        """Give the catalog replicas the new CACHE_PATTERNS (a rolling restart locally)."""
        ...

    def kill_replica(self, name: str) -> None: ...

    def pause_memcached(self) -> None: ...

    def resume_memcached(self) -> None: ...

    def stop_kafka(self) -> None: ...

    def start_kafka(self) -> None: ...

    def start_load(self, rate: float, mix: str, duration: int) -> int | str:
        """Start a load run; its pid (or, in a cluster, its Job's name)."""
        ...

    def stop_load(self) -> bool:
        """Stop the load run; False when none was running."""
        ...

    def load(self) -> dict | None:
        """The running load run ({"pid", "rate", "mix", "duration"}; "pid" a Job's name in a cluster), or None."""
        ...


class LocalController:
    """The local stack, through stack.control.Stack (SCALESHOP_RUN_DIR / SCALESHOP_PORT_OFFSET)."""

    def __init__(self, layout=None, log=lambda msg: None):
        from stack.layout import Layout

        self.layout = layout or Layout.from_env()
        self.log = log
        self._load: tuple[subprocess.Popen, dict] | None = None
        self._load_lock = threading.Lock()

    def _stack(self):
        from stack.control import Stack

        return Stack(self.layout, log=self.log)

    def replicas(self) -> dict[str, list[dict]]:
        from stack.layout import SERVICES
        from stack.procs import http_status

        stack = self._stack()
        replicas = sorted(stack.replicas.values(), key=lambda r: (r.service, r.index))

        def ready(replica) -> bool:  # asked of all replicas at once: a busy one answers late
            return replica.proc.alive() and http_status(f"http://127.0.0.1:{replica.port}/readyz", timeout=2) == 200

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(ready, replicas))
        out: dict[str, list[dict]] = {service: [] for service in SERVICES}
        for replica, is_ready in zip(replicas, answers):
            out.setdefault(replica.service, []).append(
                {"name": replica.name, "state": "running" if replica.proc.alive() else "dead", "ready": is_ready})
        return out

    def servers(self) -> dict[str, str]:
        stack = self._stack()
        out = {}
        for name in ("memcached", "kafka"):
            proc = stack.server_proc(name)
            if proc is None or not proc.alive():
                out[name] = "stopped"
            else:
                out[name] = "paused" if _process_state(proc.pid) == "T" else "running"
        return out

    def scale(self, service: str, count: int) -> None:
        self._stack().scale(service, count)

    def cache_patterns(self) -> str:
        return self._stack().env_overrides.get("CACHE_PATTERNS", CACHE_DEFAULT)

    def set_cache_patterns(self, patterns: str) -> None:
        self._stack().restart("catalog", {"CACHE_PATTERNS": patterns})

    def kill_replica(self, name: str) -> None:
        stack = self._stack()
        replica = stack.replicas.get(name)
        if replica is None or not replica.proc.alive():
            raise ValueError(f"no running replica '{name}'")
        os.killpg(replica.proc.pid, signal.SIGKILL)  # every process of the replica, like a container dying
        replica.proc.wait_exit(10)

    def _memcached(self):
        proc = self._stack().server_proc("memcached")
        if proc is None or not proc.alive():
            raise RuntimeError("memcached is not running")
        return proc

    def pause_memcached(self) -> None:
        self._memcached().send(signal.SIGSTOP)

    def resume_memcached(self) -> None:
        self._memcached().send(signal.SIGCONT)

    def stop_kafka(self) -> None:
        self._stack().stop_server("kafka")

    def start_kafka(self) -> None:
        self._stack().start_server("kafka")

    def start_load(self, rate: float, mix: str, duration: int) -> int:
        with self._load_lock:
            if self.load() is not None:
                raise ValueError("a load run is already running: stop it first")
            log = self.layout.log_file("console-load")
            log.parent.mkdir(parents=True, exist_ok=True)
            argv = [self.layout.python, "-m", "loadgen", "run", "--target", self.layout.gateway_url,
                    "--rate", f"{rate:g}", "--mix", mix, "--duration", str(duration), "--no-report", "--quiet"]
            with log.open("ab") as out:
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, cwd=str(_repo()))
            self._load = (proc, {"pid": proc.pid, "rate": rate, "mix": mix, "duration": duration})
            return proc.pid

    def stop_load(self) -> bool:
        with self._load_lock:
            if self.load() is None or self._load is None:
                return False
            proc = self._load[0]
            proc.send_signal(signal.SIGINT)  # the load generator stops and prints its summary
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            self._load = None
            return True

    def load(self) -> dict | None:
        if self._load is None or self._load[0].poll() is not None:
            return None
        return dict(self._load[1])


def _repo():
    from stack.layout import REPO

    return REPO


def _process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat ("T": stopped by SIGSTOP)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"
