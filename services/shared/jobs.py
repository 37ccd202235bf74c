"""Asynchronous jobs: the durable record, the payload store, submission, parts and the owner's view.

A job is written to MongoDB (with its payload, stored once, zstd-compressed, in chunks) *before* anyone
is told 202, and only then published on the `jobs` topic. If the broker is down the job
stays `published: false` and the outbox relay in the workers publishes it later. The
message carries only the job id: workers read everything else from the database.

A worker may split a large job into parts (`split`): each part is a job of its own (id
`<job>.<n>`, `parent` and `part` set, not visible through the API), recorded and published
the same way, on a partition of its own (events.spread), so that several workers run them
at once. The parent keeps per part how far it got (`part_done.p<n>`, only ever raised:
`$max`) and how it ended (`part_status.p<n>`); its progress is the sum of the parts' counts,
read from that one document, so a part that runs again after a crash counts nothing twice.
When every part has ended, `finish_split` gives the parent its status and one result merged
from the parts'.

A job, its parts and its payload are read and changed by `_id` alone (only the outbox scan,
`unpublished`, filters on other fields, and the metrics' `count_by_state` groups the whole
collection): the `_id` index is the one every server uses.
"""
from __future__ import annotations

import datetime as dt
import uuid
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import zstandard
from bson import Binary
from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from . import storage
from .api import iso_time
from .events import TOPIC_JOBS, Publisher

JOBS, PAYLOADS = "jobs", "job_payloads"
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
FINISHED = (SUCCEEDED, FAILED)
CHUNK_BYTES = 4 * 1024 * 1024


def create_indexes(db: Database) -> None:
    db[JOBS].create_index([("published", ASCENDING), ("created_at", ASCENDING)], name="outbox")
    db[JOBS].create_index([("owner_id", ASCENDING), ("created_at", ASCENDING)], name="owner")
    db[PAYLOADS].create_index([("job_id", ASCENDING), ("n", ASCENDING)], unique=True, name="job_chunk")


def now() -> dt.datetime:
    moment = dt.datetime.now(dt.UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def progress(doc: dict) -> dict:
    """{done, total}; a split job's done is the sum of its parts'."""
    if "part_done" in doc:
        return {"done": sum(doc["part_done"].values()), "total": doc["progress"]["total"]}
    return doc["progress"]


def job_view(doc: dict) -> dict:
    view = {
        "id": doc["_id"],
        "type": doc["type"],
        "status": doc["status"],
        "progress": progress(doc),
        "created_at": iso_time(doc["created_at"]),
        "updated_at": iso_time(doc["updated_at"]),
    }
    if doc.get("result") is not None:
        view["result"] = doc["result"]
    if doc.get("error"):
        view["error"] = doc["error"]
    return view


def status_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}"


PAYLOAD_ENCODING = "zstd"
_DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "zstd": zstandard.decompress,
    "zlib": zlib.decompress,  # jobs recorded before zstd
}


def record(db: Database, job_id: str, job_type: str, owner_id: str, total: int, payload: bytes | None = None,
           params: dict[str, Any] | None = None, parent: str | None = None, part: int | None = None) -> dict:
    """Write a job durably, payload first; for a job id already written, the record that is there."""
    if payload is not None:
        # Stored plain, a 10,000-product import (1.6 MB of JSON) took ~50 ms to write; zlib at level 1
        # made it 3.4 ms of compression and 59 KB; zstd at level 1 does it in 0.5 ms and 20 KB.
        payload = zstandard.compress(payload, 1)  # a compressor of its own per call: they are not thread-safe
        chunks = [payload[i:i + CHUNK_BYTES] for i in range(0, len(payload), CHUNK_BYTES)] or [b""]
        try:
            db[PAYLOADS].insert_many([{"_id": _payload_id(job_id, n), "job_id": job_id, "n": n, "data": Binary(chunk)}
                                      for n, chunk in enumerate(chunks)], ordered=True)
        except BulkWriteError as exc:  # a part recorded again after a crash: the same bytes are there
            if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", [])):
                raise
    moment = now()
    doc = {
        "_id": job_id,
        "type": job_type,
        "owner_id": owner_id,
        "status": QUEUED,
        "progress": {"done": 0, "total": total},
        "params": params or {},
        "has_payload": payload is not None,
        "payload_encoding": PAYLOAD_ENCODING if payload is not None else None,
        "payload_chunks": len(chunks) if payload is not None else 0,
        "attempts": 0,
        "published": False,
        "created_at": moment,
        "updated_at": moment,
    }
    if parent is not None:
        doc.update(parent=parent, part=part)
    try:
        db[JOBS].insert_one(doc)
    except DuplicateKeyError:
        existing = db[JOBS].find_one({"_id": job_id})
        if existing is None:
            raise RuntimeError(f"job {job_id} was deleted while it was being recorded again") from None
        return existing
    return doc


