"""A transactional-outbox for domain events: record in MongoDB, publish, then forget.

`emit` stores the event, tries to publish it at once and deletes the record when the
broker acknowledged it. Whatever could not be published (broker down) is published later
by `relay`, which the workers run every second. Consumers must therefore accept events
late, twice or out of order: events carry the entity's version for that.
"""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pymongo import ASCENDING
from pymongo.database import Database

from . import jobs
from .events import Publisher

OUTBOX = "outbox"


def create_indexes(db: Database) -> None:
    db[OUTBOX].create_index([("created_at", ASCENDING)], name="oldest_first")


def emit(db: Database, publisher: Publisher, topic: str, key: str, value: dict[str, Any]) -> None:
    record = {"_id": uuid.uuid4().hex, "topic": topic, "key": key, "value": value, "created_at": jobs.now()}
    db[OUTBOX].insert_one(record)
    if publisher.publish(topic, key, value):
        db[OUTBOX].delete_one({"_id": record["_id"]})


def publish_or_defer(db: Database, publisher: Publisher, topic: str, events: list[tuple[str, dict[str, Any]]]) -> bool:
    """Publish a batch now; if the broker is down, record it for `relay`. False: it was deferred.

    For callers that can run again after a crash (jobs): a crash between the two steps
    publishes the batch again on the rerun, and consumers accept duplicates.
    """
    if publisher.publish_many(topic, events):
        return True
    created = jobs.now()
    db[OUTBOX].insert_many([{"_id": uuid.uuid4().hex, "topic": topic, "key": key, "value": value,
                             "created_at": created} for key, value in events])
    return False


def relay(db: Database, publisher: Publisher, older_than_s: float = 2.0, limit: int = 200) -> int:
    """Publish what the outbox and the job table still hold; returns how many went out."""
    sent = 0
    cutoff = jobs.now() - dt.timedelta(seconds=older_than_s)
    # Read the batch whole before writing: an open cursor must not wait on our own writes.
    batch = list(db[OUTBOX].find({"created_at": {"$lt": cutoff}}).sort([("created_at", ASCENDING)]).limit(limit))
    for record in batch:
        if not publisher.publish(record["topic"], record["key"], record["value"]):
            return sent
        db[OUTBOX].delete_one({"_id": record["_id"]})
        sent += 1
    for job in jobs.unpublished(db, older_than_s, limit):
        if not jobs.publish(db, publisher, job):
            return sent
        sent += 1
    return sent
