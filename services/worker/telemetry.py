"""The worker's live metrics, asked at scrape time: consumer lag per group and partition, and jobs by state.

- `scaleshop_consumer_lag{group, topic, partition}`: messages of each partition this worker is
  assigned that its group has not committed yet (the partition's end offset minus the group's
  committed offset, or minus the log's start when nothing was committed). Measured by the
  consumer loops (a KafkaConsumer is not thread-safe) after each poll that brought messages
  (before they are processed: the batch counts as waiting), and after an empty one at most
  every `LAG_REFRESH_S`; so a backlog is seen for at least that long. A partition handed to
  another member, or a consumer that lost Kafka, drops its series (unknown, not zero).
- `scaleshop_jobs{type, state}`: the job documents per type and status, counted in the jobs
  collection when scraped (at most every `JOBS_COUNT_S`). Every worker reports the same
  counts: read them with `max without (replica)`.

The event-folding lag is a histogram of services/shared/metrics.py (`EVENT_FOLD_LAG`), observed
here by `observe_fold_lag`.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from kafka.errors import KafkaError
from kafka.structs import TopicPartition
from prometheus_client.core import GaugeMetricFamily, Metric
from pymongo.errors import PyMongoError

from services.shared.metrics import EVENT_FOLD_LAG

log = logging.getLogger("worker")

LAG_REFRESH_S = 2.0
JOBS_COUNT_S = 2.0
OFFSETS_TIMEOUT_MS = 1000  # a lag refresh never holds a consumer loop longer than this per request


def partition_lag(end: int, committed: int | None, start: int) -> int:
    """Messages not yet committed: from the committed offset (or the log's start) to the end."""
    return max(0, end - (start if committed is None else max(committed, start)))


class ConsumerLag:
    """The lag of the partitions each group's consumer holds here, as its loop last measured it."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._lags: dict[str, dict[TopicPartition, int]] = {}
        self._measured: dict[str, float] = {}

    def refresh(self, group: str, consumer, polled: bool = False) -> None:
        """Measure again if the poll brought messages or the last measurement of `group` is
        older than LAG_REFRESH_S."""
        now = self._clock()
        if not polled and now - self._measured.get(group, -LAG_REFRESH_S) < LAG_REFRESH_S:
            return
        self._measured[group] = now
        try:
            lags = self.measure(consumer)
        except KafkaError as exc:
            log.debug("consumer lag of %s not measured: %s", group, exc)
            self.forget(group)
            return
        with self._lock:
            self._lags[group] = lags

    @staticmethod
    def measure(consumer) -> dict[TopicPartition, int]:
        """One ListOffsets request for the ends, one OffsetFetch per partition for the commits."""
        assigned = sorted(consumer.assignment())
        if not assigned:
            return {}
        ends = consumer.end_offsets(assigned, timeout_ms=OFFSETS_TIMEOUT_MS)
        committed = {tp: consumer.committed(tp, timeout_ms=OFFSETS_TIMEOUT_MS) for tp in assigned}
        never = [tp for tp, offset in committed.items() if offset is None]
        starts = consumer.beginning_offsets(never, timeout_ms=OFFSETS_TIMEOUT_MS) if never else {}
        return {tp: partition_lag(ends[tp], committed[tp], starts.get(tp, 0)) for tp in assigned if tp in ends}

    def forget(self, group: str) -> None:
        """The group's consumer is gone (closed, or Kafka away): its lag is unknown here."""
        with self._lock:
            self._lags.pop(group, None)
        self._measured.pop(group, None)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("scaleshop_consumer_lag",
                                   "Messages of an assigned partition not yet committed by the group",
                                   labels=["group", "topic", "partition"])
        with self._lock:
            for group, lags in sorted(self._lags.items()):
                for tp, lag in sorted(lags.items()):
                    family.add_metric([group, tp.topic, str(tp.partition)], lag)
        yield family


class JobsByState:
    """The jobs collection's documents per type and status, counted at most every JOBS_COUNT_S."""

    def __init__(self, count: Callable[[], Mapping[tuple[str, str], int]],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._count, self._clock = count, clock
        self._lock = threading.Lock()
        self._counted: Mapping[tuple[str, str], int] | None = None
        self._at = -JOBS_COUNT_S

    def counts(self) -> Mapping[tuple[str, str], int] | None:
        with self._lock:
            now = self._clock()
            if now - self._at >= JOBS_COUNT_S:
                self._at = now
                try:
                    self._counted = self._count()
                except PyMongoError as exc:  # the database is away: no series rather than old ones
                    log.debug("jobs not counted: %s", exc)
                    self._counted = None
            return self._counted

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("scaleshop_jobs", "Jobs recorded, by type and current state",
                                   labels=["type", "state"])
        for (job_type, state), n in sorted((self.counts() or {}).items()):
            family.add_metric([job_type, state], n)
        yield family


def observe_fold_lag(events: Iterable[dict], folded_at: dt.datetime | None = None) -> None:
    """Each folded event's lag: from its `at` (when the change was made) to `folded_at` (now)."""
    folded_at = folded_at or dt.datetime.now(dt.UTC)
    for event in events:
        try:
            moment = dt.datetime.fromisoformat(event.get("at") or "")
        except (TypeError, ValueError):
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        EVENT_FOLD_LAG.observe(max(0.0, (folded_at - moment).total_seconds()))
