"""The catalog's cache-aside: one helper, `read_through`, for every cached read declared in
services/shared/cache_deps.py (the product page, the product list, the category counts).

Two patterns (DESIGN.md), each switchable with `CACHE_PATTERNS`: *cached objects* (the
assembled product page, key `page:v1:<product id>`) and *cached queries* (a page of the
product list or the category counts, key = hash of the normalized query). `read_through` is
the only code that looks an entry up, builds it on a miss and stores it, and the only place
that reports how a read was served: the `X-Cache` response header (`hit`, `miss` or
`bypass`) and the `scaleshop_cache_requests_total` metric.

Why no read that starts after a write returned is served older data: `read_through` reads
the generations of everything the entry depends on *before* the builder reads the database
(a builder that finds more dependencies while it builds, like the page's profiles, adds them
with `Dependencies.add` before fetching that data) and stores them with the entry; a write
bumps them after its database write and before it answers (cache_deps.invalidating). An
entry built from data older than a write therefore records a generation older than the one
that write set, and is a miss ever after, even when a slow reader stores it after the write
(the cache-aside race).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from flask import Response, after_this_request, has_request_context

from services.shared.cache import Cache, entry_is_current, read_generations
from services.shared.cache_deps import CachedRead, Namespace
from services.shared.metrics import CACHE_REQUESTS

SERVICE = "catalog"


@dataclass
class Served:
    """A read's result (None: nothing there, never stored) and how the cache served it: hit, miss or bypass."""

    value: Any
    status: str


@dataclass
class _Lookup:
    status: str
    value: Any = None
    seen: dict[str, Any] = field(default_factory=dict)  # generations fetched with the entry


def _lookup(cache: Cache, key: str, dep_keys: list[str], enabled: bool) -> _Lookup:
    """One multi-get of the entry and its known dependencies (a second only for others it names)."""
    if not enabled:
        return _Lookup("bypass")
    found = cache.get_many([key, *dep_keys])
    if found is None:
        return _Lookup("bypass")
    entry = found.pop(key, None)
    if isinstance(entry, dict) and isinstance(entry.get("deps"), dict):
        others = [k for k in entry["deps"] if k not in found]
        current = dict(found)
        if others:
            current.update(cache.get_many(others) or {})
        if entry_is_current(entry, current):
            return _Lookup("hit", entry["value"])
    return _Lookup("miss", seen=found)


class Dependencies:
    """The generations the entry being built will be stored with (None: it will not be stored)."""

    def __init__(self, cache: Cache, read: CachedRead, generations: dict[str, Any] | None):
        self._cache = cache
        self._read = read
        self.generations = generations

    def add(self, namespace: Namespace, ids: Iterable[str]) -> None:
        """Depend on these ids' generations too. Call it BEFORE reading the data they cover."""
        if namespace not in self._read.depends_on:
            raise ValueError(f"the {self._read.name} does not declare a dependency on {namespace.name}")
        keys = [namespace.key(i) for i in ids]
        if self.generations is None or not keys:
            return
        found = read_generations(self._cache, keys)
        self.generations = None if found is None else {**self.generations, **found}


Builder = Callable[[Dependencies], Any]


def read_through(cache: Cache, read: CachedRead, subject: Any, patterns: Iterable[str], build: Builder) -> Served:
    """Cache-aside for one declared read of `subject` (a product id, or a normalized query).

    A current entry is a hit. Otherwise the generations the read declares are read first,
    then `build` reads the database (it may add dependencies it finds), and its result is
    stored with them, unless it is None, the read's pattern is off, or memcached is away.
    """
    key = read.key(subject)
    known = read.known_generations(subject)
    found = _lookup(cache, key, known, read.pattern in patterns)
    if found.status == "hit":
        _report(read, "hit")
        return Served(found.value, "hit")
    generations = None if found.status == "bypass" else read_generations(cache, known, known=found.seen)
    deps = Dependencies(cache, read, generations)  # read before the database, never after
    value = build(deps)
    if value is not None and deps.generations is not None:
        cache.set(key, {"value": value, "deps": deps.generations})
    _report(read, found.status)
    return Served(value, found.status)


def _report(read: CachedRead, status: str) -> None:
    """How the read was served: counted in the metrics, and told the client in `X-Cache`."""
    CACHE_REQUESTS.labels(SERVICE, read.pattern, status).inc()
    if has_request_context():
        @after_this_request
        def _header(response: Response) -> Response:
            response.headers["X-Cache"] = status
            return response
