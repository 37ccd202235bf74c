"""The four concurrency checks of a MongoDB-wire server: what concurrent writers do to one document.

Shared by the database benchmark (loadgen/bench/database.py: every server, no locks) and the
storage tests (tests/functional/test_storage.py: the stack's own database with no locks, FerretDB through
the storage adapter's `exclusive` sections).

  inc_race     `total` `$inc` of 1 on one document by `writers` threads: final value vs total, errors
  cas_race     `total` compare-and-set increments of `version`: read v, then
               find_one_and_update({_id, version: v}, {$inc: {version: 1}}), retried on a miss;
               reported successes vs final value
  fam_race     `total` find_one_and_update `$inc` returning the new document: all returned values distinct?
  unique_race  `writers` threads insert the same value of a unique key, `rounds` times: exactly one wins

Each check returns a JSON-ready dict with `ok` (nothing lost, nothing doubled, no errors, in time)
and a one-line `summary`. `section(name)`, when given, wraps each read-modify-write (for example
`lambda name: storage.of(db).exclusive(db, name)`); without it nothing is locked.
"""
from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Callable

from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

WRITERS = 8
TOTAL = 1600
ROUNDS = 50
Section = Callable[[str], contextlib.AbstractContextManager[None]]


def _no_lock(_name: str) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


class _Errors:
    """Errors counted by kind, from every writer thread."""

    def __init__(self) -> None:
        self.kinds: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def add(self, exc: Exception) -> None:
        kind = f"{type(exc).__name__}: {str(exc).splitlines()[0][:90] if str(exc) else ''}"
        with self._lock:
            self.kinds[kind] += 1

    @property
    def count(self) -> int:
        return sum(self.kinds.values())

    def as_json(self) -> dict[str, int]:
        return dict(self.kinds.most_common(5))


