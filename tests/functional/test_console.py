"""The lab console's API through the gateway, against the real stack: actions need the operator
token (401), bad input is a JSON 4xx naming the field, only GET query/query_range of Prometheus pass
through, and a scale action changes the stack and is audit-logged and marked."""
from __future__ import annotations

import json

import pytest
import requests

from stack.control import Stack
from tests.functional.console_api import api, headers, restore, state, wait_idle
from tests.functional.test_prometheus import DISCOVERY_WAIT_S, wait_for


@pytest.fixture
def console(stack: Stack):
    wait_idle(stack)
    yield stack
    restore(stack)


def test_actions_need_the_operator_token(console: Stack):
    for auth in ({}, {"Authorization": "Bearer not-the-token-at-all"}):
        response = requests.post(api(console, "actions/scale"), json={"service": "catalog", "replicas": 3},
                                 headers=auth, timeout=10)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(state(console)["replicas"]["catalog"]) == 2


@pytest.mark.parametrize("path,body,status,field", [
    ("scale", {"service": "catalog", "replicas": 1000}, 422, "replicas"),
    ("scale", {"service": "database", "replicas": 1}, 422, "service"),
    ("cache", {"patterns": "none"}, 422, "patterns"),
    ("load", {"rate": 100000, "duration": 10}, 422, "rate"),
    ("kill", {"replica": "gateway"}, 422, "replica"),
    ("stop-kafka", {"seconds": 86400}, 422, "seconds"),
])
def test_bad_input_is_a_json_4xx(console: Stack, path, body, status, field):
    response = requests.post(api(console, f"actions/{path}"), json=body, headers=headers(console), timeout=10)
    assert response.status_code == status, response.text
    assert response.json()["error"]["details"][0]["field"] == field
    malformed = requests.post(api(console, f"actions/{path}"), data="{", timeout=10,
                              headers={**headers(console), "Content-Type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "malformed_json"


def test_only_prometheus_queries_pass_through(console: Stack):
    # Prometheus answers as soon as it runs; its first scrape of the replicas comes within the discovery wait.
    def answered() -> bool:
        ok = requests.get(api(console, "prometheus/query"), params={"query": 'up{job="scaleshop"}'}, timeout=10)
        assert ok.status_code == 200, ok.text
        return bool(ok.json()["data"]["result"])
    wait_for(answered, DISCOVERY_WAIT_S, "the pass-through's answer to up{job=\"scaleshop\"} holding series")
    bad = requests.get(api(console, "prometheus/query"), params={"query": "up("}, timeout=10)
    assert bad.status_code == 400 and bad.json()["status"] == "error"
    for path in ("prometheus/targets", "prometheus/admin/tsdb/delete_series", "prometheus/../../-/quit"):
        assert requests.get(api(console, path), timeout=10).status_code == 404
    assert requests.post(api(console, "prometheus/query"), data={"query": "up"}, timeout=10).status_code in (404, 405)


def test_the_public_routes_reach_no_control(console: Stack):
    base = console.layout.gateway_url
    for path in ("/v1/console/api/actions/scale", "/v1/products/console/api/actions/scale"):
        response = requests.post(base + path, json={"service": "catalog", "replicas": 3},
                                 headers=headers(console), timeout=10)
        assert response.status_code in (404, 405), response.text
    assert state(console)["running"] is None and len(state(console)["replicas"]["catalog"]) == 2


def test_scale_through_the_console(console: Stack):
    accepted = requests.post(api(console, "actions/scale"), json={"service": "catalog", "replicas": 3},
                             headers=headers(console), timeout=30)
    assert accepted.status_code == 202, accepted.text
    done = wait_idle(console)
    assert [r["name"] for r in done["replicas"]["catalog"]] == ["catalog-1", "catalog-2", "catalog-3"]
    assert all(r["ready"] for r in done["replicas"]["catalog"])
    served_by = {requests.get(f"{console.layout.gateway_url}/v1/categories", timeout=10).headers["X-Served-By"]
                 for _ in range(30)}
    assert "catalog-3" in served_by
    line = json.loads((console.layout.log_dir / "console-audit.jsonl").read_text().splitlines()[-1])
    assert line["action"] == "scale" and line["arguments"] == {"service": "catalog", "replicas": 3}
    assert line["result"] == "ok" and line["time"].endswith("Z")
    marks = requests.get(api(console, "marks"), timeout=10).json()["marks"]
    assert marks[-1]["label"] == "scale catalog=3" and marks[-1]["result"] == "ok"
