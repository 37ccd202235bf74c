"""The cache dependency registry (services/shared/cache_deps.py): each kind of write makes stale
exactly the cached reads that show what it changed, and nothing a write bumps goes unread.

Entries are built and looked up through the real cache-aside helper (services/catalog/caching.py)
on the in-memory memcached of tests/unit/fakes.py, so the declared keys are the ones used.
"""
from __future__ import annotations

import pytest

from services.catalog.caching import read_through
from services.shared import cache_deps
from services.shared.cache_deps import (
    CACHED_READS,
    CATEGORY_COUNTS,
    LISTINGS,
    PRODUCT,
    PRODUCT_LIST,
    PRODUCT_PAGE,
    USER,
    WRITES,
    Change,
    Write,
)
from tests.unit.fakes import FakeCache

PATTERNS = frozenset({"objects", "queries"})
SHOWN_PRODUCT, OTHER_PRODUCT = "a" * 24, "b" * 24
SHOWN_USER, OTHER_USER = "c" * 24, "d" * 24
QUERY = {"category": "mugs", "page": 1, "per_page": 20, "sort": "newest"}

# What a user would expect to go stale after each kind of write, read by read. The category
# counts share the listings generation with the lists, so a review (which changes no count)
# makes them stale too: one generation for every list keeps a write to one bump.
STALE_AFTER = {
    Write.PRODUCT_CREATED: {"product list", "category counts"},
    Write.PRODUCT_CHANGED: {"product page", "product list", "category counts"},
    Write.PRODUCT_DELETED: {"product page", "product list", "category counts"},
    Write.REVIEW_ADDED: {"product page", "product list", "category counts"},
    Write.PRODUCTS_IMPORTED: {"product list", "category counts"},
    Write.PROFILE_CHANGED: {"product page"},
}
IDS = {PRODUCT: (SHOWN_PRODUCT, OTHER_PRODUCT), USER: (SHOWN_USER, OTHER_USER)}


def cache_every_read(cache: FakeCache) -> dict[str, int]:
    """One entry per declared read (the page shows SHOWN_USER); how often each was built."""
    builds = {read.name: 0 for read in CACHED_READS}

    def builder(read, users=()):
        def build(deps):
            builds[read.name] += 1
            if users:
                deps.add(USER, users)
            return {"built": builds[read.name]}
        return build

    read_through(cache, PRODUCT_PAGE, SHOWN_PRODUCT, PATTERNS, builder(PRODUCT_PAGE, [SHOWN_USER]))
    read_through(cache, PRODUCT_LIST, QUERY, PATTERNS, builder(PRODUCT_LIST))
    read_through(cache, CATEGORY_COUNTS, {}, PATTERNS, builder(CATEGORY_COUNTS))
    return builds


def stale_reads(cache: FakeCache) -> set[str]:
    """The declared reads whose entry is no longer served (looked up, never rebuilt)."""
    subjects = {"product page": SHOWN_PRODUCT, "product list": QUERY, "category counts": {}}
    return {read.name for read in CACHED_READS
            if read_through(cache, read, subjects[read.name], PATTERNS, lambda deps: None).status != "hit"}


def change_to(kind: Write, shown: bool) -> Change:
    """A change of this kind to what the cached page shows, or to something it does not."""
    per_id = [ns for ns in WRITES[kind] if ns.per_id]
    if not per_id:
        return Change(kind)
    return Change(kind, IDS[per_id[0]][0 if shown else 1])


@pytest.mark.parametrize("kind", list(Write))
def test_each_write_makes_stale_exactly_the_reads_that_show_what_it_changed(kind):
    cache = FakeCache()
    cache_every_read(cache)
    assert stale_reads(cache) == set()
    cache_deps.invalidate(cache, [change_to(kind, shown=True)])
    assert stale_reads(cache) == STALE_AFTER[kind]


@pytest.mark.parametrize("kind", [kind for kind in Write if any(ns.per_id for ns in WRITES[kind])])
def test_a_change_to_another_product_or_user_leaves_this_page_current(kind):
    cache = FakeCache()
    cache_every_read(cache)
    cache_deps.invalidate(cache, [change_to(kind, shown=False)])
    assert "product page" not in stale_reads(cache)


def test_every_write_kind_is_declared_and_tested():
    assert set(WRITES) == set(Write) == set(STALE_AFTER)


def test_nothing_is_bumped_that_no_read_depends_on_and_every_dependency_is_bumped_by_some_write():
    read = {ns for r in CACHED_READS for ns in r.depends_on}
    bumped = {ns for namespaces in WRITES.values() for ns in namespaces}
    assert read == bumped == {PRODUCT, USER, LISTINGS}


def test_a_change_that_bumps_a_per_id_generation_must_say_which_id():
    with pytest.raises(ValueError):
        Change(Write.REVIEW_ADDED)
    assert Change(Write.REVIEW_ADDED, "p").generation_keys() == ["gen:product:p", "gen:listings"]
    assert Change(Write.PROFILE_CHANGED, "u").generation_keys() == ["gen:user:u"]
    assert Change(Write.PRODUCTS_IMPORTED).generation_keys() == ["gen:listings"]


def test_changes_bump_each_generation_once():
    changes = [Change(Write.PRODUCT_CHANGED, "p"), Change(Write.REVIEW_ADDED, "p"), Change(Write.PRODUCT_CREATED, "q")]
    assert cache_deps.generations_to_bump(changes) == ["gen:product:p", "gen:listings"]


def test_invalidating_bumps_what_the_block_announced_when_it_ends():
    cache = FakeCache()
    cache_every_read(cache)
    with cache_deps.invalidating(cache) as announce:
        announce(Change(Write.PROFILE_CHANGED, SHOWN_USER))
        assert stale_reads(cache) == set()  # not yet: the database write may not be done
    assert stale_reads(cache) == {"product page"}


def test_invalidating_bumps_what_was_announced_even_when_the_block_then_fails():
    cache = FakeCache()
    cache_every_read(cache)
    with pytest.raises(RuntimeError), cache_deps.invalidating(cache) as announce:
        announce(Change(Write.PRODUCTS_IMPORTED))  # a batch was written...
        raise RuntimeError("...then the job was interrupted")
    assert stale_reads(cache) == {"product list", "category counts"}


def test_a_write_that_announced_nothing_bumps_nothing():
    cache = FakeCache()
    cache_every_read(cache)
    generations = {k: v for k, v in cache.values.items() if k.startswith("gen:")}
    with cache_deps.invalidating(cache):
        pass
    assert {k: v for k, v in cache.values.items() if k.startswith("gen:")} == generations


def test_objects_are_keyed_by_id_and_queries_by_their_normalized_content():
    assert PRODUCT_PAGE.key(SHOWN_PRODUCT) == f"page:v2:{SHOWN_PRODUCT}"
    assert PRODUCT_LIST.key({"a": 1, "b": 2}) == PRODUCT_LIST.key({"b": 2, "a": 1})
    assert PRODUCT_LIST.key({"a": 1}) != PRODUCT_LIST.key({"a": 2})
    assert PRODUCT_LIST.key({}) != CATEGORY_COUNTS.key({})
    assert PRODUCT_PAGE.known_generations(SHOWN_PRODUCT) == [f"gen:product:{SHOWN_PRODUCT}"]
    assert PRODUCT_LIST.known_generations(QUERY) == ["gen:listings"]
