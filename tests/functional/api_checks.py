"""Checks shared by the API tests: the JSON error format of DESIGN.md and raw-body requests."""
from __future__ import annotations

import re
import uuid
from typing import Any

import requests

TIMEOUT = 15
JSON = {"Content-Type": "application/json"}


def assert_error(response: requests.Response, status: int, code: str | None = None,
                 field: str | None = None) -> dict[str, Any]:
    """`response` is the JSON error `status` ({"error": {code, message, details}}), never a 5xx.

    With `field`, one entry of `details` must name that field. Returns the inner error object.
    """
    where = f"{response.request.method} {response.url} -> {response.status_code}: {response.text[:800]!r}"
    assert response.status_code < 500, f"server error on bad input: {where}"
    assert response.status_code == status, f"expected {status}: {where}"
    assert response.headers.get("Content-Type", "").split(";")[0].strip() == "application/json", where
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, where
    error = body["error"]
    assert isinstance(error, dict) and {"code", "message", "details"} <= set(error), where
    assert isinstance(error["code"], str) and error["code"], where
    assert isinstance(error["message"], str) and error["message"], where
    assert isinstance(error["details"], list), where
    if code is not None:
        assert error["code"] == code, where
    if field is not None:
        named = [d.get("field") for d in error["details"] if isinstance(d, dict)]
        assert field in named, f"details do not name {field!r} (they name {named}): {where}"
    return error


def post_raw(url: str, data: bytes | str, content_type: str | None = "application/json",
             headers: dict[str, str] | None = None, method: str = "POST") -> requests.Response:
    """Send `data` exactly as given (no JSON encoding by the client)."""
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    if isinstance(data, str):
        data = data.encode("utf-8")
    return requests.request(method, url, data=data, headers=all_headers, timeout=TIMEOUT)


# ---- catalog helpers (test_catalog.py, test_cache.py) ---------------------------------------

def unique_slug(prefix: str = "t") -> str:
    """A category slug no other test uses, so a test sees only its own products."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def product_body(category: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "Blue Mug", "description": "A mug, blue.", "price_cents": 1299, "currency": "EUR",
            "category": category, "tags": ["mug", "kitchen"], "stock": 3}
    body.update(fields)
    return body


def create_product(base: str, auth: dict[str, str], category: str, **fields: Any) -> dict[str, Any]:
    """POST /v1/products and return the created product (asserting 201)."""
    response = requests.post(f"{base}/v1/products", json=product_body(category, **fields), headers=auth,
                             timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    return response.json()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of metric `name` whose labels include all of `labels` (Prometheus text)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text, _, value = line[len(name) + 1:].rpartition("} ")
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', label_text))
        if all(found.get(key) == val for key, val in labels.items()):
            total += float(value)
    return total
