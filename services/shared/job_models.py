"""Response bodies of job submission and job status, shared by every service that takes jobs."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class JobAccepted(BaseModel):
    """The job is recorded and will run; poll status_url"""

    job_id: str
    status: Literal["queued"]
    status_url: str


class JobProgress(BaseModel):
    done: int
    total: int


class Job(BaseModel):
    """A job and how far it has got"""

    id: str
    type: str
    status: Literal["queued", "running", "succeeded", "failed"]
    progress: JobProgress
    result: Any = None
    error: str | None = None
    created_at: str
    updated_at: str


def accepted(doc: dict) -> tuple[dict, int, dict]:
    """The 202 answer for a submitted job, with a Location header."""
    from .jobs import status_url

    url = status_url(doc["_id"])
    return {"job_id": doc["_id"], "status": "queued", "status_url": url}, 202, {"Location": url}
