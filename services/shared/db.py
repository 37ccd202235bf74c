"""MongoDB access: one client per process, bounded timeouts, and a round-trip counter.

Every command sent is counted (a pymongo CommandListener) per route, both in the
`scaleshop_db_round_trips_total` metric and for the current request, which the app
reports in the `X-DB-Round-Trips` response header.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from flask import g, has_request_context, request
from pymongo import MongoClient, monitoring
from pymongo.database import Database

from .config import Settings
from .metrics import DB_ROUND_TRIPS


class RoundTripCounter(monitoring.CommandListener):
    """Counts commands sent to the database, per route and per request."""

    def __init__(self, service: str):
        self.service = service

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        route = "background"
        if has_request_context():
            route = request.url_rule.rule if request.url_rule else "unmatched"
            g.db_round_trips = g.get("db_round_trips", 0) + 1
        DB_ROUND_TRIPS.labels(self.service, route, event.command_name).inc()

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def connect(settings: Settings, service: str) -> MongoClient:
    """A client that fails fast (503 to the caller) instead of hanging when the database is down."""
    timeout = settings.mongodb_timeout_ms
    return MongoClient(
        settings.mongodb_url,
        serverSelectionTimeoutMS=timeout,
        connectTimeoutMS=timeout,
        socketTimeoutMS=max(timeout * 5, 5000),
        retryWrites=False,  # mongo-java-server has no sessions; a failed write is answered 503, not retried blindly
        appname=f"scaleshop-{service}",
        event_listeners=[RoundTripCounter(service)],
    )


def ping(client: MongoClient, timeout_ms: int) -> None:
    """Raise if the database does not answer within `timeout_ms`."""
    client.admin.command("ping", maxTimeMS=timeout_ms)


class IndexSetup:
    """Creates a service's indexes once per process, retried on first use if the database was down at start."""

    def __init__(self, create: Callable[[Database], None]):
        self._create = create
        self._done = False
        self._lock = threading.Lock()

    def ensure(self, db: Database) -> None:
        if self._done:
            return
        with self._lock:
            if not self._done:
                self._create(db)
                self._done = True

    def try_ensure(self, db: Database) -> bool:
        try:
            self.ensure(db)
        except Exception:  # noqa: BLE001 - the database may be down at start; retried on use
            return False
        return True
