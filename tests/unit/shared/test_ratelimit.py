"""The edge's rate limits (services/shared/ratelimit.py): which rule counts each route of both
services and per what, the limiter's decision on an in-memory memcached, and internal calls
(a valid service identity) never counted."""
from __future__ import annotations

import logging

import pytest

from services.shared import ratelimit
from services.shared.auth import issue_token
from services.shared.cache import CacheUnavailable
from services.shared.errors import TooManyRequests
from services.shared.ratelimit import POLICY, Key, client_address, client_key, count, rule_for
from services.shared.service_identity import HEADER, issue_service_token
from tests.unit.conftest import AUTH_SECRET, running
from tests.unit.fakes import FakeCache

SIGN_IN_ROUTES = {("POST", "/v1/sessions"), ("POST", "/v1/users")}
PROBES = {"/healthz", "/readyz", "/metrics", "/openapi.json"}
RULES = {rule.name: rule for rule in POLICY}
WINDOW_START = 1_800_000_000.0 - 1_800_000_000.0 % 60  # the first second of a window


def expected_rule(method: str, route: str) -> str | None:
    """The policy in words: probes free, sign-in and sign-up apart, reads generous, the rest writes."""
    if route in PROBES:
        return None
    if (method, route) in SIGN_IN_ROUTES:
        return "sign-in and sign-up"
    return "reads" if method in ("GET", "HEAD", "OPTIONS") else "writes"


def test_every_route_of_both_services_is_counted_by_the_rule_the_policy_says(user_service, catalog_service):
    seen = set()
    for built in (user_service, catalog_service):
        for url_rule in built.app.url_map.iter_rules():
            if url_rule.endpoint == "static":
                continue
            for method in url_rule.methods:
                rule = rule_for(method, url_rule.rule)
                assert (rule.name if rule else None) == expected_rule(method, url_rule.rule), (method, url_rule.rule)
                seen.add(rule.name if rule else None)
    assert seen == {None, "sign-in and sign-up", "reads", "writes"}


def test_unknown_paths_count_too_reads_as_reads_and_anything_else_as_writes():
    assert rule_for("GET", None).name == "reads"
    assert rule_for("POST", None).name == "writes"
    assert rule_for("BREW", "/v1/products").name == "writes"
    assert rule_for("GET", "/v1/sessions").name == "reads"  # only POST signs in


def test_sign_in_is_keyed_by_address_and_everything_else_by_user_first():
    assert RULES["sign-in and sign-up"].key is Key.ADDRESS
    assert RULES["reads"].key is Key.USER_OR_ADDRESS and RULES["writes"].key is Key.USER_OR_ADDRESS


def test_each_rules_limit_is_a_setting_with_a_default(user_service):
    settings = user_service.settings
    assert {rule.name: getattr(settings, rule.setting) for rule in POLICY} == {
        "sign-in and sign-up": settings.rate_limit_auth_per_minute,
        "reads": settings.rate_limit_reads_per_minute,
        "writes": settings.rate_limit_per_minute,
    }
    fields = type(settings).model_fields
    assert fields["rate_limit_reads_per_minute"].default > fields["rate_limit_per_minute"].default \
        > fields["rate_limit_auth_per_minute"].default > 0


def test_the_client_is_the_last_forwarded_address_else_the_peer():
    assert client_address({"X-Forwarded-For": "10.0.0.9, 192.0.2.7"}, "127.0.0.1") == "192.0.2.7"
    assert client_address({}, "127.0.0.1") == "127.0.0.1"
    odd = client_address({"X-Forwarded-For": "a b\tc" + "x" * 300}, "127.0.0.1")
    assert odd.startswith("h-") and len(odd) < 64  # still a valid memcached key


def test_a_signed_in_user_is_counted_as_the_user_except_when_signing_in():
    token, principal = issue_token(AUTH_SECRET, "64b000000000000000000001", ttl_seconds=600)
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": "192.0.2.7"}
    assert client_key(RULES["reads"], headers, None, AUTH_SECRET) == f"user:{principal.user_id}"
    assert client_key(RULES["writes"], headers, None, AUTH_SECRET) == f"user:{principal.user_id}"
    assert client_key(RULES["sign-in and sign-up"], headers, None, AUTH_SECRET) == "ip:192.0.2.7"
    forged = {**headers, "Authorization": f"Bearer {token}x"}
    assert client_key(RULES["reads"], forged, None, AUTH_SECRET) == "ip:192.0.2.7"


def test_the_request_past_the_limit_is_refused_until_the_next_window():
    cache = FakeCache()
    for _ in range(3):
        count(cache, RULES["reads"], 3, "ip:192.0.2.7", WINDOW_START + 15)
    with pytest.raises(TooManyRequests) as refused:
        count(cache, RULES["reads"], 3, "ip:192.0.2.7", WINDOW_START + 15.5)
    assert refused.value.retry_after_seconds == 44
    assert "at most 3 per minute for reads" in refused.value.message
    count(cache, RULES["reads"], 3, "ip:192.0.2.8", WINDOW_START + 16)  # another client: its own count
    count(cache, RULES["writes"], 3, "ip:192.0.2.7", WINDOW_START + 16)  # another rule: its own count
    count(cache, RULES["reads"], 3, "ip:192.0.2.7", WINDOW_START + 60)  # the next window


