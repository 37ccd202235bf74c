"""The catalog's cache-aside helper (services/catalog/caching.py) on the in-memory memcached of
tests/unit/fakes.py: hit, miss and bypass; the cache-aside race (a write that lands while an entry
is being built makes it stale, whenever the slow reader stores it); dependencies found while
building (the page's profiles); and the one place that reports X-Cache and the metric.
"""
from __future__ import annotations

import datetime as dt
import json

import pytest
from bson import Int64
from flask import Flask

from services.catalog import caching, product_page
from services.catalog.caching import read_through
from services.shared import cache_deps
from services.shared.cache_deps import CATEGORY_COUNTS, LISTINGS, PRODUCT_LIST, PRODUCT_PAGE, USER, Change, Write
from services.shared.metrics import CACHE_REQUESTS
from tests.unit.fakes import FakeCache

BOTH = frozenset({"objects", "queries"})
PRODUCT_ID, SELLER, REVIEWER = "a" * 24, "c" * 24, "d" * 24
QUERY = {"category": "mugs", "page": 1, "per_page": 20, "sort": "newest"}


class Database:
    """What the builders read: a product list version and profiles, changed by `write`."""

    def __init__(self, cache: FakeCache) -> None:
        self.cache = cache
        self.listing = 1
        self.names = {SELLER: "Seller v1", REVIEWER: "Reviewer v1"}
        self.reads = 0

    def write_listing(self) -> None:
        """A product write as the service does it: the database, then the bump, then the answer."""
        self.listing += 1
        cache_deps.invalidate(self.cache, [Change(Write.PRODUCT_CHANGED, PRODUCT_ID)])

    def rename(self, user_id: str, name: str) -> None:
        self.names[user_id] = name
        cache_deps.invalidate(self.cache, [Change(Write.PROFILE_CHANGED, user_id)])

    def read_list(self, deps) -> dict:
        self.reads += 1
        return {"version": self.listing}


@pytest.fixture
def cache() -> FakeCache:
    return FakeCache()


@pytest.fixture
def db(cache) -> Database:
    return Database(cache)


def read_list(cache, db, patterns=BOTH, build=None):
    return read_through(cache, PRODUCT_LIST, QUERY, patterns, build or db.read_list)


# ---- hit, miss, bypass ------------------------------------------------------------------------

def test_a_miss_is_built_once_then_served_from_the_cache(cache, db):
    first = read_list(cache, db)
    again = read_list(cache, db)
    assert (first.status, again.status) == ("miss", "hit")
    assert again.value == first.value and db.reads == 1


def test_a_pattern_switched_off_bypasses_the_cache_and_stores_nothing(cache, db):
    for _ in range(2):
        assert read_list(cache, db, patterns=frozenset({"objects"})).status == "bypass"
    assert db.reads == 2
    assert not [key for key in cache.values if key.startswith("query:")]
    assert read_through(cache, PRODUCT_PAGE, PRODUCT_ID, frozenset({"queries"}), lambda deps: {}).status == "bypass"


def test_memcached_down_serves_from_the_database_and_caching_resumes_when_it_returns(cache, db):
    cache.down = True
    assert read_list(cache, db).status == "bypass" and db.reads == 1
    cache.down = False
    assert [read_list(cache, db).status for _ in range(2)] == ["miss", "hit"]


def test_nothing_there_is_never_stored(cache):
    assert read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, lambda deps: None).status == "miss"
    built = read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, lambda deps: {"product": "created since"})
    assert (built.status, built.value) == ("miss", {"product": "created since"})


def test_entries_of_different_reads_never_collide(cache):
    read_through(cache, PRODUCT_LIST, {}, BOTH, lambda deps: "list")
    assert read_through(cache, CATEGORY_COUNTS, {}, BOTH, lambda deps: "counts").value == "counts"


# ---- the cache-aside race -------------------------------------------------------------------------

def test_a_write_between_the_generation_read_and_the_store_leaves_the_stored_entry_stale(cache, db):
    def slow_build(deps):
        data = db.read_list(deps)  # read before the write...
        db.write_listing()  # ...which lands and bumps before this reader stores
        return data

    raced = read_list(cache, db, build=slow_build)
    assert raced.value == {"version": 1}  # what it read was true when it read it
    after = read_list(cache, db)
    assert after.status == "miss" and after.value == {"version": 2}
    assert read_list(cache, db).status == "hit"


