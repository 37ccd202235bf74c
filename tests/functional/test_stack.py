"""The local stack as a user drives it: status, scale under load, down/up, logs, CPU limits, errors."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from stack import cgroups
from stack.layout import REPO
from tests.functional.conftest import PORT_OFFSET, SECOND_STACK_PORT_OFFSET, sign_up


def _cli(stack, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, SCALESHOP_RUN_DIR=str(stack.layout.run_dir),
                    SCALESHOP_PORT_OFFSET=str(stack.layout.port_offset), **(env or {}))
    return subprocess.run([sys.executable, "-m", "stack", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_status_lists_every_process_with_port_pid_and_health(stack):
    result = _cli(stack, "status")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    for name in ("database", "memcached", "kafka", "gateway", "user-1", "user-2",
                 "catalog-1", "catalog-2", "worker-1", "worker-2"):
        assert name in lines, result.stdout
        assert "running" in lines[name]
    assert lines["gateway"][1] == str(stack.layout.gateway_port)
    # The gateway's second listener, the user service's internal address (USER_SERVICE_URL).
    assert lines["user-service"][1:5] == [str(stack.layout.user_service_port), lines["gateway"][2], "running", "ok"]
    assert lines["user-1"][4] == "ready"
    assert int(lines["user-1"][2]) == stack.replicas["user-1"].proc.pid


def test_the_user_service_has_an_internal_address_that_is_not_the_gateway(stack, account):
    """The replicas' USER_SERVICE_URL reaches the user replicas only, not the public edge."""
    url = stack.layout.user_service_url
    assert url != stack.layout.gateway_url
    assert {stack.replica_env(s, 1)["USER_SERVICE_URL"] for s in ("user", "catalog", "worker")} == {url}
    profile = requests.get(f"{url}/v1/users/{account.id}", timeout=5)
    assert profile.status_code == 200 and profile.json()["id"] == account.id
    assert profile.headers["X-Served-By"].startswith("user-")
    # A catalog path goes to the user service too (which knows no such route): no gateway routing here.
    products = requests.get(f"{url}/v1/products", timeout=5)
    assert products.status_code == 404 and products.headers["X-Served-By"].startswith("user-")


def test_logs_show_a_replicas_json_lines(stack, gateway):
    requests.get(f"{gateway}/v1/users/{'0' * 24}", headers={"X-Request-ID": "find-me-in-the-logs"}, timeout=5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        result = _cli(stack, "logs", "user", "-n", "200")
        if "find-me-in-the-logs" in result.stdout:
            break
        time.sleep(0.3)
    assert "find-me-in-the-logs" in result.stdout
    assert _cli(stack, "logs", "nonsense").returncode == 1


class _Traffic:
    """A bounded loop of reads and sign-ins through the gateway, counting every outcome."""

    def __init__(self, gateway: str, account, threads: int = 4, max_seconds: float = 120):
        self.gateway, self.account = gateway, account
        self.outcomes: Counter = Counter()
        self.served_by: Counter = Counter()
        self.stop = threading.Event()
        self.deadline = time.monotonic() + max_seconds
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, index: int) -> None:
        with requests.Session() as http:
            # Like a browser: an idempotent request that finds its idle keep-alive connection
            # closed (nginx closes idle ones when it reloads) is retried (RFC 9110, 9.2.2).
            retry = Retry(total=1, connect=1, read=1, status=0, other=0, allowed_methods={"GET"})
            http.mount("http://", HTTPAdapter(max_retries=retry))
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                try:
                    if index == 0:  # a write, never retried: sent on a fresh connection each time
                        response = http.post(f"{self.gateway}/v1/sessions", timeout=10,
                                             headers={"Connection": "close"},
                                             json={"email": self.account.email, "password": self.account.password})
                        ok = response.status_code == 201
                    else:
                        response = http.get(f"{self.gateway}/v1/users/{self.account.id}", timeout=10)
                        ok = response.status_code == 200
                    outcome = "ok" if ok else f"status {response.status_code}"
                    served = response.headers.get("X-Served-By", "?")
                except requests.RequestException as exc:
                    outcome, served = f"{type(exc).__name__} {index} {exc}", "?"
                with self.lock:
                    self.outcomes[outcome] += 1
                    self.served_by[served] += 1

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def _user_replicas_serving(stack) -> set[str]:
    return {r.name for r in stack.service_replicas("user") if r.proc.alive()}


