"""The clients a process reaches its servers through: MongoDB, memcached and Kafka.

`connect_clients(service, settings)` builds them from the settings (nothing connects before
first use). A service app (services/shared/app.py) and the worker (services/worker/main.py)
take a `Clients` as an argument and build one only when none is given, so a unit test passes
in-memory fakes (tests/unit/fakes.py) where a real server is not the point.
"""
from __future__ import annotations

from dataclasses import dataclass

from pymongo import MongoClient

from . import db as dbmod
from .cache import Cache
from .config import Settings
from .events import Publisher


@dataclass(frozen=True)
class Clients:
    mongo: MongoClient
    cache: Cache
    publisher: Publisher


def connect_clients(service: str, settings: Settings) -> Clients:
    """Clients of the servers `settings` names, identified as `service` on this replica."""
    return Clients(dbmod.connect(settings, service), Cache(settings),
                   Publisher(settings, f"{service}-{settings.replica_id}"))
