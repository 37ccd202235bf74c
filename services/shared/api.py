"""Request validation and the OpenAPI document, from one set of pydantic definitions.

A view declares what it accepts and answers with `@operation(...)`; the decorator
authenticates the caller of a route that needs a token (401 before any 400, 415 or 422), then
parses and validates the request with those models (400/415/413/422 on bad input)
and records them, and `openapi_document(app)` builds /openapi.json from the same
records, so the spec cannot drift from what is enforced. A bulk body declared with
`items_later=True` is checked here only as a whole (a JSON array within the model's
bounds) and its items are left as raw JSON for a job to check one by one.
"""
from __future__ import annotations

import datetime
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from flask import Flask, current_app, request
from pydantic import BaseModel, ConfigDict, ValidationError

from . import json_array
from .auth import Principal
from .errors import MalformedJson, UnsupportedMediaType, ValidationFailed


class RequestBody(BaseModel):
    """Base of request bodies: strict types, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", strict=True)


class QueryParams(BaseModel):
    """Base of query strings: values arrive as text and are converted, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] = []


class ErrorResponse(BaseModel):
    error: ErrorBody


@dataclass
class Operation:
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: dict[int, type[BaseModel] | str | None] = field(default_factory=dict)
    auth: bool = False
    items_later: bool = False


_ERROR_TEXT = {
    400: "Malformed JSON",
    401: "Missing, invalid, expired or revoked token",
    403: "Not allowed for this caller",
    404: "Not found",
    409: "Conflict with existing data",
    413: "Body too large",
    414: "Request line too long",
    415: "Content-Type is not application/json",
    422: "Validation failed; details name each field",
    429: "Too many requests from this client; see Retry-After",
    431: "A request header is too large",
    503: "A dependency needed for this request is down",
}


