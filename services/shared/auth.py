"""Bearer tokens: signed JWTs any replica of any service verifies, and shared revocation.

A token is an HS256 JWT signed with AUTH_SECRET (claims: sub, jti, iat, exp). Logout
records the token's `jti` in the `revoked_tokens` collection and in memcached, so
every replica rejects it from then on without asking the replica that issued it.
"""
from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jwt
from flask import g, request
from pymongo.database import Database
from werkzeug.datastructures import Headers

from .cache import Cache
from .errors import Unauthorized

ALGORITHM = "HS256"
ISSUER = "scaleshop"
REVOKED = "revoked_tokens"


@dataclass(frozen=True)
class Principal:
    user_id: str
    token_id: str
    expires_at: dt.datetime


def issue_token(secret: str, user_id: str, ttl_seconds: int, now: dt.datetime | None = None) -> tuple[str, Principal]:
    now = now or dt.datetime.now(dt.UTC)
    expires = now + dt.timedelta(seconds=ttl_seconds)
    principal = Principal(user_id, uuid.uuid4().hex, expires)
    claims = {"sub": user_id, "jti": principal.token_id, "iat": now, "exp": expires, "iss": ISSUER}
    return jwt.encode(claims, secret, algorithm=ALGORITHM), principal


def decode_token(secret: str, token: str) -> Principal:
    """Verify signature, algorithm, issuer and expiry; raise Unauthorized otherwise."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
            options={"require": ["sub", "jti", "exp", "iat", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the token has expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("the token is invalid") from None
    if not isinstance(claims["sub"], str) or not isinstance(claims["jti"], str):
        raise Unauthorized("the token is invalid")
    expires = dt.datetime.fromtimestamp(claims["exp"], dt.UTC)
    return Principal(claims["sub"], claims["jti"], expires)


def bearer_in(headers: Mapping[str, str] | Headers) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def bearer_token() -> str:
    token = bearer_in(request.headers)
    if token is None:
        raise Unauthorized()
    return token


def _revoked_key(token_id: str) -> str:
    return f"revoked:v1:{token_id}"


def revoke(db: Database, cache: Cache, principal: Principal) -> None:
    """Record the token as revoked: database first (the truth), then the cache."""
    db[REVOKED].update_one(
        {"_id": principal.token_id},
        {"$set": {"user_id": principal.user_id, "expires_at": principal.expires_at}},
        upsert=True,
    )
    ttl = _ttl_until(principal.expires_at)
    if not cache.set(_revoked_key(principal.token_id), True, ttl):
        cache.delete(_revoked_key(principal.token_id))


def is_revoked(db: Database, cache: Cache, principal: Principal) -> bool:
    """Cache first; on a miss the database decides and the answer is cached.

    A 'not revoked' answer is stored with `add` (only if absent) and a revocation with
    `set`, so a reader that raced a logout can never overwrite the revocation.
    """
    key = _revoked_key(principal.token_id)
    cached = cache.get(key)
    if cached is not None:
        return bool(cached)
    revoked = db[REVOKED].find_one({"_id": principal.token_id}, {"_id": 1}) is not None
    ttl = _ttl_until(principal.expires_at)
    if revoked:
        cache.set(key, True, ttl)
    else:
        cache.add(key, False, min(ttl, 60))
    return revoked


def authenticate(secret: str, database: Callable[[], Database], cache: Cache) -> Principal:
    """The caller's principal from the Authorization header, or Unauthorized.

    `database` is called only for a well-formed token, to look up its revocation: a caller
    without one gets 401 even while the database is down. Verified once per request: a second
    call (the view, after @operation checked the caller before the body) returns the same
    principal without asking the cache again.
    """
    if "principal" in g:
        return g.principal
    principal = decode_token(secret, bearer_token())
    if is_revoked(database(), cache, principal):
        raise Unauthorized("the token has been revoked")
    g.principal = principal
    return principal


def _ttl_until(when: dt.datetime) -> int:
    return max(1, int((when - dt.datetime.now(dt.UTC)).total_seconds()) + 1)
