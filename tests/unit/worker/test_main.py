"""The worker's consumer loops (services/worker/main.py): when an offset is committed, when a
partition is read again, and how a poll's events are grouped into lanes for folding.

Driven by a scripted consumer (the polls it answers, the commits and seeks it is given), on a
Worker built with fake clients; the fold and the job run are stand-ins recording what they got.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from kafka.structs import OffsetAndMetadata, TopicPartition

from services.shared.clients import Clients
from services.shared.events import TOPIC_CATALOG_EVENTS, TOPIC_JOBS, TOPIC_JOBS_DLQ
from services.worker import main, runner
from services.worker.main import Worker, WorkerState

from ..fakes import FakeCache, FakeMongoClient, FakePublisher


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes


class ScriptedConsumer:
    """Answers each poll with the next batch of the script; once it is spent, asks the worker to stop."""

    def __init__(self, state: WorkerState, polls: list[dict]):
        self.state, self.polls = state, list(polls)
        self.commits: list[dict] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.config = {"client_id": "unit-consumer", "group_id": "unit-group"}

    def poll(self, timeout_ms: int) -> dict:
        if not self.polls:
            self.state.stopping.set()
            return {}
        return self.polls.pop(0)

    def assignment(self) -> set:
        return set()

    def commit(self, offsets: dict) -> None:
        self.commits.append(offsets)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


@pytest.fixture
def worker(settings, monkeypatch) -> Worker:
    monkeypatch.setattr(main, "RETRY_PAUSE_S", 0)
    return Worker(settings, WorkerState(), Clients(FakeMongoClient(), FakeCache(), FakePublisher()))


def event_record(partition: int, offset: int, product: str, version: int = 1) -> Record:
    value = {"type": "product.created", "product_id": product, "version": version, "category": "books",
             "price_cents": 100}
    return Record(TOPIC_CATALOG_EVENTS, partition, offset, json.dumps(value).encode())


P0, P1 = TopicPartition(TOPIC_CATALOG_EVENTS, 0), TopicPartition(TOPIC_CATALOG_EVENTS, 1)


# ---- folding events ----------------------------------------------------------------------------

def test_a_folded_poll_commits_past_the_last_event_of_every_partition(worker, monkeypatch):
    folded = []
    monkeypatch.setattr(main.projections, "fold", lambda db, lanes: folded.append(lanes) or "ok")
    batch = {P0: [event_record(0, 7, "a"), event_record(0, 8, "b", 2)], P1: [event_record(1, 3, "c")]}
    consumer = ScriptedConsumer(worker.state, [batch])
    worker._fold_loop(consumer)
    [lanes] = folded
    assert {lane: [e["product_id"] for e in events] for lane, events in lanes.items()} == {
        f"{TOPIC_CATALOG_EVENTS}/0": ["a", "b"], f"{TOPIC_CATALOG_EVENTS}/1": ["c"]}
    assert consumer.commits == [{P0: OffsetAndMetadata(9, None, -1), P1: OffsetAndMetadata(4, None, -1)}]
    assert consumer.seeks == []


def test_a_fold_that_fails_commits_nothing_and_reads_every_partition_again(worker, monkeypatch):
    outcomes = [RuntimeError("database down"), "ok"]

    def fold(db, lanes):
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(main.projections, "fold", fold)
    batch = {P0: [event_record(0, 7, "a"), event_record(0, 8, "b")], P1: [event_record(1, 3, "c")]}
    consumer = ScriptedConsumer(worker.state, [batch, batch])  # the second poll: the batch read again
    worker._fold_loop(consumer)
    assert sorted(consumer.seeks) == [(P0, 7), (P1, 3)]
    assert consumer.commits == [{P0: OffsetAndMetadata(9, None, -1), P1: OffsetAndMetadata(4, None, -1)}]
    assert outcomes == []


def test_unreadable_events_are_dropped_but_their_offsets_committed(worker, monkeypatch):
    folded = []
    monkeypatch.setattr(main.projections, "fold", lambda db, lanes: folded.append(lanes))
    garbage = Record(TOPIC_CATALOG_EVENTS, 0, 5, b"not json")
    incomplete = Record(TOPIC_CATALOG_EVENTS, 0, 6, json.dumps({"product_id": "x"}).encode())
    consumer = ScriptedConsumer(worker.state, [{P0: [garbage, event_record(0, 6, "a"), incomplete]}])
    worker._fold_loop(consumer)
    assert [[e["product_id"] for e in events] for events in folded[0].values()] == [["a"]]
    assert consumer.commits == [{P0: OffsetAndMetadata(7, None, -1)}]


# ---- running jobs ----------------------------------------------------------------------------

J0 = TopicPartition(TOPIC_JOBS, 0)


def job_record(offset: int, job_id: str) -> Record:
    return Record(TOPIC_JOBS, 0, offset, json.dumps({"job_id": job_id, "type": "import"}).encode())


def test_each_job_is_committed_once_it_has_run_and_a_failed_one_is_read_again(worker, monkeypatch):
    outcomes = {"ok1": None, "broken": RuntimeError("database down"), "ok2": None}
    ran = []

    def run(raw):
        job_id = json.loads(raw)["job_id"]
        ran.append(job_id)
        if isinstance(outcomes[job_id], Exception):
            raise outcomes[job_id]

    monkeypatch.setattr(worker, "run_job_message", run)
    polls = [{J0: [job_record(0, "ok1"), job_record(1, "broken"), job_record(2, "ok2")]}]
    consumer = ScriptedConsumer(worker.state, polls)
    worker._job_loop(consumer)
    assert ran == ["ok1", "broken"], "the rest of the poll waits for the failed job"
    assert consumer.commits == [{J0: OffsetAndMetadata(1, None, -1)}]
    assert consumer.seeks == [(J0, 1)]


def test_a_job_interrupted_by_a_stop_is_left_uncommitted(worker, monkeypatch):
    def run(raw):
        raise runner.JobInterrupted()

    monkeypatch.setattr(worker, "run_job_message", run)
    consumer = ScriptedConsumer(worker.state, [{J0: [job_record(0, "j")]}, {J0: [job_record(1, "k")]}])
    worker._job_loop(consumer)
    assert consumer.commits == [] and consumer.seeks == []
    assert len(consumer.polls) == 1, "the loop returned at once"


@pytest.mark.parametrize("raw", [b"not json", b"[]", json.dumps({"job_id": 5}).encode()])
def test_a_message_that_names_no_job_is_dead_lettered(worker, raw):
    worker.run_job_message(raw)
    [(key, message)] = worker.publisher.on(TOPIC_JOBS_DLQ)
    assert key == "unreadable" and message["job_id"] is None and message["error"] == "not a job message"
    assert worker.state.current_job is None