@pytest.mark.lifecycle
def test_scaling_user_2_to_4_to_1_fails_no_request(stack, gateway):
    account = sign_up(gateway)
    try:
        with _Traffic(gateway, account) as traffic:
            time.sleep(1)
            assert _cli(stack, "scale", "user=4").returncode == 0
            stack._load()
            assert _user_replicas_serving(stack) == {"user-1", "user-2", "user-3", "user-4"}
            time.sleep(2)
            newcomers_before = traffic.served_by["user-3"] + traffic.served_by["user-4"]
            scaled_down = _cli(stack, "scale", "user=1")
            assert scaled_down.returncode == 0, scaled_down.stderr
            stack._load()
            assert _user_replicas_serving(stack) == {"user-1"}
            time.sleep(1)
        assert set(traffic.outcomes) == {"ok"}, traffic.outcomes
        assert sum(traffic.outcomes.values()) > 50
        assert newcomers_before > 0, traffic.served_by  # the new replicas took traffic
        for name in ("user-2", "user-3", "user-4"):
            assert not (stack.layout.run_dir / "state.json").read_text().count(f'"{name}"')
    finally:
        stack.scale("user", 2)
    assert _user_replicas_serving(stack) == {"user-1", "user-2"}


def test_scale_rejects_bad_requests_clearly(stack):
    for args in (["scale", "nobody=2"], ["scale", "user=-1"], ["scale", "user=many"], ["scale", "user=999"]):
        result = _cli(stack, *args)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert result.stderr.strip()


@pytest.mark.lifecycle
def test_data_survives_down_and_up(stack, gateway):
    account = sign_up(gateway, display_name="Still Here")
    stack.down()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{gateway}/healthz", timeout=2)
    stack.up(settings=stack.env_overrides)
    profile = requests.get(f"{gateway}/v1/users/{account.id}", timeout=10)
    assert profile.status_code == 200
    assert profile.json()["display_name"] == "Still Here"
    again = requests.post(f"{gateway}/v1/sessions", json={"email": account.email, "password": account.password},
                          timeout=10)
    assert again.status_code == 201


def test_a_port_in_use_gives_a_clear_message_not_a_traceback(tmp_path):
    with socket.socket() as blocker:
        offset = SECOND_STACK_PORT_OFFSET
        blocker.bind(("127.0.0.1", 8080 + offset))  # this stack's gateway port, now busy
        blocker.listen()
        env = dict(os.environ, SCALESHOP_RUN_DIR=str(tmp_path), SCALESHOP_PORT_OFFSET=str(offset))
        result = subprocess.run([sys.executable, "-m", "stack", "up", "user=1", "catalog=1", "worker=1"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "already in use" in result.stderr and str(offset + 8080) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state.json").exists() or '"proc"' not in (tmp_path / "state.json").read_text()


def test_kafka_storage_formats_with_a_cluster_id_that_starts_with_a_dash(tmp_path):
    """Cluster ids are random URL-safe base64: 1 in 64 starts with "-", which once broke `make up`."""
    from stack.layout import Layout
    from stack.servers import kafka_format_storage

    layout = Layout(run_dir=tmp_path, cache_dir=REPO / ".cache", port_offset=PORT_OFFSET)  # format binds no port
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "cluster-id").write_text("-Ab3dEfGhIjKlMnOpQrStUw")
    kafka_format_storage(layout)
    meta = next(tmp_path.rglob("meta.properties")).read_text()
    assert "cluster.id=-Ab3dEfGhIjKlMnOpQrStUw" in meta


def test_an_impossible_port_offset_is_refused_clearly(tmp_path):
    env = dict(os.environ, SCALESHOP_RUN_DIR=str(tmp_path), SCALESHOP_PORT_OFFSET="60000")
    result = subprocess.run([sys.executable, "-m", "stack", "status"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "SCALESHOP_PORT_OFFSET=60000" in result.stderr and "Traceback" not in result.stderr


def test_bad_configuration_stops_a_service_with_a_clear_message():
    env = dict(os.environ, AUTH_SECRET="short", PORT="not-a-port")
    result = subprocess.run([sys.executable, "-m", "services.user"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "AUTH_SECRET" in result.stderr and "PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_cpu_limit_is_applied_to_a_process_and_its_children(tmp_path):
    limit = cgroups.create(f"test-{os.getpid()}", 0.25)
    if not limit.applied:
        pytest.skip(f"this machine cannot apply CPU limits: {limit.reason}")
    marker = tmp_path / "child-started"
    script = (f"import subprocess, time; subprocess.Popen(['sleep', '30']); open('{marker}', 'w').close(); "
              "time.sleep(30)")
    proc = subprocess.Popen(cgroups.wrap_command(limit, [sys.executable, "-c", script]))
    try:
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        members = {int(pid) for pid in open(os.path.join(limit.path, "cgroup.procs")).read().split()}
        assert proc.pid in members and len(members) >= 2  # the process and the child it forked
        if limit.reason == "cgroup v1":
            assert open(os.path.join(limit.path, "cpu.cfs_quota_us")).read().strip() == "25000"
        else:
            assert open(os.path.join(limit.path, "cpu.max")).read().split()[0] == "25000"
        assert limit.describe() == f"0.25 CPU (applied, {limit.reason})"
    finally:
        for pid in open(os.path.join(limit.path, "cgroup.procs")).read().split():
            os.kill(int(pid), 9)
        proc.wait(timeout=10)
        time.sleep(0.2)
        cgroups.remove(limit)
    assert not os.path.exists(limit.path)
