"""Derived data folded from `catalog.events`: per-category statistics, a poll's batch at a time.

Events are keyed by product id, so one product's events sit in order on one partition; they
may still come twice (redelivery) or late and out of order (the outbox relay), so each carries
the product's version. `fold` takes one poll's events grouped by *lane* (a partition: a
sequence that one consumer folds at a time) and writes them with one bulk write per collection:

1. Only each product's newest version in the batch counts; it is a transition only if newer
   than the version recorded in `product_index` (older or equal: skipped, so nothing goes back).
   The recorded rows are read in one query; a product's first version needs no read.
2. `product_index` moves each product from the recorded state to the new one with a
   compare-and-set on the recorded version: an upsert whose filter is `{_id, version}` (an
   insert for a product not seen before), so a transition that lost the race (another writer
   came first) fails with a duplicate key at its own index, and is decided again from a fresh
   read, for at most `CAS_ROUNDS` rounds (then the fold raises, nothing is committed, and the
   batch is folded again).
3. `category_stats` gets, per category, the `$inc` of the differences of the transitions that
   won, applied atomically with a marker `folds.<lane> = <fold id>`; the filter refuses a
   marker already there (a duplicate key: the delta landed before), so none lands twice.

A crash between 2 and 3 must neither lose nor double a delta: before writing, the fold
records its id and products in `projection_folds` (one document per lane), and each row it
moves keeps `fold: {id, from}`. The next fold of that lane finds the record, re-derives the
winners (rows still carrying that fold id) and their deltas, and applies them under the same
marker, which is a no-op if they had landed. Folds of one lane follow each other, so one
marker per lane is enough. On FerretDB (updates are a read, then a write) the writes run in
an `exclusive` section.

What is decided without the database is in plain functions (`newest_per_product`,
`rows_to_read`, `transitions`, `deltas`, `category_totals`); `fold` reads and writes around them.

No cached entry reads these collections (lists and `GET /v1/categories` read `products`), so
folding bumps no cache generation; a cached query that ever reads them must declare a
generation, bumped here once per fold. Both collections are eventually consistent.
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from pymongo import ASCENDING, InsertOne, ReplaceOne, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from services.shared import storage

PRODUCT_INDEX, CATEGORY_STATS, FOLDS = "product_index", "category_stats", "projection_folds"
STATE_FIELDS = ("category", "price_cents", "live")
CAS_ROUNDS = 5  # a transition that keeps losing its compare-and-set is decided again this often
DUPLICATE_KEY = 11000
FIRST_VERSION = 1  # a product's version when it is created (services/catalog/store.py)


def create_indexes(db: Database) -> None:
    db[PRODUCT_INDEX].create_index([("category", ASCENDING), ("live", ASCENDING)], name="category_live")


@dataclass
class Folded:
    """What one `fold` did: transitions written, events that changed nothing, deltas recovered."""

    applied: int = 0
    skipped: int = 0
    recovered: int = 0


def readable(event: object) -> bool:
    """Whether an event carries what folding needs (anything else is logged and dropped)."""
    if not isinstance(event, dict):
        return False
    version, price = event.get("version"), event.get("price_cents")
    return (isinstance(event.get("product_id"), str) and isinstance(event.get("type"), str)
            and isinstance(event.get("category"), str) and isinstance(version, int) and not isinstance(version, bool)
            and isinstance(price, int) and not isinstance(price, bool))


def state_of(event: dict) -> dict:
    """The row an event leaves in `product_index`."""
    return {"category": event["category"], "price_cents": event["price_cents"],
            "live": event["type"] != "product.deleted", "version": event["version"]}


def newest_per_product(events: list[dict]) -> dict[str, dict]:
    """Each product's event with the highest version (the batch's others are superseded)."""
    newest: dict[str, dict] = {}
    for event in events:
        known = newest.get(event["product_id"])
        if known is None or event["version"] > known["version"]:
            newest[event["product_id"]] = event
    return newest


def deltas(before: dict | None, after: dict) -> dict[str, list[int]]:
    """How a product's move from `before` (None: unknown until now) to `after` changes each category."""
    changes: dict[str, list[int]] = {}
    for state, sign in ((before, -1), (after, 1)):
        if state is not None and state["live"]:
            counted = changes.setdefault(state["category"], [0, 0])
            counted[0] += sign
            counted[1] += sign * state["price_cents"]
    return {category: change for category, change in changes.items() if change != [0, 0]}


