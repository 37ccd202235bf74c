"""Namespace generations (services/shared/cache.py): reading them, bumping them, and deciding
whether a cached entry is still current, on the in-memory memcached of tests/unit/fakes.py."""
from __future__ import annotations

import pytest

from services.shared.cache import CacheUnavailable, bump_generations, entry_is_current, read_generations
from tests.unit.fakes import FakeCache


@pytest.fixture
def cache() -> FakeCache:
    return FakeCache()


def test_reading_a_missing_generation_creates_it_once_without_expiry(cache):
    first = read_generations(cache, ["gen:a", "gen:b"])
    assert set(first) == {"gen:a", "gen:b"} and all(isinstance(v, int) for v in first.values())
    assert cache.ttls["gen:a"] == cache.ttls["gen:b"] == 0  # never expires by itself
    assert read_generations(cache, ["gen:a", "gen:b"]) == first


def test_generations_already_fetched_are_not_fetched_again(cache):
    cache.set("gen:b", 7, ttl=0)
    assert read_generations(cache, ["gen:a", "gen:b"], known={"gen:a": 41, "gen:other": 1}) == {"gen:a": 41,
                                                                                               "gen:b": 7}


def test_generations_cannot_be_read_while_memcached_is_down(cache):
    cache.down = True
    assert read_generations(cache, ["gen:a"]) is None


def test_a_bump_changes_the_generation_and_an_evicted_one_comes_back_different(cache):
    before = read_generations(cache, ["gen:a"])["gen:a"]
    assert bump_generations(cache, ["gen:a"])
    bumped = read_generations(cache, ["gen:a"])["gen:a"]
    assert bumped != before
    cache.delete("gen:a")  # evicted
    assert bump_generations(cache, ["gen:a"])
    assert read_generations(cache, ["gen:a"])["gen:a"] not in (before, bumped)


def test_an_entry_is_current_only_while_every_generation_it_recorded_is(cache):
    entry = {"value": "page", "deps": {"gen:a": 1, "gen:b": 2}}
    assert entry_is_current(entry, {"gen:a": 1, "gen:b": 2, "gen:c": 9})
    assert not entry_is_current(entry, {"gen:a": 1, "gen:b": 3})
    assert not entry_is_current(entry, {"gen:a": 1})  # one no longer known (evicted): stale
    assert not entry_is_current({"value": "page"}, {"gen:a": 1})
    assert not entry_is_current("not an entry", {})


def test_a_bump_that_memcached_refuses_reports_failure_without_retrying(cache):
    cache.down = True
    assert bump_generations(cache, ["gen:a", "gen:b"]) is False


class FlakyCache(FakeCache):
    """Times out (not refused: memcached is up) on the first `failures` increments."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    def incr(self, key: str) -> int | None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise CacheUnavailable("timed out")
        return super().incr(key)


def test_a_bump_that_timed_out_is_tried_again_until_it_lands():
    cache = FlakyCache(failures=2)
    before = read_generations(cache, ["gen:a"])["gen:a"]
    assert bump_generations(cache, ["gen:a"])
    assert cache.attempts == 3 and cache.get("gen:a") == before + 1


def test_a_bump_that_keeps_timing_out_gives_up_and_says_so():
    cache = FlakyCache(failures=100)
    read_generations(cache, ["gen:a"])
    assert bump_generations(cache, ["gen:a"]) is False
    assert cache.attempts == 4  # INVALIDATION_ATTEMPTS
