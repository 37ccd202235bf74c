"""Runs one job to its end: retries with backoff, the dead-letter topic, progress, and split jobs.

Called for every message on `jobs`. The Kafka offset is committed by the caller only
after this returns, i.e. after the job's outcome is durable in MongoDB (and, for a
failure, on `jobs.dlq`). A redelivered job that already finished is skipped; one that
was running when its worker died runs again, which handlers make harmless.

A handler may split its job into parts (jobs.split) and answer `Split`: the job then stays
`running` and each part runs here like any job, on whichever worker its message reaches. A
part that ends (succeeded, or failed and dead-lettered) says so to its parent, and the one
that ends last gives the parent its status and the result its type's `merge` makes of the
parts' results. A redelivered part that had ended says so again (its worker may have died
before it could), which changes nothing the second time.

What is retried and when a job is dead-lettered are plain functions (`backoff_after`,
`dead_letter_message`); `run_job` takes its database, cache, publisher, handlers and sleep as
arguments.
"""
from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from pymongo.database import Database

from services.shared import jobs
from services.shared.cache import Cache
from services.shared.events import TOPIC_JOBS_DLQ, Publisher
from services.shared.metrics import JOBS

log = logging.getLogger("worker.jobs")

MAX_ATTEMPTS = 3
BACKOFF_SECONDS = (0.5, 1.0, 2.0)


class JobInterrupted(Exception):
    """The worker is stopping: leave the job for redelivery, without spending an attempt."""


class DeadLetterUnavailable(Exception):
    """The job failed for good but the DLQ could not be written: do not commit, try again later."""


@dataclass(frozen=True)
class Split:
    """A handler's answer when it has split its job into `parts` parts (jobs.split)."""

    parts: int


@dataclass
class JobContext:
    db: Database
    cache: Cache
    publisher: Publisher
    job: dict
    stopping: Callable[[], bool]

    def progress(self, done: int, total: int | None = None) -> None:
        """How many of this job's items are done; a part adds to its parent's progress instead."""
        if self.job.get("parent") is not None:
            jobs.part_progress(self.db, self.job["parent"], self.job["part"], done)
            return
        fields = {"progress.done": done}
        if total is not None:
            fields["progress.total"] = total
        jobs.update(self.db, self.job["_id"], fields)


@dataclass(frozen=True)
class JobType:
    """What a job type does (`run`), and for a type that splits, how its parts' results make one (`merge`)."""

    run: Callable[[JobContext], dict | Split]
    merge: Callable[[list[dict]], dict] | None = None


def backoff_after(attempt: int) -> float | None:
    """Seconds to wait after failed attempt number `attempt` (from 1) before the next one;
    None once `MAX_ATTEMPTS` are spent: the job is dead-lettered instead."""
    if attempt >= MAX_ATTEMPTS:
        return None
    return BACKOFF_SECONDS[min(attempt - 1, len(BACKOFF_SECONDS) - 1)]


def dead_letter_message(job: dict, error: str) -> dict:
    """What `jobs.dlq` gets for a job that failed for good (a part also names its parent)."""
    message = {"job_id": job["_id"], "type": job["type"], "attempts": job["attempts"], "error": error}
    if job.get("parent") is not None:
        message["parent"] = job["parent"]
    return message


