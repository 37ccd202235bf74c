"""The worker's live metrics (services/worker/telemetry.py): the lag of each assigned partition, how
often it is measured and when it is dropped; the jobs counted by state; the event-folding lag.

Driven by a consumer answering the offsets of a scripted log, and a clock set by the test; the
exposition text is what /metrics would serve (services/shared/metrics.render_metrics).
"""
from __future__ import annotations

import datetime as dt

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.structs import TopicPartition
from prometheus_client import REGISTRY
from pymongo.errors import ServerSelectionTimeoutError

from services.shared.metrics import render_metrics
from services.worker import telemetry
from services.worker.telemetry import ConsumerLag, JobsByState

P0, P1, P2 = (TopicPartition("catalog.events", n) for n in range(3))


class OffsetsConsumer:
    """Answers the offsets of its log: ends, the group's commits (absent: never committed) and starts."""

    def __init__(self, assigned, ends, committed, starts=None):
        self.assigned, self.ends, self.commits, self.starts = set(assigned), ends, committed, starts or {}
        self.requests = 0
        self.down = False

    def _ask(self):
        self.requests += 1
        if self.down:
            raise KafkaTimeoutError("no broker")

    def assignment(self):
        return set(self.assigned)

    def end_offsets(self, partitions, timeout_ms=None):
        self._ask()
        return {tp: self.ends[tp] for tp in partitions}

    def committed(self, tp, timeout_ms=None):
        self._ask()
        return self.commits.get(tp)

    def beginning_offsets(self, partitions, timeout_ms=None):
        self._ask()
        return {tp: self.starts.get(tp, 0) for tp in partitions}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def exposed(*collectors) -> str:
    return render_metrics(collectors)[0].decode()  # as /metrics renders them, after the process's own samples


def lag_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("scaleshop_consumer_lag{")]


@pytest.mark.parametrize(("end", "committed", "start", "lag"), [
    (120, 100, 0, 20),     # committed 100: 100..119 wait
    (120, 120, 0, 0),      # all committed
    (120, None, 0, 120),   # never committed: everything from the log's start
    (120, None, 90, 30),   # ... which retention may have moved
    (120, 50, 90, 30),     # a commit older than the log's start counts from the start
    (100, 120, 0, 0),      # never negative
])
def test_a_partitions_lag_is_what_its_group_has_not_committed(end, committed, start, lag):
    assert telemetry.partition_lag(end, committed, start) == lag


def test_each_assigned_partition_has_a_series_per_group():
    consumer = OffsetsConsumer([P0, P1], ends={P0: 120, P1: 7}, committed={P0: 100}, starts={P1: 2})
    lag = ConsumerLag(Clock())
    lag.refresh("scaleshop-workers-events", consumer)
    assert lag_lines(exposed(lag)) == [
        'scaleshop_consumer_lag{group="scaleshop-workers-events",partition="0",topic="catalog.events"} 20.0',
        'scaleshop_consumer_lag{group="scaleshop-workers-events",partition="1",topic="catalog.events"} 5.0',
    ]


def test_the_lag_is_measured_after_each_poll_with_messages_else_every_interval_and_follows_the_assignment():
    clock = Clock()
    consumer = OffsetsConsumer([P0, P1], ends={P0: 10, P1: 10, P2: 10}, committed={P0: 4, P1: 4, P2: 0})
    lag = ConsumerLag(clock)
    lag.refresh("g", consumer)
    asked = consumer.requests
    consumer.commits[P0] = 10
    clock.now += telemetry.LAG_REFRESH_S / 2
    lag.refresh("g", consumer)  # a poll soon after: nothing asked, the last measurement stays
    assert consumer.requests == asked
    assert 'partition="0",topic="catalog.events"} 6.0' in exposed(lag)

    lag.refresh("g", consumer, polled=True)  # a poll that brought messages: measured at once
    assert 'partition="0",topic="catalog.events"} 0.0' in exposed(lag)

    consumer.assigned = {P0, P2}  # a rebalance moved partition 1 away and brought 2
    clock.now += telemetry.LAG_REFRESH_S
    lag.refresh("g", consumer)
    assert [line.split("{")[1] for line in lag_lines(exposed(lag))] == [
        'group="g",partition="0",topic="catalog.events"} 0.0',
        'group="g",partition="2",topic="catalog.events"} 10.0',
    ]


def test_a_consumer_that_lost_kafka_or_closed_has_no_lag_series():
    clock = Clock()
    consumer = OffsetsConsumer([P0], ends={P0: 10}, committed={P0: 4})
    lag = ConsumerLag(clock)
    lag.refresh("jobs", consumer)
    lag.refresh("events", OffsetsConsumer([P1], ends={P1: 3}, committed={P1: 3}))
    assert len(lag_lines(exposed(lag))) == 2

    consumer.down = True
    clock.now += telemetry.LAG_REFRESH_S
    lag.refresh("jobs", consumer)
    assert [line.split(",")[0] for line in lag_lines(exposed(lag))] == ['scaleshop_consumer_lag{group="events"']

    lag.forget("events")
    assert lag_lines(exposed(lag)) == []
    assert "# TYPE scaleshop_consumer_lag gauge" in exposed(lag)


def test_jobs_are_counted_by_state_at_most_every_count_interval():
    clock = Clock()
    answers = [{("import", "queued"): 2, ("import", "running"): 1}, {("import", "queued"): 0, ("import", "running"): 3}]
    counted = []

    def count():
        counted.append(True)
        return answers[len(counted) - 1]

    jobs = JobsByState(count, clock)
    exposed(jobs)
    clock.now += telemetry.JOBS_COUNT_S / 2
    text = exposed(jobs)
    assert 'scaleshop_jobs{state="queued",type="import"} 2.0' in text
    assert 'scaleshop_jobs{state="running",type="import"} 1.0' in text
    assert len(counted) == 1  # both renders within one interval: one count

    clock.now += telemetry.JOBS_COUNT_S
    assert 'scaleshop_jobs{state="running",type="import"} 3.0' in exposed(jobs)
    assert len(counted) == 2


def test_jobs_are_not_reported_while_the_database_is_away():
    def count():
        raise ServerSelectionTimeoutError("down")

    text = exposed(JobsByState(count, Clock()))
    assert [line for line in text.splitlines() if line.startswith("scaleshop_jobs{")] == []


def _fold_lag(suffix: str) -> float:
    return REGISTRY.get_sample_value(f"scaleshop_event_fold_lag_seconds_{suffix}") or 0.0


def test_each_folded_event_adds_its_lag_to_the_histogram():
    folded_at = dt.datetime(2026, 12, 2, 3, 0, 10, tzinfo=dt.UTC)
    count, total = _fold_lag("count"), _fold_lag("sum")
    telemetry.observe_fold_lag([
        {"at": "2026-12-02T03:00:07+00:00"},     # 3 s
        {"at": "2026-12-02T03:00:09.500000"},    # naive: UTC, 0.5 s
        {"at": "not a time"}, {},                # no moment: not observed
        {"at": "2026-12-02T03:00:11+00:00"},     # a clock a little ahead: 0, never negative
    ], folded_at)
    assert _fold_lag("count") - count == 3
    assert _fold_lag("sum") - total == pytest.approx(3.5)
