"""The console's logic with an in-memory controller: the operator token, every action's input
checks (JSON 4xx, never a 500), audit lines and marks, one action at a time, timed faults undone,
and the Prometheus pass-through (GET query/query_range only, only their parameters)."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import requests

from services.console import prometheus
from services.console.app import ConsoleConfig, create_app

TOKEN = "operator-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeController:
    """Replicas, servers and a load run kept in memory; `calls` says what the console asked."""

    def __init__(self) -> None:
        self.counts = {"user": 2, "catalog": 2, "worker": 2}
        self.patterns = "objects,queries"
        self.memcached = "running"
        self.kafka = "running"
        self.running_load: dict | None = None
        self.calls: list[tuple] = []
        self.gate: threading.Event | None = None

    def replicas(self):
        return {s: [{"name": f"{s}-{i}", "state": "running", "ready": True} for i in range(1, n + 1)]
                for s, n in self.counts.items()}

    def servers(self):
        return {"memcached": self.memcached, "kafka": self.kafka}

    def scale(self, service, count):
        if self.gate is not None:
            self.gate.wait(5)
        self.calls.append(("scale", service, count))
        self.counts[service] = count

    def cache_patterns(self):
        return self.patterns

    def set_cache_patterns(self, patterns):
        self.calls.append(("cache", patterns))
        self.patterns = patterns

    def kill_replica(self, name):
        self.calls.append(("kill", name))

    def pause_memcached(self):
        self.memcached = "paused"

    def resume_memcached(self):
        self.memcached = "running"

    def stop_kafka(self):
        raise RuntimeError("kafka would not stop")

    def start_kafka(self):
        self.kafka = "running"

    def start_load(self, rate, mix, duration):
        if self.running_load:
            raise ValueError("a load run is already running: stop it first")
        self.running_load = {"pid": 42, "rate": rate, "mix": mix, "duration": duration}
        return 42

    def stop_load(self):
        stopped, self.running_load = self.running_load is not None, None
        return stopped

    def load(self):
        return self.running_load


@pytest.fixture
def setup(tmp_path: Path):
    controller = FakeController()
    timers: list = []
    config = ConsoleConfig(controller=controller, prometheus_url="http://127.0.0.1:9", token=TOKEN,
                           audit_log=tmp_path / "audit.jsonl")
    assert config.console is not None
    config.console._timer = lambda seconds, action: timers.append((seconds, action))
    config.console._background = lambda work: work()  # slow actions run at once here
    app = create_app(config)
    return app.test_client(), controller, config, timers


def audit(config: ConsoleConfig) -> list[dict]:
    return [json.loads(line) for line in config.audit_log.read_text().splitlines()]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-0123456789"},
                                     {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}])
def test_actions_need_the_operator_token(setup, headers):
    client, controller, config, _ = setup
    response = client.post("/console/api/actions/scale", json={"service": "catalog", "replicas": 3},
                           headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"
    assert controller.calls == [] and not config.audit_log.exists()


def test_scale_runs_is_audited_and_marked(setup):
    client, controller, config, _ = setup
    response = client.post("/console/api/actions/scale", json={"service": "catalog", "replicas": 3}, headers=AUTH)
    assert response.status_code == 202, response.json
    assert response.json["result"] == "accepted"
    assert controller.calls == [("scale", "catalog", 3)]
    [line] = audit(config)
    assert line["action"] == "scale" and line["arguments"] == {"service": "catalog", "replicas": 3}
    assert line["result"] == "ok" and line["time"].endswith("Z")
    marks = client.get("/console/api/marks").json["marks"]
    assert [m["label"] for m in marks] == ["scale catalog=3"]
    assert len(client.get("/console/api/state").json["replicas"]["catalog"]) == 3


@pytest.mark.parametrize("path,body", [
    ("scale", {"service": "gateway", "replicas": 2}),
    ("scale", {"service": "catalog", "replicas": 0}),
    ("scale", {"service": "catalog", "replicas": 99}),
    ("scale", {"service": "catalog", "replicas": "3"}),
    ("scale", {"service": "catalog", "replicas": True}),
    ("cache", {"patterns": "off"}),
    ("cache", {"patterns": ["everything"]}),
    ("load", {"rate": 0, "duration": 10}),
    ("load", {"rate": 10_000, "duration": 10}),
    ("load", {"rate": 10, "duration": 10_000}),
    ("load", {"rate": 10, "duration": 10, "mix": "product=1;rm -rf"}),
    ("load", {"rate": 10, "duration": 10, "mix": "teleport=5"}),
    ("kill", {"replica": "gateway"}),
    ("pause-memcached", {"seconds": 0}),
    ("pause-memcached", {"seconds": 3600}),
    ("stop-kafka", {}),
])
def test_bad_input_is_a_422_naming_the_field(setup, path, body):
    client, controller, _, _ = setup
    response = client.post(f"/console/api/actions/{path}", json=body, headers=AUTH)
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "validation_failed"
    assert response.json["error"]["details"][0]["field"]
    assert controller.calls == []


def test_malformed_bodies_are_4xx(setup):
    client, _, _, _ = setup
    assert client.post("/console/api/actions/scale", data="{", headers={**AUTH, "Content-Type": "application/json"}
                       ).status_code == 400
    assert client.post("/console/api/actions/scale", data="x", headers=AUTH).status_code == 415
    assert client.post("/console/api/actions/scale", json=[1], headers=AUTH).status_code == 400
    wrong_method = client.get("/console/api/actions/scale", headers=AUTH)  # the static files' route: not found
    assert wrong_method.status_code in (404, 405) and wrong_method.json["error"]["code"]
    assert client.post("/console/api/actions/reboot", json={}, headers=AUTH).status_code in (404, 405)


def test_cache_switch_and_load_run(setup):
    client, controller, config, _ = setup
    assert client.post("/console/api/actions/cache", json={"patterns": []}, headers=AUTH).status_code == 202
    assert controller.patterns == ""
    assert client.post("/console/api/actions/load", json={"rate": 50, "duration": 60, "mix": "product=100"},
                       headers=AUTH).status_code == 201
    assert client.get("/console/api/state").json["load"]["rate"] == 50
    again = client.post("/console/api/actions/load", json={"rate": 50, "duration": 60}, headers=AUTH)
    assert again.status_code == 422 and "already running" in again.json["error"]["message"]
    assert client.delete("/console/api/actions/load", headers=AUTH).status_code == 200
    assert client.delete("/console/api/actions/load", headers=AUTH).status_code == 422
    assert [(a["action"], a["result"].split(":")[0]) for a in audit(config)] == [
        ("cache", "ok"), ("load-start", "ok"), ("load-start", "refused"), ("load-stop", "ok"), ("load-stop", "refused")]
    assert [m["label"] for m in client.get("/console/api/marks").json["marks"]][:2] == ["cache off", "load 50/s 60s"]


def test_a_timed_fault_is_undone_by_its_timer(setup):
    client, controller, config, timers = setup
    response = client.post("/console/api/actions/pause-memcached", json={"seconds": 5}, headers=AUTH)
    assert response.status_code == 202
    assert client.get("/console/api/state").json["servers"]["memcached"] == "paused"
    [(seconds, restore)] = timers
    assert seconds == 5
    restore()
    assert controller.memcached == "running"
    assert [a["action"] for a in audit(config)] == ["pause-memcached", "resume-memcached"]


def test_a_platform_failure_is_audited_and_shown(setup):
    client, _, config, timers = setup
    response = client.post("/console/api/actions/stop-kafka", json={"seconds": 10}, headers=AUTH)
    assert response.status_code == 202
    assert audit(config)[-1]["result"] == "failed: kafka would not stop"
    assert client.get("/console/api/marks").json["marks"][-1]["result"] == "failed: kafka would not stop"
    assert timers == []  # nothing to undo


def test_one_action_at_a_time(setup):
    client, controller, _, _ = setup
    controller.gate = threading.Event()
    client.application.config["CONSOLE"].console._background = lambda work: threading.Thread(target=work).start()
    first = threading.Thread(target=lambda: client.post("/console/api/actions/scale",
                                                        json={"service": "user", "replicas": 3}, headers=AUTH))
    first.start()
    try:
        for _ in range(100):
            if client.get("/console/api/state").json["running"]:
                break
            threading.Event().wait(0.01)
        second = client.application.test_client().post("/console/api/actions/scale",
                                                       json={"service": "user", "replicas": 4}, headers=AUTH)
        assert second.status_code == 409
    finally:
        controller.gate.set()
        first.join()
    for _ in range(100):
        if not client.get("/console/api/state").json["running"]:
            break
        threading.Event().wait(0.01)
    assert controller.calls == [("scale", "user", 3)]
    assert client.post("/console/api/actions/scale", json={"service": "user", "replicas": 4},
                       headers=AUTH).status_code == 202


class FakeSession:
    def __init__(self, status: int = 200, fail: bool = False):
        self.status, self.fail, self.asked = status, fail, []

    def get(self, url, params, timeout):
        self.asked.append((url, params))
        if self.fail:
            raise requests.ConnectionError("refused")
        response = requests.Response()
        response.status_code, response._content = self.status, b'{"status": "success"}'
        return response


def test_prometheus_pass_through_forwards_only_its_parameters():
    session = FakeSession()
    body, status = prometheus.forward("http://p", "query_range",
                                      {"query": "up", "start": "1", "end": "2", "step": "2", "admin": "x"}, session)
    assert status == 200 and body == b'{"status": "success"}'
    assert session.asked == [("http://p/api/v1/query_range", {"query": "up", "start": "1", "end": "2", "step": "2"})]


def test_prometheus_pass_through_errors(setup):
    from services.shared.errors import DependencyUnavailable, ValidationFailed

    with pytest.raises(ValidationFailed):
        prometheus.forward("http://p", "query", {}, FakeSession())
    with pytest.raises(DependencyUnavailable):
        prometheus.forward("http://p", "query", {"query": "up"}, FakeSession(fail=True))
    assert prometheus.forward("http://p", "query", {"query": "up("}, FakeSession(400))[1] == 400
    client = setup[0]
    assert client.get("/console/api/prometheus/query?query=up").status_code == 503
    assert client.get("/console/api/prometheus/series?match=up").status_code == 404
    assert client.post("/console/api/prometheus/query?query=up").status_code == 405


def test_the_page_is_served(setup):
    client = setup[0]
    page = client.get("/console/")
    assert page.status_code == 200 and b"<script" in page.data
