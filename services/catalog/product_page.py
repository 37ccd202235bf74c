"""The product page: assembled by application-side joins and kept whole as a cached object.

On a miss: the product (1 query), its category (1 query), its latest reviews (1 query),
then the seller's and every review author's public profile in one batch call to the user
service. The number of round trips does not depend on the number of reviews.
"""
from __future__ import annotations

from typing import Callable

from pymongo.database import Database

from services.shared.cache import Cache, read_generations, user_generation_key

from . import caching, store

ProfileFetcher = Callable[[list[str]], dict[str, dict]]


def assemble(product: dict, category: dict, reviews: list[dict], profiles: dict[str, dict]) -> dict:
    return {
        "product": store.product_view(product),
        "category": category,
        "seller": profiles.get(product["seller_id"]),
        "rating": store.rating_view(product),
        "reviews": [store.review_view(r, profiles.get(r["author_id"])) for r in reviews],
    }


def read_page(db: Database, cache: Cache, fetch_profiles: ProfileFetcher, product_id: str,
              cache_enabled: bool) -> tuple[dict | None, str]:
    """The page (None if there is no such product) and the cache status: hit, miss or bypass."""
    product_gen = caching.product_generation_key(product_id)
    found = caching.lookup(cache, caching.page_key(product_id), [product_gen], cache_enabled)
    if found.status == "hit":
        return found.value, "hit"
    deps = caching.generations(cache, found, [product_gen])  # before reading the database

    product = store.find_product(db, product_id)
    if product is None:
        return None, found.status
    category = store.find_category(db, product["category"])
    reviews = store.latest_reviews(db, product_id)
    user_ids = list(dict.fromkeys([product["seller_id"], *(r["author_id"] for r in reviews)]))
    if deps is not None:  # profiles may change too: their generations, read before fetching them
        user_gens = read_generations(cache, [user_generation_key(u) for u in user_ids])
        deps = None if user_gens is None else {**deps, **user_gens}
    page = assemble(product, category, reviews, fetch_profiles(user_ids))
    caching.store(cache, caching.page_key(product_id), page, deps)
    return page, found.status
