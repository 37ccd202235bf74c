"""Fixtures of the unit suite: each service's app built by its own `create_app(Settings, clients)`,
with in-memory fakes for memcached and Kafka (tests/unit/fakes.py), driven by Flask's test client.

No server runs, and no address the settings name has one. The database is one that is down
(UnreachableMongoClient): a view that reads it answers 503 (database unavailable) as it would in
production. A test that needs stored data belongs in tests/functional/, which starts the real servers.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.catalog.app import create_app as create_catalog_app
from services.shared.clients import Clients
from services.shared.config import Settings
from services.user.app import create_app as create_user_app

from .fakes import FakeCache, FakePublisher, UnreachableMongoClient

AUTH_SECRET = "unit-test-secret-0123456789abcdef"
NOWHERE = "mongodb://127.0.0.1:9/"  # the discard port: nothing answers MongoDB there
NO_BROKER = ("127.0.0.1:9",)  # nor Kafka (the publisher is a fake; /readyz still checks the address)

APP_FACTORIES = {"user": create_user_app, "catalog": create_catalog_app}


def unit_settings(**overrides: object) -> Settings:
    """Settings for an app under unit test: a database and a broker that are not there, failing fast."""
    return Settings(**{"auth_secret": AUTH_SECRET, "mongodb_url": NOWHERE, "mongodb_timeout_ms": 50,
                       "kafka_bootstrap_servers": NO_BROKER, "replica_id": "unit", **overrides})


@dataclass
class ServiceUnderTest:
    """One service's app with the fakes it was built with, and a test client of it."""

    name: str
    app: Flask
    client: FlaskClient
    cache: FakeCache
    publisher: FakePublisher
    settings: Settings
    clients: Clients


def build_service(name: str, **settings_overrides: object) -> ServiceUnderTest:
    settings = unit_settings(**settings_overrides)
    cache, publisher = FakeCache(settings.cache_ttl_seconds), FakePublisher()
    clients = Clients(mongo=UnreachableMongoClient(), cache=cache, publisher=publisher)
    app = APP_FACTORIES[name](settings, clients=clients)  # not `testing`: errors are answered as in production
    return ServiceUnderTest(name, app, app.test_client(), cache, publisher, settings, clients)


@contextlib.contextmanager
def running(name: str, **settings_overrides: object) -> Iterator[ServiceUnderTest]:
    """`build_service`, with its MongoDB client closed afterwards."""
    built = build_service(name, **settings_overrides)
    try:
        yield built
    finally:
        built.clients.mongo.close()


@pytest.fixture
def user_service() -> Iterator[ServiceUnderTest]:
    with running("user") as built:
        yield built


@pytest.fixture
def catalog_service() -> Iterator[ServiceUnderTest]:
    with running("catalog") as built:
        yield built


@pytest.fixture(params=sorted(APP_FACTORIES))
def service(request) -> Iterator[ServiceUnderTest]:
    """Each service in turn."""
    with running(request.param) as built:
        yield built


@pytest.fixture
def settings() -> Settings:
    """The unit suite's settings, for what is built without an app (e.g. the worker)."""
    return unit_settings()
