"""The worker process: a Kafka consumer loop plus /healthz and /metrics on PORT."""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from services.shared.config import ConfigError, Settings, load_settings
from services.shared.events import TOPIC_CATALOG_EVENTS, TOPIC_JOBS
from services.shared.logs import configure_logging
from services.shared.metrics import render_metrics

log = logging.getLogger("worker")

CONSUMER_GROUP = "scaleshop-workers"


class WorkerState:
    """What the probes report: whether the consumer is connected and what it holds."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.connected = False
        self.assigned: list[str] = []


def _probe_app(state: WorkerState, settings: Settings):
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            body, ctype, status = json.dumps({"status": "ok", "service": "worker"}).encode(), "application/json", "200 OK"
        elif path == "/readyz":
            doc = {"status": "ready" if state.connected else "degraded", "service": "worker",
                   "dependencies": {"kafka": {"state": "up" if state.connected else "down"}},
                   "assigned": state.assigned}
            body, ctype, status = json.dumps(doc).encode(), "application/json", "200 OK"
        elif path == "/metrics":
            body, ctype = render_metrics()
            status = "200 OK"
        else:
            body, ctype, status = b'{"error": {"code": "not_found", "message": "no such path", "details": []}}', "application/json", "404 Not Found"
        start_response(status, [("Content-Type", ctype), ("X-Served-By", settings.replica_id)])
        return [body]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # probes are not worth a log line each
        pass


def _serve_probes(state: WorkerState, settings: Settings) -> None:
    server = make_server(settings.bind_host, settings.port, _probe_app(state, settings), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()


def consume(state: WorkerState, settings: Settings) -> None:
    """Join the consumer group and poll until asked to stop; reconnect with backoff."""
    backoff = 0.5
    while not state.stopping.is_set():
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=list(settings.kafka_bootstrap_servers),
                group_id=CONSUMER_GROUP,
                client_id=settings.replica_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                request_timeout_ms=30000,
            )
        except KafkaError as exc:
            log.warning("Kafka unavailable (%s); retrying in %.1fs", type(exc).__name__, backoff)
            state.stopping.wait(backoff)
            backoff = min(backoff * 2, 10)
            continue
        backoff = 0.5
        try:
            consumer.subscribe([TOPIC_JOBS, TOPIC_CATALOG_EVENTS])
            state.connected = True
            while not state.stopping.is_set():
                batches = consumer.poll(timeout_ms=500)
                state.assigned = sorted(f"{tp.topic}/{tp.partition}" for tp in consumer.assignment())
                for tp, records in batches.items():
                    log.info("no handler yet for %d record(s) on %s; left uncommitted", len(records), tp.topic)
                    consumer.seek(tp, records[0].offset)
                    consumer.pause(tp)
        except KafkaError as exc:
            log.warning("Kafka consumer error: %s", exc)
        finally:
            state.connected = False
            consumer.close(autocommit=False)


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    configure_logging("worker", settings.replica_id, settings.log_level)
    state = WorkerState()
    signal.signal(signal.SIGTERM, lambda *_: state.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: state.stopping.set())
    _serve_probes(state, settings)
    log.info("worker started", extra={"group": CONSUMER_GROUP})
    consume(state, settings)
    log.info("worker stopped")
