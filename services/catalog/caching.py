"""Cache-aside for the catalog: look-up, store and the generation keys writes bump.

Two patterns (DESIGN.md): *cached objects* (the assembled product page, key
`page:v1:<product id>`) and *cached queries* (a page of the product list or the category
counts, key = hash of the normalized query). Every entry carries the generations of the
namespaces it was built from (see services/shared/cache.py), so a write makes it stale at
once on every replica.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from services.shared.cache import Cache, entry_is_current, read_generations
from services.shared.metrics import CACHE_REQUESTS

LISTINGS_GEN = "gen:listings"  # every product list and the category counts


def product_generation_key(product_id: str) -> str:
    return f"gen:product:{product_id}"


def page_key(product_id: str) -> str:
    return f"page:v1:{product_id}"


def query_key(kind: str, normalized: dict) -> str:
    digest = hashlib.sha256(json.dumps(normalized, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"query:v1:{kind}:{digest[:40]}"


@dataclass
class Lookup:
    """What the cache said: `hit` (value is current), `miss` or `bypass` (pattern off or cache down)."""

    status: str
    value: Any = None
    seen: dict[str, Any] = field(default_factory=dict)  # generations read before the database


def lookup(cache: Cache, key: str, dep_keys: list[str], enabled: bool) -> Lookup:
    """One multi-get of the entry and its known dependencies (a second only for others it names)."""
    if not enabled:
        return Lookup("bypass")
    found = cache.get_many([key, *dep_keys])
    if found is None:
        return Lookup("bypass")
    entry = found.pop(key, None)
    if isinstance(entry, dict) and isinstance(entry.get("deps"), dict):
        others = [k for k in entry["deps"] if k not in found]
        current = dict(found)
        if others:
            more = cache.get_many(others)
            current.update(more or {})
        if entry_is_current(entry, current):
            return Lookup("hit", entry["value"])
    return Lookup("miss", seen=found)


def generations(cache: Cache, found: Lookup, keys: list[str]) -> dict[str, Any] | None:
    """The generations to store with an entry, read before the data it is built from."""
    if found.status != "miss":
        return None
    return read_generations(cache, keys, known=found.seen)


def store(cache: Cache, key: str, value: Any, deps: dict[str, Any] | None) -> None:
    if deps is not None:
        cache.set(key, {"value": value, "deps": deps})


def count(service: str, pattern: str, status: str) -> None:
    CACHE_REQUESTS.labels(service, pattern, status).inc()
