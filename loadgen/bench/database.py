"""The `database` part of `make bench`: every MongoDB-wire server that can run here, measured
with the catalog's own queries and the concurrency checks.

For each server of stack/dbservers.py (its own loopback port and temp folder, stopped by pid):
  1. at 1,000 and 10,000 products (loadgen/bench/db_data.py), every query shape of SHAPES, each
     a call of the project's own function: a warm-up, then repetitions until REPS or a time
     cap; median and p90 in ms;
  2. the four concurrency checks of loadgen/bench/concurrency.py with 8 writers and no locks,
     and, on a server the storage adapter locks for, $inc and compare-and-set through the adapter;
  3. SIGTERM, a start on the same folder, and a count: is the data still there?
A server that cannot start is recorded with the reason. The whole part is bounded by
per-shape time caps and a per-server budget. Results go to database.json; the tables are
printed, and `python -m loadgen.bench.db_table` turns the JSON into the README's Markdown.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from pymongo import MongoClient
from pymongo.database import Database

from services.catalog import store
from services.catalog.models import ProductQuery
from services.shared import jobs, outbox, storage
from services.shared.events import Publisher
from services.user import accounts
from stack import dbservers

from . import concurrency, db_data, db_table

SIZES = (1000, 10_000)
REPS, MIN_REPS, SHAPE_CAP_S, SHAPE_HARD_CAP_S = 7, 3, 1.5, 4.0
SERVER_BUDGET_S = 150.0
ADAPTER_OPS = 400  # the adapter's locks make each write ~4 round trips: fewer ops keep the part short
PORT_BASE = 27100  # + the bench's port offset + 10 per server


class BrokerDown:
    """A publisher whose broker refuses everything: the outbox relay then only scans."""

    def publish(self, topic: str, key: str, value: dict) -> bool:
        return False

    def publish_many(self, topic: str, events: list) -> bool:
        return False


def _list(**params) -> Callable[[Database, dict], object]:
    """A product-list shape: the query normalized as the route normalizes it, then store.list_products."""
    def run(db: Database, ids: dict):
        resolved = {key: ids[value[1:]] if isinstance(value, str) and value.startswith("@") else value
                    for key, value in params.items()}
        if resolved.get("page") == "deep":
            resolved["page"] = ids["deep_page"] if "category" not in resolved else ids["deep_category_page"]
        return store.list_products(db, ProductQuery(**resolved).model_dump())
    return run


# (key, label, call). "@name" in a list query is a value from the loaded data set.
SHAPES: list[tuple[str, str, Callable[[Database, dict], object]]] = [
    ("list_newest", "list: all, newest, page 1", _list()),
    ("list_newest_deep", "list: all, newest, deep page", _list(page="deep")),
    ("list_price_asc", "list: all, price ascending", _list(sort="price_asc")),
    ("list_price_desc", "list: all, price descending", _list(sort="price_desc")),
    ("list_rating", "list: all, rating", _list(sort="rating")),
    ("list_name", "list: all, name", _list(sort="name")),
    ("list_category", "list: largest category, newest", _list(category="@largest_category")),
    ("list_category_deep", "list: largest category, deep page", _list(category="@largest_category", page="deep")),
    ("list_category_small", "list: smallest category, newest", _list(category="@smallest_category")),
    ("list_q", "list: q=lamp, newest", _list(q="lamp")),
    ("list_price_range", "list: price 10-50 EUR, price ascending", _list(min_price=1000, max_price=5000,
                                                                         sort="price_asc")),
    ("list_category_price", "list: largest category + price range, price ascending",
     _list(category="@largest_category", min_price=1000, max_price=5000, sort="price_asc")),
    ("page_product", "page: find_product", lambda db, ids: store.find_product(db, ids["hot_product"])),
    ("page_category", "page: find_category", lambda db, ids: store.find_category(db, ids["hot_category"])),
    ("page_reviews", "page: latest_reviews (most reviewed product)",
     lambda db, ids: store.latest_reviews(db, ids["hot_product"])),
    ("profiles_100", "user profiles: $in on 100 ids", lambda db, ids: accounts.find_profiles(db, ids["profile_ids"])),
    ("jobs_unpublished", "scan: jobs.unpublished", lambda db, ids: jobs.unpublished(db, 2.0)),
    # relay() only calls publish and publish_many, which BrokerDown has.
    ("outbox_scan", "scan: outbox (relay, broker down)",
     lambda db, ids: outbox.relay(db, cast(Publisher, BrokerDown()))),
]


def log(message: str) -> None:
    print(f"[bench] database: {message}", flush=True)


def timed(call: Callable[[], object], deadline: float, reps: int = REPS) -> dict:
    """A warm-up, then repetitions until `reps`, or MIN_REPS past SHAPE_CAP_S, or SHAPE_HARD_CAP_S."""
    call()
    samples: list[float] = []
    began = time.monotonic()
    while len(samples) < reps:
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
        spent = time.monotonic() - began
        if ((spent > SHAPE_CAP_S and len(samples) >= MIN_REPS) or spent > SHAPE_HARD_CAP_S
                or time.monotonic() > deadline):
            break
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered), 2),
            "p90_ms": round(ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)], 2), "n": len(ordered)}


def measure_size(db: Database, products: int, deadline: float) -> dict:
    began = time.monotonic()
    loaded = db_data.load(db, products)
    load_s = time.monotonic() - began
    per_page = ProductQuery.model_validate({}).per_page
    largest = loaded["category_sizes"][loaded["largest_category"]]
    hot = store.find_product(db, loaded["hot_product"])
    assert hot is not None, "db_data.load stored its hot product"
    ids = {**loaded, "hot_category": hot["category"], "profile_ids": loaded["user_ids"][:100],
           "deep_page": max(1, math.ceil(products / per_page) - 1),
           "deep_category_page": max(1, math.ceil(largest / per_page) - 1)}
    log(f"  {products} products loaded in {load_s:.1f}s (hot product: {loaded['hot_product_reviews']} reviews; "
        f"largest category {loaded['largest_category']}: {largest})")
    queries: dict[str, dict] = {}
    for key, _label, call in SHAPES:
        if time.monotonic() > deadline:
            queries[key] = {"skipped": "the server's time budget ran out"}
            continue
        try:
            queries[key] = timed(functools.partial(call, db, ids), deadline)
        except Exception as exc:  # noqa: BLE001 - a query a server cannot run is a result
            queries[key] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    queries["bulk_insert_1000"] = _bulk_insert(db, products, deadline)
    shown = ", ".join(f"{k.removeprefix('list_')} {v['median_ms']:.0f}" for k, v in queries.items() if "median_ms" in v)
    log(f"  {products}: medians in ms: {shown}")
    return {"load_s": round(load_s, 1), "products": products, "users": len(loaded["user_ids"]),
            "reviews": db[store.REVIEWS].estimated_document_count(),
            "hot_product_reviews": loaded["hot_product_reviews"],
            "category_sizes": loaded["category_sizes"], "deep_page": ids["deep_page"],
            "deep_category_page": ids["deep_category_page"], "queries": queries}


def _bulk_insert(db: Database, products: int, deadline: float) -> dict:
    """Time of one batch of 1,000 products through store.upsert_imported (a warm-up batch, then 3)."""
    batches = iter(range(1, 100))
    try:
        result = timed(lambda: db_data.more_products(db, products, next(batches)),
                       min(deadline, time.monotonic() + 3 * SHAPE_HARD_CAP_S), reps=MIN_REPS)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return result


def concurrency_checks(db: Database) -> dict:
    adapter = storage.of(db)
    results = {name: check(db, timeout_s=30) for name, check in concurrency.CHECKS.items()}
    for name, result in results.items():
        log(f"  {name}: {'ok' if result['ok'] else 'FAILS'}: {result['summary']} ({result['seconds']}s)")
    through_adapter = {}
    if not adapter.atomic_updates:
        def section(name: str):
            return adapter.exclusive(db, name)
        for name in ("inc", "cas"):
            result = concurrency.CHECKS[name](db, total=ADAPTER_OPS, section=section, timeout_s=30)
            through_adapter[name] = result
            log(f"  {name} through the adapter's locks: {'ok' if result['ok'] else 'FAILS'}: {result['summary']} "
                f"({result['seconds']}s)")
    return {"raw": results, "through_adapter": through_adapter}


def measure_server(name: str, cache_dir: Path, port: int, folder: Path, sizes: tuple[int, ...]) -> dict:
    entry: dict[str, Any] = {"name": name, "label": dbservers.SERVERS[name], "available": False}
    began = time.monotonic()
    try:
        server = dbservers.start(name, cache_dir, port, folder)
    except dbservers.Unavailable as exc:
        log(f"{name}: not available here: {exc}")
        return {**entry, "why": f"not available here: {exc}"}
    except Exception as exc:  # noqa: BLE001 - a server that fails to start is a result
        log(f"{name}: did not start: {exc}")
        return {**entry, "why": f"did not start: {type(exc).__name__}: {exc}"}
    deadline = began + SERVER_BUDGET_S
    entry.update(available=True, port=port, start_s=round(server.start_s, 2), versions=server.versions)
    log(f"{name}: started on 127.0.0.1:{port} in {server.start_s:.1f}s")
    try:
        client: MongoClient[dict[str, Any]] = MongoClient(server.url, serverSelectionTimeoutMS=10_000,
                                                          socketTimeoutMS=60_000)
        try:
            adapter = storage.of(client.admin)
            entry["adapter"] = {"server": adapter.server, "atomic_updates": adapter.atomic_updates}
            entry["sizes"] = {}
            for products in sizes:
                entry["sizes"][str(products)] = measure_size(client[f"bench_{products}"], products, deadline)
            entry["concurrency"] = concurrency_checks(client["bench_races"])
            kept_db = client[f"bench_{sizes[-1]}"]
            before = kept_db[store.PRODUCTS].count_documents({})
        finally:
            client.close()
        server.stop()
        entry["restart"] = _restart(name, cache_dir, port, folder, f"bench_{sizes[-1]}", before)
    except Exception as exc:  # noqa: BLE001 - record what broke, go on with the next server
        log(f"{name}: failed: {type(exc).__name__}: {exc}")
        entry["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        server.stop()
    entry["seconds"] = round(time.monotonic() - began, 1)
    return entry


def _restart(name: str, cache_dir: Path, port: int, folder: Path, db_name: str, before: int) -> dict:
    """Start the server again on the same folder (after SIGTERM): are the products still there?"""
    try:
        with dbservers.running(name, cache_dir, port, folder) as again:
            client: MongoClient[dict[str, Any]] = MongoClient(again.url, serverSelectionTimeoutMS=10_000)
            try:
                after = client[db_name][store.PRODUCTS].count_documents({})
            finally:
                client.close()
    except Exception as exc:  # noqa: BLE001
        return {"checked": False, "why": f"{type(exc).__name__}: {exc}"}
    log(f"{name}: after a stop (SIGTERM) and a start on the same folder: {after} of {before} products "
        f"(restart {again.start_s:.1f}s)")
    return {"checked": True, "before": before, "after": after, "kept": after == before,
            "restart_s": round(again.start_s, 2)}


def run(out: Path, port_offset: int, cache_dir: Path, servers: list[str] | None = None,
        sizes: tuple[int, ...] = SIZES) -> dict:
    """Measure every server (or those named) at each size; write out/database.json and return it."""
    names = servers or list(dbservers.SERVERS)
    root = Path(tempfile.mkdtemp(prefix="scaleshop-dbbench-"))
    root.chmod(0o711)  # PostgreSQL runs as an unprivileged user and must reach its folder
    started = time.monotonic()
    result: dict[str, Any]  # JSON-ready; "servers" and "machine" grow below
    result = {"kind": "database-bench", "schema": 1,
              "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
              "sizes": list(sizes), "writers": concurrency.WRITERS, "ops": concurrency.TOTAL,
              "rounds": concurrency.ROUNDS, "adapter_ops": ADAPTER_OPS,
              "shapes": [{"key": key, "label": label} for key, label, _ in SHAPES]
              + [{"key": "bulk_insert_1000", "label": "bulk insert: 1,000 products (store.upsert_imported)"}],
              "servers": []}
    try:
        for index, name in enumerate(names):
            port = PORT_BASE + port_offset + 10 * index
            result["servers"].append(measure_server(name, cache_dir, port, root / name, sizes))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    (out / "database.json").write_text(json.dumps(result, indent=1, default=str))
    print()
    print(db_table.text(result))
    log(f"done in {result['seconds']:.0f}s; results: {out / 'database.json'}")
    return result
