"""The local database's secondary indexes (stack/mongo/CompoundIndex.java) never change an answer.

Random inserts, compare-and-set updates and deletes on the stack's real database, each followed
by finds (filters, every sort direction, skip and limit) and counts whose expected answers are
computed here in Python from a model of the collection. Indexes only make reads cheaper: a wrong
or missing document, count or order fails the test. Run again after the database restarts (the
indexes are rebuilt from the data).
"""
from __future__ import annotations

import functools
import random
import time

import pytest
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import AutoReconnect

SORTS = {
    "newest": [("created_at", DESCENDING), ("_id", DESCENDING)],
    "price_asc": [("price", ASCENDING), ("_id", ASCENDING)],
    "price_desc": [("price", DESCENDING), ("_id", ASCENDING)],
    "rating": [("rating", DESCENDING), ("rcount", DESCENDING), ("_id", ASCENDING)],
    "name": [("name", ASCENDING), ("_id", ASCENDING)],
}
CATEGORIES = ["a", "b", "c", "d", "e"]


def _type_order(value):
    """BSON comparison order for the types used here: null/missing < numbers < strings."""
    if value is None:
        return (0, 0)
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, value)


def _sort_key(keys):
    def compare(a, b):
        for field, direction in keys:
            x = a["_id"] if field == "_id" else _type_order(a.get(field))
            y = b["_id"] if field == "_id" else _type_order(b.get(field))
            if x != y:
                return (-1 if x < y else 1) * direction
        return 0
    return functools.cmp_to_key(compare)


def _matches(doc: dict, query: dict) -> bool:
    for field, condition in query.items():
        value = doc.get(field)
        if isinstance(condition, dict):
            for op, operand in condition.items():
                if op == "$in":
                    values = value if isinstance(value, list) else [value]
                    if not any(v in operand for v in values):
                        return False
                    continue
                if value is None or isinstance(value, (list, str)):
                    return False
                if not {"$gte": value >= operand, "$lte": value <= operand,
                        "$gt": value > operand, "$lt": value < operand}[op]:
                    return False
        elif isinstance(value, list):
            if condition not in value:
                return False
        elif value != condition:
            return False
    return True


def _random_product(rng: random.Random) -> dict:
    doc = {"_id": ObjectId(), "category": rng.choice(CATEGORIES),
           "price": rng.choice([rng.randint(1, 50), float(rng.randint(1, 50))]),  # int and double compare equal
           "tags": rng.sample(["x", "y", "z", "w"], rng.randint(0, 2)), "created_at": rng.randint(0, 300),
           "name": rng.choice(["ab", "b", "c", "Ab"]) + str(rng.randint(0, 9)),
           "rating": rng.choice([0.0, 1.5, 3, 4.5, 5]), "rcount": rng.randint(0, 3), "version": 1}
    if rng.random() < 0.05:
        del doc["rating"]  # a missing field sorts like null
    return doc


def _queries(rng: random.Random) -> list[dict]:
    return [{}, {"category": rng.choice(CATEGORIES)}, {"price": {"$gte": 10, "$lte": 20}},
            {"category": rng.choice(CATEGORIES), "price": {"$gt": 25}}, {"tags": "x"},
            {"category": {"$in": ["a", "c"]}}, {"price": 7}, {"category": rng.choice(CATEGORIES), "tags": "y"},
            {"created_at": {"$lt": 100}}, {"category": "b", "created_at": {"$gte": 50, "$lt": 200}}]


def _exercise(collection, model: dict, rng: random.Random, rounds: int) -> list[str]:
    problems = []
    for _ in range(rounds):
        roll = rng.random()
        if roll < 0.3:
            doc = _random_product(rng)
            collection.insert_one(doc)
            model[doc["_id"]] = doc
        elif roll < 0.6:
            key = rng.choice(list(model))
            change = {"category": rng.choice(CATEGORIES), "price": rng.randint(1, 50), "rating": rng.choice([1, 2.5])}
            result = collection.update_one({"_id": key, "version": model[key]["version"]},
                                           {"$set": change, "$inc": {"version": 1}})
            assert result.modified_count == 1
            model[key].update(change, version=model[key]["version"] + 1)
        elif roll < 0.7:
            key = rng.choice(list(model))
            collection.delete_one({"_id": key})
            del model[key]
        for query in _queries(rng):
            expected = [doc for doc in model.values() if _matches(doc, query)]
            counted = collection.database.command("count", collection.name, query=query)["n"]
            if counted != len(expected):
                problems.append(f"count {query}: {counted} != {len(expected)}")
            sort = rng.choice(list(SORTS))
            skip = rng.choice([0, 0, 20, 100])
            want = [d["_id"] for d in sorted(expected, key=_sort_key(SORTS[sort]))][skip:skip + 20]
            got = [d["_id"] for d in collection.find(query).sort(SORTS[sort]).skip(skip).limit(20)]
            if got != want:
                problems.append(f"find {query} sort {sort} skip {skip}: {len(got)} ids, {len(want)} expected")
    return problems


@pytest.fixture
def scratch(db):
    collection = db.client["index_check"]["products"]
    collection.drop()
    for sort, keys in SORTS.items():
        collection.create_index(keys, name=f"list_{sort}")
        collection.create_index([("category", ASCENDING), *keys], name=f"list_category_{sort}")
    collection.create_index([("tags", ASCENDING)], name="tags")
    yield collection
    db.client.drop_database("index_check")


def test_indexed_reads_answer_what_a_scan_would(scratch):
    rng = random.Random(7)
    model = {doc["_id"]: doc for doc in (_random_product(rng) for _ in range(1500))}
    scratch.insert_many(list(model.values()))
    problems = _exercise(scratch, model, rng, rounds=150)
    assert problems == []


def _reconnect(client, timeout_s: float = 30.0) -> None:
    """The pool's connections died with the server: the first command fails and empties the pool."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.admin.command("ping")
            return
        except AutoReconnect:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.lifecycle
def test_indexes_are_rebuilt_when_the_database_restarts(stack, scratch):
    rng = random.Random(11)
    model = {doc["_id"]: doc for doc in (_random_product(rng) for _ in range(800))}
    scratch.insert_many(list(model.values()))
    stack.stop_server("database")  # SIGTERM: the file is closed cleanly
    try:
        stack.start_server("database")
    finally:
        stack.start_server("database")  # no-op when it runs
    _reconnect(scratch.database.client)
    problems = _exercise(scratch, model, rng, rounds=40)
    assert problems == []
    names = {index["name"] for index in scratch.list_indexes()}
    assert {"list_newest", "list_category_rating", "tags"} <= names
