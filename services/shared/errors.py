"""Domain exceptions, and the one place that turns any failure into the JSON error of DESIGN.md.

Code below the views (storage, clients, auth, rate limits, request parsing) raises the
exceptions defined here where the failure happens; they say what went wrong, not how
HTTP answers it. `HTTP_ERRORS` is the single mapping from exception class to (status,
code, headers), applied by the handlers `register_error_handlers` installs; werkzeug's
own errors (routing, body size) and a database that is down go through the same
rendering. Body: {"error": {"code": "...", "message": "...", "details": [...]}}. Bad
input never yields a 500: malformed JSON is 400, a wrong content type 415, a body too
large 413, a failed validation 422, and a dependency that is down 503.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, jsonify
from pymongo.errors import ConnectionFailure, ExecutionTimeout
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class DomainError(Exception):
    """A failure the caller is told about: a message and, for some, details naming fields."""

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []


class MalformedJson(DomainError):
    """The body is not a JSON document."""


class Unauthorized(DomainError):
    """The caller did not prove who they are: no, a bad, an expired or a revoked token, or wrong credentials."""

    def __init__(self, message: str = "a valid bearer token is required"):
        super().__init__(message)


class Forbidden(DomainError):
    """The caller is known but may not do this."""


class NotFound(DomainError):
    """The thing named does not exist (or the caller may not know that it does)."""


class Conflict(DomainError):
    """The request contradicts data that exists (a taken email, a second review)."""


class UnsupportedMediaType(DomainError):
    """The body is not declared as JSON."""


class ValidationFailed(DomainError):
    """The body or query string is JSON of the wrong shape; `details` name each field."""


class TooManyRequests(DomainError):
    """The caller is over a rate limit; they may try again after `retry_after_seconds`."""

    def __init__(self, message: str, retry_after_seconds: int):
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class DependencyUnavailable(DomainError):
    """A server this request needs (database, user service, a busy lock) cannot answer now; retry later."""


@dataclass(frozen=True)
class HttpError:
    """How HTTP answers one kind of DomainError: status, error code and the headers it adds."""

    status: int
    code: str
    headers: Callable[[Any], dict[str, str]] = field(default=lambda exc: {})


BEARER_CHALLENGE = 'Bearer realm="scaleshop"'

HTTP_ERRORS: dict[type[DomainError], HttpError] = {
    MalformedJson: HttpError(400, "malformed_json"),
    Unauthorized: HttpError(401, "unauthorized", lambda exc: {"WWW-Authenticate": BEARER_CHALLENGE}),
    Forbidden: HttpError(403, "forbidden"),
    NotFound: HttpError(404, "not_found"),
    Conflict: HttpError(409, "conflict"),
    UnsupportedMediaType: HttpError(415, "unsupported_media_type"),
    ValidationFailed: HttpError(422, "validation_failed"),
    TooManyRequests: HttpError(429, "too_many_requests",
                               lambda exc: {"Retry-After": str(exc.retry_after_seconds)}),
    DependencyUnavailable: HttpError(503, "dependency_unavailable"),
}

_INTERNAL = HttpError(500, "internal_error")

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


def http_error(exc: DomainError) -> HttpError:
    """The mapping entry of `exc`'s class or of its nearest mapped base class (500 if none)."""
    for cls in type(exc).__mro__:
        if cls in HTTP_ERRORS:
            return HTTP_ERRORS[cls]
    return _INTERNAL


def error_response(status: int, code: str, message: str, details: list | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details or []}})
    response.status_code = status
    return response


def _unexpected_error(exc: Exception) -> Response:
    """A 500 that names no detail of `exc` (the log has them)."""
    log.error("unhandled error", exc_info=exc)
    return error_response(_INTERNAL.status, _INTERNAL.code, "an unexpected error occurred")


def domain_error_response(exc: DomainError) -> Response:
    """`exc` answered as HTTP_ERRORS says: its status, code and headers, with its message and details."""
    mapped = http_error(exc)
    if mapped is _INTERNAL:
        return _unexpected_error(exc)
    response = error_response(mapped.status, mapped.code, exc.message, exc.details)
    response.headers.update(mapped.headers(exc))
    return response


def register_error_handlers(app: Flask) -> None:
    """Route every exception a request can raise to a JSON error response."""

    app.register_error_handler(DomainError, domain_error_response)

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
        return domain_error_response(DependencyUnavailable("the database is unavailable; retry later"))

    for exc_class in _DATABASE_DOWN:
        app.register_error_handler(exc_class, _database_down)

    app.register_error_handler(Exception, _unexpected_error)

