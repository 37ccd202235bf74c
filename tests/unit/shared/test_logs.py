"""The JSON log lines (services/shared/logs.py): the fields a reader greps for, extras, tracebacks."""
from __future__ import annotations

import io
import json
import logging

from flask import Flask, g

from services.shared.logs import ContextFilter, JsonLineFormatter


def capture(service: str = "catalog", replica: str = "catalog-1") -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(ContextFilter(service, replica))
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger, stream


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_names_its_service_replica_level_and_the_extras_passed():
    logger, stream = capture()
    logger.info("request %s", "done", extra={"method": "GET", "status": 200, "duration_ms": 1.5})
    [line] = lines(stream)
    assert {k: line[k] for k in ("level", "logger", "message", "service", "replica")} == {
        "level": "INFO", "logger": logger.name, "message": "request done", "service": "catalog",
        "replica": "catalog-1"}
    assert (line["method"], line["status"], line["duration_ms"]) == ("GET", 200, 1.5)
    assert line["time"].endswith("+00:00") and "T" in line["time"]
    assert "request_id" not in line and "args" not in line and "msg" not in line


def test_inside_a_request_the_line_carries_its_request_id():
    logger, stream = capture()
    app = Flask(__name__)
    with app.test_request_context("/"):
        g.request_id = "find-me"
        logger.warning("inside")
    assert lines(stream)[0]["request_id"] == "find-me"


class Odd:
    def __str__(self) -> str:
        return "an odd value"


def test_a_traceback_is_kept_as_text_and_odd_values_are_written_as_text():
    logger, stream = capture()
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed", extra={"thing": Odd()})
    [line] = lines(stream)
    assert "ValueError: boom" in line["exc_info"] and line["level"] == "ERROR"
    assert line["thing"] == "an odd value"
