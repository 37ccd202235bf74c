"""Internal traffic is not edge traffic (issue 12): with the chart's default rate limits on, one
client's burst of product-page misses, within its own limit, is answered without a 429 or a 503.

Each product-page miss makes the catalog call the user service (the batch profile read). That
call carries the catalog's service identity, goes to the user service's internal address (not
the public gateway) and is never counted against a client's limit; the client's own requests
are counted under the policy's rule for reads (services/shared/ratelimit.py).

The session's stack runs with the limits off (stack/layout.py STACK_DEFAULT_SETTINGS), so this
module restarts every user and catalog replica on its port with the limits of the chart's
values.yaml (read here, never copied) and puts them back afterwards. The load is open loop and
bounded: request i is due at start + i/RATE, sent by a pool of POOL threads over loopback; each
of the PAGES products is requested once, so every page is a cache miss. The burst starts once
the workers have folded the import's events, so it does not share the machine with them, and
after a warm-up burst of as many other pages with the limits off. On a machine too busy to
serve RATE misses a second the pool bounds the load and the schedule slips (the rate achieved is
printed); the burst must still fit in one rate-limit window.
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests
import yaml

from services.shared.ratelimit import WINDOW_SECONDS
from services.shared.service_identity import HEADER, issue_service_token
from stack.control import Stack
from stack.layout import HTTP_SERVICES, REPO
from stack.workers import wait_events_folded
from tests.functional.api_checks import JSON, unique_slug
from tests.functional.conftest import sign_up

RATE = 200  # product-page misses per second
SECONDS = 10
PAGES = RATE * SECONDS
POOL = 64  # most requests in flight at once
CHART_VALUES = REPO / "charts" / "scaleshop" / "values.yaml"


def chart_rate_limits() -> dict[str, str]:
    """The rate-limit settings (env name -> value) a default install of the chart gives user and catalog."""
    values = yaml.safe_load(CHART_VALUES.read_text())
    limits = {name: str(value) for name, value in values["config"].items() if name.startswith("RATE_LIMIT_")}
    for service in HTTP_SERVICES:  # a service's own config would override the shared one
        overrides = (values.get(service) or {}).get("config") or {}
        assert not {name for name in overrides if name.startswith("RATE_LIMIT_")}, (service, overrides)
    return limits


@pytest.fixture(scope="module")
def chart_limits() -> dict[str, str]:
    limits = chart_rate_limits()
    assert limits and all(int(value) > 0 for value in limits.values()), f"the chart's limits are not all on: {limits}"
    return limits


@pytest.fixture(scope="module")
def product_ids(stack, gateway, db) -> list[str]:
    """PAGES products of a new category, imported (one job) while the limits are still off, after a
    warm-up burst of PAGES other pages."""
    seller = sign_up(gateway, display_name="Bulk Seller")
    category = unique_slug("internal")
    items = [{"name": f"Burst item {i:05d}", "description": "A page requested once.", "price_cents": 100 + i,
              "currency": "EUR", "category": category, "tags": ["burst"], "stock": 1} for i in range(2 * PAGES)]
    submitted = requests.post(f"{gateway}/v1/imports", data=json.dumps(items), timeout=60,
                              headers={**JSON, **seller.auth})
    assert submitted.status_code == 202, submitted.text[:500]
    status_url = f"{gateway}{submitted.json()['status_url']}"
    deadline = time.monotonic() + 120
    while (job := requests.get(status_url, headers=seller.auth, timeout=10).json())["status"] != "succeeded":
        assert job["status"] != "failed" and time.monotonic() < deadline, job
        time.sleep(0.3)
    ids = [str(doc["_id"]) for doc in db["products"].find({"category": category}, {"_id": 1})]
    assert len(ids) == 2 * PAGES
    # The import's events (and any earlier module's) are folded before the burst: folding them
    # takes the database and the workers for seconds, and this test measures the burst alone.
    assert wait_events_folded(stack, timeout=180) == 0, "the workers did not fold the import's events"
    # Warm-up, as a load test's: a database that has not served pages yet is slower at them
    # (its CPU per miss, measured here: 1.4-1.8 ms in a new JVM's first bursts, 0.5-0.6 ms later).
    warm_up, measured = ids[:PAGES], ids[PAGES:]
    outcomes = burst([f"{gateway}/v1/products/{pid}" for pid in warm_up], RATE, POOL)
    assert Counter(o.status for o in outcomes) == {200: PAGES}
    return measured


def _restart_http_replicas(stack: Stack, settings: dict[str, str]) -> None:
    """Every user and catalog replica stopped and started again on its port, with `settings` of its own."""
    for service in HTTP_SERVICES:
        for replica in stack.service_replicas(service):
            stack.stop_extra_replica(replica.name)
            stack.run_extra_replica(service, replica.index, settings)


@pytest.fixture(scope="module")
def limited_stack(stack, chart_limits, product_ids) -> Stack:
    _restart_http_replicas(stack, chart_limits)
    try:
        yield stack
    finally:
        _restart_http_replicas(stack, {})  # the session's settings again: limits off


@dataclass(frozen=True)
class Outcome:
    status: int | str  # the HTTP status, or the exception's name
    x_cache: str | None
    sent: float  # seconds after the start
    late: float  # seconds after its due time
    latency: float


def burst(urls: list[str], rate: float, pool: int) -> list[Outcome]:
    """GET each URL once, URL i due at start + i/rate (open loop), at most `pool` in flight."""
    local = threading.local()
    start = time.monotonic() + 0.5

    def get(index: int, url: str) -> Outcome:
        due = start + index / rate
        if (wait := due - time.monotonic()) > 0:
            time.sleep(wait)
        session = local.__dict__.setdefault("session", requests.Session())
        sent = time.monotonic()
        try:
            response = session.get(url, timeout=30)
        except requests.RequestException as exc:
            return Outcome(type(exc).__name__, None, sent - start, sent - due, time.monotonic() - sent)
        return Outcome(response.status_code, response.headers.get("X-Cache"), sent - start, sent - due,
                       time.monotonic() - sent)

    with ThreadPoolExecutor(pool) as executor:
        return list(executor.map(get, range(len(urls)), urls))


def test_product_page_misses_of_one_client_within_its_limit_get_no_429_and_no_503(
        limited_stack, gateway, product_ids, chart_limits):
    assert PAGES <= int(chart_limits["RATE_LIMIT_READS_PER_MINUTE"]), "the client would be over its own limit"
    outcomes = burst([f"{gateway}/v1/products/{pid}" for pid in product_ids], RATE, POOL)

    statuses = Counter(o.status for o in outcomes)
    latencies = sorted(o.latency for o in outcomes)
    late = sorted(o.late for o in outcomes)
    sending = max(o.sent for o in outcomes)
    print(f"\n{PAGES} product-page misses at {RATE}/s from one client, chart limits {chart_limits}: "
          f"statuses {dict(statuses)}; latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms; sent late p99 "
          f"{late[int(len(late) * 0.99)] * 1000:.0f} ms, all sent in {sending:.1f} s ({PAGES / sending:.0f}/s)")
    assert statuses[429] == 0 and statuses[503] == 0, dict(statuses)
    assert statuses == {200: PAGES}, dict(statuses)
    assert Counter(o.x_cache for o in outcomes) == {"miss": PAGES}  # each page's first read
    # What a limit counts is requests per client in a minute: the burst must fit in one (on a busy machine
    # the pool bounds the load and the schedule slips; the rate achieved is printed above).
    assert sending < WINDOW_SECONDS, "the burst did not fit in a minute: the machine was too busy"
    # ...and it was a load: at least half the rate, 100 misses a second, five times the 20 a second that one
    # shared bucket of the chart's 1,200 a minute allowed (runs here: 166-200/s; the client shares the 2 cores).
    assert PAGES / sending >= 0.5 * RATE, f"only {PAGES / sending:.0f}/s were sent: the test did not load the stack"


def test_the_chart_limits_were_on_for_this_client(limited_stack, gateway, chart_limits):
    """The control: the same client past the chart's sign-in limit is refused (the burst was not let through
    because limits were off)."""
    limit = int(chart_limits["RATE_LIMIT_AUTH_PER_MINUTE"])
    codes = sign_ins_in_one_minute(gateway, limit + 1)
    assert codes == [401] * limit + [429]


def test_a_service_identity_sent_to_the_gateway_exempts_nobody(limited_stack, gateway, chart_limits, auth_secret):
    """The gateway drops X-Service-Token: a client holding a valid service token (leaked, say) is still
    counted at the edge: of limit + 1 sign-ins in one minute at least the last is refused (more if the
    test above counted in the same minute); were the token honoured, none would be."""
    limit = int(chart_limits["RATE_LIMIT_AUTH_PER_MINUTE"])
    forged = {HEADER: issue_service_token(auth_secret, "catalog").token}
    codes = sign_ins_in_one_minute(gateway, limit + 1, forged)
    assert set(codes) <= {401, 429} and codes[-1] == 429, Counter(codes)


def sign_ins_in_one_minute(gateway: str, count: int, headers: dict[str, str] | None = None) -> list[int]:
    """The statuses of `count` failed sign-ins, all counted in one rate-limit minute. The client is
    loopback, one address whatever the try: if a minute boundary falls inside, the first try's
    sign-ins are counted in the minute it ended in, so the second try waits for a minute of its own."""
    body = {"email": "nobody@example.com", "password": "wrong password"}
    for attempt in range(2):
        if attempt:
            time.sleep(WINDOW_SECONDS - time.time() % WINDOW_SECONDS + 0.2)
        window = int(time.time() // WINDOW_SECONDS)
        codes = [requests.post(f"{gateway}/v1/sessions", json=body, headers=headers, timeout=10).status_code
                 for _ in range(count)]
        if int(time.time() // WINDOW_SECONDS) == window:
            return codes
    pytest.fail("two minute boundaries in a row: cannot happen")
