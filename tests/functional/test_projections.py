"""Folding catalog.events into product_index and category_stats (services/catalog/projections.py).

Most tests call `projections.fold` directly against the session stack's real database, with
events built here for products and categories no other test uses, so each asserts exact
rows and counters: the newest version in a batch wins, an older or equal version changes
nothing, a batch folded twice (or refolded with other boundaries, as Kafka redelivers) equals
a batch folded once, a fold that stopped between its writes is completed by the next, and two
folders running at once keep the counters exact. One test goes end to end through Kafka and
the stack's two workers: events published out of order, twice, and with garbage among them.
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import random
import threading
import time
import uuid

import pytest
import requests
from kafka import KafkaProducer
from pymongo import MongoClient

from services.catalog import projections
from stack.workers import wait_workers_ready
from tests.functional.api_checks import TIMEOUT, unique_slug

_clock = itertools.count()


def event(product_id: str, version: int, category: str, price_cents: int, kind: str | None = None) -> dict:
    """A catalog.events message as services/catalog/commands.product_event writes it."""
    kind = kind or ("product.created" if version == 1 else "product.updated")
    at = dt.datetime.now(dt.UTC) + dt.timedelta(microseconds=next(_clock))
    return {"type": kind, "product_id": product_id, "version": version, "category": category,
            "price_cents": price_cents, "seller_id": "seller", "rating_count": 0, "rating_sum": 0,
            "at": at.isoformat()}


def new_ids(count: int) -> list[str]:
    return [uuid.uuid4().hex[:24] for _ in range(count)]


def lane() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def stats(db, *categories: str) -> dict[str, tuple[int, int] | None]:
    """(product_count, price_sum_cents) per category, None when it has no counter yet."""
    docs = {doc["_id"]: doc for doc in db[projections.CATEGORY_STATS].find({"_id": {"$in": list(categories)}})}
    return {c: (docs[c]["product_count"], docs[c]["price_sum_cents"]) if c in docs else None for c in categories}


def expected_stats(final: dict[str, dict], *categories: str) -> dict[str, tuple[int, int] | None]:
    """What the counters must say once every product is in its `final` event's state."""
    totals: dict[str, list[int]] = {}
    for last in final.values():
        if last["type"] != "product.deleted":
            total = totals.setdefault(last["category"], [0, 0])
            total[0] += 1
            total[1] += last["price_cents"]
    return {c: tuple(totals[c]) if c in totals else None for c in categories}


def rows(db, product_ids) -> dict[str, tuple]:
    found = db[projections.PRODUCT_INDEX].find({"_id": {"$in": list(product_ids)}})
    return {row["_id"]: (row["version"], row["category"], row["price_cents"], row["live"]) for row in found}


def same_or_zero(observed: dict, expected: dict) -> bool:
    """A counter that went back to zero equals one that never existed."""
    def norm(value):
        return None if value in (None, (0, 0)) else value
    return {k: norm(v) for k, v in observed.items()} == {k: norm(v) for k, v in expected.items()}


# ---- order ------------------------------------------------------------------------------------

def test_only_the_newest_version_of_a_product_in_a_batch_counts(db):
    first, second = unique_slug("ord"), unique_slug("ord")
    (pid,) = new_ids(1)
    batch = [event(pid, 2, first, 200), event(pid, 3, second, 300), event(pid, 1, first, 100)]
    folded = projections.fold(db, {lane(): batch})
    assert (folded.applied, folded.skipped) == (1, 2), folded
    assert rows(db, [pid]) == {pid: (3, second, 300, True)}
    assert stats(db, first, second) == {first: None, second: (1, 300)}


def test_an_older_or_equal_version_after_a_newer_one_changes_nothing(db):
    first, second = unique_slug("old"), unique_slug("old")
    pid, other = new_ids(2)
    where = lane()
    projections.fold(db, {where: [event(pid, 3, first, 300), event(other, 1, first, 50)]})
    before = (rows(db, [pid, other]), stats(db, first, second))
    for late in ([event(pid, 2, second, 200)], [event(pid, 1, second, 100)], [event(pid, 3, second, 999)],
                 [event(other, 1, second, 70)]):
        folded = projections.fold(db, {where: late})
        assert folded.applied == 0, (late, folded)
    assert (rows(db, [pid, other]), stats(db, first, second)) == before
    assert before[1] == {first: (2, 350), second: None}


def test_a_deleted_product_is_not_brought_back_by_a_late_update(db):
    category = unique_slug("del")
    pid, kept = new_ids(2)
    where = lane()
    projections.fold(db, {where: [event(pid, 1, category, 100), event(kept, 1, category, 10)]})
    projections.fold(db, {where: [event(pid, 3, category, 100, kind="product.deleted")]})
    assert stats(db, category) == {category: (1, 10)}
    projections.fold(db, {where: [event(pid, 2, category, 500)]})  # the outbox relay, late
    assert rows(db, [pid])[pid] == (3, category, 100, False)
    assert stats(db, category) == {category: (1, 10)}


