"""The error mapping: each domain exception, werkzeug's own errors and the unexpected, as DESIGN.md's JSON."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from flask import Flask, request
from pymongo.errors import AutoReconnect, ExecutionTimeout, ServerSelectionTimeoutError

from services.shared import errors
from services.shared.errors import (
    HTTP_ERRORS,
    Conflict,
    DependencyUnavailable,
    DomainError,
    Forbidden,
    MalformedJson,
    NotFound,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    register_error_handlers,
)

SERVICES = Path(__file__).resolve().parents[3] / "services"


def app_raising(exc: BaseException) -> Flask:
    """A bare app with the shared error handlers whose POST /boom raises `exc` and /echo reads its body."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64
    register_error_handlers(app)

    @app.post("/boom")
    def boom():
        raise exc

    @app.post("/echo")
    def echo():
        return {"size": len(request.get_data())}

    return app


def error_of(response) -> dict:
    """The inner error object, checking the exact shape of DESIGN.md's body on the way."""
    assert response.mimetype == "application/json", response.data
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]


DETAILS = [{"field": "price_cents", "message": "Input should be greater than 0", "type": "greater_than"}]

# exception raised -> (status, code, headers the answer must carry)
CASES = [
    (MalformedJson("the body is not valid JSON"), 400, "malformed_json", {}),
    (Unauthorized(), 401, "unauthorized", {"WWW-Authenticate": 'Bearer realm="scaleshop"'}),
    (Unauthorized("wrong email or password"), 401, "unauthorized", {"WWW-Authenticate": 'Bearer realm="scaleshop"'}),
    (Forbidden("only the seller may change this product"), 403, "forbidden", {}),
    (NotFound("no product with this id"), 404, "not_found", {}),
    (Conflict("an account with this email already exists"), 409, "conflict", {}),
    (UnsupportedMediaType("Content-Type must be application/json"), 415, "unsupported_media_type", {}),
    (ValidationFailed("the body failed validation", DETAILS), 422, "validation_failed", {}),
    (TooManyRequests("too many requests: at most 5 per minute", retry_after_seconds=17), 429, "too_many_requests",
     {"Retry-After": "17"}),
    (DependencyUnavailable("the user service is unavailable; retry later"), 503, "dependency_unavailable", {}),
]


@pytest.mark.parametrize("exc, status, code, headers", CASES, ids=[f"{type(c[0]).__name__}-{c[1]}" for c in CASES])
def test_each_domain_exception_is_answered_with_its_status_code_and_headers(exc, status, code, headers):
    response = app_raising(exc).test_client().post("/boom")
    assert response.status_code == status
    error = error_of(response)
    assert error == {"code": code, "message": exc.message, "details": exc.details}
    for name, value in headers.items():
        assert response.headers[name] == value
    assert ("Retry-After" in response.headers) == (status == 429)
    assert ("WWW-Authenticate" in response.headers) == (status == 401)


def test_validation_details_are_passed_through_unchanged():
    response = app_raising(ValidationFailed("the body failed validation", DETAILS)).test_client().post("/boom")
    assert error_of(response)["details"] == DETAILS


def test_every_domain_exception_has_a_mapping_and_none_carries_an_http_status():
    defined = {cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, DomainError)}
    assert defined - {DomainError} == set(HTTP_ERRORS)
    tested = {type(case[0]) for case in CASES}
    assert tested == set(HTTP_ERRORS), "a mapped exception has no case above"
    for cls in defined:
        assert not {"status", "code", "headers"} & set(vars(cls)), f"{cls.__name__} carries HTTP details"


def test_a_subclass_is_answered_like_its_mapped_base():
    class ProductGone(NotFound):
        pass

    response = app_raising(ProductGone("no product with this id")).test_client().post("/boom")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize("exc", [RuntimeError("password=hunter2 at 10.0.0.7"), KeyError("hunter2"),
                                 DomainError("hunter2: an unmapped domain error")])
def test_an_unexpected_exception_is_a_500_json_that_leaks_nothing(exc, caplog):
    response = app_raising(exc).test_client().post("/boom")
    assert response.status_code == 500
    assert error_of(response) == {"code": "internal_error", "message": "an unexpected error occurred", "details": []}
    assert b"hunter2" not in response.data and b"Traceback" not in response.data
    assert "hunter2" in caplog.text, "the log keeps what the answer hides"


@pytest.mark.parametrize("exc", [AutoReconnect("connection reset"), ServerSelectionTimeoutError("no servers"),
                                 ExecutionTimeout("operation exceeded time limit")])
def test_a_database_that_is_down_is_503(exc):
    response = app_raising(exc).test_client().post("/boom")
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "dependency_unavailable"
    assert error["message"] == "the database is unavailable; retry later"


def test_unknown_route_is_404_json():
    response = app_raising(NotFound("unused")).test_client().get("/nowhere")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_wrong_method_is_405_json_with_allow():
    response = app_raising(NotFound("unused")).test_client().get("/boom")
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_body_over_the_limit_is_413_json():
    client = app_raising(NotFound("unused")).test_client()
    assert client.post("/echo", data=b"x" * 64).get_json() == {"size": 64}
    response = client.post("/echo", data=b"x" * 65)
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


def test_no_code_below_the_errors_module_raises_werkzeug_http_errors():
    """Storage, clients and views raise domain exceptions; only errors.py knows werkzeug's HTTP errors."""
    offenders = []
    for path in sorted(SERVICES.rglob("*.py")):
        if path == SERVICES / "shared" / "errors.py":
            continue
        where = path.relative_to(SERVICES)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module == "werkzeug.exceptions":
                offenders.append(f"{where}:{node.lineno}: from werkzeug.exceptions import ...")
            elif isinstance(node, ast.Import) and any(a.name == "werkzeug.exceptions" for a in node.names):
                offenders.append(f"{where}:{node.lineno}: import werkzeug.exceptions")
            elif isinstance(node, ast.ImportFrom) and any(a.name == "abort" for a in node.names):
                offenders.append(f"{where}:{node.lineno}: from {node.module} import abort")
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "abort":
                offenders.append(f"{where}:{node.lineno}: abort(...)")
    assert offenders == []
