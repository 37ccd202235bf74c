"""The workers' /metrics during and after an import, on the real stack: the consumer lag of every
partition of both groups (a backlog while the import's events wait, none once they are folded),
the event-folding lag observed once per product, and the jobs by state as the database has them."""
from __future__ import annotations

import time

import requests
from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from services.shared.events import TOPIC_CATALOG_EVENTS, TOPIC_JOBS
from services.worker.main import CONSUMER_GROUPS
from tests.functional.conftest import sign_up
from tests.functional.test_jobs import assert_accepted, get_job, import_items, submit_import
from tests.functional.test_prometheus import DISCOVERY_WAIT_S, query, wait_for

IMPORTED = 3000
TIMEOUT_S = 90


def worker_samples(stack) -> list[tuple[str, str, dict, float]]:
    """(replica, sample name, labels, value) of every worker's /metrics now."""
    samples = []
    for replica in stack.service_replicas("worker"):
        response = requests.get(f"http://127.0.0.1:{replica.port}/metrics", timeout=5)
        assert response.status_code == 200, response.text[:300]
        for family in text_string_to_metric_families(response.text):
            samples += [(replica.name, s.name, s.labels, s.value) for s in family.samples]
    return samples


def lags(samples) -> dict[tuple[str, str, str], float]:
    """The consumer lag per (group, topic, partition), the largest any worker reports."""
    found: dict[tuple[str, str, str], float] = {}
    for _, name, labels, value in samples:
        if name == "scaleshop_consumer_lag":
            key = (labels["group"], labels["topic"], labels["partition"])
            found[key] = max(value, found.get(key, 0.0))
    return found


def total(samples, name: str, **match: str) -> float:
    return sum(value for _, n, labels, value in samples if n == name and match.items() <= labels.items())


def partitions(stack, topic: str) -> set[str]:
    consumer = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{stack.layout.kafka_port}", request_timeout_ms=10_000)
    try:
        return {str(p) for p in consumer.partitions_for_topic(topic) or ()}
    finally:
        consumer.close()


def test_the_workers_report_consumer_lag_fold_lag_and_jobs_by_state_of_an_import(stack, gateway, db):
    account = sign_up(gateway, display_name="Metrics Importer")
    category = f"metrics-{int(time.time() * 1000)}"
    before = worker_samples(stack)
    folded_before = total(before, "scaleshop_event_fold_lag_seconds_count")

    job_id = assert_accepted(submit_import(gateway, account, import_items(category, IMPORTED))[0])
    events_lag_seen = 0.0
    deadline = time.monotonic() + TIMEOUT_S
    while True:  # until the job has ended and every event of it is folded and committed
        samples = worker_samples(stack)
        now = lags(samples)
        events_lag_seen = max([events_lag_seen] + [v for (g, _, _), v in now.items()
                                                   if g == CONSUMER_GROUPS[TOPIC_CATALOG_EVENTS]])
        folded = total(samples, "scaleshop_event_fold_lag_seconds_count") - folded_before
        if get_job(gateway, account, job_id)["status"] == "succeeded" and folded >= IMPORTED \
                and now and not any(now.values()):
            break
        assert time.monotonic() < deadline, f"not drained in {TIMEOUT_S}s: folded {folded}, lag {now}"
        time.sleep(0.2)

    assert events_lag_seen > 0, "no worker ever reported the import's events waiting"
    # Every partition of both topics is some worker's, with its group's lag, now none.
    expected = {(CONSUMER_GROUPS[topic], topic, p) for topic in (TOPIC_JOBS, TOPIC_CATALOG_EVENTS)
                for p in partitions(stack, topic)}
    assert set(now) == expected, sorted(set(now) ^ expected)
    assert not any(now.values()), now
    # Each imported product's event was folded once, its lag observed (and the lag is not absurd).
    assert folded >= IMPORTED
    assert 0 < total(samples, "scaleshop_event_fold_lag_seconds_sum") / max(
        total(samples, "scaleshop_event_fold_lag_seconds_count"), 1) < TIMEOUT_S

    # Jobs by state: every worker reports what the jobs collection holds (counted within 2 s).
    workers = {replica.name for replica in stack.service_replicas("worker")}

    def counts_match():
        in_db = {(row["_id"]["type"], row["_id"]["status"]): row["n"] for row in db["jobs"].aggregate(
            [{"$group": {"_id": {"type": "$type", "status": "$status"}, "n": {"$sum": 1}}}])}
        reported: dict[str, dict] = {name: {} for name in workers}
        for replica, name, labels, value in worker_samples(stack):
            if name == "scaleshop_jobs" and value:
                reported[replica][(labels["type"], labels["state"])] = value
        return in_db if all(counts == in_db for counts in reported.values()) else None

    in_db = wait_for(counts_match, 10, "every worker's scaleshop_jobs equal to the jobs collection's counts")
    assert in_db[("import", "succeeded")] >= 1

    # Prometheus has the lag of every worker replica, under the labels the dashboard reads.
    wait_for(lambda: query(stack, 'scaleshop_consumer_lag{service="worker"}').keys() == workers,
             DISCOVERY_WAIT_S, "scaleshop_consumer_lag of every worker in Prometheus")
