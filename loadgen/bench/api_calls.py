"""The bench parts' calls to the public API: an account to act as, and an import followed to its end.

Used by the reads, import and fold parts of `make bench` (reads.py, imports.py, folding.py).
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import requests

from ..target import TargetError

TIMEOUT = 60


def account(gateway: str, label: str) -> dict[str, str]:
    """Headers that act as a new user (signed up and signed in through the gateway)."""
    email, password = f"bench-{label}-{uuid.uuid4().hex[:10]}@example.com", "correct horse battery"
    requests.post(f"{gateway}/v1/users", json={"email": email, "password": password, "display_name": f"Bench {label}"},
                  timeout=TIMEOUT).raise_for_status()
    session = requests.post(f"{gateway}/v1/sessions", json={"email": email, "password": password}, timeout=TIMEOUT)
    session.raise_for_status()
    return {"Authorization": f"Bearer {session.json()['token']}"}


def job_state(http: requests.Session, url: str, headers: dict[str, str]) -> dict:
    """The job, or {} while its status cannot be read (a 503 from a saturated database: ask again)."""
    response = http.get(url, headers=headers, timeout=TIMEOUT)
    return response.json() if response.status_code == 200 else {}


@dataclass
class ImportRun:
    job: dict  # the job as it ended (succeeded)
    started: float  # time.monotonic() before the POST
    ended: float  # time.monotonic() when it was first seen ended

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def import_and_wait(http: requests.Session, gateway: str, headers: dict[str, str], body: bytes,
                    timeout_s: float = 300) -> ImportRun:
    """POST /v1/imports with `body` (a JSON array) and poll the job until it succeeds; raise otherwise."""
    started = time.monotonic()
    response = http.post(f"{gateway}/v1/imports", data=body, timeout=TIMEOUT,
                         headers={**headers, "Content-Type": "application/json"})
    if response.status_code != 202:
        raise TargetError(f"import not accepted: {response.status_code} {response.text[:200]}")
    url = f"{gateway}{response.json()['status_url']}"
    while time.monotonic() - started < timeout_s:
        job = job_state(http, url, headers)
        if job.get("status") in ("succeeded", "failed"):
            if job["status"] != "succeeded":
                raise TargetError(f"the import failed: {job.get('error')}")
            return ImportRun(job, started, time.monotonic())
        time.sleep(0.05)
    raise TargetError(f"the import did not finish in {timeout_s:.0f} s")
