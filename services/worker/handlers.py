"""What each job type does. Every handler is safe to run twice (redelivery after a crash).

- import: up to CHUNK_ITEMS products are imported by the job itself; a larger import is split
  into chunks of CHUNK_ITEMS (jobs.split: `import-chunk` jobs that several workers run at
  once), and its result is merged from theirs (importing.merge).
- import-chunk, and a small import: each item is checked (importing.check), the valid ones are
  written in batches under stable ids derived from (import job id, position), progress advances
  after each batch, the products' events go to Kafka (or to the outbox while Kafka is down), and
  cached lists are made stale at the end (also when the job is interrupted half-way). The result
  counts what was imported and lists every rejected item with its index, field and reason.
- export: gathers everything the user owns (account, products, reviews) into the result.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import msgspec
from bson import ObjectId

from services.catalog import importing, store
from services.catalog.commands import product_event
from services.shared import jobs, json_array, outbox
from services.shared.cache_deps import invalidating
from services.shared.events import TOPIC_CATALOG_EVENTS
from services.shared.jobs import load_payload
from services.user.accounts import USERS, own_view

from .runner import JobContext, JobInterrupted, JobType, Split

IMPORT_BATCH = 500
CHUNK_ITEMS = 1000


def run_import(ctx: JobContext) -> dict | Split:
    payload = load_payload(ctx.db, ctx.job)
    if ctx.job["progress"]["total"] <= CHUNK_ITEMS:
        return import_items(ctx, ctx.job["_id"], 0, json.loads(payload))
    # Split without parsing the products: each chunk is the raw JSON of its items.
    raw = json_array.raw_items(payload)
    items: Sequence[bytes | msgspec.Raw] = raw or [json.dumps(item).encode() for item in json.loads(payload)]
    chunks = [(json_array.join(items[start:start + CHUNK_ITEMS]), len(items[start:start + CHUNK_ITEMS]),
               {"start": start}) for start in range(0, len(items), CHUNK_ITEMS)]
    return Split(jobs.split(ctx.db, ctx.publisher, ctx.job, "import-chunk", chunks))


def run_import_chunk(ctx: JobContext) -> dict:
    return import_items(ctx, ctx.job["parent"], ctx.job["params"]["start"], json.loads(load_payload(ctx.db, ctx.job)))


def import_items(ctx: JobContext, import_id: str, first_index: int, items: list) -> dict:
    """Check and write `items`, the import's items from position `first_index` on."""
    seller_id = ctx.job["owner_id"]
    imported, rejected, categories = 0, [], set()  # type: int, list[dict], set[str]
    with invalidating(ctx.cache) as announce:  # bumps once, when the loop ends
        for offset in range(0, len(items), IMPORT_BATCH):
            if ctx.stopping():
                raise JobInterrupted()
            batch = items[offset:offset + IMPORT_BATCH]
            valid, bad = importing.check(batch, first_index + offset)
            rejected += bad
            events = []
            for start, products in importing.runs(valid):
                written = store.upsert_imported(ctx.db, seller_id, import_id, start, products, announce=announce)
                events += [(str(doc["_id"]), product_event("product.created", doc)) for doc in written]
                categories.update(product["category"] for product in products)
                imported += len(products)
            # Kafka down: the events wait in the outbox and the import goes on.
            if events:
                outbox.publish_or_defer(ctx.db, ctx.publisher, TOPIC_CATALOG_EVENTS, events)
            ctx.progress(offset + len(batch))
    return importing.result(imported, rejected, categories)


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


HANDLERS = {
    "import": JobType(run_import, merge=importing.merge),
    "import-chunk": JobType(run_import_chunk),
    "export": JobType(run_export),
}
