"""HTTP layer for /v1/imports and /v1/jobs: submit an import (202 at once, items checked by the job), read a job."""
from __future__ import annotations

from flask import Blueprint, request

from services.shared import jobs
from services.shared.api import operation
from services.shared.app import resources
from services.shared.auth import Principal
from services.shared.errors import NotFound
from services.shared.job_models import Job, JobAccepted, accepted

from .models import ImportBody

imports_bp = Blueprint("imports", __name__)


@imports_bp.post("/v1/imports")
@operation("Import up to 10,000 products as a job (answers 202 at once; the job checks each product and "
           "lists the rejected ones in its result)", tag="jobs", auth=True, body=ImportBody, items_later=True,
           body_limit_setting="max_import_bytes", responses={202: JobAccepted})
def submit_import(body: ImportBody, principal: Principal):
    res = resources()
    # Only the array was checked: the body is stored once, as received; the job reads and checks its items.
    doc = jobs.submit(res.db, res.publisher, "import", principal.user_id, total=len(body.root),
                      payload=request.get_data(cache=True))
    return accepted(doc)


@imports_bp.get("/v1/jobs/<job_id>")
@operation("A job's status, progress and result (its owner only)", tag="jobs", auth=True, responses={200: Job})
def get_job(job_id: str, principal: Principal):
    doc = jobs.find_for_owner(resources().db, job_id, principal.user_id)
    if doc is None:
        raise NotFound("no job with this id")
    return jobs.job_view(doc)