def test_the_window_counter_expires_with_its_window():
    cache = FakeCache()
    count(cache, RULES["writes"], 10, "user:u1", WINDOW_START)
    (key,) = cache.values
    assert cache.values[key] == 1 and cache.ttls[key] == ratelimit.WINDOW_SECONDS + 1


def test_memcached_down_means_not_enforced_and_logged(caplog):
    cache = FakeCache()
    cache.down = True
    with caplog.at_level(logging.WARNING, logger="services.shared.ratelimit"):
        for _ in range(5):
            count(cache, RULES["reads"], 1, "ip:192.0.2.7", WINDOW_START)
    assert "rate limit not enforced: memcached unreachable" in caplog.text


class RacingCache(FakeCache):
    """A counter created by another replica between this replica's incr and add."""

    def add(self, key, value, ttl=None):
        super().add(key, 5, ttl)
        return False


def test_a_counter_created_by_another_replica_meanwhile_is_counted_on():
    cache = RacingCache()
    count(cache, RULES["reads"], 6, "ip:192.0.2.7", WINDOW_START)
    with pytest.raises(TooManyRequests):
        count(cache, RULES["reads"], 6, "ip:192.0.2.7", WINDOW_START)


# ---- through a service's app (Flask's test client, fakes for memcached and Kafka) -------------

@pytest.fixture
def fixed_clock(monkeypatch):
    monkeypatch.setattr(ratelimit, "clock", lambda: WINDOW_START + 30)


def _statuses(client, method: str, path: str, times: int, **kwargs) -> list[int]:
    return [client.open(path, method=method, **kwargs).status_code for _ in range(times)]


def test_edge_requests_past_a_limit_get_429_with_retry_after(fixed_clock):
    with running("user", rate_limit_reads_per_minute=2) as built:
        client = {"X-Forwarded-For": "198.51.100.1"}
        assert _statuses(built.client, "GET", "/v1/nothing-here", 2, headers=client) == [404, 404]
        refused = built.client.get("/v1/nothing-here", headers=client)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "30"
        assert refused.get_json()["error"]["code"] == "too_many_requests"
        assert built.client.get("/healthz", headers=client).status_code == 200  # probes are never limited
        assert built.client.post("/v1/nothing-here", headers=client).status_code == 404  # writes: their own count


def test_sign_in_has_its_own_tighter_limit(fixed_clock):
    with running("user", rate_limit_auth_per_minute=2) as built:
        client = {"X-Forwarded-For": "198.51.100.2"}
        assert _statuses(built.client, "POST", "/v1/sessions", 3, json={}, headers=client) == [422, 422, 429]
        assert built.client.post("/v1/users", json={}, headers=client).status_code == 429  # sign-up shares it


def test_internal_calls_are_never_counted(fixed_clock):
    with running("user", rate_limit_reads_per_minute=2, rate_limit_per_minute=2) as built:
        internal = {"X-Forwarded-For": "198.51.100.3", HEADER: issue_service_token(AUTH_SECRET, "catalog").token}
        assert set(_statuses(built.client, "GET", "/v1/nothing-here", 10, headers=internal)) == {404}
        assert set(_statuses(built.client, "POST", "/v1/nothing-here", 10, headers=internal)) == {404}
        assert not [key for key in built.cache.values if key.startswith("rl:")]  # not even counted
        edge = {"X-Forwarded-For": "198.51.100.3"}  # the same address without the identity: its own limit
        assert _statuses(built.client, "GET", "/v1/nothing-here", 3, headers=edge) == [404, 404, 429]


def test_an_expired_or_foreign_service_token_is_edge_traffic(fixed_clock):
    expired = issue_service_token(AUTH_SECRET, "catalog", ttl_seconds=60, now=1_000_000_000).token
    foreign = issue_service_token("someone-elses-secret-0123456789abcdef", "catalog").token
    with running("user", rate_limit_reads_per_minute=1) as built:
        for address, token in (("198.51.100.4", expired), ("198.51.100.5", foreign)):
            headers = {"X-Forwarded-For": address, HEADER: token}
            assert _statuses(built.client, "GET", "/v1/nothing-here", 2, headers=headers) == [404, 429]


def test_a_limit_of_zero_is_off(fixed_clock):
    with running("user", rate_limit_reads_per_minute=0) as built:
        assert set(_statuses(built.client, "GET", "/v1/nothing-here", 20)) == {404}
        assert not built.cache.values


def test_the_limiter_never_raises_what_memcached_raises(fixed_clock):
    class BrokenCache(FakeCache):
        def incr(self, key):
            raise CacheUnavailable("refused")

    with running("user", rate_limit_reads_per_minute=1) as built:
        built.app.extensions["scaleshop"].cache = BrokenCache()
        assert set(_statuses(built.client, "GET", "/v1/nothing-here", 3)) == {404}
