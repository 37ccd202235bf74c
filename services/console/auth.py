"""The operator token: every action needs `Authorization: Bearer <token>` (compared in constant time)."""
from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps

from flask import current_app, request

from services.shared.errors import Unauthorized


def check_token(header: str | None, token: str) -> None:
    """Raise Unauthorized unless `header` is "Bearer <token>"."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not given or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("the operator token is required: Authorization: Bearer <token>")


def operator_only(view: Callable) -> Callable:
    @wraps(view)
    def wrapped(*args, **kwargs):
        check_token(request.headers.get("Authorization"), current_app.config["CONSOLE"].token)
        return view(*args, **kwargs)
    return wrapped
