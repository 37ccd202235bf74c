"""The local stack's Prometheus, through its HTTP API: every replica, worker and the gateway's nginx
exporter scraped and up; file-based discovery following `scale` both ways; the services' request
counter one series per replica; the gateway's connection counters."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from stack import servers
from stack.control import Stack

# File-based discovery: Prometheus sees the rewritten file at once; its discovery manager and then
# its scrape manager pass changes on in steps of 5 s each, then the first scrape comes within 2 s.
DISCOVERY_WAIT_S = 30
QUERY_WAIT_S = 20


def api(stack: Stack, path: str, **params: str) -> Any:
    response = requests.get(f"{stack.layout.prometheus_url}/api/v1/{path}", params=params, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def active_targets(stack: Stack) -> dict[str, dict]:
    """The scrape targets of the stack's job, by replica label."""
    targets = api(stack, "targets", state="active")["activeTargets"]
    return {t["labels"]["replica"]: t for t in targets if t["labels"].get("job") == servers.SCRAPE_JOB}


def query(stack: Stack, promql: str) -> dict[str, float]:
    """An instant query's value per replica label."""
    return {series["metric"].get("replica", ""): float(series["value"][1])
            for series in api(stack, "query", query=promql)["result"]}


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` until it returns something true; fail with its last answer after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s (last: {answer!r})"
        time.sleep(0.5)


def scraped_and_up(stack: Stack, names: set[str]) -> bool:
    targets = active_targets(stack)
    return set(targets) == names and all(t["health"] == "up" for t in targets.values()) \
        and query(stack, f'up{{job="{servers.SCRAPE_JOB}"}}') == dict.fromkeys(names, 1.0)


def expected_targets(stack: Stack) -> set[str]:
    return {replica.name for replica in stack.replicas.values()} | {servers.GATEWAY_TARGET_LABELS["replica"]}


def test_every_replica_worker_and_the_gateway_exporter_is_scraped_and_up(stack):
    names = expected_targets(stack)
    assert {"user-1", "user-2", "catalog-1", "catalog-2", "worker-1", "worker-2", "gateway"} <= names
    wait_for(lambda: scraped_and_up(stack, names), DISCOVERY_WAIT_S, f"targets {sorted(names)} up")
    targets = active_targets(stack)
    for replica in stack.replicas.values():
        target = targets[replica.name]
        assert target["labels"]["service"] == replica.service
        assert target["scrapeUrl"] == f"http://127.0.0.1:{replica.port}/metrics"
        assert target["scrapeInterval"] == f"{servers.SCRAPE_INTERVAL_S}s"
    assert targets["gateway"]["labels"]["service"] == "gateway"
    assert targets["gateway"]["scrapeUrl"] == f"http://127.0.0.1:{stack.layout.nginx_exporter_port}/metrics"


def test_a_new_catalog_replica_is_scraped_and_a_drained_one_disappears(stack):
    before = len(stack.service_replicas("catalog"))
    old = {replica.name for replica in stack.service_replicas("catalog")}
    try:
        stack.scale("catalog", before + 1)
        (new,) = {replica.name for replica in stack.service_replicas("catalog")} - old
        scaled = time.monotonic()
        wait_for(lambda: scraped_and_up(stack, expected_targets(stack)), DISCOVERY_WAIT_S, f"{new} scraped and up")
        print(f"{new} scraped and up {time.monotonic() - scaled:.1f}s after `scale` returned")

        stack.scale("catalog", before)
        drained = time.monotonic()
        wait_for(lambda: new not in active_targets(stack), DISCOVERY_WAIT_S, f"{new} gone from the targets")
        print(f"{new} gone from the targets {time.monotonic() - drained:.1f}s after `scale` returned")
        assert set(active_targets(stack)) == expected_targets(stack)
    finally:
        if len(stack.service_replicas("catalog")) != before:
            stack.scale("catalog", before)
    assert {replica.name for replica in stack.service_replicas("catalog")} == old


def test_the_request_counter_has_a_series_per_replica(stack, gateway):
    catalog = {replica.name for replica in stack.service_replicas("catalog")}
    served: set[str] = set()
    with requests.Session() as http:
        for _ in range(200):  # until the gateway has sent one to every replica (round robin: a few)
            response = http.get(f"{gateway}/v1/categories", timeout=10)
            assert response.status_code == 200, response.text
            served.add(response.headers["X-Served-By"])
            if served == catalog:
                break
    assert served == catalog
    promql = 'sum by (replica) (scaleshop_http_requests_total{service="catalog", route="/v1/categories", status="200"})'
    per_replica = wait_for(lambda: (answer := query(stack, promql)).keys() == catalog and answer,
                           QUERY_WAIT_S, f"a series per catalog replica of {promql}")
    assert all(value >= 1 for value in per_replica.values()), per_replica


def test_the_gateways_nginx_exporter_reports_its_connections(stack, gateway):
    assert requests.get(f"{gateway}/healthz", timeout=5).status_code == 200
    wait_for(lambda: query(stack, 'up{replica="gateway"}') == {"gateway": 1.0}, DISCOVERY_WAIT_S, "exporter up")
    accepted = wait_for(lambda: query(stack, 'nginx_connections_accepted{service="gateway"}'), QUERY_WAIT_S,
                        "nginx_connections_accepted")
    assert accepted["gateway"] >= 1
    assert query(stack, 'nginx_up{replica="gateway"}') == {"gateway": 1.0}  # the exporter reads stub_status


def test_the_gateways_counters_are_not_on_its_public_routes(stack, gateway):
    for path in ("/stub_status", "/nginx_status", "/status"):
        response = requests.get(f"{gateway}{path}", timeout=5)
        assert response.status_code == 404 and "Active connections" not in response.text, path
    internal = requests.get(f"http://127.0.0.1:{stack.layout.gateway_status_port}/", timeout=5)
    assert internal.status_code == 200 and internal.text.startswith("Active connections"), internal.text
