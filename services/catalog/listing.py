"""The product list and the category counts, kept as cached queries.

The key is a hash of the normalized query (defaults filled in, text case-folded), so
parameter order, omitted defaults and case do not make new keys. Every product or
review write bumps one generation (`gen:listings`) that all these entries depend on.
"""
from __future__ import annotations

from pymongo.database import Database

from services.shared.cache import Cache

from . import caching, store


def _cached_query(cache: Cache, kind: str, normalized: dict, cache_enabled: bool, compute) -> tuple[dict, str]:
    """Cache-aside for one query result, depending on the listings generation only."""
    key = caching.query_key(kind, normalized)
    found = caching.lookup(cache, key, [caching.LISTINGS_GEN], cache_enabled)
    if found.status == "hit":
        return found.value, "hit"
    deps = caching.generations(cache, found, [caching.LISTINGS_GEN])  # before reading the database
    result = compute()
    caching.store(cache, key, result, deps)
    return result, found.status


def read_products(db: Database, cache: Cache, normalized_query: dict, cache_enabled: bool) -> tuple[dict, str]:
    return _cached_query(cache, "products", normalized_query, cache_enabled,
                         lambda: store.list_products(db, normalized_query))


def read_categories(db: Database, cache: Cache, cache_enabled: bool) -> tuple[dict, str]:
    return _cached_query(cache, "categories", {}, cache_enabled, lambda: {"items": store.category_counts(db)})
