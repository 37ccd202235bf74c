"""The product page: assembled by application-side joins and kept whole as a cached object.

On a miss: the product (1 query), its category (1 query), its latest reviews (1 query),
then the seller's and every review author's public profile in one batch call to the user
service. The number of round trips does not depend on the number of reviews.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

from pymongo.database import Database

from services.shared import cache_deps
from services.shared.cache import Cache

from . import store
from .caching import Dependencies, Served, read_through

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
              patterns: Iterable[str]) -> Served:
    """The page (value None if there is no such product) and how the cache served it."""

    def build(deps: Dependencies) -> dict | None:
        product = store.find_product(db, product_id)
        if product is None:
            return None
        category = store.find_category(db, product["category"])
        reviews = store.latest_reviews(db, product_id)
        user_ids = list(dict.fromkeys([product["seller_id"], *(r["author_id"] for r in reviews)]))
        deps.add(cache_deps.USER, user_ids)  # profiles change too: their generations before them
        return assemble(product, category, reviews, fetch_profiles(user_ids))

    return read_through(cache, cache_deps.PRODUCT_PAGE, product_id, patterns, build)
