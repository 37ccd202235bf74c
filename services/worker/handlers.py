"""What each job type does. Every handler is safe to run twice (redelivery after a crash).

- import: upserts each product under a stable id derived from (job id, position), in
  batches, advancing `progress` after each; its events go to Kafka, or to the outbox while
  Kafka is down; cached lists are made stale at the end.
- export: gathers everything the user owns (account, products, reviews) into the result.
"""
from __future__ import annotations

import json

from bson import ObjectId

from services.catalog import caching, store
from services.catalog.commands import product_event
from services.shared import outbox
from services.shared.cache import bump_generations
from services.shared.events import TOPIC_CATALOG_EVENTS
from services.shared.jobs import load_payload
from services.user.accounts import USERS, own_view

from .runner import JobContext, JobInterrupted

IMPORT_BATCH = 500


def run_import(ctx: JobContext) -> dict:
    items = json.loads(load_payload(ctx.db, ctx.job))  # validated at submission
    seller_id = ctx.job["owner_id"]
    done = 0
    for start in range(0, len(items), IMPORT_BATCH):
        if ctx.stopping():
            raise JobInterrupted()
        batch = items[start:start + IMPORT_BATCH]
        written = store.upsert_imported(ctx.db, seller_id, ctx.job["_id"], start, batch)
        events = [(str(doc["_id"]), product_event("product.created", doc)) for doc in written]
        # Kafka down: the events wait in the outbox and the import goes on.
        outbox.publish_or_defer(ctx.db, ctx.publisher, TOPIC_CATALOG_EVENTS, events)
        done = start + len(batch)
        ctx.progress(done, len(items))
    bump_generations(ctx.cache, [caching.LISTINGS_GEN])
    return {"imported": done, "categories": sorted({item["category"] for item in items})}


def run_export(ctx: JobContext) -> dict:
    user_id = ctx.job["owner_id"]
    account = ctx.db[USERS].find_one({"_id": ObjectId(user_id)}) if ObjectId.is_valid(user_id) else None
    ctx.progress(1, 3)
    products = [store.product_view(doc) for doc in ctx.db[store.PRODUCTS].find({"seller_id": user_id})]
    ctx.progress(2, 3)
    reviews = [store.review_view(doc, None) for doc in ctx.db[store.REVIEWS].find({"author_id": user_id})]
    ctx.progress(3, 3)
    return {
        "format": "scaleshop-export-v1",
        "account": own_view(account) if account else None,
        "products": products,
        "reviews": reviews,
    }


HANDLERS = {"import": run_import, "export": run_export}
