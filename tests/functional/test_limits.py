"""Abuse limits: shared rate limits per rule of the policy, internal calls never counted, timeouts on
stalled dependencies, no secrets in logs."""
from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest
import requests

from tests.functional.api_checks import assert_error, create_product, unique_slug
from tests.functional.conftest import replica_url, sign_up

TIMEOUT = 15
READS, WRITES, SIGN_INS = 12, 6, 4  # per client per minute on the limited replicas
LOW_LIMITS = {"RATE_LIMIT_READS_PER_MINUTE": str(READS), "RATE_LIMIT_PER_MINUTE": str(WRITES),
              "RATE_LIMIT_AUTH_PER_MINUTE": str(SIGN_INS)}


@pytest.fixture
def limited_user_replicas(stack):
    """Two extra user replicas (outside the gateway) with low limits, removed afterwards."""
    names = []
    try:
        for index in (8, 9):
            replica = stack.run_extra_replica("user", index, LOW_LIMITS)
            names.append(replica.name)
        yield [replica_url(stack, name) for name in names]
    finally:
        for name in names:
            stack.stop_extra_replica(name)


def _until_limited(urls: list[str], send, most: int) -> tuple[int, requests.Response | None]:
    """Send alternately to each replica until the first 429; how many passed before it."""
    for sent in range(most):
        response = send(urls[sent % len(urls)])
        if response.status_code == 429:
            return sent, response
    return most, None