def submit(db: Database, publisher: Publisher, job_type: str, owner_id: str, total: int,
           payload: bytes | None = None, params: dict[str, Any] | None = None) -> dict:
    """Record the job durably, then try to publish it; the relay retries what fails here."""
    doc = record(db, uuid.uuid4().hex, job_type, owner_id, total, payload, params)
    if publish(db, publisher, doc):
        doc["published"] = True
    return doc


def _message(job: dict) -> tuple[str, dict]:
    return job["_id"], {"job_id": job["_id"], "type": job["type"]}


def _slot(job: dict) -> int | None:
    """Parts of one job take consecutive slots (events.spread), from a place that depends on the job."""
    return None if job.get("parent") is None else zlib.crc32(job["parent"].encode()) + job["part"]


def _mark_published(db: Database, job_id: str) -> None:
    with storage.of(db).exclusive(db, f"job:{job_id}"):  # the worker may be updating the job right now
        db[JOBS].update_one({"_id": job_id}, {"$set": {"published": True}})


def publish(db: Database, publisher: Publisher, job: dict) -> bool:
    """Publish one recorded job (keyed by its id; a part on its slot's partition)."""
    if not publisher.publish(TOPIC_JOBS, *_message(job), slot=_slot(job)):
        return False
    _mark_published(db, job["_id"])
    return True


def unpublished(db: Database, older_than_s: float, limit: int = 100) -> list[dict]:
    """Jobs accepted while the broker was down (the outbox), oldest first."""
    cutoff = now() - dt.timedelta(seconds=older_than_s)
    return list(db[JOBS].find({"published": False, "created_at": {"$lt": cutoff}}, {"type": 1, "parent": 1, "part": 1})
                .sort([("created_at", ASCENDING)]).limit(limit))


def count_by_state(db: Database, types: Iterable[str] = ()) -> dict[tuple[str, str], int]:
    """Job documents (parts included) per (type, status); every status of `types` is there, 0 if none."""
    counts = {(job_type, state): 0 for job_type in types for state in (QUEUED, RUNNING, *FINISHED)}
    for row in db[JOBS].aggregate([{"$group": {"_id": {"type": "$type", "status": "$status"}, "n": {"$sum": 1}}}]):
        counts[(str(row["_id"]["type"]), str(row["_id"]["status"]))] = int(row["n"])
    return counts


def find_for_owner(db: Database, job_id: str, owner_id: str) -> dict | None:
    """The job if `owner_id` owns it; None otherwise, so another user's ids reveal nothing. Parts are not jobs
    of their own to their owner."""
    if not isinstance(job_id, str) or len(job_id) > 64:
        return None
    doc = db[JOBS].find_one({"_id": job_id})
    return doc if doc is not None and doc["owner_id"] == owner_id and doc.get("parent") is None else None


def _payload_id(job_id: str, n: int) -> str:
    return f"{job_id}:{n}"


def load_payload(db: Database, job: dict) -> bytes:
    """The payload as submitted (jobs recorded before compression was added are stored plain).

    Read by `_id` (mongo-java-server would scan every payload for a `job_id`: its unique index on
    (job_id, n) serves only queries on both); jobs recorded before `payload_chunks` by job_id.
    """
    if "payload_chunks" in job:
        ids = [_payload_id(job["_id"], n) for n in range(job["payload_chunks"])]
        docs = sorted(db[PAYLOADS].find({"_id": {"$in": ids}}), key=lambda doc: doc["n"])
    else:
        docs = list(db[PAYLOADS].find({"job_id": job["_id"]}).sort([("n", ASCENDING)]))
    data = b"".join(bytes(doc["data"]) for doc in docs)
    encoding = job.get("payload_encoding")
    if encoding is None:
        return data
    return _DECOMPRESS[encoding](data)