def run_job(db: Database, cache: Cache, publisher: Publisher, handlers: dict[str, JobType], job_id: str,
            stopping: Callable[[], bool] = lambda: False, sleep: Callable[[float], object] = time.sleep) -> str:
    """Run the job until it succeeds, is split or is parked; returns the outcome (or 'skipped').

    Any exception of the handler spends an attempt (JobInterrupted excepted); `sleep` waits out the backoff.
    """
    job = db[jobs.JOBS].find_one({"_id": job_id})
    if job is None:
        log.warning("no job %s: nothing to run", job_id)
        return "skipped"
    if job["status"] in jobs.FINISHED:
        part_ended(db, handlers, job)  # a redelivery of a finished job (a part: its parent may not know yet)
        return "skipped"
    error = ""
    while job["attempts"] < MAX_ATTEMPTS:
        job = _changed(db, job_id, {"status": jobs.RUNNING}, inc={"attempts": 1})
        JOBS.labels("worker", job["type"], jobs.RUNNING).inc()
        kind = handlers.get(job["type"])
        try:
            if kind is None:
                raise ValueError(f"unknown job type '{job['type']}'")
            result = kind.run(JobContext(db, cache, publisher, job, stopping))
        except JobInterrupted:
            jobs.update(db, job_id, {"status": jobs.QUEUED}, inc={"attempts": -1})
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then dead-lettered
            error = f"{type(exc).__name__}: {exc}"
            log.warning("job %s attempt %d failed: %s", job_id, job["attempts"], error,
                        extra={"trace": traceback.format_exc(limit=5)})
            jobs.update(db, job_id, {"last_error": error})
            delay = backoff_after(job["attempts"])
            if delay is not None:
                sleep(delay)
            continue
        if isinstance(result, Split):
            log.info("job %s split into %d parts", job_id, result.parts)
            # Split again after its parts had ended (a redelivery), or its last part ended just before
            # this run set it `running` again: finish it here.
            _finish(db, handlers, jobs.parts_all_ended(db, job_id))
            return "split"
        job = _changed(db, job_id, {"status": jobs.SUCCEEDED, "result": result, "error": None})
        JOBS.labels("worker", job["type"], jobs.SUCCEEDED).inc()
        part_ended(db, handlers, job)
        return jobs.SUCCEEDED
    park(db, publisher, job, error or job.get("last_error") or "failed")
    parked = db[jobs.JOBS].find_one({"_id": job_id})
    if parked is not None:
        part_ended(db, handlers, parked)
    return jobs.FAILED


def _changed(db: Database, job_id: str, fields: dict, inc: dict[str, int] | None = None) -> dict:
    """jobs.update of the job being run (read when the run began), as it is now."""
    job = jobs.update(db, job_id, fields, inc=inc)
    if job is None:
        raise LookupError(f"job {job_id} was deleted while it ran")
    return job


def part_ended(db: Database, handlers: dict[str, JobType], job: dict) -> None:
    """If `job` is a part, tell its parent; the last part to end finishes the parent."""
    if job.get("parent") is None:
        return
    _finish(db, handlers, jobs.part_ended(db, job))


def _finish(db: Database, handlers: dict[str, JobType], parent: dict | None) -> None:
    if parent is None:
        return
    merge = handlers[parent["type"]].merge
    if merge is None:
        raise ValueError(f"job type '{parent['type']}' was split but has no merge")
    finished = jobs.finish_split(db, parent, merge)
    if finished is not None:
        JOBS.labels("worker", finished["type"], finished["status"]).inc()
        log.info("job %s %s: all %d parts ended", finished["_id"], finished["status"], finished["parts"])


def park(db: Database, publisher: Publisher, job: dict, error: str) -> None:
    """Put the job on the dead-letter topic, then mark it failed with an error a user can read."""
    if not publisher.publish(TOPIC_JOBS_DLQ, job["_id"], dead_letter_message(job, error)):
        raise DeadLetterUnavailable(job["_id"])
    jobs.update(db, job["_id"], {"status": jobs.FAILED,
                                 "error": f"the job failed after {job['attempts']} attempts: {error}"})
    JOBS.labels("worker", job["type"], jobs.FAILED).inc()
    log.error("job %s parked on %s: %s", job["_id"], TOPIC_JOBS_DLQ, error)


def park_unreadable(publisher: Publisher, raw: bytes, reason: str) -> None:
    """A message that names no job (garbage on the topic) goes straight to the DLQ."""
    message = {"job_id": None, "raw": raw[:1000].decode("utf-8", "replace"), "error": reason}
    if not publisher.publish(TOPIC_JOBS_DLQ, "unreadable", message):
        raise DeadLetterUnavailable("unreadable message")
    log.error("unreadable message parked on %s: %s", TOPIC_JOBS_DLQ, reason)
