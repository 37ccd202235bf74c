"""Every PromQL expression of the Grafana dashboard (charts/scaleshop/files/grafana/scaleshop-dashboard.json),
evaluated by the test stack's real Prometheus after a short load: products created and read (cache
misses, then hits), lists and categories, sign-ins, and an import (jobs, consumer lag, folds). A query
that errors or returns nothing fails the test, named by its panel.

Grafana's variables are given fixed values: `$__rate_interval` a window of `RATE_WINDOW` (the
scrape interval is 2 s), `$service` each service the request counter names, as the row repeated
per service does; `${datasource}` is not part of any expression.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from stack.layout import REPO
from tests.functional.api_checks import create_product, unique_slug
from tests.functional.conftest import sign_up
from tests.functional.test_jobs import assert_accepted, import_items, submit_import, wait_job
from tests.functional.test_prometheus import DISCOVERY_WAIT_S, api, wait_for

DASHBOARD = REPO / "charts" / "scaleshop" / "files" / "grafana" / "scaleshop-dashboard.json"
RATE_WINDOW = "30s"
IMPORTED = 400


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expression) of every query target."""
    return [(panel["title"], target["expr"]) for panel in panels(dashboard) for target in panel.get("targets", [])]


def substituted(expr: str, service: str) -> str:
    expr = expr.replace("$__rate_interval", RATE_WINDOW).replace("${service}", service).replace("$service", service)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def load(gateway: str, stack) -> None:
    """Some of everything the panels show: reads missed then hit, writes, an import's jobs and events."""
    seller = sign_up(gateway, display_name="Dashboard Seller")
    category = unique_slug("dash")
    products = [create_product(gateway, seller.auth, category, name=f"Dashboard mug {i}") for i in range(5)]
    with requests.Session() as http:
        for _ in range(3):  # the first read of each misses, the next ones hit
            for product in products:
                assert http.get(f"{gateway}/v1/products/{product['id']}", timeout=10).status_code == 200
            assert http.get(f"{gateway}/v1/products", params={"category": category}, timeout=10).status_code == 200
            assert http.get(f"{gateway}/v1/categories", timeout=10).status_code == 200
        assert http.get(f"{gateway}/v1/products/{'0' * 24}", timeout=10).status_code == 404
    job_id = assert_accepted(submit_import(gateway, seller, import_items(category, IMPORTED))[0])
    wait_job(gateway, seller, job_id, timeout=60, until={"succeeded"})


def evaluate(stack, expr: str) -> tuple[str | None, list]:
    """(error, result) of an instant query now."""
    response = requests.get(f"{stack.layout.prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    if response.status_code != 200 or body.get("status") != "success":
        return f"{response.status_code} {body.get('errorType')}: {body.get('error')}", []
    return None, body["data"]["result"]


def test_the_dashboard_is_grafana_json_with_a_prometheus_datasource_variable():
    dashboard = json.loads(Path(DASHBOARD).read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert [re.split(r"[: ]", title)[0] for title in rows] == ["RED", "Clones", "Cache", "Database", "Async"]


def test_every_dashboard_query_answers_after_a_short_load(stack, gateway):
    dashboard = json.loads(Path(DASHBOARD).read_text())
    load(gateway, stack)
    # Scraped long enough for a rate (two samples in the window; a stack that has just started is
    # found by Prometheus' discovery within ~12 s): the requests', the jobs', the folds' and every
    # worker's lag. A counter born with the load's import (a job's first state in a worker) has one
    # sample until the next scrape, and a rate needs two.
    wait_for(lambda: all(evaluate(stack, expr)[1] for expr in (
        f"sum(rate(scaleshop_http_requests_total[{RATE_WINDOW}]))",
        f"sum(rate(scaleshop_jobs_total[{RATE_WINDOW}]))",
        f"sum(rate(scaleshop_event_fold_lag_seconds_count[{RATE_WINDOW}]))",
        "count(scaleshop_consumer_lag)")), DISCOVERY_WAIT_S, "the load's metrics scraped")
    services = api(stack, "label/service/values", **{"match[]": "scaleshop_http_requests_total"})
    assert {"user", "catalog"} <= set(services), services

    started = time.monotonic()
    failures, evaluated, nan = [], 0, []
    for title, expr in expressions(dashboard):
        for service in (services if "$service" in expr or "${service}" in expr else [""]):
            query = substituted(expr, service)
            error, result = evaluate(stack, query)
            evaluated += 1
            if any(sample["value"][1] == "NaN" for sample in result):
                nan.append(title)  # 0/0: nothing happened in the window (e.g. no 5xx, no fold)
            if error or not result:
                failures.append(f"{title!r}{f' ({service})' if service else ''}: {error or 'no result'}: {query}")
    print(f"{evaluated} dashboard queries evaluated in {time.monotonic() - started:.1f}s; with NaN: {sorted(set(nan))}")
    assert not failures, "\n".join(failures)
