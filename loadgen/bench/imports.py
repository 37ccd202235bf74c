"""The bench's import scaling (issue 11 item 5): one 10,000-product import on 1 worker and on 2.

An import larger than a chunk is split into chunks that the workers run at once (see
services/worker/handlers.py). This times the same 10,000-product import, from just before
its POST to `succeeded`, with 1 worker and with 2, alternately (1, 2, 1, 2, ...), so that a
growing database and a busy machine weigh on both alike. Before each run the workers are
settled (every partition assigned) and the previous import's events are folded, so that a
run does not pay for the one before. The ratio is of the medians (target <= 0.6).
"""
from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable

import requests

from ..data import import_batch
from ..target import TargetError
from . import api_calls

SIZE = 10_000
JOB_TIMEOUT_S = 300


def measure(stack, gateway: str, rounds: int, log: Callable[[str], None]) -> dict:
    """{seconds: {1: [...], 2: [...]}, median: {1, 2}, ratio} for `rounds` imports on each worker count."""
    from stack.procs import StackError
    from stack.workers import wait_events_folded, wait_workers_ready

    before = len(stack.service_replicas("worker"))
    headers = api_calls.account(gateway, "import")
    rng = random.Random(11)
    seconds: dict[int, list[float]] = {1: [], 2: []}
    try:
        with requests.Session() as http:
            for round_ in range(rounds):
                for workers in (1, 2):
                    try:
                        stack.scale("worker", workers)
                        wait_workers_ready(stack, workers, timeout=180)
                    except StackError as exc:
                        raise TargetError(f"{workers} worker(s) did not settle: {exc}") from None
                    left = wait_events_folded(stack, timeout=180)
                    body = json.dumps(import_batch(SIZE, f"w{workers}r{round_}", rng), separators=(",", ":")).encode()
                    run = api_calls.import_and_wait(http, gateway, headers, body, JOB_TIMEOUT_S)
                    seconds[workers].append(round(run.seconds, 3))
                    log(f"10,000-product import on {workers} worker(s): {run.seconds:.2f} s"
                        + (f" ({left} events of earlier imports still unfolded)" if left else ""))
    finally:
        stack.scale("worker", before)
    median = {n: statistics.median(values) for n, values in seconds.items()}
    return {"seconds": seconds, "median": median, "ratio": median[2] / median[1]}


def _quiet(http: requests.Session, gateway: str, headers: dict[str, str], job_urls: list[str], stack) -> None:
    """Wait until the imports submitted so far have ended and their events are folded."""
    from stack.workers import wait_events_folded

    deadline = time.monotonic() + JOB_TIMEOUT_S
    for url in job_urls:
        while api_calls.job_state(http, url, headers).get("status") not in ("succeeded", "failed"):
            if time.monotonic() > deadline:
                raise TargetError(f"{url} did not finish in {JOB_TIMEOUT_S}s")
            time.sleep(0.1)
    wait_events_folded(stack, timeout=180)


def submit_latency(stack, gateway: str, rounds: int, log: Callable[[str], None]) -> dict:
    """{ms: {1: [...], 10000: [...]}, median, ratio}: the time to 202, each submission made on a quiet stack.

    Every submission waits until the jobs before it have ended and their events are folded, so
    that it is timed alone: back to back, a submission shares the machine with the workers
    running the previous import, which measures that import, not the submission.
    """
    headers = {**api_calls.account(gateway, "submit"), "Content-Type": "application/json"}
    rng = random.Random(7)
    bodies = {size: json.dumps(import_batch(size, f"submit{size}", rng), separators=(",", ":")).encode()
              for size in (1, SIZE)}
    ms: dict[int, list[float]] = {1: [], SIZE: []}
    urls: list[str] = []
    with requests.Session() as http:
        http.post(f"{gateway}/v1/imports", data=bodies[1], headers=headers, timeout=60)  # warm: connections, producer
        for _ in range(rounds):
            for size, body in bodies.items():
                _quiet(http, gateway, headers, urls, stack)
                started = time.perf_counter()
                response = http.post(f"{gateway}/v1/imports", data=body, headers=headers, timeout=60)
                took = (time.perf_counter() - started) * 1000
                if response.status_code != 202:
                    raise TargetError(f"import not accepted: {response.status_code} {response.text[:200]}")
                ms[size].append(round(took, 1))
                urls.append(f"{gateway}{response.json()['status_url']}")
        _quiet(http, gateway, headers, urls, stack)
    log(f"submit latency on a quiet stack: {ms}")
    median = {size: statistics.median(values) for size, values in ms.items()}
    return {"ms": ms, "median": median, "ratio": median[SIZE] / median[1],
            "bytes": {k: len(v) for k, v in bodies.items()}}
