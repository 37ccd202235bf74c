"""JSON logs on stderr, each line carrying the service, the replica and the request id."""
from __future__ import annotations

import logging
import sys

from flask import g, has_request_context
from pythonjsonlogger.json import JsonFormatter

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class ContextFilter(logging.Filter):
    """Adds `service`, `replica` and (inside a request) `request_id` to every record."""

    def __init__(self, service: str, replica: str):
        super().__init__()
        self.service, self.replica = service, replica

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.replica = self.replica
        if has_request_context() and "request_id" in g:
            record.request_id = g.request_id
        return True


def json_formatter() -> JsonFormatter:
    return JsonFormatter(FORMAT, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})


def configure_logging(service: str, replica: str, level: str) -> None:
    """Send every logger's records to stderr as JSON lines (idempotent)."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        if getattr(handler, "_scaleshop", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._scaleshop = True  # type: ignore[attr-defined]
    handler.setFormatter(json_formatter())
    handler.addFilter(ContextFilter(service, replica))
    root.addHandler(handler)
    for noisy in ("kafka", "pymongo", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
