"""Derived data maintained from `catalog.events`: per-category statistics.

Events are keyed by product id, so one product's events arrive in order on one
partition; they may still arrive twice (redelivery) or late (outbox relay), so each
carries the product's version and is applied only if newer than what is recorded.
`product_index` keeps the latest known state of each product; `category_stats` is
recomputed from it for the categories an event touches. Both are eventually consistent.
"""
from __future__ import annotations

import datetime as dt

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.catalog import caching
from services.shared.cache import Cache, bump_generations
from services.shared import storage

PRODUCT_INDEX, CATEGORY_STATS = "product_index", "category_stats"


def create_indexes(db: Database) -> None:
    db[PRODUCT_INDEX].create_index([("category", ASCENDING), ("live", ASCENDING)], name="category_live")


def apply_event(db: Database, cache: Cache, event: dict) -> bool:
    """Fold one event in; False if it was older than what is known (a duplicate or late).

    The product's row moves from its previous state to the event's with a compare-and-set
    on the version, so each transition is applied once even with several workers; the
    category counters then change by the difference between the two states.
    """
    product_id, version = event["product_id"], int(event["version"])
    previous = db[PRODUCT_INDEX].find_one({"_id": product_id})
    if previous is not None and previous["version"] >= version:
        return False
    state = {
        "category": event["category"],
        "price_cents": event["price_cents"],
        "live": event["type"] != "product.deleted",
        "version": version,
    }
    if previous is None:
        try:
            db[PRODUCT_INDEX].insert_one({"_id": product_id, **state})
        except DuplicateKeyError:  # another worker got there first: decide again
            return apply_event(db, cache, event)
    else:
        moved = db[PRODUCT_INDEX].update_one({"_id": product_id, "version": previous["version"]}, {"$set": state})
        if moved.matched_count == 0:  # changed meanwhile: decide again
            return apply_event(db, cache, event)
    deltas: dict[str, list[int]] = {}
    if previous is not None and previous["live"]:
        deltas.setdefault(previous["category"], [0, 0])
        deltas[previous["category"]][0] -= 1
        deltas[previous["category"]][1] -= previous["price_cents"]
    if state["live"]:
        deltas.setdefault(state["category"], [0, 0])
        deltas[state["category"]][0] += 1
        deltas[state["category"]][1] += state["price_cents"]
    lag_ms = _lag_ms(event.get("at"))
    for category, (count, price) in deltas.items():
        if count or price:
            with storage.of(db).exclusive(db, f"category-stats:{category}"):
                db[CATEGORY_STATS].update_one(
                    {"_id": category},
                    {"$inc": {"product_count": count, "price_sum_cents": price},
                     "$set": {"updated_at": dt.datetime.now(dt.timezone.utc), "last_event_lag_ms": lag_ms}},
                    upsert=True,
                )
    bump_generations(cache, [caching.LISTINGS_GEN])
    return True


def _lag_ms(event_at: str | None) -> float | None:
    """How long after the change this event was folded in."""
    try:
        moment = dt.datetime.fromisoformat(event_at or "")
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return round((dt.datetime.now(dt.timezone.utc) - moment).total_seconds() * 1000, 1)


def category_stats(db: Database) -> list[dict]:
    return [
        {
            "slug": doc["_id"],
            "product_count": doc.get("product_count", 0),
            "average_price_cents": round(doc["price_sum_cents"] / doc["product_count"])
            if doc.get("product_count") else None,
            "last_event_lag_ms": doc.get("last_event_lag_ms"),
        }
        for doc in db[CATEGORY_STATS].find().sort([("_id", ASCENDING)])
        if doc.get("product_count", 0) > 0
    ]
