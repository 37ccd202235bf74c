"""Catalog writes: each changes MongoDB, then bumps the generations of what it changed.

The bump happens before the caller is answered, so no read that starts after a write
returned can be served a cached page, list or count from before it.
"""
from __future__ import annotations

from pymongo.database import Database

from services.shared.cache import Cache, bump_generations

from . import caching, store


class ProductNotFound(Exception):
    pass


class NotTheSeller(Exception):
    pass


def _invalidate(cache: Cache, product_id: str | None) -> None:
    keys = [caching.LISTINGS_GEN]
    if product_id is not None:
        keys.insert(0, caching.product_generation_key(product_id))
    bump_generations(cache, keys)


def create_product(db: Database, cache: Cache, seller_id: str, fields: dict) -> dict:
    doc = store.create_product(db, seller_id, fields)
    _invalidate(cache, str(doc["_id"]))
    return doc


def _owned_product(db: Database, product_id: str, user_id: str) -> dict:
    product = store.find_product(db, product_id)
    if product is None:
        raise ProductNotFound()
    if product["seller_id"] != user_id:
        raise NotTheSeller()
    return product


def change_product(db: Database, cache: Cache, product_id: str, user_id: str, changes: dict) -> dict:
    _owned_product(db, product_id, user_id)
    doc = store.update_product(db, product_id, changes)
    _invalidate(cache, product_id)
    if doc is None:  # deleted meanwhile
        raise ProductNotFound()
    return doc


def remove_product(db: Database, cache: Cache, product_id: str, user_id: str) -> None:
    _owned_product(db, product_id, user_id)
    store.delete_product(db, product_id)
    _invalidate(cache, product_id)


def post_review(db: Database, cache: Cache, product_id: str, author_id: str, rating: int, text: str) -> dict:
    if store.find_product(db, product_id) is None:
        raise ProductNotFound()
    review = store.add_review(db, product_id, author_id, rating, text)
    _invalidate(cache, product_id)
    return review
