"""The worker process: one member of each of the workers' two consumer groups.

It consumes `jobs` in the group `scaleshop-workers` (runs each job to its end, see
runner.py) and `catalog.events` in the group `scaleshop-workers-events` (folds them into
derived data a poll's batch at a time, see services/catalog/projections.py), committing
each offset only after the effect is durable. Two groups, not one: a rebalance waits for
every member of its group to poll again, so in one shared group a slow batch of events held
up the hand-over of jobs after a worker died (and the reverse), for minutes under load. A
relay thread publishes what the outbox holds.
/healthz, /readyz and /metrics are served on PORT. A `Worker` takes its servers' clients as an
argument (services/shared/clients.py; built from the settings if not given).
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from services.catalog import projections
from services.shared import db as dbmod
from services.shared import jobs, outbox
from services.shared.clients import Clients, connect_clients
from services.shared.config import ConfigError, Settings, load_settings
from services.shared.events import TOPIC_CATALOG_EVENTS, TOPIC_JOBS
from services.shared.logs import configure_logging
from services.shared.metrics import render_metrics

from . import runner, telemetry
from .handlers import HANDLERS

log = logging.getLogger("worker")

CONSUMER_GROUPS = {TOPIC_JOBS: "scaleshop-workers", TOPIC_CATALOG_EVENTS: "scaleshop-workers-events"}
RELAY_INTERVAL_S = 1.0
RETRY_PAUSE_S = 1.0  # after a message or a poll's batch that could not be processed, before reading it again
# Events folded per poll: enough for the bulk writes to pay, short enough (a fold of 1,000 takes
# 0.2-1 s on the local stack) that the member soon polls again and a rebalance hands over fast.
EVENTS_PER_POLL = 1000


class WorkerState:
    """What the probes report: whether the consumer is connected and what it holds."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.connected: dict[str, bool] = {TOPIC_JOBS: False, TOPIC_CATALOG_EVENTS: False}
        self.assigned: dict[str, list[str]] = {}
        self.current_job: str | None = None
        self.lag = telemetry.ConsumerLag()
        self.live_metrics: list = [self.lag]  # collectors asked at each scrape (the Worker adds jobs by state)

    @property
    def ready(self) -> bool:
        return all(self.connected.values())


def _probe_app(state: WorkerState, settings: Settings):
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        status = "200 OK"
        if path == "/healthz":
            doc = {"status": "ok", "service": "worker"}
        elif path == "/readyz":
            doc = {"status": "ready" if state.ready else "degraded", "service": "worker",
                   "dependencies": {"kafka": {"state": "up" if state.ready else "down"}},
                   "assigned": sorted(p for parts in list(state.assigned.values()) for p in parts),
                   "current_job": state.current_job}
        elif path == "/metrics":
            body, ctype = render_metrics(state.live_metrics)
            start_response(status, [("Content-Type", ctype), ("X-Served-By", settings.replica_id)])
            return [body]
        else:
            status = "404 Not Found"
            doc = {"error": {"code": "not_found", "message": "no such path", "details": []}}
        start_response(status, [("Content-Type", "application/json"), ("X-Served-By", settings.replica_id)])
        return [json.dumps(doc).encode()]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # probes are not worth a log line each
        pass