def update(db: Database, job_id: str, fields: dict[str, Any], inc: dict[str, int] | None = None,
           raise_to: dict[str, int] | None = None, before: bool = False) -> dict | None:
    """Change a job atomically (under its lock where the server needs one: see storage.py).

    Returns the job as it is after the change (as it was before, with `before`); `raise_to`
    raises counters to at least the values given.
    """
    change: dict[str, Any] = {"$set": {**fields, "updated_at": now()}}
    if inc:
        change["$inc"] = inc
    if raise_to:
        change["$max"] = raise_to
    with storage.of(db).exclusive(db, f"job:{job_id}"):
        return db[JOBS].find_one_and_update({"_id": job_id}, change,
                                            return_document=ReturnDocument.BEFORE if before else ReturnDocument.AFTER)


# ---- a job split into parts ------------------------------------------------------------------

def part_id(parent_id: str, part: int) -> str:
    return f"{parent_id}.{part}"  # job ids are hex: the first dot ends the parent's


def split(db: Database, publisher: Publisher, parent: dict, part_type: str,
          parts: list[tuple[bytes, int, dict[str, Any]]]) -> int:
    """Split `parent` into jobs of `part_type`, one per (payload, total, params): recorded, then published.

    Safe to run again after a crash: the parts already recorded stay, those not yet published are.
    """
    parent_id = parent["_id"]
    update(db, parent_id, {"parts": len(parts)})
    docs = [record(db, part_id(parent_id, n), part_type, parent["owner_id"], total, payload, params,
                   parent=parent_id, part=n) for n, (payload, total, params) in enumerate(parts)]
    waiting = [doc for doc in docs if not doc["published"]]
    if waiting and publisher.publish_many(TOPIC_JOBS, [_message(doc) for doc in waiting],
                                          slots=[_slot(doc) for doc in waiting]):
        for doc in waiting:
            _mark_published(db, doc["_id"])
    return len(parts)


def part_progress(db: Database, parent_id: str, part: int, done: int) -> None:
    """Part `part` has handled `done` of its items. Only ever raised: a part that runs again after a
    crash adds to the parent's progress only once it gets further than before."""
    update(db, parent_id, {}, raise_to={f"part_done.p{part}": done})


def whole_job_id(job_id: str) -> str:
    """The job that `job_id` is a part of (itself if it is not a part)."""
    return job_id.split(".", 1)[0]


def _if_all_ended(parent: dict | None) -> dict | None:
    if parent is None or parent["status"] in FINISHED or not parent.get("parts"):
        return None
    return parent if len(parent.get("part_status", {})) >= parent["parts"] else None


def part_ended(db: Database, part: dict) -> dict | None:
    """Record on the parent how `part` (succeeded or failed) ended; the parent once every part has, else None."""
    return _if_all_ended(update(db, part["parent"], {f"part_status.p{part['part']}": part["status"]}))


def parts_all_ended(db: Database, parent_id: str) -> dict | None:
    """The split job `parent_id` if every part of it has ended and it is not finished yet, else None."""
    return _if_all_ended(db[JOBS].find_one({"_id": parent_id}))


def finish_split(db: Database, parent: dict, merge: Callable[[list[dict]], dict]) -> dict | None:
    """Give a parent whose parts have all ended its status and result: succeeded when every part did,
    else failed with the first failed part's error; its result merges what the parts that succeeded
    produced. Two workers may both get here: they write the same. Returns the parent unless it was
    finished before (so that it is counted once)."""
    count = parent["parts"]
    parts = sorted(db[JOBS].find({"_id": {"$in": [part_id(parent["_id"], n) for n in range(count)]}},
                                 {"part": 1, "status": 1, "result": 1, "error": 1}), key=lambda doc: doc["part"])
    failed = [doc for doc in parts if doc["status"] != SUCCEEDED]
    fields: dict[str, Any] = {"status": FAILED if failed else SUCCEEDED, "error": None,
                              "result": merge([doc.get("result") or {} for doc in parts if doc["status"] == SUCCEEDED])}
    if failed:
        first = failed[0]
        fields["error"] = (f"{len(failed)} of {count} parts failed; part {first['part']}: "
                           f"{first.get('error') or first['status']}")
    was = update(db, parent["_id"], fields, before=True)
    return None if was is None or was["status"] in FINISHED else {**was, **fields}