def test_a_write_after_the_store_makes_the_entry_stale_at_once(cache, db):
    read_list(cache, db)
    db.write_listing()
    after = read_list(cache, db)
    assert (after.status, after.value) == ("miss", {"version": 2})


def test_a_write_before_the_generation_read_is_in_the_entry_and_it_stays_current(cache, db):
    read_list(cache, db)
    db.write_listing()
    assert read_list(cache, db).value == {"version": 2}
    assert read_list(cache, db).status == "hit"


# ---- dependencies found while building: the page's profiles ---------------------------------------

def page_builder(db: Database, between=lambda: None):
    def build(deps):
        users = [SELLER, REVIEWER]
        deps.add(USER, users)  # their generations, before their profiles
        between()
        return {user: db.names[user] for user in users}
    return build


def test_a_profile_change_while_the_page_is_built_leaves_it_stale(cache, db):
    raced = read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH,
                         page_builder(db, between=lambda: db.rename(REVIEWER, "Reviewer v2")))
    assert raced.value[REVIEWER] == "Reviewer v2"  # read after the write, yet...
    # ...stored with the generation from before it: a miss (harmless), never a stale hit
    after = read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, page_builder(db))
    assert after.status == "miss" and after.value[REVIEWER] == "Reviewer v2"


def test_a_profile_change_after_the_store_makes_every_page_showing_it_stale(cache, db):
    read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, page_builder(db))
    assert read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, page_builder(db)).status == "hit"
    db.rename(SELLER, "Seller v2")
    after = read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, page_builder(db))
    assert (after.status, after.value[SELLER]) == ("miss", "Seller v2")


def test_a_dependency_the_read_does_not_declare_is_refused(cache):
    with pytest.raises(ValueError, match="does not declare"):
        read_through(cache, PRODUCT_LIST, QUERY, BOTH, lambda deps: deps.add(USER, [SELLER]))
    with pytest.raises(ValueError):
        read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, lambda deps: deps.add(LISTINGS, ["x"]))


def test_the_product_page_depends_on_the_profiles_it_shows(cache, monkeypatch):
    """read_page itself: the seller's and the reviewers' profiles, not anyone else's."""
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    product = {"_id": PRODUCT_ID, "seller_id": SELLER, "name": "Mug", "description": "", "price_cents": 100,
               "currency": "EUR", "category": "mugs", "created_at": now, "updated_at": now}
    review = {"_id": "r1", "product_id": PRODUCT_ID, "author_id": REVIEWER, "rating": 5, "text": "",
              "created_at": now}
    monkeypatch.setattr(product_page.store, "find_product", lambda db, pid: product if pid == PRODUCT_ID else None)
    monkeypatch.setattr(product_page.store, "find_category", lambda db, slug: {"slug": slug, "name": "Mugs"})
    monkeypatch.setattr(product_page.store, "latest_reviews", lambda db, pid: [review])
    names = {SELLER: "Seller", REVIEWER: "Reviewer"}
    fetched: list[list[str]] = []

    def fetch_profiles(ids):
        fetched.append(ids)
        return {i: {"id": i, "display_name": names[i]} for i in ids}

    def read():
        return product_page.read_page(None, cache, fetch_profiles, PRODUCT_ID, BOTH)

    assert read().status == "miss" and fetched == [[SELLER, REVIEWER]]
    assert read().status == "hit" and len(fetched) == 1
    cache_deps.invalidate(cache, [Change(Write.PROFILE_CHANGED, "e" * 24)])  # shown nowhere here
    assert read().status == "hit"
    names[REVIEWER] = "Renamed"
    cache_deps.invalidate(cache, [Change(Write.PROFILE_CHANGED, REVIEWER)])
    page = read()
    assert page.status == "miss" and page.value["reviews"][0]["author"]["display_name"] == "Renamed"
    assert product_page.read_page(None, cache, fetch_profiles, "f" * 24, BOTH).value is None


# ---- what a hit costs: one round trip, the body as stored ----------------------------------------

class CountingCache(FakeCache):
    def __init__(self) -> None:
        super().__init__()
        self.multi_gets: list[list[str]] = []

    def get_many(self, keys):
        self.multi_gets.append(list(keys))
        return super().get_many(keys)


def test_a_hit_is_one_round_trip_once_its_dependencies_are_known(db, monkeypatch):
    monkeypatch.setattr(caching, "_known_dependencies", caching._KnownDependencies())
    cache = CountingCache()
    read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, page_builder(db))  # built and stored
    cache.multi_gets.clear()
    assert read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, page_builder(db)).status == "hit"
    assert len(cache.multi_gets) == 1
    assert set(cache.multi_gets[0]) == {PRODUCT_PAGE.key(PRODUCT_ID), *PRODUCT_PAGE.known_generations(PRODUCT_ID),
                                        USER.key(SELLER), USER.key(REVIEWER)}


