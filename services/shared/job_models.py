"""Response bodies of job submission and job status, shared by every service that takes jobs."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


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
    result: Any = Field(None, description=(
        "What the job produced, once it has ended. An import: {imported: count, rejected: [{index, field, reason, "
        "more_errors?}] (every item that is not a valid product: its position in the submitted array, the "
        "field at fault and why), categories: [slug]}; a failed import also has the counts of what it did import. "
        "An export: the account, its products and its reviews."))
    error: str | None = None
    created_at: str
    updated_at: str


def accepted(doc: dict) -> tuple[dict, int, dict]:
    """The 202 answer for a submitted job, with a Location header."""
    from .jobs import status_url

    url = status_url(doc["_id"])
    return {"job_id": doc["_id"], "status": "queued", "status_url": url}, 202, {"Location": url}
