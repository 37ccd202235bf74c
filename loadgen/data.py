"""The seed data, generated deterministically from a seed number.

The same seed number always gives the same users (emails, passwords), the same products
(names, categories, prices) and the same reviews, so `seed` can be re-run to fill in what
is missing and `run` knows which accounts exist without any file passing between them.
Popularity is skewed like real shops: a few categories hold most products, a few products
get most views and reviews (Zipf's law).
"""
from __future__ import annotations

import bisect
import itertools
import random

CATEGORIES = (
    "books", "electronics", "home-kitchen", "toys-games", "sports-outdoors", "garden", "music",
    "fashion", "beauty", "automotive", "grocery", "office", "pet-supplies", "health", "tools", "baby",
)
ADJECTIVES = (
    "Classic", "Compact", "Deluxe", "Eco", "Ergonomic", "Handmade", "Lightweight", "Modern", "Portable",
    "Premium", "Rustic", "Smart", "Sturdy", "Vintage", "Wireless", "Cozy", "Bright", "Silent",
)
NOUNS = (
    "lamp", "kettle", "backpack", "notebook", "speaker", "chair", "blender", "jacket", "puzzle", "drill",
    "guitar", "teapot", "camera", "blanket", "bottle", "watch", "skillet", "planter", "headphones", "desk",
)
REVIEW_TEXTS = (
    "Does what it says.", "Great value for the price.", "Arrived quickly, works well.",
    "Not what I expected.", "Would buy again.", "Solid build quality.", "Broke after a week.",
    "My kids love it.", "Five stars, no notes.", "Okay, but the manual is useless.",
)
PASSWORD_PREFIX = "loadgen-password"


def seed_tag(seed: int) -> str:
    """The tag every seeded product carries: how `seed` and `run` find them (`?q=<tag>`)."""
    return f"lg-s{seed}"


def user_email(seed: int, index: int) -> str:
    return f"loadgen-s{seed}-u{index:06d}@example.com"


def user_password(seed: int, index: int) -> str:
    return f"{PASSWORD_PREFIX}-{seed}-{index}"


def user_display_name(index: int) -> str:
    return f"Shopper {index}"


def zipf_cum_weights(n: int, exponent: float = 1.0) -> list[float]:
    """Cumulative weights of ranks 1..n under Zipf's law (rank k has weight 1/k^s)."""
    return list(itertools.accumulate(1.0 / (k ** exponent) for k in range(1, n + 1)))


class Zipf:
    """Draw ranks 0..n-1, rank 0 the most popular."""

    def __init__(self, n: int, exponent: float = 1.0):
        if n < 1:
            raise ValueError("Zipf needs at least one item")
        self.cum = zipf_cum_weights(n, exponent)
        self.total = self.cum[-1]
        self.n = n

    def draw(self, rng: random.Random) -> int:
        return min(bisect.bisect_left(self.cum, rng.random() * self.total), self.n - 1)


def product_spec(seed: int, index: int) -> dict:
    """The product number `index` of seed `seed`: always the same fields."""
    rng = random.Random(f"product:{seed}:{index}")
    category = CATEGORIES[Zipf(len(CATEGORIES), 0.8).draw(rng)]
    adjective, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
    price = int(min(500_000, max(99, rng.lognormvariate(8.0, 1.0))))
    return {
        "name": f"{adjective} {noun} #{index}",
        "description": f"A {adjective.lower()} {noun} for everyday use. Seeded by loadgen (seed {seed}).",
        "price_cents": price,
        "currency": "EUR",
        "category": category,
        "tags": [seed_tag(seed), noun],
        "stock": rng.randint(0, 500),
    }


def product_index(name: str) -> int | None:
    """The index a seeded product's name carries ("... #12" -> 12)."""
    _, sep, number = name.rpartition(" #")
    return int(number) if sep and number.isdigit() else None


def review_plan(seed: int, products: int, users: int, reviews: int) -> list[tuple[int, int, int, str]]:
    """(product index, author index, rating, text) for `reviews` distinct (product, author) pairs.

    Popular products (Zipf) get most reviews. Fewer pairs than asked when users x products is small.
    """
    rng = random.Random(f"reviews:{seed}")
    popularity = Zipf(products, 1.0)
    order = list(range(products))
    random.Random(f"popularity:{seed}").shuffle(order)  # rank -> product index
    plan: list[tuple[int, int, int, str]] = []
    seen: set[tuple[int, int]] = set()
    budget = reviews * 20
    while len(plan) < min(reviews, products * users) and budget > 0:
        budget -= 1
        product = order[popularity.draw(rng)]
        author = rng.randrange(users)
        if (product, author) in seen:
            continue
        seen.add((product, author))
        rating = rng.choices((1, 2, 3, 4, 5), weights=(1, 1, 2, 4, 6))[0]
        plan.append((product, author, rating, rng.choice(REVIEW_TEXTS)))
    return plan


SHORT_CATEGORIES = ("books", "music", "tools", "baby", "garden", "office", "health", "beauty")


def import_batch(size: int, label: str, rng: random.Random) -> list[dict]:
    """`size` small products for POST /v1/imports, compact so that 10,000 fit in well under 1 MiB."""
    return [{"name": f"Imp {label}.{i}", "description": "", "price_cents": rng.randint(100, 99_999),
             "currency": "EUR", "category": SHORT_CATEGORIES[i % len(SHORT_CATEGORIES)]} for i in range(size)]
