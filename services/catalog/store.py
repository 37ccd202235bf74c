"""Products, reviews and categories in MongoDB: the catalog's data access, free of HTTP and cache.

Every function takes the database as its first argument. Reads that feed the product page
are one query per collection (`find_one`, one `find` with `$in` or a limit), never one per
review; no `$lookup` is used anywhere. Every write announces what it changed (`announce`, a
cache_deps.Change) as soon as its database write is done; what that makes stale is declared
in services/shared/cache_deps.py, not here.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import math
import re

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from services.shared.api import iso_time
from services.shared.cache_deps import Announce, Change, Write
from services.shared.errors import Conflict

PRODUCTS, REVIEWS, CATEGORIES = "products", "reviews", "categories"
REVIEWS_ON_PAGE = 10

SORTS = {
    "newest": [("created_at", DESCENDING), ("_id", DESCENDING)],
    "price_asc": [("price_cents", ASCENDING), ("_id", ASCENDING)],
    "price_desc": [("price_cents", DESCENDING), ("_id", ASCENDING)],
    "rating": [("rating_avg", DESCENDING), ("rating_count", DESCENDING), ("_id", ASCENDING)],
    "name": [("name_lower", ASCENDING), ("_id", ASCENDING)],
}


class ReviewExists(Conflict):
    """This user has already reviewed this product."""

    def __init__(self) -> None:
        super().__init__("you have already reviewed this product")


def list_indexes() -> dict[str, list[tuple[str, int]]]:
    """One index per sort, alone and within a category: a list page is read by walking an index
    in the page's order (category, then the sort's fields), never by sorting what matched."""
    indexes = {}
    for sort, keys in SORTS.items():
        indexes[f"list_{sort}"] = keys
        indexes[f"list_category_{sort}"] = [("category", ASCENDING), *keys]
    return indexes


# Indexes of earlier versions whose names now mean other keys.
OBSOLETE_INDEXES = {PRODUCTS: ("category_newest", "price"), REVIEWS: ("latest_reviews",)}


def create_indexes(db: Database) -> None:
    for collection, names in OBSOLETE_INDEXES.items():
        existing = db[collection].index_information()
        for name in names:
            if name in existing:
                db[collection].drop_index(name)
    for name, keys in list_indexes().items():
        db[PRODUCTS].create_index(keys, name=name)
    db[PRODUCTS].create_index([("seller_id", ASCENDING)], name="seller")
    db[REVIEWS].create_index([("product_id", ASCENDING), ("author_id", ASCENDING)], unique=True,
                             name="one_review_per_author")
    db[REVIEWS].create_index([("product_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
                             name="latest_reviews_by_time")


def _now() -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def category_name(slug: str) -> str:
    return slug.replace("-", " ").title()


def rating_view(doc: dict) -> dict:
    count = doc.get("rating_count", 0)
    average = round(doc.get("rating_sum", 0) / count, 2) if count else None
    return {"average": average, "count": count}


def product_view(doc: dict) -> dict:
    return {
        "id": str(doc["_id"]),
        "seller_id": doc["seller_id"],
        "name": doc["name"],
        "description": doc["description"],
        "price_cents": doc["price_cents"],
        "currency": doc["currency"],
        "category": doc["category"],
        "tags": doc.get("tags", []),
        "stock": doc.get("stock", 0),
        "rating": rating_view(doc),
        "created_at": iso_time(doc["created_at"]),
        "updated_at": iso_time(doc["updated_at"]),
    }


def review_view(doc: dict, author: dict | None) -> dict:
    return {
        "id": str(doc["_id"]),
        "product_id": doc["product_id"],
        "rating": doc["rating"],
        "text": doc["text"],
        "created_at": iso_time(doc["created_at"]),
        "author": author,
    }


def _ensure_category(db: Database, slug: str) -> None:
    try:
        db[CATEGORIES].update_one(
            {"_id": slug}, {"$setOnInsert": {"name": category_name(slug), "created_at": _now()}}, upsert=True
        )
    except DuplicateKeyError:
        pass  # a concurrent writer created it first: that is all we wanted


def create_product(db: Database, seller_id: str, fields: dict, *, announce: Announce) -> dict:
    _ensure_category(db, fields["category"])
    now = _now()
    doc = {
        "_id": ObjectId(),
        "seller_id": seller_id,
        **fields,
        "name_lower": fields["name"].lower(),
        "rating_sum": 0,
        "rating_count": 0,
        "rating_avg": 0.0,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    db[PRODUCTS].insert_one(doc)
    announce(Change(Write.PRODUCT_CREATED, str(doc["_id"])))
    return doc


def find_product(db: Database, product_id: str) -> dict | None:
    if not ObjectId.is_valid(product_id):
        return None
    return db[PRODUCTS].find_one({"_id": ObjectId(product_id)})


def update_product(db: Database, product_id: str, changes: dict, expected_version: int, *,
                   announce: Announce) -> dict | None:
    """Apply the changes only if the product is still at `expected_version` (None otherwise).

    The condition makes a write that outlived its request (timed out here, still queued in
    the database) a no-op once a newer write has landed, instead of undoing it.
    """
    if "category" in changes:
        _ensure_category(db, changes["category"])
    if "name" in changes:
        changes["name_lower"] = changes["name"].lower()
    changes["updated_at"] = _now()
    doc = db[PRODUCTS].find_one_and_update(
        {"_id": ObjectId(product_id), "version": expected_version}, {"$set": changes, "$inc": {"version": 1}},
        return_document=ReturnDocument.AFTER,
    )
    if doc is not None:
        announce(Change(Write.PRODUCT_CHANGED, product_id))
    return doc


def delete_product(db: Database, product_id: str, *, announce: Announce) -> dict | None:
    """Delete the product first (it disappears at once), then its reviews; return what was deleted.

    Announced even when a concurrent delete came first: this caller must not answer before
    the deletion's bump, and it cannot know whether the other one has bumped yet.
    """
    doc = db[PRODUCTS].find_one_and_delete({"_id": ObjectId(product_id)})
    db[REVIEWS].delete_many({"product_id": product_id})
    announce(Change(Write.PRODUCT_DELETED, product_id))
    return doc


def add_review(db: Database, product_id: str, author_id: str, rating: int, text: str, *,
               announce: Announce) -> dict:
    """Insert the review, then fold its rating into the product's running totals.

    If the totals cannot be updated the review is removed again, so a failed request
    leaves no half-done write behind. The change is announced once the review is in: a page
    built while it was there is made stale even if it is removed again.
    """
    doc = {"_id": ObjectId(), "product_id": product_id, "author_id": author_id,
           "rating": rating, "text": text, "created_at": _now()}
    try:
        db[REVIEWS].insert_one(doc)
    except DuplicateKeyError:
        raise ReviewExists() from None
    announce(Change(Write.REVIEW_ADDED, product_id))
    try:
        product = db[PRODUCTS].find_one_and_update(
            {"_id": ObjectId(product_id)},
            {"$inc": {"rating_sum": rating, "rating_count": 1, "version": 1}, "$set": {"updated_at": _now()}},
            return_document=ReturnDocument.AFTER,
        )
        if product is not None:
            # Set the average only if no other review landed meanwhile: the last one wins.
            db[PRODUCTS].update_one(
                {"_id": product["_id"], "rating_count": product["rating_count"]},
                {"$set": {"rating_avg": product["rating_sum"] / product["rating_count"]}},
            )
    except PyMongoError:
        db[REVIEWS].delete_one({"_id": doc["_id"]})
        raise
    doc["product"] = product
    return doc


def import_id(job_id: str, index: int) -> ObjectId:
    """The stable id of the index-th product of an import job: re-running the job upserts the same ids."""
    return ObjectId(hashlib.sha256(f"{job_id}:{index}".encode()).digest()[:12])


def upsert_imported(db: Database, seller_id: str, job_id: str, start: int, items: list[dict], *,
                    announce: Announce) -> list[dict]:
    """Write one batch of an import; running it twice leaves the same data as once.

    Returns the documents as written (for their events); a product that already exists
    (the batch ran before) is left as it is.
    """
    now = _now()
    docs = [
        {"_id": import_id(job_id, start + offset), "seller_id": seller_id, **fields,
         "name_lower": fields["name"].lower(), "rating_sum": 0, "rating_count": 0, "rating_avg": 0.0,
         "version": 1, "created_at": now, "updated_at": now, "import_job": job_id}
        for offset, fields in enumerate(items)
    ]
    if not docs:
        return []
    for slug in {item["category"] for item in items}:
        _ensure_category(db, slug)
    try:  # plain inserts: a re-run finds its products there (duplicate key) and leaves them as they are
        db[PRODUCTS].insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != 11000]
        if others:  # anything but "already there from an earlier run" is a real failure
            raise
    finally:  # unordered: some may be in even when others failed
        announce(Change(Write.PRODUCTS_IMPORTED))
    return docs


def latest_reviews(db: Database, product_id: str, limit: int = REVIEWS_ON_PAGE) -> list[dict]:
    return list(db[REVIEWS].find({"product_id": product_id}).sort([("created_at", DESCENDING),
                                                                      ("_id", DESCENDING)]).limit(limit))


def find_category(db: Database, slug: str) -> dict:
    doc = db[CATEGORIES].find_one({"_id": slug})
    return {"slug": slug, "name": doc["name"] if doc else category_name(slug)}


def list_products(db: Database, query: dict) -> dict:
    """One page of products for a normalized query (see models.ProductQuery)."""
    criteria: dict = {}
    if query.get("category"):
        criteria["category"] = query["category"]
    if query.get("q"):
        criteria["$or"] = [{"name_lower": {"$regex": re.escape(query["q"])}}, {"tags": query["q"]}]
    price = {}
    if query.get("min_price") is not None:
        price["$gte"] = query["min_price"]
    if query.get("max_price") is not None:
        price["$lte"] = query["max_price"]
    if price:
        criteria["price_cents"] = price
    page, per_page = query["page"], query["per_page"]
    total = count_matching(db, PRODUCTS, criteria)
    docs = db[PRODUCTS].find(criteria).sort(SORTS[query["sort"]]).skip((page - 1) * per_page).limit(per_page)
    return {
        "items": [product_view(doc) for doc in docs],
        "page": page,
        "per_page": per_page,
        "total": total,
        "pages": math.ceil(total / per_page) if total else 0,
    }


def count_matching(db: Database, collection: str, criteria: dict) -> int:
    """The number of matching documents, by the `count` command: it is answered from an index where
    one covers the criteria (`count_documents` is an aggregation, which some servers run as a scan)."""
    return int(db.command("count", collection, query=criteria)["n"])


def category_counts(db: Database) -> list[dict]:
    """Every category with products, each counted on the category index (no scan of the products)."""
    categories = db[CATEGORIES].find({}, {"name": 1}).sort([("_id", ASCENDING)])
    counted = [(doc, count_matching(db, PRODUCTS, {"category": doc["_id"]})) for doc in categories]
    return [{"slug": doc["_id"], "name": doc.get("name", category_name(doc["_id"])), "product_count": n}
            for doc, n in counted if n > 0]
