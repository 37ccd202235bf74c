"""The worker replicas of a local stack as seen from outside: their probes and their Kafka groups.

Used by the chaos run (stack/chaos.py) and by the tests, which both wait for workers to
settle after a kill or a broker restart, and for the events they have yet to fold.
"""
from __future__ import annotations

import time

import requests

from .control import Stack
from .procs import StackError


def worker_readyz(stack: Stack) -> dict[str, dict | None]:
    """Each worker replica's /readyz body (None when it does not answer)."""
    states = {}
    for replica in stack.service_replicas("worker"):
        try:
            states[replica.name] = requests.get(f"http://127.0.0.1:{replica.port}/readyz", timeout=3).json()
        except (requests.RequestException, ValueError):
            states[replica.name] = None
    return states


def wait_workers_ready(stack: Stack, count: int = 2, timeout: float = 90) -> None:
    """Wait until `count` workers are connected to Kafka and share the 6 partitions of `jobs`
    and the 6 of `catalog.events` (each worker holding some of each)."""
    deadline = time.monotonic() + timeout
    while True:
        states = worker_readyz(stack)
        ready = [s for s in states.values() if s and s.get("status") == "ready"]
        settled = len(ready) == count
        for topic in ("jobs/", "catalog.events/"):
            owned = [{p for p in s.get("assigned", []) if p.startswith(topic)} for s in ready]
            settled = settled and all(owned) and len(set().union(*owned)) == 6
        if settled:
            return
        if time.monotonic() > deadline:
            raise StackError(f"workers not ready after {timeout}s: {states}")
        time.sleep(0.5)


def events_backlog(bootstrap: str) -> int:
    """How many catalog.events messages the workers' events group has not committed yet."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient

    from services.shared.events import TOPIC_CATALOG_EVENTS
    from services.worker.main import CONSUMER_GROUPS

    group = CONSUMER_GROUPS[TOPIC_CATALOG_EVENTS]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        tps = [TopicPartition(TOPIC_CATALOG_EVENTS, p)
               for p in sorted(consumer.partitions_for_topic(TOPIC_CATALOG_EVENTS) or [])]
        ends = consumer.end_offsets(tps)
        committed = admin.list_group_offsets({group: tps}).get(group, {})
        return sum(ends[tp] - max(getattr(committed.get(tp), "offset", 0) or 0, 0) for tp in tps)
    finally:
        consumer.close()
        admin.close()


def wait_events_folded(stack: Stack, timeout: float) -> int:
    """Wait until the workers have folded every catalog.events message; returns what is left."""
    bootstrap = f"127.0.0.1:{stack.layout.kafka_port}"
    deadline = time.monotonic() + timeout
    while (backlog := events_backlog(bootstrap)) > 0 and time.monotonic() < deadline:
        time.sleep(1.0)
    return backlog