def test_out_of_order_late_delivery_ends_in_the_newest_state(db):
    """What the outbox relay can do: a product's events arrive late, reordered, some twice."""
    categories = [unique_slug("ooo") for _ in range(3)]
    rng = random.Random(7)
    history = {pid: [event(pid, v, rng.choice(categories), rng.randrange(100, 1000),
                           kind="product.deleted" if v == 5 and rng.random() < 0.3 else None)
                     for v in range(1, 6)] for pid in new_ids(60)}
    deliveries = [e for versions in history.values() for e in versions for _ in range(rng.choice((1, 1, 2)))]
    rng.shuffle(deliveries)
    where = lane()
    for start in range(0, len(deliveries), 37):
        projections.fold(db, {where: deliveries[start:start + 37]})
    final = {pid: versions[-1] for pid, versions in history.items()}
    assert rows(db, final) == {pid: (5, last["category"], last["price_cents"], last["type"] != "product.deleted")
                               for pid, last in final.items()}
    assert same_or_zero(stats(db, *categories), expected_stats(final, *categories))


# ---- idempotency under redelivery -----------------------------------------------------------------

def changes_batch(categories: list[str], count: int, seed: int) -> tuple[list[dict], dict[str, dict]]:
    """Creates, then updates, moves and deletions of `count` products; and each product's last event."""
    rng = random.Random(seed)
    batch, final = [], {}
    for pid in new_ids(count):
        versions = rng.randrange(1, 4)
        for version in range(1, versions + 1):
            deleted = version == versions and version > 1 and rng.random() < 0.25
            final[pid] = event(pid, version, rng.choice(categories), rng.randrange(100, 1000),
                               kind="product.deleted" if deleted else None)
            batch.append(final[pid])
    return batch, final


def test_folding_the_same_batch_twice_equals_folding_it_once(db):
    categories = [unique_slug("idem") for _ in range(4)]
    batch, final = changes_batch(categories, 300, seed=1)
    where = lane()
    first = projections.fold(db, {where: batch})
    once = (rows(db, final), stats(db, *categories))
    again = projections.fold(db, {where: batch})
    assert again.applied == 0 and first.applied == len(final), (first, again)
    assert (rows(db, final), stats(db, *categories)) == once
    for start in range(0, len(batch), 64):  # redelivered with other boundaries, as after a rebalance
        assert projections.fold(db, {where: batch[start:start + 64]}).applied == 0
    assert (rows(db, final), stats(db, *categories)) == once
    assert same_or_zero(once[1], expected_stats(final, *categories))


class Crash(Exception):
    pass


@pytest.mark.parametrize("stop_in", ["before-counters", "after-counters"])
def test_a_fold_stopped_between_its_writes_is_completed_exactly_once(db, monkeypatch, stop_in):
    """A worker dies after product_index moved (before or after the counters): the batch comes
    again, in smaller pieces, and the counters end exact: nothing lost, nothing counted twice."""
    categories = [unique_slug("crash") for _ in range(3)]
    seeded, _ = changes_batch(categories, 40, seed=2)
    where = lane()
    projections.fold(db, {where: seeded})  # rows to move from, so the crashed fold has updates too
    batch, final = changes_batch(categories, 200, seed=3)
    batch += [event(e["product_id"], e["version"] + 5, categories[0], 123) for e in seeded]
    final.update({e["product_id"]: e for e in batch[-len(seeded):]})

    if stop_in == "before-counters":
        def crash(*args, **kwargs):
            raise Crash()
        monkeypatch.setattr(projections, "_apply", crash)
    else:
        real_apply = projections._apply

        def crash(*args, **kwargs):
            real_apply(*args, **kwargs)
            raise Crash()  # the counters moved, the fold's record was not cleared
        monkeypatch.setattr(projections, "_apply", crash)
    with pytest.raises(Crash):
        projections.fold(db, {where: batch})
    monkeypatch.undo()
    assert db[projections.FOLDS].find_one({"_id": where}) is not None, "the fold left no record"

    for start in range(0, len(batch), 90):
        projections.fold(db, {where: batch[start:start + 90]})
    assert db[projections.FOLDS].find_one({"_id": where}) is None
    assert same_or_zero(stats(db, *categories), expected_stats(final, *categories))


# ---- two folders at once ----------------------------------------------------------------------------

