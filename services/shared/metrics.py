"""Prometheus metrics (prometheus_client), aggregated over all gunicorn worker processes.

When PROMETHEUS_MULTIPROC_DIR is set (the gunicorn launcher sets it), every process
writes its samples there and /metrics collects them all; otherwise the process's own
registry is served. The worker's live values (consumer lag, jobs by state) are not
samples kept here but collectors asked at scrape time (services/worker/telemetry.py), passed
to `render_metrics` as `extra`: the worker is one process, so they need no multiprocess mode.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.registry import Collector

HTTP_REQUESTS = Counter(
    "scaleshop_http_requests_total", "HTTP requests answered", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "scaleshop_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CACHE_REQUESTS = Counter(
    "scaleshop_cache_requests_total", "Cache look-ups by pattern and result", ["service", "pattern", "result"]
)
DB_ROUND_TRIPS = Counter(
    "scaleshop_db_round_trips_total", "MongoDB commands sent, by route", ["service", "route", "command"]
)
JOBS = Counter("scaleshop_jobs_total", "Jobs that reached a state", ["service", "type", "state"])
EVENT_FOLD_LAG = Histogram(
    "scaleshop_event_fold_lag_seconds",
    "Time from a catalog change (its event's `at`) to its event being folded into derived data",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)


def render_metrics(extra: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The exposition text for this replica (all its processes, then the `extra` collectors,
    asked now) and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    live = CollectorRegistry()
    for collector in extra:
        live.register(collector)
    return body + generate_latest(live), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """Gunicorn child_exit hook: drop a dead worker's live-only samples."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
