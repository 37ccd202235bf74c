"""The base of every service's Flask app: dependencies, request ids, metrics, errors, probes.

`create_service_app(name, settings)` returns a Flask app that already has /healthz,
/readyz, /metrics and /openapi.json, answers every error as JSON, stamps each response
with X-Request-ID, X-Served-By and X-DB-Round-Trips, logs each request as a JSON line
and records it in Prometheus. A service passes its blueprints and, if it needs them,
index set-up; its views reach the shared clients through `resources()`. The clients are
built from the settings unless the caller passes them (`clients=`: a unit test's fakes).
"""
from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask.json.provider import DefaultJSONProvider
from pymongo import MongoClient
from pymongo.database import Database

from . import db as dbmod
from . import ratelimit
from .api import openapi_document
from .cache import Cache
from .clients import Clients, connect_clients
from .config import Settings
from .errors import register_error_handlers
from .events import Publisher, check_kafka
from .logs import configure_logging
from .metrics import HTTP_LATENCY, HTTP_REQUESTS, render_metrics

log = logging.getLogger(__name__)

API_VERSION = "1.0.0"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class Resources:
    """A replica's connection pools and configuration (never user data)."""

    service: str
    settings: Settings
    mongo: MongoClient
    cache: Cache
    publisher: Publisher
    indexes: dbmod.IndexSetup | None = None
    _database: Database | None = field(default=None, init=False, repr=False)

    @property
    def db(self) -> Database:
        if self._database is None:  # pymongo builds a new Database object on every client[name]
            self._database = self.mongo[self.settings.mongodb_database]
        if self.indexes is not None:
            self.indexes.ensure(self._database)
        return self._database

    @property
    def auth_secret(self) -> str:
        return self.settings.auth_secret.get_secret_value()


def resources() -> Resources:
    return current_app.extensions["scaleshop"]


class _JsonProvider(DefaultJSONProvider):
    """JSON bodies keep the order the code built them in and their characters as they are."""

    sort_keys = False
    ensure_ascii = False


def create_service_app(
    service: str,
    settings: Settings,
    *,
    blueprints: Sequence[Blueprint] = (),
    create_indexes: Callable[[Database], None] | None = None,
    clients: Clients | None = None,
) -> Flask:
    """The service's app: `blueprints` (one per resource) on top of the probes, errors and hooks."""
    configure_logging(service, settings.replica_id, settings.log_level)
    app = Flask(service)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = _JsonProvider(app)
    app.url_map.strict_slashes = False

    clients = clients or connect_clients(service, settings)
    res = Resources(service, settings, clients.mongo, clients.cache, clients.publisher)
    if create_indexes is not None:
        res.indexes = dbmod.IndexSetup(create_indexes)
        if not res.indexes.try_ensure(res.mongo[settings.mongodb_database]):
            log.warning("database not reachable at start; indexes will be created on first use")
    app.extensions["scaleshop"] = res

    register_error_handlers(app)
    _install_request_hooks(app, service, settings.replica_id)
    app.register_blueprint(_probes_blueprint(service))
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    return app


def _install_request_hooks(app: Flask, service: str, replica_id: str) -> None:
    access_log = logging.getLogger(f"{service}.access")

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else os.urandom(16).hex()  # as uuid4().hex, 5× cheaper
        res = resources()
        ratelimit.enforce(request, res.cache, res.settings)

    @app.after_request
    def _finish(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        route = request.url_rule.rule if request.url_rule else "unmatched"
        response.headers["X-Request-ID"] = g.get("request_id", "")
        response.headers["X-Served-By"] = replica_id
        response.headers["X-DB-Round-Trips"] = str(g.get("db_round_trips", 0))
        answered, latency = _request_metrics(service, request.method, route, response.status_code)
        answered.inc()
        latency.observe(elapsed)
        if route not in ("/healthz", "/readyz", "/metrics"):
            access_log.info(
                "request",
                extra={
                    "method": request.method,
                    "route": route,
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
        return response


@functools.cache  # prometheus_client's labels() takes a lock and checks every label on each call
def _request_metrics(service: str, method: str, route: str, status: int) -> tuple[Any, Any]:
    """The request counter and latency histogram children of one kind of request."""
    return (HTTP_REQUESTS.labels(service, method, route, str(status)),
            HTTP_LATENCY.labels(service, method, route))


def _probes_blueprint(service: str) -> Blueprint:
    probes = Blueprint("probes", __name__)

    @probes.get("/healthz")
    def healthz():
        """Liveness: the process can serve. No dependency is checked."""
        return jsonify({"status": "ok", "service": service})

    @probes.get("/readyz")
    def readyz():
        """Readiness: 200 while MongoDB answers; a down cache or broker only degrades."""
        res = resources()
        deps = {
            "mongodb": _probe(lambda: dbmod.ping(res.mongo, res.settings.mongodb_timeout_ms)),
            "memcached": _probe(res.cache.check),
            "kafka": _probe(lambda: check_kafka(res.settings)),
        }
        if deps["mongodb"]["state"] != "up":
            status, code = "unready", 503
        elif any(d["state"] != "up" for d in deps.values()):
            status, code = "degraded", 200
        else:
            status, code = "ready", 200
        return jsonify({"status": status, "service": service, "dependencies": deps}), code

    @probes.get("/metrics")
    def metrics():
        body, content_type = render_metrics()
        return Response(body, content_type=content_type)

    @probes.get("/openapi.json")
    def openapi():
        return jsonify(openapi_document(current_app, f"Scaleshop {service} service", API_VERSION))

    return probes


def _probe(check: Callable[[], None]) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - any failure means the dependency is down
        return {"state": "down", "error": type(exc).__name__}
    return {"state": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def require_principal():
    """The authenticated caller of this request (verified token, not revoked), or 401."""
    from .auth import authenticate

    res = resources()
    return authenticate(res.auth_secret, lambda: res.db, res.cache)