def test_an_entry_this_process_has_not_seen_costs_a_second_round_trip_and_is_then_known(db, monkeypatch):
    cache = CountingCache()
    read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, page_builder(db))  # stored by "another replica"
    monkeypatch.setattr(caching, "_known_dependencies", caching._KnownDependencies())
    cache.multi_gets.clear()
    assert read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, page_builder(db)).status == "hit"
    assert len(cache.multi_gets) == 2
    cache.multi_gets.clear()
    assert read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, page_builder(db)).status == "hit"
    assert len(cache.multi_gets) == 1


def test_a_dependency_changed_since_it_was_remembered_is_a_miss_in_that_same_round_trip():
    cache = CountingCache()
    db = Database(cache)
    read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, page_builder(db))
    read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, page_builder(db))
    db.rename(REVIEWER, "Reviewer v3")
    cache.multi_gets.clear()
    after = read_through(cache, PRODUCT_PAGE, PRODUCT_ID, BOTH, page_builder(db))
    assert (after.status, after.value[REVIEWER]) == ("miss", "Reviewer v3")
    assert USER.key(REVIEWER) in cache.multi_gets[0]  # the changed generation came with the entry


def test_an_entry_holds_the_json_body_a_hit_sends_as_it_is(cache, db):
    built = read_list(cache, db)
    stored = cache.values[PRODUCT_LIST.key(QUERY)]
    assert isinstance(built.body, bytes) and stored["body"] == built.body
    assert json.loads(built.body) == {"version": 1}
    hit = read_list(cache, db)
    assert hit.status == "hit" and hit.body == built.body
    response = hit.response()
    assert response.mimetype == "application/json" and response.get_data() == built.body


def test_prices_the_database_returns_as_int64_are_encoded_as_numbers(cache):
    # A price above 2**31 cents comes back from the database as bson's Int64 (an int subclass);
    # CI once answered a 500 for the list sorted by price, where such a product came first.
    big = Int64(100_000_000_00)
    served = read_through(cache, PRODUCT_LIST, QUERY, BOTH, lambda deps: {"items": [{"price_cents": big}]})
    assert json.loads(served.body) == {"items": [{"price_cents": 10_000_000_000}]}


def test_an_entry_of_the_earlier_format_is_a_miss_never_an_error(cache, db):
    cache.values[PRODUCT_LIST.key(QUERY)] = {"value": {"version": 0}, "deps": {}}
    assert read_list(cache, db).status == "miss"


# ---- the one place that reports: X-Cache and the metric ------------------------------------------

def counted(pattern: str, status: str) -> float:
    return CACHE_REQUESTS.labels("catalog", pattern, status)._value.get()


def test_every_read_sets_x_cache_and_counts_itself_once(cache, db):
    app = Flask(__name__)
    patterns = {"value": BOTH}

    @app.get("/list")
    def listing():
        return read_list(cache, db, patterns=patterns["value"]).response()

    client = app.test_client()
    before = {status: counted("queries", status) for status in ("hit", "miss", "bypass")}
    headers = [client.get("/list").headers.get("X-Cache") for _ in range(2)]
    patterns["value"] = frozenset()
    headers.append(client.get("/list").headers.get("X-Cache"))
    assert headers == ["miss", "hit", "bypass"]
    assert {status: counted("queries", status) - before[status] for status in before} == \
        {"hit": 1, "miss": 1, "bypass": 1}


def test_the_catalog_routes_answer_a_hit_from_the_cache_with_x_cache(catalog_service):
    """Through the catalog app (its database is unreachable here): a current entry needs no database."""
    catalog_service.app.extensions["scaleshop"].indexes = None  # as if the database had been there at start
    counts = {"items": [{"slug": "mugs", "name": "Mugs", "product_count": 3}]}
    read_through(catalog_service.cache, CATEGORY_COUNTS, {}, BOTH, lambda deps: counts)
    response = catalog_service.client.get("/v1/categories")
    assert response.status_code == 200 and response.headers["X-Cache"] == "hit"
    assert response.get_json() == counts
    cache_deps.invalidate(catalog_service.cache, [Change(Write.PRODUCT_CREATED, PRODUCT_ID)])
    assert catalog_service.client.get("/v1/categories").status_code == 503  # a miss reads the database
