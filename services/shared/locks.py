"""Short per-document write locks, shared by every replica through MongoDB.

FerretDB 1.x applies an update as a read followed by a write, so two concurrent updates
of one document can lose one of them (FerretDB issue #3040); MongoDB and mongo-java-server
(the local database) do not. The storage adapter (storage.py) takes this lock for a
read-modify-write section only on a server that needs it. The lock is a document with a
unique `_id` (the insert is atomic on every server) and an expiry, so a crashed holder
blocks others for at most `ttl_s`.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections.abc import Iterator

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from .errors import DependencyUnavailable

LOCKS = "locks"


@contextlib.contextmanager
def document_lock(db: Database, name: str, ttl_s: float = 10.0, wait_s: float = 5.0) -> Iterator[None]:
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    delay = 0.002
    while True:
        now = dt.datetime.now(dt.UTC)
        try:
            db[LOCKS].insert_one({"_id": name, "token": token, "expires_at": now + dt.timedelta(seconds=ttl_s)})
            break
        except DuplicateKeyError:
            db[LOCKS].delete_one({"_id": name, "expires_at": {"$lt": now}})  # a crashed holder's lock
            if time.monotonic() > deadline:
                raise DependencyUnavailable("the item is busy; retry") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    try:
        yield
    finally:
        db[LOCKS].delete_one({"_id": name, "token": token})
