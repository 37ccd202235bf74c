"""Cache dependencies, declared once: which generations each cached read depends on, and
which generations each kind of write bumps (in the spirit of PyPI Warehouse's
`register_origin_cache_keys`, where each model declares the cache keys a change to it purges).

Generations (services/shared/cache.py) make cached entries stale without finding them: an
entry records the generation of every namespace it was built from; a write bumps the
generations of the namespaces it changed. This module is the only place that says which:

- `CACHED_READS`: the catalog's product page, product list and category counts, each with
  its cache pattern (`CACHE_PATTERNS`), its key and the namespaces it depends on;
- `WRITES`: each kind of change the store layers announce (`Change`), with the namespaces it
  bumps.

Writers announce what they changed where they change it (services/catalog/store.py,
services/user/accounts.py); `invalidating` collects those announcements around a write and
bumps their generations, through this registry, when the write is done and before the
caller is answered. The one cache-aside helper (services/catalog/caching.py) reads the
generations a read declares before it reads the database. Adding a cached read or a kind of
write is one entry here; tests/unit/shared/test_cache_deps.py checks that every read goes
stale after exactly the writes that change what it shows.
"""
from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .cache import Cache, bump_generations
from .config import CachePattern


@dataclass(frozen=True)
class Namespace:
    """Data that changes together: one generation key per id (`per_id`) or one for all of it."""

    name: str
    per_id: bool

    def key(self, id: str | None = None) -> str:
        if self.per_id != (id is not None):
            raise ValueError(f"the {self.name} generation takes {'an id' if self.per_id else 'no id'}")
        return f"gen:{self.name}:{id}" if self.per_id else f"gen:{self.name}"


PRODUCT = Namespace("product", per_id=True)  # one product's document and its reviews
USER = Namespace("user", per_id=True)  # one user's public profile (owned by the user service)
LISTINGS = Namespace("listings", per_id=False)  # every product as lists and counts show it


@dataclass(frozen=True)
class CachedRead:
    """A cached read: its pattern, its key and the namespaces its entries depend on.

    A cached object (`objects`) is keyed by its subject's id, and depends on that id's
    generation in `subject`; a cached query (`queries`) is keyed by a hash of its normalized
    query. Per-id namespaces other than the subject are found while the entry is built (the
    page's seller and reviewers): the builder names their ids (caching.Dependencies.add).
    """

    name: str
    pattern: CachePattern
    key_prefix: str
    depends_on: tuple[Namespace, ...]
    subject: Namespace | None = None

    def key(self, subject: Any) -> str:
        if self.pattern == "objects":
            return f"{self.key_prefix}:{subject}"
        text = json.dumps(subject, sort_keys=True, separators=(",", ":"))
        return f"{self.key_prefix}:{hashlib.sha256(text.encode()).hexdigest()[:40]}"

    def known_generations(self, subject: Any) -> list[str]:
        """The generation keys known before the entry is built: the subject's and the global ones."""
        return [ns.key(subject) if ns == self.subject else ns.key()
                for ns in self.depends_on if ns == self.subject or not ns.per_id]


PRODUCT_PAGE = CachedRead("product page", "objects", "page:v2", depends_on=(PRODUCT, USER), subject=PRODUCT)
PRODUCT_LIST = CachedRead("product list", "queries", "query:v2:products", depends_on=(LISTINGS,))
CATEGORY_COUNTS = CachedRead("category counts", "queries", "query:v2:categories", depends_on=(LISTINGS,))
CACHED_READS = (PRODUCT_PAGE, PRODUCT_LIST, CATEGORY_COUNTS)


class Write(enum.StrEnum):
    PRODUCT_CREATED = "product created"
    PRODUCT_CHANGED = "product changed"
    PRODUCT_DELETED = "product deleted"
    REVIEW_ADDED = "review added"
    PRODUCTS_IMPORTED = "products imported"
    PROFILE_CHANGED = "profile changed"


WRITES: dict[Write, tuple[Namespace, ...]] = {
    Write.PRODUCT_CREATED: (LISTINGS,),  # no page of a new product is cached yet (a 404 is never stored)
    Write.PRODUCT_CHANGED: (PRODUCT, LISTINGS),
    Write.PRODUCT_DELETED: (PRODUCT, LISTINGS),
    Write.REVIEW_ADDED: (PRODUCT, LISTINGS),  # the page shows it; lists show the rating and sort by it
    Write.PRODUCTS_IMPORTED: (LISTINGS,),  # new products: no page of theirs is cached yet
    Write.PROFILE_CHANGED: (USER,),  # pages show the seller's and the reviewers' profiles
}
assert all(sum(ns.per_id for ns in bumped) <= 1 for bumped in WRITES.values()), "a change has one id"


@dataclass(frozen=True)
class Change:
    """What one write changed, announced by the code that wrote it: a kind and, where the
    kind bumps a per-id namespace, that id (e.g. the product whose review was added)."""

    kind: Write
    id: str | None = None

    def __post_init__(self) -> None:
        if self.id is None and any(ns.per_id for ns in WRITES[self.kind]):
            raise ValueError(f"a {self.kind.value} change needs the id of what changed")

    def generation_keys(self) -> list[str]:
        return [ns.key(self.id) if ns.per_id else ns.key() for ns in WRITES[self.kind]]


Announce = Callable[[Change], None]


def generations_to_bump(changes: Iterable[Change]) -> list[str]:
    """Every generation key these changes bump, each once, in order."""
    return list(dict.fromkeys(key for change in changes for key in change.generation_keys()))


def invalidate(cache: Cache, changes: Iterable[Change]) -> bool:
    """Bump what the changes made stale; False if memcached could not be reached (see bump_generations)."""
    keys = generations_to_bump(changes)
    return bump_generations(cache, keys) if keys else True


@contextmanager
def invalidating(cache: Cache) -> Iterator[Announce]:
    """Around a write: collect what it announces, then bump those generations on leaving.

    The bump runs after the database writes inside the block and before the caller is
    answered (also when the block raises after a write landed, e.g. an import interrupted
    half-way), so no read that starts after the write returned is served an entry built
    from data older than it.
    """
    changes: list[Change] = []
    try:
        yield changes.append
    finally:
        invalidate(cache, changes)


def not_cached(change: Change) -> None:
    """Announce to nobody: for writes into a database no cache sits in front of (benchmark data)."""
