"""The job runner's decisions (services/worker/runner.py): which failures are retried, how long it
waits between attempts, when a job goes to `jobs.dlq` and with what, how attempts are counted.

Run on job records in a FakeDatabase, with a FakePublisher as the broker and a recorded `sleep`.
"""
from __future__ import annotations

import pytest

from services.shared import jobs
from services.shared.events import TOPIC_JOBS_DLQ
from services.worker import runner
from services.worker.runner import JobInterrupted, JobType

from ..fakes import FakeCache, FakeDatabase, FakePublisher


class Handler:
    """A job type whose run fails with each of `failures` in turn, then answers `result`."""

    def __init__(self, *failures: BaseException, result: dict | None = None):
        self.failures = list(failures)
        self.result = result if result is not None else {"done": True}
        self.calls = 0

    def __call__(self, ctx: runner.JobContext) -> dict:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.result


class Setup:
    def __init__(self):
        self.db, self.cache, self.publisher = FakeDatabase(), FakeCache(), FakePublisher()
        self.slept: list[float] = []

    def job(self, job_type: str = "work", **fields) -> str:
        doc = jobs.record(self.db, "job1", job_type, "owner1", total=1)
        if fields:
            jobs.update(self.db, doc["_id"], fields)
        return doc["_id"]

    def run(self, handlers: dict, job_id: str = "job1") -> str:
        return runner.run_job(self.db, self.cache, self.publisher, handlers, job_id, sleep=self.slept.append)

    def stored(self, job_id: str = "job1") -> dict:
        return self.db[jobs.JOBS].find_one({"_id": job_id})

    def dead_letters(self) -> list[tuple[str, dict]]:
        return self.publisher.on(TOPIC_JOBS_DLQ)


@pytest.fixture
def setup() -> Setup:
    return Setup()


def test_backoff_grows_between_attempts_and_ends_with_the_last_attempt():
    assert [runner.backoff_after(attempt) for attempt in range(1, runner.MAX_ATTEMPTS + 1)] == [0.5, 1.0, None]
    assert runner.backoff_after(runner.MAX_ATTEMPTS + 1) is None  # a redelivery past the limit


def test_a_job_that_succeeds_runs_once(setup):
    handler = Handler(result={"imported": 3})
    assert setup.run({"work": JobType(handler)}, setup.job()) == jobs.SUCCEEDED
    job = setup.stored()
    assert (job["status"], job["attempts"], job["result"], handler.calls) == (jobs.SUCCEEDED, 1, {"imported": 3}, 1)
    assert setup.slept == [] and setup.dead_letters() == []


def test_a_failure_is_retried_after_a_backoff_and_a_later_success_counts(setup):
    handler = Handler(OSError("disk"), KeyError("x"))
    assert setup.run({"work": JobType(handler)}, setup.job()) == jobs.SUCCEEDED
    job = setup.stored()
    assert (job["status"], job["attempts"], handler.calls) == (jobs.SUCCEEDED, 3, 3)
    assert job["last_error"] == "KeyError: 'x'" and job["error"] is None
    assert setup.slept == [0.5, 1.0]
    assert setup.dead_letters() == []


def test_a_job_that_keeps_failing_is_dead_lettered_after_the_last_attempt(setup):
    handler = Handler(*[ValueError(f"bad {n}") for n in range(1, 10)])
    assert setup.run({"work": JobType(handler)}, setup.job()) == jobs.FAILED
    assert handler.calls == runner.MAX_ATTEMPTS
    assert setup.slept == [0.5, 1.0]  # no wait after the last attempt
    assert setup.dead_letters() == [
        ("job1", {"job_id": "job1", "type": "work", "attempts": 3, "error": "ValueError: bad 3"})]
    job = setup.stored()
    assert job["status"] == jobs.FAILED
    assert job["error"] == "the job failed after 3 attempts: ValueError: bad 3"


def test_a_job_of_an_unknown_type_is_retried_then_dead_lettered(setup):
    assert setup.run({}, setup.job("no-such-type")) == jobs.FAILED
    assert setup.stored()["attempts"] == 3
    [(_, message)] = setup.dead_letters()
    assert message["error"] == "ValueError: unknown job type 'no-such-type'"


def test_a_job_whose_dead_letter_cannot_be_written_stays_unfinished_and_is_parked_on_redelivery(setup):
    handler = Handler(*[RuntimeError("boom")] * 3)
    setup.publisher.accepting = False
    with pytest.raises(runner.DeadLetterUnavailable):
        setup.run({"work": JobType(handler)}, setup.job())
    assert setup.stored()["status"] == jobs.RUNNING  # not failed: the offset stays uncommitted
    setup.publisher.accepting = True
    assert setup.run({"work": JobType(handler)}) == jobs.FAILED
    assert handler.calls == 3, "the redelivery spent no new attempt on the handler"
    assert [message["error"] for _, message in setup.dead_letters()] == ["RuntimeError: boom"]
    assert setup.stored()["status"] == jobs.FAILED


def test_an_interrupted_attempt_is_given_back_and_the_job_requeued(setup):
    handler = Handler(OSError("first"), JobInterrupted())
    with pytest.raises(JobInterrupted):
        setup.run({"work": JobType(handler)}, setup.job())
    job = setup.stored()
    assert (job["status"], job["attempts"]) == (jobs.QUEUED, 1)  # the failed attempt counts, the interrupted not
    assert setup.dead_letters() == []


def test_a_finished_job_delivered_again_is_skipped(setup):
    handler = Handler()
    for status in jobs.FINISHED:
        job_id = setup.job(status=status)
        assert setup.run({"work": JobType(handler)}, job_id) == "skipped"
        setup.db[jobs.JOBS].docs.clear()
    assert handler.calls == 0 and setup.dead_letters() == []


def test_a_message_naming_no_recorded_job_is_skipped(setup):
    assert setup.run({"work": JobType(Handler())}, "never-recorded") == "skipped"
    assert setup.dead_letters() == []


def test_a_dead_lettered_part_names_its_parent_which_records_how_it_ended(setup):
    parent = jobs.record(setup.db, "job2", "work", "owner1", total=2)
    jobs.update(setup.db, parent["_id"], {"status": jobs.RUNNING, "parts": 2})
    part = jobs.record(setup.db, jobs.part_id("job2", 0), "work-part", "owner1", 1, parent="job2", part=0)
    assert setup.run({"work-part": JobType(Handler(*[OSError("gone")] * 3))}, part["_id"]) == jobs.FAILED
    [(key, message)] = setup.dead_letters()
    assert key == "job2.0" and message["parent"] == "job2"
    parent = setup.stored("job2")
    assert parent["part_status"] == {"p0": jobs.FAILED}
    assert parent["status"] == jobs.RUNNING  # one part of two has ended


def test_an_unreadable_message_goes_straight_to_the_dead_letter_topic():
    publisher = FakePublisher()
    runner.park_unreadable(publisher, b"x" * 5000, "not a job message")
    [(key, message)] = publisher.on(TOPIC_JOBS_DLQ)
    assert key == "unreadable"
    assert message == {"job_id": None, "raw": "x" * 1000, "error": "not a job message"}
    publisher.accepting = False
    with pytest.raises(runner.DeadLetterUnavailable):
        runner.park_unreadable(publisher, b"{}", "not a job message")
