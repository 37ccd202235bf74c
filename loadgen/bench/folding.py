"""The `fold` part of `make bench`: how fast the workers fold catalog.events (issue 11 item 6).

Two numbers, both on the bench stack with 2 workers, both read where a user sees them
(`GET /v1/categories/stats` through the gateway):

- **rate**, in three rounds of `ROUND` events: creations of new products while `product_index`
  is empty (`create_empty`), as many again once it holds those (`create`: an insert costs more
  in a bigger index), then an update of each of the latter that moves it to another category
  (`move`: a read and a compare-and-set per product, two counters changed). Each round is
  published to catalog.events as the catalog would (keyed by product id) while the workers are
  stopped; then 2 workers are started, and the rate is the events folded between the first
  progress seen and the last, over that time (the group's start-up is not counted). The CPU
  the database, the workers and Kafka used meanwhile is reported per event: on a machine
  shared with other work the rate moves with its load, the CPU per event much less.
- **import lag**: a 10,000-product import through the API; the time from the job's
  `succeeded` to the moment its category counts all 10,000 products.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid

import requests

from . import api_calls

ROUND = 10_000
IMPORT_SIZE = 10_000
RATE_TARGET = 2_000.0  # events/s
LAG_TARGET = 10.0  # s after the import ends


def category_count(gateway: str, slug: str) -> int:
    rows = requests.get(f"{gateway}/v1/categories/stats", timeout=30).json()["items"]
    return next((row["product_count"] for row in rows if row["slug"] == slug), 0)


def _event(product_id: str, version: int, category: str, price_cents: int) -> dict:
    return {"type": "product.created" if version == 1 else "product.updated", "product_id": product_id,
            "version": version, "category": category, "price_cents": price_cents, "seller_id": "bench",
            "rating_count": 0, "rating_sum": 0, "at": dt.datetime.now(dt.UTC).isoformat()}


def publish(bootstrap: str, events: list[dict]) -> float:
    """Send every event keyed by its product id; seconds it took."""
    from kafka import KafkaProducer

    started = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, batch_size=256 * 1024,
                             key_serializer=str.encode, value_serializer=lambda v: json.dumps(v).encode())
    try:
        for event in events:
            producer.send("catalog.events", key=event["product_id"], value=event)
        producer.flush(120)
    finally:
        producer.close(10)
    return time.monotonic() - started


def cpu_seconds(pids: list[int]) -> float:
    """CPU time the processes `pids` have used so far (those that are gone count nothing)."""
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def folding_pids(stack) -> dict[str, list[int]]:
    """The processes that fold: the database, Kafka and the workers."""
    return {"database": [stack.infra["database"]["proc"]["pid"]], "kafka": [stack.infra["kafka"]["proc"]["pid"]],
            "workers": [replica.proc.pid for replica in stack.service_replicas("worker")]}


def watch_fold(gateway: str, slug: str, done, timeout: float, cpu=dict, interval: float = 0.1) -> dict:
    """Poll the category's stats until `done(count)`; first progress and end (monotonic seconds), and
    how much each `cpu()` figure grew in between."""
    deadline = time.monotonic() + timeout
    first = None
    while True:
        count = category_count(gateway, slug)
        now = time.monotonic()
        if first is None and count:
            first = (now, count, cpu())
        if first is not None and done(count):  # done counts more than none, so there was a first progress
            return {"first": first, "end": now, "count": count,
                    "cpu": {name: used - first[2][name] for name, used in cpu().items()}}
        if now > deadline:
            raise TimeoutError(f"category {slug} counts {count} after {timeout:.0f} s")
        time.sleep(interval)


def measure_rate(stack, log) -> dict:
    """The three rounds, each published while the workers are stopped, then folded by 2 workers."""
    gateway, bootstrap = stack.layout.gateway_url, f"127.0.0.1:{stack.layout.kafka_port}"
    ids = {name: [uuid.uuid4().hex[:24] for _ in range(ROUND)] for name in ("create_empty", "create")}
    ids["move"] = ids["create"]
    result = {}
    for name, version in (("create_empty", 1), ("create", 1), ("move", 2)):
        slug = f"bench-fold-{name}-{uuid.uuid4().hex[:8]}"
        events = [_event(pid, version, slug, 1000 * version) for pid in ids[name]]
        stack.scale("worker", 0)
        publish_s = publish(bootstrap, events)
        log(f"fold: {len(events)} {name} events published in {publish_s:.1f} s; starting 2 workers")
        stack.scale("worker", 2)
        pids = folding_pids(stack)
        published = len(events)
        seen = watch_fold(gateway, slug, lambda count, total=published: count >= total, timeout=600,
                          cpu=lambda pids=pids: {part: cpu_seconds(group) for part, group in pids.items()})
        first_at, first_count, _ = seen["first"]
        took, folded = seen["end"] - first_at, len(events) - first_count
        rate = folded / took if took > 0 else None
        per_event = {part: round(1000 * used / max(folded, 1), 3) for part, used in seen["cpu"].items()}
        log(f"fold: {name}: {folded} events folded in {took:.2f} s after the first progress "
            f"({rate or 0:.0f} events/s); CPU ms per event {per_event} (load average {os.getloadavg()[0]:.1f})")
        result[name] = {"events": len(events), "published_s": round(publish_s, 2), "folded_after_first": folded,
                        "seconds": round(took, 2), "events_per_s": None if rate is None else round(rate),
                        "cpu_ms_per_event": per_event, "load_average": round(os.getloadavg()[0], 1)}
    return result


def measure_import_lag(stack, log) -> dict:
    """A 10,000-product import through the API: seconds from its end to its events all folded."""
    gateway = stack.layout.gateway_url
    slug = f"bench-import-{uuid.uuid4().hex[:8]}"
    items = [{"name": f"Bench item {i:05d}", "description": "Imported by the bench.", "price_cents": 100 + i % 900,
              "currency": "EUR", "category": slug} for i in range(IMPORT_SIZE)]
    with requests.Session() as http:
        run = api_calls.import_and_wait(http, gateway, api_calls.account(gateway, "fold"), json.dumps(items).encode(),
                                        timeout_s=600)
    started, ended = run.started, run.ended
    at_end = category_count(gateway, slug)
    seen = watch_fold(gateway, slug, lambda count: count >= IMPORT_SIZE, timeout=600)
    lag = seen["end"] - ended
    log(f"fold: import of {IMPORT_SIZE} took {ended - started:.1f} s; {at_end} of its events were folded when it "
        f"ended, all {lag:.1f} s later")
    return {"import_s": round(ended - started, 2), "folded_at_end": at_end, "lag_s": round(lag, 2)}


def measure(stack, log) -> dict:
    """Both numbers, with 2 workers (the stack is left with 2)."""
    return {"rate": measure_rate(stack, log), "import": measure_import_lag(stack, log)}
