"""`make bench` part `reads`: cache misses of the product list and the product page, through the
gateway, at 1,000 and 10,000 products (issue 11, item 4: each p50 ≤ 15 ms).

The stack is filled by imports of loadgen's seeded products (the fields and the skewed categories
of `loadgen seed`, seed number 9). Every measured request asks for something not cached yet: a
list query (a category drawn by size, a sort, page 1-5: the shape of the load generator's browse
journey) or a product page not read before; a sample counts only if the gateway answered
`X-Cache: miss`. A search (`q`) is measured apart: it is a substring match, which reads every
product on any server, and the load generator sends it in one browse of ten.
"""
from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Callable

import requests

from .. import data
from . import api_calls

SEED = 9
SIZES = (1000, 10_000)
SAMPLES = 200
P50_TARGET_MS = 15.0
SORTS = ("newest", "price_asc", "price_desc", "rating", "name")
IMPORT_CHUNK = 5000
TIMEOUT = 30


def product_total(session: requests.Session, gateway: str) -> int:
    return session.get(f"{gateway}/v1/products", params={"per_page": 1}, timeout=TIMEOUT).json()["total"]


def fill(session: requests.Session, gateway: str, auth: dict, wanted: int, log: Callable[[str], None]) -> None:
    """Import seeded products until the catalog holds `wanted` of them."""
    have = product_total(session, gateway)
    while have < wanted:
        count = min(IMPORT_CHUNK, wanted - have)
        items = [data.product_spec(SEED, i) for i in range(have, have + count)]
        api_calls.import_and_wait(session, gateway, auth, json.dumps(items).encode())
        have = product_total(session, gateway)
        log(f"reads: {have} products")


def _miss_times(session: requests.Session, gateway: str, paths: list[str]) -> tuple[list[float], int]:
    """Milliseconds of each request answered as a cache miss, and how many were not misses."""
    times, others = [], 0
    for path in paths:
        started = time.perf_counter()
        response = session.get(gateway + path, timeout=TIMEOUT)
        elapsed = (time.perf_counter() - started) * 1000
        response.raise_for_status()
        if response.headers.get("X-Cache") == "miss":
            times.append(elapsed)
        else:
            others += 1
    return times, others


def _summary(times: list[float], others: int) -> dict:
    if not times:
        return {"samples": 0, "not_misses": others}
    ordered = sorted(times)
    return {"samples": len(times), "not_misses": others, "p50_ms": round(statistics.median(ordered), 2),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2), "max_ms": round(ordered[-1], 2)}


def measure(session: requests.Session, gateway: str, samples: int, rng: random.Random) -> dict:
    categories = session.get(f"{gateway}/v1/categories", timeout=TIMEOUT).json()["items"]
    slugs, sizes = [c["slug"] for c in categories], [c["product_count"] for c in categories]
    lists: set[str] = set()
    while len(lists) < min(samples, len(slugs) * len(SORTS) * 5):
        category = rng.choices(slugs, weights=sizes)[0]
        lists.add(f"/v1/products?category={category}&sort={rng.choice(SORTS)}&page={rng.randint(1, 5)}&per_page=20")
    ids: list[str] = []
    for page in range(1, samples // 100 + 2):
        params: dict[str, str | int] = {"per_page": 100, "page": page, "sort": "name"}
        listing = session.get(f"{gateway}/v1/products", params=params, timeout=TIMEOUT).json()
        ids += [item["id"] for item in listing["items"]]
    pages = [f"/v1/products/{product_id}" for product_id in rng.sample(ids, min(samples, len(ids)))]
    searches = [f"/v1/products?q={noun.lower()}&per_page=20&page={page}"
                for noun in data.NOUNS for page in (1, 2)][:samples]
    return {
        "product_list_miss": _summary(*_miss_times(session, gateway, sorted(lists, key=lambda _p: rng.random()))),
        "product_page_miss": _summary(*_miss_times(session, gateway, pages)),
        "search_miss": _summary(*_miss_times(session, gateway, searches)),
    }


def run(gateway: str, sizes: tuple[int, ...], samples: int, log: Callable[[str], None]) -> dict:
    """{size: {shape: summary}} for each catalog size, filled in ascending order."""
    session = requests.Session()
    auth = api_calls.account(gateway, "reads")
    rng = random.Random(SEED)
    results = {}
    for size in sorted(sizes):
        fill(session, gateway, auth, size, log)
        results[size] = measure(session, gateway, samples, rng)
        for shape, summary in results[size].items():
            log(f"reads at {size} products: {shape} p50 {summary.get('p50_ms')} ms "
                f"({summary['samples']} misses)")
    return results
