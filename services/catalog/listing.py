"""The product list and the category counts, kept as cached queries.

The key is a hash of the normalized query (defaults filled in, text case-folded), so
parameter order, omitted defaults and case do not make new keys. What makes them stale is
declared in services/shared/cache_deps.py (both depend on the listings generation, which
every product and review write bumps).
"""
from __future__ import annotations

from collections.abc import Iterable

from pymongo.database import Database

from services.shared import cache_deps
from services.shared.cache import Cache

from . import store
from .caching import Served, read_through


def read_products(db: Database, cache: Cache, normalized_query: dict, patterns: Iterable[str]) -> Served:
    return read_through(cache, cache_deps.PRODUCT_LIST, normalized_query, patterns,
                        lambda deps: store.list_products(db, normalized_query))


def read_categories(db: Database, cache: Cache, patterns: Iterable[str]) -> Served:
    return read_through(cache, cache_deps.CATEGORY_COUNTS, {}, patterns,
                        lambda deps: {"items": store.category_counts(db)})