def _in_one_window(check, same_client: bool = False) -> None:
    """Run a check that counts within one rate-limit minute; once more if a minute boundary fell inside.

    Each call of `check` must use clients of its own (the first call's counters are spent), or say
    `same_client`: then each call waits for a minute of its own, whose counters start at zero (earlier
    tests, e.g. test_internal_traffic's burst through the gateway, count loopback in the current one).
    """
    for _attempt in range(2):
        if same_client:
            time.sleep(60 - time.time() % 60 + 0.2)
        window = int(time.time() // 60)
        result = check()
        if int(time.time() // 60) == window:
            return result
    pytest.fail("two minute boundaries in a row: cannot happen")


def _fake_address(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().int % 250 + 1}"


def test_limit_is_shared_by_every_replica_and_answers_429_with_retry_after(limited_user_replicas):
    client = {}

    def check():
        client["X-Forwarded-For"] = _fake_address("198.51.100")
        passed, refused = _until_limited(
            limited_user_replicas,
            lambda url: requests.get(f"{url}/v1/users/{'0' * 24}", headers=client, timeout=TIMEOUT), most=40)
        return passed, refused

    passed, refused = _in_one_window(check)
    assert refused is not None, "never limited"
    assert passed == READS  # counted across both replicas, not READS each
    body = assert_error(refused, 429, "too_many_requests")
    assert f"{READS} per minute for reads" in body["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    other_client = {"X-Forwarded-For": f"{client['X-Forwarded-For']}, 192.0.2.77"}  # the last hop is the client
    assert requests.get(f"{limited_user_replicas[0]}/v1/users/{'0' * 24}", headers=other_client,
                        timeout=TIMEOUT).status_code == 404
    # Probes are never limited: orchestration must see the replica.
    assert requests.get(f"{limited_user_replicas[0]}/healthz", headers=client, timeout=TIMEOUT).status_code == 200


def test_sign_in_has_a_tighter_limit_of_its_own(limited_user_replicas):
    body = {"email": "nobody@example.com", "password": "wrong password"}

    def check():
        client = {"X-Forwarded-For": _fake_address("203.0.113")}
        return _until_limited(
            limited_user_replicas,
            lambda url: requests.post(f"{url}/v1/sessions", json=body, headers=client, timeout=TIMEOUT), most=20)

    passed, refused = _in_one_window(check)
    assert passed == SIGN_INS and refused is not None
    assert "sign-in and sign-up" in refused.json()["error"]["message"]


def test_signed_in_users_are_counted_apart_from_their_address(limited_user_replicas, gateway):
    def check():
        shared_address = {"X-Forwarded-For": _fake_address("192.0.2")}
        first, second = sign_up(gateway), sign_up(gateway)
        counts = []
        for account in (first, second):
            passed, _ = _until_limited(
                limited_user_replicas,
                lambda url, a=account: requests.get(f"{url}/v1/users/me", timeout=TIMEOUT,
                                                    headers={**shared_address, **a.auth}), most=14)
            counts.append(passed)
        return counts

    assert _in_one_window(check) == [READS, READS]


def test_writes_have_a_limit_of_their_own_per_user(limited_user_replicas, gateway):
    def check():
        account = sign_up(gateway)
        writes = _until_limited(
            limited_user_replicas,
            lambda url: requests.patch(f"{url}/v1/users/me", json={"bio": "busy"}, headers=account.auth,
                                       timeout=TIMEOUT), most=WRITES + 4)
        read_after = requests.get(f"{limited_user_replicas[0]}/v1/users/me", headers=account.auth, timeout=TIMEOUT)
        return writes, read_after

    (passed, refused), read_after = _in_one_window(check)
    assert passed == WRITES and refused is not None
    assert f"{WRITES} per minute for writes" in refused.json()["error"]["message"]
    assert read_after.status_code == 200  # reads are counted apart


@pytest.fixture
def catalog_calling_a_limited_user_replica(stack, limited_user_replicas):
    """An extra catalog replica (no limits of its own) whose USER_SERVICE_URL is one limited user replica."""
    replica = stack.run_extra_replica("catalog", 8, {"USER_SERVICE_URL": limited_user_replicas[0]})
    try:
        yield replica_url(stack, replica.name), limited_user_replicas[0]
    finally:
        stack.stop_extra_replica(replica.name)


def test_internal_calls_are_never_counted_against_a_client(catalog_calling_a_limited_user_replica, gateway):
    """More product-page misses than the user replica's read limit, each making one profile call to it from
    the catalog's address: all answered, and that address's own edge limit is untouched."""
    catalog, user = catalog_calling_a_limited_user_replica
    seller = sign_up(gateway)

    def check():  # new products each time: their pages are misses
        products = [create_product(gateway, seller.auth, unique_slug()) for _ in range(READS * 2)]
        pages = [requests.get(f"{catalog}/v1/products/{p['id']}", timeout=TIMEOUT) for p in products]
        # The same address (loopback, no X-Forwarded-For: as the catalog's calls arrive) at the edge:
        edge_passed, _ = _until_limited([user], lambda url: requests.get(
            f"{url}/v1/users/{seller.id}", timeout=TIMEOUT), most=READS + 4)
        return pages, edge_passed

    pages, edge_passed = _in_one_window(check, same_client=True)  # loopback: one address whatever the call
    assert [page.status_code for page in pages] == [200] * READS * 2
    assert {page.headers["X-Cache"] for page in pages} == {"miss"}  # each made its profile call
    assert all(page.json()["seller"]["id"] == seller.id for page in pages)
    assert edge_passed == READS


def _signal_server(stack, name: str, sig: int) -> None:
    proc = stack.server_proc(name)
    assert proc is not None and proc.alive()
    proc.send(sig)


@pytest.mark.lifecycle
def test_a_stalled_cache_cannot_hang_a_request(stack, gateway):
    """memcached frozen (SIGSTOP, not dead: connections hang): reads still answer, from MongoDB."""
    seller = sign_up(gateway)
    product = create_product(gateway, seller.auth, unique_slug())
    _signal_server(stack, "memcached", signal.SIGSTOP)
    try:
        started = time.monotonic()
        page = requests.get(f"{gateway}/v1/products/{product['id']}", timeout=TIMEOUT)
        elapsed = time.monotonic() - started
        assert page.status_code == 200
        assert page.headers["X-Cache"] == "bypass"
        assert elapsed < 5, f"a stalled memcached held the request {elapsed:.1f}s"
    finally:
        _signal_server(stack, "memcached", signal.SIGCONT)


@pytest.mark.lifecycle
def test_a_write_while_the_cache_stalls_still_makes_the_cached_page_stale(stack, gateway):
    """memcached frozen for 1.2 s while a price changes: once it thaws, no replica serves the old page.

    The write's own cache calls time out first (so the replica considers memcached failed);
    its invalidation must be sent all the same, not skipped.
    """
    seller = sign_up(gateway)
    product = create_product(gateway, seller.auth, unique_slug())
    url = f"{gateway}/v1/products/{product['id']}"
    for _ in range(20):
        if requests.get(url, timeout=TIMEOUT).headers.get("X-Cache") == "hit":
            break
    else:
        pytest.fail("the product page was never cached")
    new_price = product["price_cents"] + 1
    answer: dict = {}

    def change_price() -> None:
        answer["response"] = requests.patch(url, headers=seller.auth, json={"price_cents": new_price}, timeout=30)

    writer = threading.Thread(target=change_price)
    _signal_server(stack, "memcached", signal.SIGSTOP)
    try:
        writer.start()
        time.sleep(1.2)
    finally:
        _signal_server(stack, "memcached", signal.SIGCONT)
        writer.join(30)
    assert answer["response"].status_code == 200, answer["response"].text
    for _ in range(6):  # both catalog replicas, hits included
        page = requests.get(url, timeout=TIMEOUT)
        assert page.status_code == 200
        assert page.json()["product"]["price_cents"] == new_price, page.headers.get("X-Cache")


@pytest.mark.lifecycle
def test_a_stalled_database_gives_a_503_not_a_hang(stack, gateway):
    account = sign_up(gateway)
    _signal_server(stack, "database", signal.SIGSTOP)
    try:
        started = time.monotonic()
        response = requests.get(f"{gateway}/v1/users/me", headers=account.auth, timeout=30)
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "dependency_unavailable"
        assert elapsed < 20, f"a stalled database held the request {elapsed:.1f}s"
    finally:
        _signal_server(stack, "database", signal.SIGCONT)
    deadline = time.monotonic() + 30
    while requests.get(f"{gateway}/v1/users/me", headers=account.auth, timeout=TIMEOUT).status_code != 200:
        assert time.monotonic() < deadline, "the service did not recover after the database came back"
        time.sleep(0.5)


def test_passwords_tokens_and_secrets_never_reach_the_logs(stack, gateway, auth_secret):
    password = f"pw-{uuid.uuid4().hex}"
    account = sign_up(gateway, password=password)
    requests.get(f"{gateway}/v1/users/me", headers=account.auth, timeout=TIMEOUT)
    requests.post(f"{gateway}/v1/sessions", json={"email": account.email, "password": password + "x"}, timeout=TIMEOUT)
    requests.delete(f"{gateway}/v1/sessions/current", headers=account.auth, timeout=TIMEOUT)
    time.sleep(1.5)  # the gateway flushes its access log every second
    logs = {path.name: path.read_text(errors="replace") for path in stack.layout.log_dir.glob("*.log")}
    assert any(account.email.split("@")[0] not in text for text in logs.values())
    for name, text in logs.items():
        assert password not in text, f"the password is in {name}"
        assert account.token not in text, f"a bearer token is in {name}"
        assert account.token.split(".")[2] not in text, f"a token signature is in {name}"
        assert auth_secret not in text, f"AUTH_SECRET is in {name}"
    assert os.path.getsize(stack.layout.log_file("user-1")) > 0  # the logs were written at all
