"""Kafka: the topic names of DESIGN.md and a reachability check for /readyz.

Producers and consumers are created where they are used (kafka-python), with the
bootstrap servers from `KAFKA_BOOTSTRAP_SERVERS`.
"""
from __future__ import annotations

import socket

from .config import Settings

TOPIC_JOBS = "jobs"
TOPIC_JOBS_DLQ = "jobs.dlq"
TOPIC_CATALOG_EVENTS = "catalog.events"

# Partitions per topic: enough for several workers of one consumer group.
TOPIC_PARTITIONS = {TOPIC_JOBS: 6, TOPIC_JOBS_DLQ: 1, TOPIC_CATALOG_EVENTS: 6}


def check_kafka(settings: Settings, timeout: float = 0.5) -> None:
    """Raise OSError unless some bootstrap server accepts a TCP connection."""
    last: OSError | None = None
    for item in settings.kafka_bootstrap_servers:
        host, _, port = item.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                return
        except OSError as exc:
            last = exc
    raise last or OSError("no Kafka bootstrap server configured")