def _in_parallel(writers: int, work: Callable[[int], object]) -> tuple[list, float]:
    """Run work(i) for i < writers in as many threads, released together; results and seconds."""
    results: list = [None] * writers
    start = threading.Barrier(writers + 1)

    def run(i: int) -> None:
        start.wait()
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(writers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    return results, time.monotonic() - began


def _fresh(db: Database, name: str, doc: dict):
    collection = db[name]
    collection.drop()
    collection.insert_one(doc)
    return collection


def inc_race(db: Database, writers: int = WRITERS, total: int = TOTAL, section: Section | None = None,
             timeout_s: float = 60) -> dict:
    section = section or _no_lock
    counter = _fresh(db, "race_inc", {"_id": "counter", "n": 0})
    errors, deadline = _Errors(), time.monotonic() + timeout_s

    def work(i: int) -> int:
        acknowledged = 0
        for _ in range(total // writers + (i < total % writers)):
            if time.monotonic() > deadline:
                break
            try:
                with section("race_inc:counter"):
                    acknowledged += counter.update_one({"_id": "counter"}, {"$inc": {"n": 1}}).modified_count
            except Exception as exc:  # noqa: BLE001 - every failure is a result
                errors.add(exc)
        return acknowledged

    results, seconds = _in_parallel(writers, work)
    final, acknowledged = counter.find_one({"_id": "counter"})["n"], sum(results)
    timed_out = time.monotonic() > deadline
    return {"check": "inc_race", "writers": writers, "total": total, "final": final, "acknowledged": acknowledged,
            "errors": errors.count, "error_kinds": errors.as_json(), "seconds": round(seconds, 2),
            "timed_out": timed_out, "ok": final == acknowledged == total and not errors.count and not timed_out,
            "summary": f"final {final} of {total}" + (f", {acknowledged} acknowledged" if acknowledged != total else "")
                       + (f", {errors.count} errors" if errors.count else "") + (", timed out" if timed_out else "")}


def cas_race(db: Database, writers: int = WRITERS, total: int = TOTAL, section: Section | None = None,
             timeout_s: float = 60) -> dict:
    section = section or _no_lock
    versioned = _fresh(db, "race_cas", {"_id": "doc", "version": 0})
    errors, deadline = _Errors(), time.monotonic() + timeout_s

    def work(i: int) -> tuple[int, int]:
        successes = misses = 0
        goal = total // writers + (i < total % writers)
        while successes < goal and time.monotonic() < deadline:
            try:
                with section("race_cas:doc"):
                    seen = versioned.find_one({"_id": "doc"})["version"]
                    changed = versioned.find_one_and_update({"_id": "doc", "version": seen},
                                                            {"$inc": {"version": 1}})
                if changed is None:
                    misses += 1
                else:
                    successes += 1
            except Exception as exc:  # noqa: BLE001 - every failure is a result
                errors.add(exc)
        return successes, misses

    results, seconds = _in_parallel(writers, work)
    final = versioned.find_one({"_id": "doc"})["version"]
    successes, misses = sum(r[0] for r in results), sum(r[1] for r in results)
    timed_out = successes < total
    return {"check": "cas_race", "writers": writers, "total": total, "final": final, "reported_successes": successes,
            "misses_retried": misses, "errors": errors.count, "error_kinds": errors.as_json(),
            "seconds": round(seconds, 2), "timed_out": timed_out,
            "ok": final == successes == total and not errors.count,
            "summary": f"{successes} reported successes, final {final}"
                       + (f", {errors.count} errors" if errors.count else "") + (", timed out" if timed_out else "")}


def fam_race(db: Database, writers: int = WRITERS, total: int = TOTAL, section: Section | None = None,
             timeout_s: float = 60) -> dict:
    section = section or _no_lock
    counter = _fresh(db, "race_fam", {"_id": "counter", "n": 0})
    errors, deadline = _Errors(), time.monotonic() + timeout_s

    def work(i: int) -> list[int]:
        seen = []
        for _ in range(total // writers + (i < total % writers)):
            if time.monotonic() > deadline:
                break
            try:
                with section("race_fam:counter"):
                    doc = counter.find_one_and_update({"_id": "counter"}, {"$inc": {"n": 1}},
                                                      return_document=ReturnDocument.AFTER)
                seen.append(doc["n"])
            except Exception as exc:  # noqa: BLE001 - every failure is a result
                errors.add(exc)
        return seen

    results, seconds = _in_parallel(writers, work)
    returned = [n for seen in results for n in seen]
    distinct = len(set(returned))
    final = counter.find_one({"_id": "counter"})["n"]
    timed_out = time.monotonic() > deadline
    return {"check": "fam_race", "writers": writers, "total": total, "returned": len(returned), "distinct": distinct,
            "duplicates": len(returned) - distinct, "final": final, "errors": errors.count,
            "error_kinds": errors.as_json(), "seconds": round(seconds, 2), "timed_out": timed_out,
            "ok": distinct == len(returned) == final == total and not errors.count and not timed_out,
            "summary": f"{distinct} distinct of {len(returned)} returned, final {final}"
                       + (f", {errors.count} errors" if errors.count else "") + (", timed out" if timed_out else "")}


def unique_race(db: Database, writers: int = WRITERS, rounds: int = ROUNDS, timeout_s: float = 60) -> dict:
    keyed = db["race_unique"]
    keyed.drop()
    keyed.create_index([("key", ASCENDING)], unique=True, name="key_unique")
    errors, deadline = _Errors(), time.monotonic() + timeout_s
    together = threading.Barrier(writers)

    def work(i: int) -> list[bool]:
        won = []
        for key in range(rounds):
            try:
                together.wait(timeout=max(1.0, deadline - time.monotonic()))
            except threading.BrokenBarrierError:
                break
            try:
                keyed.insert_one({"key": key, "writer": i})
                won.append(True)
            except DuplicateKeyError:
                won.append(False)
            except Exception as exc:  # noqa: BLE001 - every failure is a result
                errors.add(exc)
                won.append(False)
        return won

    results, seconds = _in_parallel(writers, work)
    winners = collections.Counter(key for won in results for key, w in enumerate(won) if w)
    stored = collections.Counter(doc["key"] for doc in keyed.find({}, {"key": 1}))
    single = sum(1 for key in range(rounds) if winners[key] == 1 and stored[key] == 1)
    return {"check": "unique_race", "writers": writers, "rounds": rounds, "rounds_with_one_winner": single,
            "max_winners": max(winners.values(), default=0), "max_stored": max(stored.values(), default=0),
            "errors": errors.count, "error_kinds": errors.as_json(), "seconds": round(seconds, 2),
            "ok": single == rounds and not errors.count,
            "summary": f"{single} of {rounds} rounds with exactly one winner"
                       + (f", {errors.count} errors" if errors.count else "")}


# Each takes the database and keywords (timeout_s; inc, cas, fam also total and section); returns its result.
CHECKS: dict[str, Callable[..., dict]] = {"inc": inc_race, "cas": cas_race, "fam": fam_race, "unique": unique_race}
