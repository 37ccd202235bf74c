"""Kafka: the topic names of DESIGN.md, a publisher that never blocks a request for long,
and a reachability check for /readyz.

The publisher (kafka-python's KafkaProducer, created lazily once per process) waits at
most `KAFKA_TIMEOUT_MS` for an acknowledgement; a caller that gets False has a durable
record to fall back on (the jobs outbox), so a down broker never fails a request.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Any

from .config import Settings

log = logging.getLogger(__name__)

TOPIC_JOBS = "jobs"
TOPIC_JOBS_DLQ = "jobs.dlq"
TOPIC_CATALOG_EVENTS = "catalog.events"

# Partitions per topic: enough for several workers of one consumer group.
TOPIC_PARTITIONS = {TOPIC_JOBS: 6, TOPIC_JOBS_DLQ: 1, TOPIC_CATALOG_EVENTS: 6}


def spread(partitions: list[int], slot: int) -> int:
    """The partition for `slot`: consecutive slots alternate between the two halves of the partitions.

    A consumer group's default (range) assignment gives each member a run of consecutive
    partitions, so the parts of one job (slots n, n+1, ...) go to the members in turn, as
    evenly as the partition count allows, instead of where their keys happen to hash.
    """
    half = (len(partitions) + 1) // 2
    order = [p for pair in zip(partitions[:half], partitions[half:] + [None]) for p in pair if p is not None]
    return order[slot % len(order)]


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


class Publisher:
    """Publishes JSON messages with a key; returns whether the broker acknowledged them."""

    def __init__(self, settings: Settings, client_id: str):
        self.settings, self.client_id = settings, client_id
        self._producer = None
        self._lock = threading.Lock()
        self._next_try = 0.0
        self._failing_until = 0.0  # after a failed send, skip the broker briefly: the outbox has it

    def _get(self):
        if self._producer is not None:
            return self._producer
        with self._lock:
            if self._producer is None and time.monotonic() >= self._next_try:
                from kafka import KafkaProducer

                timeout = self.settings.kafka_timeout_ms
                try:
                    self._producer = KafkaProducer(
                        bootstrap_servers=list(self.settings.kafka_bootstrap_servers),
                        client_id=self.client_id,
                        acks="all",
                        linger_ms=0,
                        max_block_ms=timeout,
                        bootstrap_timeout_ms=timeout,  # a down broker must not hold the first publish 30 s
                        request_timeout_ms=max(timeout, 1000),
                        delivery_timeout_ms=max(timeout * 2, 2000),
                        retries=0,
                        key_serializer=lambda key: key.encode(),
                        value_serializer=lambda value: json.dumps(value, separators=(",", ":")).encode(),
                    )
                except Exception as exc:  # noqa: BLE001 - broker down: callers fall back to the outbox
                    log.warning("Kafka producer unavailable: %s", exc)
                    self._next_try = time.monotonic() + 1.0
        return self._producer

    FAILING_SECONDS = 2.0

    def _partition(self, producer, topic: str, slot: int | None) -> int | None:
        """None (the key decides) unless a slot asks for spread()."""
        if slot is None:
            return None
        return spread(sorted(producer.partitions_for(topic)), slot)

    def publish(self, topic: str, key: str, value: dict[str, Any], slot: int | None = None) -> bool:
        """True once the broker acknowledged; False at once while it has just been failing."""
        if time.monotonic() < self._failing_until:
            return False
        producer = self._get()
        if producer is None:
            return False
        try:
            producer.send(topic, key=key, value=value, partition=self._partition(producer, topic, slot)).get(
                timeout=self.settings.kafka_timeout_ms / 1000 * 2)
        except Exception as exc:  # noqa: BLE001
            log.warning("publish to %s failed: %s", topic, type(exc).__name__)
            self._failing_until = time.monotonic() + self.FAILING_SECONDS
            return False
        return True

    def publish_many(self, topic: str, messages: list[tuple[str, dict[str, Any]]],
                     slots: list[int | None] | None = None) -> bool:
        """Send a batch and wait for every acknowledgement; False if any was not acknowledged.

        `slots`, one per message, spread them over the partitions (spread()) instead of by key.
        """
        producer = self._get()
        if producer is None:
            return False
        try:
            futures = [producer.send(topic, key=key, value=value,
                                     partition=self._partition(producer, topic, None if slots is None else slots[i]))
                       for i, (key, value) in enumerate(messages)]
            producer.flush(timeout=max(5.0, self.settings.kafka_timeout_ms / 1000 * 4))
            for future in futures:
                future.get(timeout=self.settings.kafka_timeout_ms / 1000 * 2)
        except Exception as exc:  # noqa: BLE001
            log.warning("batch publish to %s failed: %s", topic, type(exc).__name__)
            return False
        return True

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=2)