def _serve_probes(state: WorkerState, settings: Settings) -> None:
    server = make_server(settings.bind_host, settings.port, _probe_app(state, settings), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()


class Worker:
    def __init__(self, settings: Settings, state: WorkerState, clients: Clients | None = None):
        self.settings, self.state = settings, state
        clients = clients or connect_clients("worker", settings)
        self.mongo, self.cache, self.publisher = clients.mongo, clients.cache, clients.publisher
        self.db = self.mongo[settings.mongodb_database]
        self.indexes = dbmod.IndexSetup(self._create_indexes)
        state.live_metrics.append(telemetry.JobsByState(lambda: jobs.count_by_state(self.db, HANDLERS)))

    @staticmethod
    def _create_indexes(db) -> None:
        jobs.create_indexes(db)
        outbox.create_indexes(db)
        projections.create_indexes(db)

    def run_job_message(self, raw: bytes) -> None:
        """Run the job a `jobs` message names to a durable outcome; raise to leave it uncommitted."""
        self.indexes.ensure(self.db)
        try:
            message = json.loads(raw)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("job_id"), str):
            runner.park_unreadable(self.publisher, raw, "not a job message")
            return
        self.state.current_job = jobs.whole_job_id(message["job_id"])  # a part: the job it is part of
        try:
            outcome = runner.run_job(self.db, self.cache, self.publisher, HANDLERS, message["job_id"],
                                     self.state.stopping.is_set)
        finally:
            self.state.current_job = None
        log.info("job %s: %s", message["job_id"], outcome)

    def relay_forever(self) -> None:
        while not self.state.stopping.wait(RELAY_INTERVAL_S):
            try:
                sent = outbox.relay(self.db, self.publisher)
                if sent:
                    log.info("relayed %d message(s) from the outbox", sent)
            except Exception as exc:  # noqa: BLE001 - the database may be down: try again next tick
                log.warning("outbox relay failed: %s", exc)

    def consume(self, topic: str) -> None:
        """Join the group for `topic` and process its messages until asked to stop; reconnect with backoff.

        Jobs and events have a consumer each, so a burst of events never delays a job.
        """
        backoff = 0.5
        while not self.state.stopping.is_set():
            try:
                consumer = KafkaConsumer(
                    bootstrap_servers=list(self.settings.kafka_bootstrap_servers),
                    group_id=CONSUMER_GROUPS[topic],
                    client_id=f"{self.settings.replica_id}-{topic}",
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    # a member rejoins a rebalance only when it polls: keep the time between polls short
                    max_poll_records=1 if topic == TOPIC_JOBS else EVENTS_PER_POLL,
                    session_timeout_ms=6000,
                    heartbeat_interval_ms=1500,
                    max_poll_interval_ms=600000,
                    bootstrap_timeout_ms=5000,
                )
            except KafkaError as exc:
                log.warning("Kafka unavailable (%s); retrying in %.1fs", type(exc).__name__, backoff)
                self.state.stopping.wait(backoff)
                backoff = min(backoff * 2, 10)
                continue
            backoff = 0.5
            try:
                consumer.subscribe([topic])
                self.state.connected[topic] = True
                if topic == TOPIC_CATALOG_EVENTS:
                    self._fold_loop(consumer)
                else:
                    self._job_loop(consumer)
            except KafkaError as exc:
                log.warning("Kafka consumer error: %s", exc)
            finally:
                self.state.connected[topic] = False
                self.state.lag.forget(CONSUMER_GROUPS[topic])
                consumer.close(autocommit=False)

    def _poll(self, consumer: KafkaConsumer) -> dict:
        """One poll's records by partition; the assignment is kept for /readyz, the lag for /metrics
        (measured before the batch is processed: what waits, the batch included)."""
        batches = consumer.poll(timeout_ms=500)
        self.state.assigned[consumer.config["client_id"]] = sorted(
            f"{tp.topic}/{tp.partition}" for tp in consumer.assignment())
        self.state.lag.refresh(consumer.config["group_id"], consumer, polled=bool(batches))
        return batches

    def _job_loop(self, consumer: KafkaConsumer) -> None:
        """One job at a time; its offset is committed once its outcome is durable."""
        while not self.state.stopping.is_set():
            for tp, records in self._poll(consumer).items():
                for record in records:
                    try:
                        self.run_job_message(record.value)
                    except runner.JobInterrupted:
                        return  # stopping: the offset stays uncommitted and the job is redelivered
                    except Exception as exc:  # noqa: BLE001 - leave it uncommitted and read it again
                        log.warning("message %s/%d@%d not processed: %s", tp.topic, tp.partition, record.offset, exc)
                        consumer.seek(tp, record.offset)
                        self.state.stopping.wait(RETRY_PAUSE_S)
                        break
                    consumer.commit({tp: OffsetAndMetadata(record.offset + 1, None, -1)})

    def _fold_loop(self, consumer: KafkaConsumer) -> None:
        """Each poll's events are folded together (projections.fold), then every offset is committed;
        if the fold fails, every partition goes back to its first uncommitted event."""
        while not self.state.stopping.is_set():
            batches = self._poll(consumer)
            if not batches:
                continue
            self.indexes.ensure(self.db)
            lanes = {f"{tp.topic}/{tp.partition}": _readable_events(records) for tp, records in batches.items()}
            started = time.perf_counter()
            try:
                folded = projections.fold(self.db, lanes)
            except Exception as exc:  # noqa: BLE001 - nothing is committed: the batch is read again
                log.warning("events not folded (%d partitions): %s", len(batches), exc)
                for tp, records in batches.items():
                    consumer.seek(tp, records[0].offset)
                self.state.stopping.wait(RETRY_PAUSE_S)
                continue
            consumer.commit({tp: OffsetAndMetadata(records[-1].offset + 1, None, -1)
                             for tp, records in batches.items()})
            telemetry.observe_fold_lag(event for events in lanes.values() for event in events)
            log.debug("folded %d events in %.0f ms: %s", sum(map(len, batches.values())),
                      (time.perf_counter() - started) * 1000, folded)


def _readable_events(records) -> list[dict]:
    """The events of a partition's records, in order; unreadable ones are logged and dropped."""
    events = []
    for record in records:
        try:
            event = json.loads(record.value)
        except ValueError:
            event = None
        if projections.readable(event):
            events.append(event)
        else:
            log.error("ignoring an unreadable event at %s/%d@%d", record.topic, record.partition, record.offset)
    return events


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    configure_logging("worker", settings.replica_id, settings.log_level)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    state = WorkerState()
    signal.signal(signal.SIGTERM, lambda *_: state.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: state.stopping.set())
    _serve_probes(state, settings)
    worker = Worker(settings, state)
    threading.Thread(target=worker.relay_forever, name="outbox-relay", daemon=True).start()
    log.info("worker started", extra={"groups": sorted(CONSUMER_GROUPS.values())})
    events = threading.Thread(target=worker.consume, args=(TOPIC_CATALOG_EVENTS,), name="events")
    events.start()
    worker.consume(TOPIC_JOBS)
    events.join(timeout=30)
    worker.publisher.close()
    log.info("worker stopped")