def iso_time(moment: datetime.datetime) -> str:
    """A timestamp as ISO 8601 in UTC with milliseconds, e.g. 2026-01-02T03:04:05.678Z."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validation_details(exc: ValidationError, whole: str = "(body)") -> list[dict[str, str]]:
    """Pydantic errors as [{field, message, type}], without echoing the input back.

    `whole` names the field of an error about the value as a whole.
    """
    details = []
    for err in exc.errors(include_input=False, include_url=False, include_context=False):
        details.append(
            {
                "field": ".".join(str(part) for part in err["loc"]) or whole,
                "message": err["msg"],
                "type": err["type"],
            }
        )
    return details


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _json_bytes() -> bytes:
    if not request.is_json:
        raise UnsupportedMediaType("Content-Type must be application/json")
    return request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedJson("the body is nested too deeply") from None


def _validate(model: type[BaseModel], payload: Any) -> BaseModel:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise ValidationFailed("the body failed validation", validation_details(exc)) from None


def parse_json_body(model: type[BaseModel]) -> BaseModel:
    return _validate(model, _loads(_json_bytes()))


def parse_json_object() -> dict[str, Any]:
    """The body as a JSON object, for views that check its fields themselves (the lab console's):
    the same 415 and 400 as parse_json_body, and a 400 for a body that is not an object."""
    body = _loads(_json_bytes())
    if not isinstance(body, dict):
        raise MalformedJson("the body must be a JSON object")
    return body


def parse_json_array(model: type[BaseModel]) -> BaseModel:
    """A body that `model` (a root list of anything) accepts, its items left as raw JSON (json_array).

    The time taken does not grow with what the items hold. Whatever the quick skim refuses
    goes through the standard parser, so malformed JSON and a body that is not an array get
    the same errors as from parse_json_body.
    """
    raw = _json_bytes()
    items = json_array.raw_items(raw)
    return _validate(model, _loads(raw) if items is None else items)


def parse_query(model: type[BaseModel]) -> BaseModel:
    args = {key: values[0] if len(values) == 1 else values for key, values in request.args.lists()}
    try:
        return model.model_validate(args)
    except ValidationError as exc:
        raise ValidationFailed("the query string failed validation", validation_details(exc)) from None


def _authenticate() -> Principal:
    from .app import require_principal  # the app module builds on this one

    return require_principal()


def operation(
    summary: str,
    *,
    tag: str,
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    responses: dict[int, type[BaseModel] | str | None] | None = None,
    auth: bool = False,
    body_limit_setting: str | None = None,
    items_later: bool = False,
) -> Callable:
    """Validate the request with `body`/`query` models and pass them as keyword arguments.

    With `auth`, the caller is authenticated first (401 before any 415/422: an anonymous
    caller learns nothing about the body a route expects) and the view gets it as `principal`.
    `body_limit_setting` names a Settings field that replaces MAX_BODY_BYTES for this route.
    `items_later`: `body` is a root list whose items the view leaves for later (parse_json_array).
    """
    spec = Operation(summary, tag, body, query, responses or {}, auth, items_later=items_later)

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if body_limit_setting is not None:
                settings = current_app.extensions["scaleshop"].settings
                request.max_content_length = getattr(settings, body_limit_setting)
            if spec.auth:
                kwargs["principal"] = _authenticate()
            if spec.query is not None:
                kwargs["query"] = parse_query(spec.query)
            if spec.body is not None:
                kwargs["body"] = (parse_json_array if spec.items_later else parse_json_body)(spec.body)
            return view(*args, **kwargs)

        wrapper.openapi_operation = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate


# ---- OpenAPI document -------------------------------------------------------------------

_REF = "#/components/schemas/{model}"
_PATH_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], mode: Literal["validation", "serialization"]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template=_REF, mode=mode)
        self.components.update(schema.pop("$defs", {}))
        self.components[model.__name__] = schema
        return {"$ref": _REF.format(model=model.__name__)}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": {k: v for k, v in prop.items() if k != "title"},
            **({"description": prop["description"]} if "description" in prop else {}),
        }
        for name, prop in schema.get("properties", {}).items()
    ]


def _responses(spec: Operation, schemas: _Schemas, has_path_args: bool) -> dict[str, Any]:
    error_ref = schemas.ref(ErrorResponse, "serialization")
    out: dict[str, Any] = {}
    statuses = dict(spec.responses)
    if spec.body is not None:
        for status in (400, 413, 415, 422):
            statuses.setdefault(status, None)
    if spec.query is not None:
        statuses.setdefault(422, None)
    if spec.auth:
        statuses.setdefault(401, None)
    if has_path_args:
        statuses.setdefault(404, None)
    statuses.setdefault(503, None)
    for status in (414, 429, 431):  # any route: over-long request line or header, rate limit
        statuses.setdefault(status, None)
    for status, model in sorted(statuses.items()):
        if status >= 400:
            text = model if isinstance(model, str) else _ERROR_TEXT.get(status, "Error")
            out[str(status)] = {"description": text, "content": {"application/json": {"schema": error_ref}}}
        elif isinstance(model, type) and issubclass(model, BaseModel):
            out[str(status)] = {
                "description": model.__doc__.strip().splitlines()[0] if model.__doc__ else "OK",
                "content": {"application/json": {"schema": schemas.ref(model, "serialization")}},
            }
        else:
            out[str(status)] = {"description": model or "No content"}
    return out


def openapi_document(app: Flask, title: str, version: str) -> dict[str, Any]:
    """OpenAPI 3.1 for every route of `app` declared with @operation."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        spec: Operation | None = getattr(app.view_functions.get(rule.endpoint), "openapi_operation", None)
        if spec is None:
            continue
        path = _PATH_ARG.sub(r"{\1}", rule.rule)
        path_args = list(rule.arguments)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {
                "operationId": f"{rule.endpoint.replace('.', '_')}_{method.lower()}",
                "summary": spec.summary,
                "tags": [spec.tag],
                "parameters": [
                    {"name": arg, "in": "path", "required": True, "schema": {"type": "string"}}
                    for arg in path_args
                ],
                "responses": _responses(spec, schemas, bool(path_args)),
            }
            if spec.query is not None:
                op["parameters"] += _query_parameters(spec.query)
            if spec.body is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": schemas.ref(spec.body, "validation")}},
                }
            if spec.auth:
                op["security"] = [{"bearerAuth": []}]
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
