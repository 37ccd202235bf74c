"""The service app base (services/shared/app.py), on both services built by their `create_app`:
the OpenAPI document describes every route, the probes, the response headers, the injected clients."""
from __future__ import annotations

import re

from openapi_spec_validator import validate

from services.shared.app import resources

PROBES = {"/healthz", "/readyz", "/metrics", "/openapi.json"}  # served by every app, left out of its document
RULE_ARGUMENT = re.compile(r"<(?:\w+:)?(\w+)>")  # <converter:name> or <name>


def routes_of(app) -> dict[tuple[str, str], list[str]]:
    """(OpenAPI path, method) -> path parameters, for every URL rule of the app but the probes and static files."""
    routes = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule in PROBES:
            continue
        path = RULE_ARGUMENT.sub(r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes[(path, method.lower())] = sorted(rule.arguments)
    return routes


def test_the_openapi_document_is_valid_and_describes_every_route(service):
    response = service.client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    validate(spec)
    described = {(path, method): sorted(p["name"] for p in op["parameters"] if p["in"] == "path")
                 for path, ops in spec["paths"].items() for method, op in ops.items()}
    routes = routes_of(service.app)
    assert routes, "the app has no routes"
    assert described == routes


def test_the_documents_hold_each_services_own_routes(user_service, catalog_service):
    user_paths = user_service.client.get("/openapi.json").get_json()["paths"]
    catalog_paths = catalog_service.client.get("/openapi.json").get_json()["paths"]
    assert "post" in user_paths["/v1/users"] and "post" in user_paths["/v1/sessions"]
    assert "post" in catalog_paths["/v1/products"] and "get" in catalog_paths["/v1/products/{product_id}"]
    assert not set(user_paths) & set(catalog_paths)


def test_every_probe_is_served_and_left_out_of_the_document(service):
    assert {rule.rule for rule in service.app.url_map.iter_rules()} >= PROBES
    assert not PROBES & set(service.client.get("/openapi.json").get_json()["paths"])


def test_healthz_answers_without_any_dependency(service):
    response = service.client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "service": service.name}


def test_readyz_is_unready_without_the_database_and_reports_each_dependency(service):
    service.cache.down = True
    response = service.client.get("/readyz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unready"
    assert {name: dep["state"] for name, dep in body["dependencies"].items()} == {
        "mongodb": "down", "memcached": "down", "kafka": "down"}


def test_each_response_carries_a_request_id_and_the_replica(service):
    given = service.client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["X-Request-ID"] == "abc-123"
    assert given.headers["X-Served-By"] == service.settings.replica_id
    assert given.headers["X-DB-Round-Trips"] == "0"
    made_up = service.client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", made_up.headers["X-Request-ID"])


def test_the_app_uses_the_clients_it_was_given(service):
    with service.app.app_context():
        res = resources()
        assert res.cache is service.cache and res.publisher is service.publisher
        assert res.mongo is service.clients.mongo


def test_a_route_that_needs_the_database_answers_503_when_it_is_down(user_service):
    response = user_service.client.get(f"/v1/users/{'0' * 24}")
    assert response.status_code == 503, response.data
    assert response.get_json()["error"]["code"] == "dependency_unavailable"
