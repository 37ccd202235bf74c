"""Catalog writes: each changes MongoDB, bumps the generations of what it changed, and
emits a domain event on `catalog.events` (keyed by product id, through the outbox).

The store announces what each write changed; `cache_deps.invalidating` around the store
calls bumps the generations the registry maps those changes to, after the database write
and before the caller is answered, so no read that starts after a write returned can be
served a cached page, list or count from before it.
"""
from __future__ import annotations

from pymongo.database import Database

from services.shared import outbox, storage
from services.shared.cache import Cache
from services.shared.cache_deps import invalidating
from services.shared.errors import DependencyUnavailable, Forbidden, NotFound
from services.shared.events import TOPIC_CATALOG_EVENTS, Publisher

from . import store


def product_event(kind: str, doc: dict) -> dict:
    """What consumers of catalog.events get: enough to maintain derived data, with the version."""
    return {
        "type": kind,
        "product_id": str(doc["_id"]),
        "version": doc.get("version", 1),
        "category": doc["category"],
        "price_cents": doc["price_cents"],
        "seller_id": doc["seller_id"],
        "rating_count": doc.get("rating_count", 0),
        "rating_sum": doc.get("rating_sum", 0),
        "at": doc["updated_at"].isoformat(),
    }


def _emit(db: Database, publisher: Publisher, kind: str, doc: dict) -> None:
    outbox.emit(db, publisher, TOPIC_CATALOG_EVENTS, str(doc["_id"]), product_event(kind, doc))


class ProductNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no product with this id")


class NotTheSeller(Forbidden):
    def __init__(self, action: str) -> None:
        super().__init__(f"only the seller may {action} this product")


def create_product(db: Database, cache: Cache, publisher: Publisher, seller_id: str, fields: dict) -> dict:
    with invalidating(cache) as announce:
        doc = store.create_product(db, seller_id, fields, announce=announce)
    _emit(db, publisher, "product.created", doc)
    return doc


def _owned_product(db: Database, product_id: str, user_id: str, action: str) -> dict:
    product = store.find_product(db, product_id)
    if product is None:
        raise ProductNotFound()
    if product["seller_id"] != user_id:
        raise NotTheSeller(action)
    return product


def _product_lock(db: Database, product_id: str):
    return storage.of(db).exclusive(db, f"product:{product_id}")


CHANGE_ATTEMPTS = 5


def change_product(db: Database, cache: Cache, publisher: Publisher, product_id: str, user_id: str,
                   changes: dict) -> dict:
    """Compare-and-set on the product's version, read again when another write came first."""
    with invalidating(cache) as announce:
        for _ in range(CHANGE_ATTEMPTS):
            with _product_lock(db, product_id):
                current = _owned_product(db, product_id, user_id, "change")  # raises once it is deleted
                doc = store.update_product(db, product_id, changes, expected_version=current["version"],
                                           announce=announce)
            if doc is not None:
                break
        else:
            raise DependencyUnavailable("the product is being changed by others; retry")
    _emit(db, publisher, "product.updated", doc)
    return doc


def remove_product(db: Database, cache: Cache, publisher: Publisher, product_id: str, user_id: str) -> None:
    _owned_product(db, product_id, user_id, "delete")
    with invalidating(cache) as announce:
        doc = store.delete_product(db, product_id, announce=announce)
    if doc is not None:
        doc["version"] = doc.get("version", 1) + 1  # the deletion is the product's last version
        _emit(db, publisher, "product.deleted", doc)


def post_review(db: Database, cache: Cache, publisher: Publisher, product_id: str, author_id: str, rating: int,
                text: str) -> dict:
    if store.find_product(db, product_id) is None:
        raise ProductNotFound()
    with invalidating(cache) as announce, _product_lock(db, product_id):
        review = store.add_review(db, product_id, author_id, rating, text, announce=announce)
    if review.get("product") is not None:
        _emit(db, publisher, "review.created", review["product"])
    return review
