"""Per-client rate limits shared by every replica: fixed one-minute windows in memcached.

A client is the user of a valid bearer token, else the address the gateway saw (the
last entry of X-Forwarded-For, which the gateway appends; replicas are reached only
through it). Each request counts once in `all` and sign-in and sign-up also in `auth`;
past a limit the answer is 429 with Retry-After. If memcached is down the limit is not
enforced (the service keeps serving) and the fact is logged.
"""
from __future__ import annotations

import logging
import time

import jwt
from flask import Request

from .auth import ALGORITHM, ISSUER
from .cache import Cache, CacheUnavailable
from .errors import TooManyRequests

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
AUTH_ROUTES = {("POST", "/v1/sessions"), ("POST", "/v1/users")}
EXEMPT_PATHS = {"/healthz", "/readyz", "/metrics", "/openapi.json"}


def client_identity(request: Request, secret: str) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        try:
            claims = jwt.decode(token.strip(), secret, algorithms=[ALGORITHM], issuer=ISSUER)
            if isinstance(claims.get("sub"), str):
                return f"user:{claims['sub']}"
        except jwt.PyJWTError:
            pass
    forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
    return f"ip:{forwarded[-1] if forwarded else request.remote_addr}"


def _count(cache: Cache, key: str) -> int | None:
    """Add one to the window's counter (creating it); None if memcached is unreachable."""
    try:
        value = cache.incr(key)
        if value is None:
            if cache.add(key, 1, ttl=WINDOW_SECONDS + 1):
                return 1
            value = cache.incr(key)
        return value
    except CacheUnavailable:
        return None


def enforce(request: Request, cache: Cache, secret: str, per_minute: int, auth_per_minute: int) -> None:
    """Raise TooManyRequests when this client is over a limit in the current window."""
    if request.path in EXEMPT_PATHS or (not per_minute and not auth_per_minute):
        return
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    retry_after = max(1, int(WINDOW_SECONDS - now % WINDOW_SECONDS))
    client = client_identity(request, secret)
    checks = [("all", per_minute)]
    if (request.method, request.path.rstrip("/")) in AUTH_ROUTES:
        checks.append(("auth", auth_per_minute))
    for bucket, limit in checks:
        if not limit:
            continue
        count = _count(cache, f"rl:{bucket}:{client}:{window}")
        if count is None:
            log.warning("rate limit not enforced: memcached unreachable")
            return
        if count > limit:
            raise TooManyRequests(
                f"too many requests: at most {limit} per minute" + (" for sign-in and sign-up" if bucket == "auth" else ""),
                retry_after_seconds=retry_after,
            )
