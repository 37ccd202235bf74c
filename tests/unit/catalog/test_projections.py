"""Event folding (services/catalog/projections.py): which events of a poll count, what each
transition changes per category, and the bounded compare-and-set retry.

The decisions are plain functions tested here on their own; `fold`'s writes to a real database
are tested in tests/functional/test_projections.py.
"""
from __future__ import annotations

import pytest
from pymongo import InsertOne, UpdateOne
from pymongo.errors import BulkWriteError

from services.catalog import projections
from services.catalog.projections import category_totals, deltas, newest_per_product, rows_to_read, transitions


def event(product: str, version: int, category: str = "books", price: int = 1000,
          kind: str = "product.updated", at: str | None = None) -> dict:
    doc = {"product_id": product, "version": version, "category": category, "price_cents": price, "type": kind}
    if at is not None:
        doc["at"] = at
    return doc


def row(version: int, category: str = "books", price: int = 1000, live: bool = True) -> dict:
    return {"category": category, "price_cents": price, "live": live, "version": version}


# ---- which events count ------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    None, [], "text", {},
    {**event("p", 1), "version": True},  # a bool is not a version
    {**event("p", 1), "price_cents": 10.5},
    {**event("p", 1), "category": None},
    {key: value for key, value in event("p", 1).items() if key != "type"},
])
def test_an_event_without_what_folding_needs_is_unreadable(bad):
    assert not projections.readable(bad)


def test_a_complete_event_is_readable():
    assert projections.readable(event("p", 1))


def test_only_each_products_newest_version_in_a_batch_counts_whatever_the_order():
    batch = [event("a", 2, price=200), event("b", 1), event("a", 5, price=500), event("a", 3), event("a", 5, price=500)]
    newest = newest_per_product(batch)
    assert set(newest) == {"a", "b"}
    assert newest["a"]["version"] == 5 and newest["a"]["price_cents"] == 500


def test_a_products_first_version_is_decided_without_reading_its_row():
    newest = {"0": {"a": event("a", 1), "b": event("b", 4)}, "1": {"c": event("c", 2)}}
    assert sorted(rows_to_read(newest)) == ["b", "c"]


def test_an_event_is_a_transition_only_if_newer_than_the_recorded_row():
    newest = {"lane0": {"new": event("new", 1), "ahead": event("ahead", 4), "same": event("same", 3),
                        "behind": event("behind", 2)},
              "lane1": {"stale": event("stale", 1)}}
    rows = {"ahead": row(3), "same": row(3), "behind": row(7), "stale": row(2)}
    pending = transitions(newest, rows)
    assert {lane: sorted(events) for lane, events in pending.items()} == {"lane0": ["ahead", "new"]}


# ---- what a transition changes ---------------------------------------------------------------

def test_a_new_live_product_adds_itself_to_its_category():
    assert deltas(None, row(1, "books", 250)) == {"books": [1, 250]}


def test_a_price_change_moves_only_the_sum():
    assert deltas(row(1, "books", 250), row(2, "books", 300)) == {"books": [0, 50]}


def test_a_category_change_moves_the_product_between_categories():
    assert deltas(row(1, "books", 250), row(2, "games", 250)) == {"books": [-1, -250], "games": [1, 250]}


def test_a_deletion_removes_it_and_a_deleted_product_counts_nowhere():
    deleted = projections.state_of(event("p", 3, "books", 250, kind="product.deleted"))
    assert deleted["live"] is False
    assert deltas(row(2, "books", 250), deleted) == {"books": [-1, -250]}
    assert deltas(None, deleted) == {}
    assert deltas(deleted, projections.state_of(event("p", 4, "books", 250, kind="product.deleted"))) == {}


def test_a_change_that_changes_nothing_counted_has_no_delta():
    assert deltas(row(1, "books", 250), row(2, "books", 250)) == {}


def test_a_lanes_transitions_are_summed_per_category_with_the_latest_event_time():
    moves = [
        (None, row(1, "books", 100), "2026-01-01T00:00:01+00:00"),
        (None, row(1, "books", 200), "2026-01-01T00:00:03+00:00"),
        (row(1, "games", 50), row(2, "books", 50), "2026-01-01T00:00:02+00:00"),
        (row(1, "toys", 70), row(2, "toys", 90), None),
    ]
    assert category_totals(moves) == {
        "books": (3, 350, "2026-01-01T00:00:03+00:00"),
        "games": (-1, -50, "2026-01-01T00:00:02+00:00"),
        "toys": (0, 20, None),
    }


def test_changes_that_cancel_out_in_a_lane_write_nothing():
    moves = [(row(1, "books", 100), row(2, "games", 100), None), (row(1, "games", 100), row(2, "books", 100), None)]
    assert category_totals(moves) == {}


# ---- the compare-and-set retry is bounded --------------------------------------------------------

class ContestedIndex:
    """A product_index where another writer always comes first: every compare-and-set loses (a duplicate
    key), and a fresh read finds the row moved on, but still older than the event being folded."""

    def __init__(self):
        self.bulk_writes = 0
        self.recorded_version = 1

    def bulk_write(self, ops, ordered):
        self.bulk_writes += 1
        self.recorded_version += 1
        lost = [{"index": i, "code": projections.DUPLICATE_KEY} for i in range(len(ops))]
        raise BulkWriteError({"writeErrors": lost})

    def find(self, query):
        return [{"_id": pid, **row(self.recorded_version)} for pid in query["_id"]["$in"]]


def test_a_compare_and_set_that_keeps_losing_stops_after_a_bounded_number_of_rounds():
    index = ContestedIndex()
    db = {projections.PRODUCT_INDEX: index}
    with pytest.raises(RuntimeError, match=f"after {projections.CAS_ROUNDS} compare-and-set rounds"):
        projections._move_rows(db, "fold1", {"lane": {"p": event("p", 100)}}, {"p": row(1)})
    assert index.bulk_writes == projections.CAS_ROUNDS


def test_a_lost_compare_and_set_is_dropped_once_the_recorded_row_is_as_new():
    index = ContestedIndex()
    index.recorded_version = 99  # the other writer recorded version 100, the event's own
    db = {projections.PRODUCT_INDEX: index}
    won = projections._move_rows(db, "fold1", {"lane": {"p": event("p", 100)}}, {"p": row(98)})
    assert won == {"lane": []} and index.bulk_writes == 1


def test_a_product_not_seen_before_is_inserted_and_one_seen_is_compared_on_its_version():
    assert projections._compare_and_set("f", event("p", 1), None) == InsertOne(
        {"_id": "p", **row(1), "fold": {"id": "f", "from": None}})
    assert projections._compare_and_set("f", event("p", 3, price=300), row(2)) == UpdateOne(
        {"_id": "p", "version": 2},
        {"$set": {**row(3, price=300), "fold": {"id": "f", "from": row(2)}}}, upsert=True)
