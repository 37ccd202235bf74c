"""A read-only pass-through to Prometheus' HTTP API: GET query and query_range, nothing else.

Only the parameters those two endpoints take are passed on; Prometheus' own answer (its JSON and
status, 400/422 for a bad expression) comes back as it is; Prometheus unreachable is a 503.
"""
from __future__ import annotations

import requests
from flask import Blueprint, Response, current_app, request

from services.shared.errors import DependencyUnavailable, ValidationFailed

ENDPOINTS = {"query": ("query", "time"), "query_range": ("query", "start", "end", "step")}
MAX_QUERY_CHARS = 2000

bp = Blueprint("prometheus", __name__)


def forward(prometheus_url: str, endpoint: str, args: dict[str, str], session=requests) -> tuple[bytes, int]:
    """Ask Prometheus' `endpoint` with the allowed `args`; its body and status."""
    params = {name: args[name] for name in ENDPOINTS[endpoint] if name in args}
    if not params.get("query") or len(params["query"]) > MAX_QUERY_CHARS:
        raise ValidationFailed(f"query: a PromQL expression of 1 to {MAX_QUERY_CHARS} characters is required",
                               [{"field": "query", "message": "required"}])
    try:
        response = session.get(f"{prometheus_url}/api/v1/{endpoint}", params=params, timeout=10)
    except requests.RequestException:
        raise DependencyUnavailable("Prometheus is not answering; retry later") from None
    status = response.status_code if response.status_code in (200, 400, 422) else 503
    return response.content, status


@bp.get("/console/api/prometheus/<any(query, query_range):endpoint>")
def query(endpoint: str) -> Response:
    body, status = forward(current_app.config["CONSOLE"].prometheus_url, endpoint, request.args.to_dict())
    return Response(body, status=status, content_type="application/json")
