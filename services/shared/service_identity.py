"""Service identity: how one Scaleshop service proves to another that a call is internal.

A calling service sends `X-Service-Token: <JWT>` on every call to another service: an
HS256 token signed with AUTH_SECRET (which every service already holds), valid for
`SERVICE_TOKEN_TTL_SECONDS`, with the audience `scaleshop-internal` and the subject
`service:<name>`. The audience keeps the two kinds of token apart in both directions:
user-token verification (services/shared/auth.py) refuses any token that carries an
audience, and `verify_service_token` requires this one, so a user token never passes as
a service token and a service token never signs anybody in.

A process signs one token per service name and reuses it until `RENEW_BEFORE_SECONDS`
before it expires (`credential_for`). The receiving side checks it with `service_caller`;
a request that carries a valid one is internal traffic, which the edge's rate limits
(services/shared/ratelimit.py) never count. An invalid or expired token is not an error:
the request is simply not internal.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jwt
from werkzeug.datastructures import Headers

from .auth import ALGORITHM, ISSUER

HeaderLookup = Headers | Mapping[str, str]  # a request's headers, or a plain dict of them

HEADER = "X-Service-Token"
AUDIENCE = "scaleshop-internal"
SUBJECT_PREFIX = "service:"
SERVICE_TOKEN_TTL_SECONDS = 300
RENEW_BEFORE_SECONDS = 60
CLOCK_SKEW_SECONDS = 10  # replicas' clocks may differ this much


class InvalidServiceToken(Exception):
    """The token is not a valid, unexpired service token signed with this deployment's secret."""


@dataclass(frozen=True)
class ServiceToken:
    token: str
    service: str
    expires_at: float  # seconds since the epoch


def issue_service_token(secret: str, service: str, ttl_seconds: int = SERVICE_TOKEN_TTL_SECONDS,
                        now: float | None = None) -> ServiceToken:
    """A token saying 'this call comes from `service`', valid for `ttl_seconds`."""
    if not service:
        raise ValueError("a service token needs the calling service's name")
    issued = int(time.time() if now is None else now)
    expires = issued + ttl_seconds
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": SUBJECT_PREFIX + service, "iat": issued, "exp": expires}
    return ServiceToken(jwt.encode(claims, secret, algorithm=ALGORITHM), service, expires)


def verify_service_token(secret: str, token: str) -> str:
    """The calling service's name; InvalidServiceToken unless signature, audience, issuer and expiry hold."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                            leeway=CLOCK_SKEW_SECONDS, options={"require": ["iss", "aud", "sub", "iat", "exp"]})
    except jwt.PyJWTError as exc:
        raise InvalidServiceToken(str(exc)) from None
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject.startswith(SUBJECT_PREFIX) or subject == SUBJECT_PREFIX:
        raise InvalidServiceToken("the subject is not a service")
    return subject[len(SUBJECT_PREFIX):]


def service_caller(headers: HeaderLookup, secret: str) -> str | None:
    """The service that sent this request if it carries a valid service token, else None (edge traffic)."""
    token = headers.get(HEADER, "").strip()
    if not token:
        return None
    try:
        return verify_service_token(secret, token)
    except InvalidServiceToken:
        return None


class ServiceCredential:
    """One service's token in this process: signed on first use, signed again shortly before it expires."""

    def __init__(self, secret: str, service: str, clock: Callable[[], float] = time.time):
        self._secret = secret
        self._service = service
        self._clock = clock
        self._lock = threading.Lock()
        self._current: ServiceToken | None = None

    def token(self) -> str:
        with self._lock:
            now = self._clock()
            if self._current is None or self._current.expires_at - now <= RENEW_BEFORE_SECONDS:
                self._current = issue_service_token(self._secret, self._service, now=now)
            return self._current.token

    def headers(self) -> dict[str, str]:
        return {HEADER: self.token()}


_credentials: dict[tuple[str, str], ServiceCredential] = {}
_credentials_lock = threading.Lock()


def credential_for(secret: str, service: str) -> ServiceCredential:
    """This process's credential for `service` (one per secret and service, shared by all threads)."""
    with _credentials_lock:
        credential = _credentials.get((secret, service))
        if credential is None:
            credential = _credentials[(secret, service)] = ServiceCredential(secret, service)
        return credential