def test_a_row_that_moves_between_the_read_and_the_write_is_decided_again(db, monkeypatch):
    """Another folder moves the products after this fold read them and before it writes: this
    fold's compare-and-sets lose, it reads again, finds its versions older and counts nothing."""
    categories = [unique_slug("race") for _ in range(2)]
    ids = new_ids(20)
    mine, theirs = lane(), lane()
    projections.fold(db, {mine: [event(pid, 1, categories[0], 100) for pid in ids]})
    late = [event(pid, 2, categories[1], 200) for pid in ids]
    newer = [event(pid, 3, categories[0], 300) for pid in ids]
    real_rows = projections._rows
    raced = []

    def rows_then_race(database, product_ids):
        found = real_rows(database, product_ids)
        if not raced:
            raced.append(True)
            projections.fold(db, {theirs: newer})  # the other folder, between this read and the writes
        return found

    monkeypatch.setattr(projections, "_rows", rows_then_race)
    folded = projections.fold(db, {mine: late})
    assert raced and folded.applied == 0, folded
    assert rows(db, ids) == {pid: (3, categories[0], 300, True) for pid in ids}
    assert stats(db, *categories) == {categories[0]: (20, 6000), categories[1]: None}


def test_two_workers_folding_at_once_keep_the_counters_exact(stack, db):
    """Two folders (own connections, own lanes) fold products of the same categories at once,
    moving them between categories. Half the products are each folder's own; the other half
    come to both with the same events in the same order (a worker that lost its partition and
    one that took it over), so their compare-and-sets race. Every counter ends exact."""
    categories = [unique_slug("two") for _ in range(3)]
    shared, _ = changes_batch(categories, 200, seed=12)
    shared.sort(key=lambda e: e["version"])  # every product's versions in order, spread over the batches
    lanes: dict[str, list[dict]] = {}
    final: dict[str, dict] = {}
    for seed in (13, 14):
        own, own_final = changes_batch(categories, 200, seed=seed)
        own.sort(key=lambda e: e["version"])
        mixed = [e for pair in itertools.zip_longest(own, shared) for e in pair if e is not None]
        lanes[lane()] = mixed
        final.update(own_final)
    final.update({e["product_id"]: e for e in shared})
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def folder(name: str, events: list[dict]) -> None:
        client = MongoClient(f"mongodb://127.0.0.1:{stack.layout.db_port}/", serverSelectionTimeoutMS=10_000)
        try:
            start.wait()
            for offset in range(0, len(events), 40):
                projections.fold(client["scaleshop"], {name: events[offset:offset + 40]})
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=folder, args=item) for item in lanes.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert rows(db, final) == {pid: (e["version"], e["category"], e["price_cents"], e["type"] != "product.deleted")
                               for pid, e in final.items()}
    assert same_or_zero(stats(db, *categories), expected_stats(final, *categories))


# ---- end to end through Kafka ------------------------------------------------------------------------

def test_the_workers_fold_reordered_duplicated_events_and_skip_garbage(stack, gateway):
    """Published straight to catalog.events, keyed by product id like the catalog does: each
    product's newest version wins whatever the order, duplicates count once, garbage is dropped."""
    wait_workers_ready(stack, 2)
    category = unique_slug("e2e")
    ids = new_ids(30)
    messages = []
    for pid in ids:
        versions = [event(pid, v, category, 100 * v) for v in (1, 2, 3)]
        messages += [versions[2], versions[0], versions[1], versions[2]]  # newest first, then late ones
    messages.insert(5, b"{not json")
    messages.insert(9, {"type": "product.updated", "product_id": ids[0]})  # no version, no category
    producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{stack.layout.kafka_port}", acks="all",
                             max_block_ms=15_000, retries=3)
    try:
        for message in messages:
            key = message["product_id"].encode() if isinstance(message, dict) else b"garbage"
            value = message if isinstance(message, bytes) else json.dumps(message).encode()
            producer.send("catalog.events", key=key, value=value)
        producer.flush(20)
    finally:
        producer.close(5)
    expected = {"slug": category, "product_count": len(ids), "average_price_cents": 300}
    deadline = time.monotonic() + 60
    while True:
        response = requests.get(f"{gateway}/v1/categories/stats", timeout=TIMEOUT)
        row = next((r for r in response.json()["items"] if r["slug"] == category), None)
        if row and {k: row[k] for k in expected} == expected:
            break
        assert time.monotonic() < deadline, f"stats of {category} are {row}, not {expected}, after 60 s"
        time.sleep(0.3)
    time.sleep(1.0)  # nothing folded late may change it
    response = requests.get(f"{gateway}/v1/categories/stats", timeout=TIMEOUT)
    row = next(r for r in response.json()["items"] if r["slug"] == category)
    assert {k: row[k] for k in expected} == expected
