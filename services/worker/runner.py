"""Runs one job to its end: retries with backoff, the dead-letter topic, and progress.

Called for every message on `jobs`. The Kafka offset is committed by the caller only
after this returns, i.e. after the job's outcome is durable in MongoDB (and, for a
failure, on `jobs.dlq`). A redelivered job that already finished is skipped; one that
was running when its worker died runs again, which handlers make harmless.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from typing import Callable

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


@dataclass
class JobContext:
    db: Database
    cache: Cache
    publisher: Publisher
    job: dict
    stopping: Callable[[], bool]

    def progress(self, done: int, total: int | None = None) -> None:
        fields = {"progress.done": done}
        if total is not None:
            fields["progress.total"] = total
        jobs.update(self.db, self.job["_id"], fields)


Handler = Callable[[JobContext], dict]


def run_job(db: Database, cache: Cache, publisher: Publisher, handlers: dict[str, Handler], job_id: str,
            stopping: Callable[[], bool] = lambda: False) -> str:
    """Run the job until it succeeds or is parked; returns the final status (or 'skipped')."""
    job = db[jobs.JOBS].find_one({"_id": job_id})
    if job is None:
        log.warning("no job %s: nothing to run", job_id)
        return "skipped"
    if job["status"] in jobs.FINISHED:
        return "skipped"  # a redelivery of a finished job
    error = ""
    while job["attempts"] < MAX_ATTEMPTS:
        job = jobs.update(db, job_id, {"status": jobs.RUNNING}, inc={"attempts": 1})
        JOBS.labels("worker", job["type"], jobs.RUNNING).inc()
        handler = handlers.get(job["type"])
        try:
            if handler is None:
                raise ValueError(f"unknown job type '{job['type']}'")
            result = handler(JobContext(db, cache, publisher, job, stopping))
        except JobInterrupted:
            jobs.update(db, job_id, {"status": jobs.QUEUED}, inc={"attempts": -1})
            raise
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then dead-lettered
            error = f"{type(exc).__name__}: {exc}"
            log.warning("job %s attempt %d failed: %s", job_id, job["attempts"], error,
                        extra={"trace": traceback.format_exc(limit=5)})
            jobs.update(db, job_id, {"last_error": error})
            if job["attempts"] < MAX_ATTEMPTS:
                time.sleep(BACKOFF_SECONDS[min(job["attempts"] - 1, len(BACKOFF_SECONDS) - 1)])
            continue
        jobs.update(db, job_id, {"status": jobs.SUCCEEDED, "result": result, "error": None})
        JOBS.labels("worker", job["type"], jobs.SUCCEEDED).inc()
        return jobs.SUCCEEDED
    park(db, publisher, job, error or job.get("last_error") or "failed")
    return jobs.FAILED


def park(db: Database, publisher: Publisher, job: dict, error: str) -> None:
    """Put the job on the dead-letter topic, then mark it failed with an error a user can read."""
    message = {"job_id": job["_id"], "type": job["type"], "attempts": job["attempts"], "error": error}
    if not publisher.publish(TOPIC_JOBS_DLQ, job["_id"], message):
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
