"""The storage adapter: which MongoDB-wire server a client talks to, and what that changes.

Chosen once per client from the server's `buildInfo`, never configured by hand, so business
code does not know which server it talks to. It only marks the read-modify-write sections
that must not interleave (`with storage.of(db).exclusive(name): ...`), and the adapter makes
that a no-op where the server's own atomic operators are safe:

| server | how it is recognised | `$inc`, `findOneAndUpdate`, compare-and-set on `version` |
| --- | --- | --- |
| MongoDB (`mongod`, the chart's official image) | `gitVersion` in buildInfo | atomic per document: no locks |
| mongo-java-server (local stack) | only version fields in buildInfo | one write at a time per collection: no locks |
| FerretDB 1.x | `ferretdb` in buildInfo | an update is a read, then a write: exclusive sections take a lock |

The mongo-java-server and FerretDB rows are proven by concurrency tests against those real
servers (tests/functional/test_storage.py; there is no mongod on these machines, and MongoDB documents its
single-document atomicity); the FerretDB lock is the one workaround that remains, beside the test
that fails without it.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass

from pymongo import MongoClient
from pymongo.database import Database

from .locks import document_lock

MONGODB, MONGO_JAVA_SERVER, FERRETDB = "mongodb", "mongo-java-server", "ferretdb"
# What mongo-java-server's buildInfo answers, and nothing more.
_MONGO_JAVA_SERVER_FIELDS = {"version", "versionArray", "maxBsonObjectSize", "ok"}


@dataclass(frozen=True)
class Storage:
    server: str
    version: str
    atomic_updates: bool

    def exclusive(self, db: Database, name: str) -> contextlib.AbstractContextManager[None]:
        """A section that reads a document and writes it back must not interleave with another."""
        if self.atomic_updates:
            return contextlib.nullcontext()
        return document_lock(db, name)


def detect(build_info: dict) -> Storage:
    """The adapter for the server that answered `buildInfo` with `build_info`."""
    version = str(build_info.get("version", "unknown"))
    if any("ferretdb" in key.lower() for key in build_info):
        return Storage(FERRETDB, version, atomic_updates=False)
    if "gitVersion" in build_info:
        return Storage(MONGODB, version, atomic_updates=True)
    if set(build_info) <= _MONGO_JAVA_SERVER_FIELDS:
        return Storage(MONGO_JAVA_SERVER, version, atomic_updates=True)
    # An unknown server: assume its updates may interleave (slower, never wrong).
    return Storage(f"unknown ({version})", version, atomic_updates=False)


_by_client: weakref.WeakKeyDictionary[MongoClient, Storage] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def of(db: Database) -> Storage:
    """The adapter for `db`'s server, asked once per client (raises while the server is down)."""
    client = db.client
    found = _by_client.get(client)
    if found is None:
        found = detect(client.admin.command("buildInfo"))
        with _lock:
            _by_client[client] = found
    return found
