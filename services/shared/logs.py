"""JSON logs on stderr, each line carrying the service, the replica and the request id.

A line is `{"time", "level", "logger", "message", "service", "replica", "request_id"?, ...}`:
the fields passed with `extra=` follow, then `exc_info` (the traceback as text) if any.
Every request writes one (services/shared/app.py), so the formatter is on the hot path: it
encodes with msgspec and copies only the record's own extras (a py-spy profile of a cached
product page showed python-json-logger's generic formatter at ~5 % of the request's CPU).
"""
from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

import msgspec
from flask import g, has_request_context

# What every LogRecord has, so what is left in its __dict__ was passed with extra=.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "service", "replica", "request_id"}


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


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record; values msgspec cannot encode are written as their str()."""

    _encode = msgspec.json.Encoder(enc_hook=str).encode

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("service", "replica", "request_id"):
            if name in record.__dict__:
                line[name] = record.__dict__[name]
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRIBUTES:
                line[name] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return self._encode(line).decode()


def json_formatter() -> JsonLineFormatter:
    return JsonLineFormatter()


def configure_logging(service: str, replica: str, level: str) -> None:
    """Send every logger's records to stderr as JSON lines (idempotent)."""
    # A line names no source file, thread or process, so logging need not look them up for every
    # record (the logging HOWTO's "Optimization"; finding the caller was 2 % of a cached hit's CPU).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
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
