"""The endpoints and headers every HTTP service has (DESIGN.md), on the real stack."""
from __future__ import annotations

import re
import time
import uuid

import pytest
import requests
from openapi_spec_validator import validate

from tests.functional.conftest import replica_url, sign_up

REPLICAS = ["user-1", "user-2", "catalog-1", "catalog-2"]


@pytest.mark.parametrize("name", REPLICAS)
def test_healthz_answers_without_checking_dependencies(stack, name):
    response = requests.get(f"{replica_url(stack, name)}/healthz", timeout=5)
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


@pytest.mark.parametrize("name", REPLICAS)
def test_readyz_reports_each_dependency(stack, name):
    response = requests.get(f"{replica_url(stack, name)}/readyz", timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert {dep: state["state"] for dep, state in body["dependencies"].items()} == {
        "mongodb": "up", "memcached": "up", "kafka": "up",
    }


def _jobs_partitions(stack, name: str) -> set[str]:
    body = requests.get(f"{replica_url(stack, name)}/readyz", timeout=5).json()
    assert body["dependencies"]["kafka"]["state"] == "up"
    return {p for p in body["assigned"] if p.startswith("jobs/")}


def test_workers_are_one_consumer_group_sharing_the_partitions(stack):
    deadline = time.monotonic() + 120  # joining the group takes a rebalance or two (slower on a busy machine)
    while True:
        owned = [_jobs_partitions(stack, name) for name in ("worker-1", "worker-2")]
        # Each of the 6 partitions of `jobs` is owned by exactly one worker, and both work.
        if len(owned[0] | owned[1]) == 6 and not owned[0] & owned[1] and all(owned):
            break
        assert time.monotonic() < deadline, f"partitions never settled: {owned}"
        time.sleep(0.5)


def test_request_id_is_echoed_or_created(gateway):
    mine = f"test-{uuid.uuid4().hex}"
    echoed = requests.get(f"{gateway}/v1/users/{'0' * 24}", headers={"X-Request-ID": mine}, timeout=5)
    assert echoed.headers["X-Request-ID"] == mine
    fresh = requests.get(f"{gateway}/v1/users/{'0' * 24}", timeout=5)
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["X-Request-ID"])
    hostile = requests.get(f"{gateway}/v1/users/{'0' * 24}", headers={"X-Request-ID": "a b<script>"}, timeout=5)
    assert hostile.headers["X-Request-ID"] != "a b<script>"


def test_gateway_balances_across_both_user_replicas(gateway):
    served = {requests.get(f"{gateway}/v1/users/{'0' * 24}", timeout=5).headers["X-Served-By"] for _ in range(20)}
    assert served == {"user-1", "user-2"}


def test_gateway_routes_catalog_paths_to_catalog(gateway):
    response = requests.get(f"{gateway}/v1/products", timeout=5)
    assert response.headers["X-Served-By"].startswith("catalog-")


def test_gateway_unknown_path_is_json_404(gateway):
    response = requests.get(f"{gateway}/nowhere", timeout=5)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def _counter(metrics_text: str, route: str, status: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("scaleshop_http_requests_total{") and f'route="{route}"' in line \
                and f'status="{status}"' in line and 'method="GET"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_add_up_over_all_gunicorn_workers(stack):
    """Requests land on either gunicorn worker process; /metrics must count all of them."""
    base = replica_url(stack, "user-2")
    before = _counter(requests.get(f"{base}/metrics", timeout=5).text, "/v1/users/<user_id>", "404")
    for _ in range(40):
        with requests.Session() as fresh_connection:  # a new connection each time: spread over workers
            assert fresh_connection.get(f"{base}/v1/users/{'0' * 24}", timeout=5).status_code == 404
    text = requests.get(f"{base}/metrics", timeout=5).text
    assert _counter(text, "/v1/users/<user_id>", "404") - before == 40
    assert "scaleshop_http_request_duration_seconds_bucket" in text
    assert "scaleshop_db_round_trips_total" in text


def test_db_round_trips_are_reported_per_request(gateway):
    response = requests.get(f"{gateway}/v1/users/{'0' * 24}", timeout=5)
    assert response.headers["X-DB-Round-Trips"] == "1"


# The routes of DESIGN.md, per service, as OpenAPI (path, method) pairs.
CONTRACT_ROUTES = {
    "user": {
        ("/v1/users", "post"), ("/v1/users", "get"), ("/v1/users/me", "get"), ("/v1/users/me", "patch"),
        ("/v1/users/{user_id}", "get"), ("/v1/users/me/export", "post"), ("/v1/sessions", "post"),
        ("/v1/sessions/current", "delete"),
    },
    "catalog": {
        ("/v1/products", "post"), ("/v1/products", "get"), ("/v1/products/{product_id}", "get"),
        ("/v1/products/{product_id}", "patch"), ("/v1/products/{product_id}", "delete"),
        ("/v1/products/{product_id}/reviews", "post"), ("/v1/categories", "get"), ("/v1/imports", "post"),
        ("/v1/jobs/{job_id}", "get"),
    },
}


@pytest.mark.parametrize("service", ["user", "catalog"])
def test_openapi_is_valid_and_describes_every_route(stack, service, gateway):
    """Each service's document, as the gateway serves it, is valid OpenAPI 3 and describes every route of
    the contract with its responses (tests/unit/shared/test_app.py checks it against the app's own rules)."""
    spec = requests.get(f"{gateway}/openapi/{service}.json", timeout=5).json()
    validate(spec)
    assert spec["openapi"].startswith("3.")
    described = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert CONTRACT_ROUTES[service] <= described, CONTRACT_ROUTES[service] - described
    for path, method in CONTRACT_ROUTES[service]:
        assert spec["paths"][path][method]["responses"], (path, method)


@pytest.mark.parametrize("service, path, required, statuses", [
    ("user", "/v1/users", {"email", "password", "display_name"}, {"201", "409", "422", "415", "400", "413"}),
    ("catalog", "/v1/products", {"name", "description", "price_cents", "currency", "category"},
     {"201", "401", "422", "415", "400", "413"}),
])
def test_openapi_describes_what_a_create_needs(stack, gateway, service, path, required, statuses):
    spec = requests.get(f"{gateway}/openapi/{service}.json", timeout=5).json()
    create = spec["paths"][path]["post"]
    schema_name = create["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(spec["components"]["schemas"][schema_name]["required"]) == required
    assert statuses <= set(create["responses"])


def test_openapi_matches_what_is_enforced(stack, gateway):
    """The spec's maxLength is the limit the service applies (one definition for both)."""
    spec = requests.get(f"{gateway}/openapi/user.json", timeout=5).json()
    schema = spec["components"]["schemas"]["NewUser"]["properties"]["display_name"]
    limit = schema.get("maxLength") or next(s["maxLength"] for s in schema.get("allOf", []) if "maxLength" in s)
    account = sign_up(gateway)
    too_long = requests.patch(f"{gateway}/v1/users/me", json={"display_name": "x" * (limit + 1)},
                              headers=account.auth, timeout=5)
    assert too_long.status_code == 422
    just_fits = requests.patch(f"{gateway}/v1/users/me", json={"display_name": "x" * limit},
                               headers=account.auth, timeout=5)
    assert just_fits.status_code == 200
