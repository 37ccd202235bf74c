"""Rate limits at the edge: one per-route policy, counted per client across every replica.

`POLICY` below is the one place that says which requests are limited, per what key and by
which setting; `enforce` (called once per request by services/shared/app.py) applies it.
The first rule that matches a request's method and route (its Flask url rule) counts it,
once; probes and the OpenAPI document are never limited. Past a limit the answer is 429
with Retry-After (the seconds left in the window).

Only edge traffic is limited. A request with a valid service identity (one Scaleshop
service calling another: services/shared/service_identity.py) is internal: it is caused
by an edge request that was already counted, so it is never counted against any client's
limit. Without this, the catalog's batch profile call made every product-page miss count
a second time, in one bucket shared by all of a catalog pod's misses.

Why each rule and number (the README's table of the rules is derived from `POLICY` and the
settings' defaults by `python -m stack.derived`):

- sign-in is what password guessing and account spam hit. The address is its key: before
  signing in there is no user, and an attacker holding tokens must not get a fresh
  allowance with each account. 60 a minute is far more than a person types.
- reads are anonymous and mostly cached, and many shoppers share one address (offices,
  NAT, mobile carriers): one page view costs a few API reads. A limit sized for writes
  would refuse a busy address or a storefront's burst (200 product pages a second for 10 s
  from one client must pass, and did not at 1,200 a minute for everything). 6,000 a
  minute still stops one scraper at 100 pages a second on average.
- writes cost a database write, events and cache invalidations, and are where spam goes;
  they are keyed by the signed-in user (every write but sign-up needs a token), so one
  user cannot write more than 20 a second whatever the number of addresses they use.

A client is the user of a valid bearer token (for rules keyed by user), else the address
the gateway saw: the last entry of X-Forwarded-For, which the gateway appends (replicas
are reached only through it). 0 turns a rule off.

Why memcached: the gateway spreads a client's requests over every replica of a service
(and in the chart, clients over several gateway pods); a count kept in each replica's
memory would let a client through once per replica, and change with every scale. So each
rule counts in one fixed one-minute window per client in the shared memcached (`incr` is
atomic on the server; `add` creates the window's counter once), which holds the limit
across all replicas and gateway pods for one round trip per request. A fixed window lets a
client reach twice its limit across a window boundary; that is the price of one counter.
If memcached is down the limit is not enforced (the service keeps serving) and the fact is
logged.
"""
from __future__ import annotations

import enum
import functools
import hashlib
import logging
import re
import time
from dataclasses import dataclass

from flask import Request

from .auth import bearer_in, decode_token
from .cache import Cache, CacheUnavailable
from .config import Settings
from .errors import TooManyRequests, Unauthorized
from .service_identity import HeaderLookup, service_caller

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
clock = time.time  # the time windows are counted by (a unit test sets its own)


class Key(enum.Enum):
    """What a rule counts per."""

    ADDRESS = "address"
    USER_OR_ADDRESS = "user, else address"


@dataclass(frozen=True)
class Rule:
    name: str  # in the counters' keys and in the 429's message
    methods: frozenset[str] | None  # None: any method
    routes: frozenset[str] | None  # Flask url rules; None: any route, unmatched paths too
    key: Key
    setting: str  # the Settings field with the limit per minute (0: off)

    def matches(self, method: str, route: str | None) -> bool:
        return ((self.methods is None or method in self.methods)
                and (self.routes is None or route in self.routes))


POLICY: tuple[Rule, ...] = (
    Rule("sign-in and sign-up", frozenset({"POST"}), frozenset({"/v1/sessions", "/v1/users"}),
         Key.ADDRESS, "rate_limit_auth_per_minute"),
    Rule("reads", frozenset({"GET", "HEAD", "OPTIONS"}), None, Key.USER_OR_ADDRESS, "rate_limit_reads_per_minute"),
    Rule("writes", None, None, Key.USER_OR_ADDRESS, "rate_limit_per_minute"),
)
UNLIMITED_ROUTES = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
_PLAIN_ADDRESS = re.compile(r"^[0-9A-Za-z.:_\[\]-]{1,64}$")


@functools.cache  # a handful of (method, route) pairs, asked on every request
def rule_for(method: str, route: str | None, policy: tuple[Rule, ...] = POLICY) -> Rule | None:
    """The rule that counts this request (the first that matches), or None if it is never limited."""
    if route in UNLIMITED_ROUTES:
        return None
    return next((rule for rule in policy if rule.matches(method, route)), None)


def client_address(headers: HeaderLookup, remote_addr: str | None) -> str:
    """The address the gateway saw (the last X-Forwarded-For entry), safe to use in a memcached key."""
    forwarded = [part.strip() for part in headers.get("X-Forwarded-For", "").split(",") if part.strip()]
    address = forwarded[-1] if forwarded else (remote_addr or "unknown")
    if _PLAIN_ADDRESS.match(address):
        return address
    return "h-" + hashlib.sha256(address.encode()).hexdigest()[:32]


def token_user(headers: HeaderLookup, secret: str) -> str | None:
    """The user of a valid bearer token (signature, issuer and expiry; revocation is not asked here)."""
    token = bearer_in(headers)
    if token is None:
        return None
    try:
        return decode_token(secret, token).user_id
    except Unauthorized:
        return None


def client_key(rule: Rule, headers: HeaderLookup, remote_addr: str | None, secret: str) -> str:
    if rule.key is Key.USER_OR_ADDRESS:
        user = token_user(headers, secret)
        if user is not None:
            return f"user:{user}"
    return f"ip:{client_address(headers, remote_addr)}"


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


def count(cache: Cache, rule: Rule, limit: int, client: str, now: float) -> None:
    """Count one request of `client` under `rule`; TooManyRequests if that puts it over `limit`."""
    window = int(now // WINDOW_SECONDS)
    seen = _count(cache, f"rl:{rule.name.replace(' ', '-')}:{client}:{window}")
    if seen is None:
        log.warning("rate limit not enforced: memcached unreachable")
        return
    if seen > limit:
        raise TooManyRequests(f"too many requests: at most {limit} per minute for {rule.name}",
                              retry_after_seconds=max(1, int(WINDOW_SECONDS - now % WINDOW_SECONDS)))


def enforce(request: Request, cache: Cache, settings: Settings) -> None:
    """Apply POLICY to this request: TooManyRequests when its client is over the rule's limit."""
    rule = rule_for(request.method, request.url_rule.rule if request.url_rule else None)
    limit = getattr(settings, rule.setting) if rule is not None else 0
    if rule is None or not limit:
        return
    secret = settings.auth_secret.get_secret_value()
    if service_caller(request.headers, secret) is not None:
        return  # internal traffic: the edge request that caused it was counted
    count(cache, rule, limit, client_key(rule, request.headers, request.remote_addr, secret),
          clock())