def rows_to_read(newest: dict[str, dict[str, dict]]) -> list[str]:
    """The products (of each lane's newest events) whose recorded row must be read to decide: a
    product's first version needs no read, as either it has no row yet or its row is as new."""
    return [pid for by_product in newest.values() for pid, event in by_product.items()
            if event["version"] > FIRST_VERSION]


def transitions(newest: dict[str, dict[str, dict]], rows: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Per lane, the events newer than their product's recorded row (`rows`; none: not seen before);
    lanes left with none are dropped."""
    pending = {lane: {pid: event for pid, event in by_product.items() if _is_newer(event, rows.get(pid))}
               for lane, by_product in newest.items()}
    return {lane: events for lane, events in pending.items() if events}


def category_totals(moves: list[tuple[dict | None, dict, str | None]]) -> dict[str, tuple[int, int, str | None]]:
    """What a lane's transitions (before, after, event time) change per category, summed:
    (count, price sum, latest event time); categories whose changes cancel out are left out."""
    totals: dict[str, list[int]] = {}
    latest: dict[str, str] = {}
    for before, after, at in moves:
        for category, (count, price) in deltas(before, after).items():
            total = totals.setdefault(category, [0, 0])
            total[0] += count
            total[1] += price
            if at and at > latest.get(category, ""):
                latest[category] = at
    return {category: (count, price, latest.get(category)) for category, (count, price) in totals.items()
            if count or price}


def fold(db: Database, lanes: dict[str, list[dict]], now: dt.datetime | None = None) -> Folded:
    """Fold one poll's readable events, grouped by lane; durable when it returns (raise: fold again)."""
    now = now or dt.datetime.now(dt.UTC)
    result = Folded()
    result.recovered = _finish_interrupted(db, list(lanes), now)
    newest = {lane: newest_per_product(events) for lane, events in lanes.items() if events}
    result.skipped = sum(len(events) for events in lanes.values()) - sum(len(n) for n in newest.values())
    if not newest:
        return result
    fold_id = uuid.uuid4().hex
    rows = _rows(db, rows_to_read(newest))
    pending = transitions(newest, rows)
    result.skipped += sum(map(len, newest.values())) - sum(map(len, pending.values()))
    if not pending:
        return result
    db[FOLDS].bulk_write([ReplaceOne({"_id": lane}, {"fold": fold_id, "products": sorted(events), "at": now},
                                     upsert=True) for lane, events in pending.items()], ordered=False)
    with storage.of(db).exclusive(db, "projections"):
        won = _move_rows(db, fold_id, pending, rows)
        _apply(db, fold_id, won, now)
    db[FOLDS].delete_many({"_id": {"$in": list(pending)}, "fold": fold_id})
    result.applied = sum(len(transitions) for transitions in won.values())
    result.skipped += sum(len(pending[lane]) for lane in pending) - result.applied
    return result


def _rows(db: Database, product_ids: list[str]) -> dict[str, dict]:
    if not product_ids:
        return {}
    return {row["_id"]: row for row in db[PRODUCT_INDEX].find({"_id": {"$in": product_ids}})}


def _is_newer(event: dict, row: dict | None) -> bool:
    return row is None or event["version"] > row["version"]


def _state_of_row(row: dict) -> dict:
    return {field: row[field] for field in (*STATE_FIELDS, "version")}


def _recorded(row: dict | None) -> dict | None:
    return None if row is None else _state_of_row(row)


def _move_rows(db: Database, fold_id: str, pending: dict[str, dict[str, dict]],
               rows: dict[str, dict]) -> dict[str, list[tuple[dict | None, dict, str | None]]]:
    """Compare-and-set each product to its new state; per lane, the transitions that won
    as (before, after, event time). A loser is read again and retried while still newer."""
    won: dict[str, list[tuple[dict | None, dict, str | None]]] = {lane: [] for lane in pending}
    todo = [(lane, event, _recorded(rows.get(pid)))
            for lane, events in pending.items() for pid, event in events.items()]
    for _ in range(CAS_ROUNDS):
        if not todo:
            return won
        ops = [_compare_and_set(fold_id, event, before) for _, event, before in todo]
        lost = _failed_duplicates(db[PRODUCT_INDEX], ops)
        for index, (lane, event, before) in enumerate(todo):
            if index not in lost:
                won[lane].append((before, state_of(event), event.get("at")))
        again = [todo[index] for index in sorted(lost)]
        fresh = _rows(db, [event["product_id"] for _, event, _ in again])
        todo = [(lane, event, _recorded(fresh.get(event["product_id"]))) for lane, event, _ in again
                if _is_newer(event, fresh.get(event["product_id"]))]
    if todo:
        raise RuntimeError(f"{len(todo)} product_index rows still changed under the fold after {CAS_ROUNDS} "
                           "compare-and-set rounds; nothing is committed, the batch is folded again")
    return won


def _compare_and_set(fold_id: str, event: dict, before: dict | None):
    """The write moving a product's row from `before` (None: no row yet) to the event's state."""
    row = {**state_of(event), "fold": {"id": fold_id, "from": before}}
    if before is None:
        return InsertOne({"_id": event["product_id"], **row})
    return UpdateOne({"_id": event["product_id"], "version": before["version"]}, {"$set": row}, upsert=True)


def _failed_duplicates(collection, ops: list) -> set[int]:
    """Run `ops` unordered; the indexes that failed on a duplicate key (any other error raises)."""
    if not ops:
        return set()
    try:
        collection.bulk_write(ops, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if exc.details.get("writeConcernErrors") or any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return {e["index"] for e in errors}
    return set()


def _apply(db: Database, fold_id: str, won: dict[str, list[tuple[dict | None, dict, str | None]]],
           now: dt.datetime) -> None:
    """One bulk of `$inc` per (lane, category), each applied at most once under its marker."""
    ops = []
    for lane, moves in won.items():
        marker = f"folds.{_field(lane)}"
        for category, (count, price, at) in category_totals(moves).items():
            ops.append(UpdateOne(
                {"_id": category, marker: {"$ne": fold_id}},
                {"$inc": {"product_count": count, "price_sum_cents": price},
                 "$set": {marker: fold_id, "updated_at": now, "last_event_lag_ms": _lag_ms(at, now)}},
                upsert=True))
    _failed_duplicates(db[CATEGORY_STATS], ops)  # a duplicate: this marker is there, the delta landed before


def _finish_interrupted(db: Database, lanes: list[str], now: dt.datetime) -> int:
    """Apply the deltas of a fold of these lanes that stopped between its two writes; how many."""
    recovered = 0
    for record in db[FOLDS].find({"_id": {"$in": lanes}}):
        fold_id = record["fold"]
        rows = _rows(db, record["products"]).values()  # by `_id` alone: the index serves it everywhere
        won: list[tuple[dict | None, dict, str | None]] = [
            (row["fold"]["from"], _state_of_row(row), None) for row in rows if row.get("fold", {}).get("id") == fold_id]
        with storage.of(db).exclusive(db, "projections"):
            _apply(db, fold_id, {record["_id"]: won}, now)
        db[FOLDS].delete_many({"_id": record["_id"], "fold": fold_id})
        recovered += len(won)
    return recovered


def _field(lane: str) -> str:
    """A lane name usable as a field name (no dots, no leading `$`)."""
    return lane.replace(".", "_").replace("$", "_")


def _lag_ms(event_at: str | None, now: dt.datetime) -> float | None:
    """How long after the change its event was folded in."""
    try:
        moment = dt.datetime.fromisoformat(event_at or "")
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return round((now - moment).total_seconds() * 1000, 1)


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
