"""The JSON error format of DESIGN.md and the handlers that make every failure use it.

Body: {"error": {"code": "...", "message": "...", "details": [...]}}. Bad input never
yields a 500: malformed JSON is 400, a wrong content type 415, a body too large 413,
a failed validation 422, and a dependency that is down 503.
"""
from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from pymongo.errors import ConnectionFailure, ExecutionTimeout
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered to the caller as JSON with an HTTP status."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, details: list | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or {}


class MalformedJson(ApiError):
    status, code = 400, "malformed_json"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str = "a valid bearer token is required", **kwargs):
        kwargs.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="scaleshop"'})
        super().__init__(message, **kwargs)


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "unsupported_media_type"


class ValidationFailed(ApiError):
    status, code = 422, "validation_failed"


class TooManyRequests(ApiError):
    status, code = 429, "too_many_requests"


class DependencyUnavailable(ApiError):
    status, code = 503, "dependency_unavailable"


# Codes for the HTTP errors werkzeug raises itself (routing, body size, ...).
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    431: "request_header_fields_too_large",
}

_DATABASE_DOWN = (ConnectionFailure, ExecutionTimeout)  # AutoReconnect, timeouts, server selection


def error_response(status: int, code: str, message: str, details: list | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details or []}})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Route every exception a request can raise to a JSON error response."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        code = _HTTP_CODES.get(status, (exc.name or "error").lower().replace(" ", "_"))
        response = error_response(status, code, exc.description or exc.name)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    def _database_down(exc: Exception):
        log.warning("database unavailable: %s", type(exc).__name__)
        return error_response(503, DependencyUnavailable.code, "the database is unavailable; retry later")

    for exc_class in _DATABASE_DOWN:
        app.register_error_handler(exc_class, _database_down)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "an unexpected error occurred")
