"""In-memory stand-ins for the servers' clients, for unit tests where a real server is not the point.

Each has the interface of the client it replaces (services/shared/clients.py: `Clients`) and
no more: `FakeCache` is a `services.shared.cache.Cache`, `FakePublisher` a
`services.shared.events.Publisher` that records what it was given, `FakeDatabase` the few
by-`_id` calls of pymongo that the job records use (services/shared/jobs.py: find_one,
insert_one, find_one_and_update), `UnreachableMongoClient` a MongoClient of a database that is
down. Anything else a fake does not know raises, so a test never passes on behaviour the real
client does not have. Functional tests (tests/functional/) keep
the real servers.
"""
from __future__ import annotations

import copy
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import ServerSelectionTimeoutError

from services.shared.cache import CacheUnavailable

# ---- memcached ---------------------------------------------------------------------------------

class FakeCache:
    """services.shared.cache.Cache in a dict; `down = True` makes it behave as an unreachable memcached
    (look-ups None, stores False, invalidations raise CacheUnavailable as a refused connection)."""

    def __init__(self, default_ttl: int = 300) -> None:
        self.values: dict[str, Any] = {}
        self.ttls: dict[str, int] = {}
        self.default_ttl = default_ttl
        self.down = False

    def _unavailable(self) -> CacheUnavailable:
        return CacheUnavailable("fake memcached is down", refused=True)

    def get_many(self, keys: list[str]) -> dict[str, Any] | None:
        if self.down:
            return None
        return {key: copy.deepcopy(self.values[key]) for key in keys if key in self.values}

    def get(self, key: str) -> Any | None:
        values = self.get_many([key])
        return None if values is None else values.get(key)

    def _store(self, key: str, value: Any, ttl: int | None) -> None:
        self.values[key] = copy.deepcopy(value)  # memcached stores a copy (pickled)
        self.ttls[key] = self.default_ttl if ttl is None else ttl

    def set(self, key: str, value: Any, ttl: int | None = None) -> bool:
        if self.down:
            return False
        self._store(key, value, ttl)
        return True

    def set_now(self, key: str, value: Any, ttl: int | None = None) -> None:
        if self.down:
            raise self._unavailable()
        self._store(key, value, ttl)

    def add(self, key: str, value: Any, ttl: int | None = None) -> bool:
        if self.down or key in self.values:
            return False
        self._store(key, value, ttl)
        return True

    def delete(self, key: str) -> bool:
        if self.down:
            return False
        self.values.pop(key, None)
        self.ttls.pop(key, None)
        return True

    def incr(self, key: str) -> int | None:
        if self.down:
            raise self._unavailable()
        if key not in self.values:
            return None
        self.values[key] += 1
        return self.values[key]

    def check(self) -> None:
        if self.down:
            raise self._unavailable()


# ---- Kafka -------------------------------------------------------------------------------------

class FakePublisher:
    """services.shared.events.Publisher that records each message it accepts as (topic, key, value, slot);
    `accepting = False` makes it answer as a broker that is down (False, nothing recorded)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, dict[str, Any], int | None]] = []
        self.accepting = True
        self.closed = False

    def publish(self, topic: str, key: str, value: dict[str, Any], slot: int | None = None) -> bool:
        if not self.accepting:
            return False
        self.published.append((topic, key, copy.deepcopy(value), slot))
        return True

    def publish_many(self, topic: str, messages: list[tuple[str, dict[str, Any]]],
                     slots: list[int] | None = None) -> bool:
        if not self.accepting:
            return False
        for i, (key, value) in enumerate(messages):
            self.published.append((topic, key, copy.deepcopy(value), None if slots is None else slots[i]))
        return True

    def on(self, topic: str) -> list[tuple[str, dict[str, Any]]]:
        """(key, value) of what was published on `topic`, in order."""
        return [(key, value) for sent_topic, key, value, _ in self.published if sent_topic == topic]

    def close(self) -> None:
        self.closed = True


# ---- MongoDB (job records only) ----------------------------------------------------------------

class FakeCollection:
    """Documents by `_id`; filters and updates beyond what job records use raise NotImplementedError."""

    def __init__(self) -> None:
        self.docs: dict[Any, dict] = {}
        self.indexes: list[tuple] = []

    @staticmethod
    def _id_of(filter: dict) -> Any:
        if set(filter) != {"_id"} or isinstance(filter["_id"], dict):
            raise NotImplementedError(f"FakeCollection filters by _id only, not {filter}")
        return filter["_id"]

    def find_one(self, filter: dict) -> dict | None:
        doc = self.docs.get(self._id_of(filter))
        return copy.deepcopy(doc)

    def insert_one(self, doc: dict) -> None:
        if doc["_id"] in self.docs:
            raise NotImplementedError("FakeCollection does not model duplicate keys")
        self.docs[doc["_id"]] = copy.deepcopy(doc)

    def find_one_and_update(self, filter: dict, change: dict,
                            return_document: bool = ReturnDocument.BEFORE) -> dict | None:
        doc = self.docs.get(self._id_of(filter))
        if doc is None:
            return None
        before = copy.deepcopy(doc)
        for operator, fields in change.items():
            for path, value in fields.items():
                parent, name = _walk(doc, path)
                if operator == "$set":
                    parent[name] = copy.deepcopy(value)
                elif operator == "$inc":
                    parent[name] = parent.get(name, 0) + value
                elif operator == "$max":
                    parent[name] = max(parent.get(name, value), value)
                else:
                    raise NotImplementedError(f"FakeCollection does not apply {operator}")
        return copy.deepcopy(doc) if return_document == ReturnDocument.AFTER else before

    def create_index(self, keys, **options) -> str:
        self.indexes.append((keys, options))
        return options.get("name", "index")


def _walk(doc: dict, path: str) -> tuple[dict, str]:
    """The sub-document holding a dotted path's last field (created on the way, as MongoDB does)."""
    *parents, name = path.split(".")
    for part in parents:
        doc = doc.setdefault(part, {})
    return doc, name


class _FakeAdmin:
    @staticmethod
    def command(name: str, *args, **kwargs) -> dict:
        if name == "buildInfo":  # services/shared/storage.py: a server whose updates are atomic, no locks
            return {"version": "8.0.0", "gitVersion": "fake"}
        raise NotImplementedError(f"FakeDatabase does not answer {name}")


class _FakeClient:
    admin = _FakeAdmin()


class FakeDatabase:
    """A pymongo Database of FakeCollections, created on first use as MongoDB does."""

    def __init__(self) -> None:
        self.client = _FakeClient()
        self.collections: dict[str, FakeCollection] = {}

    def __getitem__(self, name: str) -> FakeCollection:
        return self.collections.setdefault(name, FakeCollection())


class FakeMongoClient:
    """A pymongo MongoClient whose databases are FakeDatabases."""

    def __init__(self) -> None:
        self.databases: dict[str, FakeDatabase] = {}

    def __getitem__(self, name: str) -> FakeDatabase:
        return self.databases.setdefault(name, FakeDatabase())


class UnreachableMongoClient:
    """A pymongo MongoClient of a database that is down: whatever is asked of it, of any of its databases
    or collections, raises ServerSelectionTimeoutError at once (a real client raises it after its timeout)."""

    def __getitem__(self, name: str) -> UnreachableMongoClient:
        return self

    def __getattr__(self, name: str):
        if name in ("client", "admin"):
            return self

        def unreachable(*args, **kwargs):
            raise ServerSelectionTimeoutError(f"fake: no database answers ({name})")

        return unreachable

    def close(self) -> None:
        pass
