"""The database benchmark's data set, written straight into a database (no HTTP).

Products are the seed's own (loadgen/data.py: 16 categories of Zipf-skewed sizes, lognormal
prices) and go in through the import's write path, `store.upsert_imported`, in batches of
1,000, so they are shaped exactly as the catalog writes them. Reviews follow the seed's plan
(popular products get most), users are accounts as the user service stores them, and jobs
and outbox records are what a working stack leaves behind: mostly published jobs, a few
that wait for the relay. Products' rating totals are set from their reviews, as
`store.add_review` leaves them (the products are read back and written again with them).
"""
from __future__ import annotations

import collections
import datetime as dt
import random
from typing import Any

from bson import ObjectId
from pymongo.database import Database

from services.catalog import app as catalog_app
from services.catalog import store
from services.shared import jobs, outbox
from services.shared.cache_deps import not_cached
from services.user import accounts
from services.user import app as user_app

from .. import data

SEED = 7
BATCH = 1000


def users_for(products: int) -> int:
    return max(100, products // 10)


def reviews_for(products: int) -> int:
    return products * 2


def create_indexes(db: Database) -> None:
    """The indexes the services create at start."""
    catalog_app.create_indexes(db)
    user_app.create_indexes(db)


def load(db: Database, products: int) -> dict:
    """Fill an empty database with `products` products and what goes with them; ids to query."""
    create_indexes(db)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    user_ids = _insert_users(db, users_for(products), now)
    product_ids: list[str] = []
    for start in range(0, products, BATCH):
        items = [data.product_spec(SEED, i) for i in range(start, min(products, start + BATCH))]
        docs = store.upsert_imported(db, user_ids[start // BATCH % len(user_ids)], f"bench-{products}", start, items,
                                     announce=not_cached)
        product_ids.extend(str(doc["_id"]) for doc in docs)
    reviews_per_product = _insert_reviews(db, product_ids, user_ids, now)
    _insert_jobs_and_outbox(db, products, user_ids, now)
    hot = max(reviews_per_product, key=lambda product_id: reviews_per_product[product_id])
    sizes = collections.Counter(data.product_spec(SEED, i)["category"] for i in range(products))
    return {"product_ids": product_ids, "user_ids": user_ids, "hot_product": hot,
            "hot_product_reviews": reviews_per_product[hot], "largest_category": sizes.most_common()[0][0],
            "smallest_category": sizes.most_common()[-1][0], "category_sizes": dict(sizes.most_common())}


def more_products(db: Database, products: int, batch_number: int) -> list[dict]:
    """One more batch of 1,000 products through `store.upsert_imported` (the bulk-insert measurement)."""
    items = [data.product_spec(SEED + batch_number, i) for i in range(BATCH)]
    return store.upsert_imported(db, "bench-seller", f"bench-more-{products}-{batch_number}", 0, items,
                                 announce=not_cached)


def _insert_users(db: Database, count: int, now: dt.datetime) -> list[str]:
    password_hash = accounts.password_hasher.hash("benchmark accounts never sign in")
    docs = [{"_id": ObjectId(), "email": data.user_email(SEED, i), "email_lower": data.user_email(SEED, i),
             "password_hash": password_hash, "display_name": data.user_display_name(i), "bio": "",
             "created_at": now - dt.timedelta(days=count - i), "updated_at": now} for i in range(count)]
    for start in range(0, count, BATCH):
        db[accounts.USERS].insert_many(docs[start:start + BATCH], ordered=False)
    return [str(doc["_id"]) for doc in docs]


def _insert_reviews(db: Database, product_ids: list[str], user_ids: list[str], now: dt.datetime) -> dict[str, int]:
    plan = data.review_plan(SEED, len(product_ids), len(user_ids), reviews_for(len(product_ids)))
    docs: list[dict[str, Any]] = [
        {"_id": ObjectId(), "product_id": product_ids[p], "author_id": user_ids[a], "rating": rating,
         "text": text, "created_at": now - dt.timedelta(minutes=n)} for n, (p, a, rating, text) in enumerate(plan)]
    for start in range(0, len(docs), BATCH):
        db[store.REVIEWS].insert_many(docs[start:start + BATCH], ordered=False)
    totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for doc in docs:
        totals[doc["product_id"]][0] += doc["rating"]
        totals[doc["product_id"]][1] += 1
    _rewrite_with_ratings(db, totals)
    return {pid: count for pid, (_, count) in totals.items()}


def _rewrite_with_ratings(db: Database, totals: dict[str, list[int]]) -> None:
    """Give the products the rating totals their reviews imply, as add_review leaves them.

    By reading the products back and writing them again: one update per product takes
    minutes on FerretDB, and a multi-document update stalls it for good on SQLite.
    """
    written = list(db[store.PRODUCTS].find())
    for doc in written:
        rating_sum, count = totals.get(str(doc["_id"]), (0, 0))
        if count:
            doc.update(rating_sum=rating_sum, rating_count=count, rating_avg=rating_sum / count,
                       version=doc["version"] + count)
    db[store.PRODUCTS].drop()
    for start in range(0, len(written), BATCH):
        db[store.PRODUCTS].insert_many(written[start:start + BATCH], ordered=False)
    create_indexes(db)


def _insert_jobs_and_outbox(db: Database, products: int, user_ids: list[str], now: dt.datetime) -> None:
    rng = random.Random(SEED)
    count = max(100, products // 10)
    docs = []
    for i in range(count):
        created = now - dt.timedelta(minutes=count - i)
        waiting = i < 5  # accepted while the broker was down: the relay's work
        docs.append({"_id": f"bench-job-{i:06d}", "type": "import", "owner_id": rng.choice(user_ids),
                     "status": jobs.QUEUED if waiting else jobs.SUCCEEDED, "progress": {"done": 10, "total": 10},
                     "params": {}, "has_payload": False, "payload_encoding": None, "attempts": 0 if waiting else 1,
                     "published": not waiting, "created_at": created, "updated_at": created})
    db[jobs.JOBS].insert_many(docs, ordered=False)
    db[outbox.OUTBOX].insert_many([{"_id": f"bench-event-{i:05d}", "topic": "catalog.events", "key": "bench",
                                    "value": {"type": "product.updated"},
                                    "created_at": now - dt.timedelta(seconds=60 - i)}
                                   for i in range(max(10, products // 100))], ordered=False)
