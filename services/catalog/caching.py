"""The catalog's cache-aside: one helper, `read_through`, for every cached read declared in
services/shared/cache_deps.py (the product page, the product list, the category counts).

Two patterns (DESIGN.md), each switchable with `CACHE_PATTERNS`: *cached objects* (the
assembled product page, key `page:v2:<product id>`) and *cached queries* (a page of the
product list or the category counts, key = hash of the normalized query). `read_through` is
the only code that looks an entry up, builds it on a miss and stores it, and the only place
that reports how a read was served: the `scaleshop_cache_requests_total` metric, and the
`X-Cache` header (`hit`, `miss` or `bypass`) of the response it renders (`Served.response`).

What a hit costs (profiled with py-spy; `make bench` part `bare`): an entry holds the JSON
body ready to send, encoded once when it is built, so a hit neither decodes nor re-encodes
it; and a hit is one memcached round trip: the look-up asks for the entry together with the
generations it depended on last time this process saw it (`_KnownDependencies`), so only an
entry whose dependencies changed since needs a second one.

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

import msgspec
from flask import Response

from services.shared.cache import Cache, entry_is_current, read_generations
from services.shared.cache_deps import CachedRead, Namespace
from services.shared.metrics import CACHE_REQUESTS

SERVICE = "catalog"


@dataclass
class Served:
    """A read's result as the JSON body to send (None: nothing there, never stored) and how the
    cache served it: hit, miss or bypass."""

    body: bytes | None
    status: str

    @property
    def value(self) -> Any:
        """The result decoded (for callers that need the data rather than the body)."""
        return None if self.body is None else msgspec.json.decode(self.body)

    def response(self) -> Response:
        """The body as the answer, with `X-Cache` telling the client how it was served."""
        if self.body is None:
            raise ValueError("nothing to send: the read found nothing")
        return Response(self.body, mimetype="application/json", headers={"X-Cache": self.status})


def _plain(value: Any) -> Any:
    """What msgspec does not encode itself: the database's subclasses of int (a price above 2³¹
    cents comes back as bson's Int64)."""
    if isinstance(value, int):
        return int(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


# compact UTF-8 JSON, keys in the order the builder made them
_encode = msgspec.json.Encoder(enc_hook=_plain).encode


class _KnownDependencies:
    """Per process: the generation keys each entry depended on when last seen, beyond those its
    read knows before building (the page's profiles), so that the next look-up fetches them
    with the entry. Only a hint: whatever it holds, an entry is a hit only if every generation
    it records is current, fetched in the look-up or after it."""

    LIMIT = 50_000

    def __init__(self) -> None:
        self._keys: dict[str, tuple[str, ...]] = {}

    def get(self, key: str) -> tuple[str, ...]:
        return self._keys.get(key, ())

    def remember(self, key: str, dep_keys: Iterable[str], known: list[str]) -> None:
        others = tuple(k for k in dep_keys if k not in known)
        if self._keys.get(key) == others:
            return
        if len(self._keys) >= self.LIMIT:
            self._keys.pop(next(iter(self._keys)), None)  # the oldest remembered
        self._keys[key] = others


_known_dependencies = _KnownDependencies()


@dataclass
class _Lookup:
    status: str
    body: bytes | None = None
    seen: dict[str, Any] = field(default_factory=dict)  # generations fetched with the entry


def _lookup(cache: Cache, key: str, known: list[str], enabled: bool) -> _Lookup:
    """One multi-get of the entry, its read's known dependencies and those it named last time
    (a second round trip only for dependencies it names that were not fetched)."""
    if not enabled:
        return _Lookup("bypass")
    found = cache.get_many([key, *known, *_known_dependencies.get(key)])
    if found is None:
        return _Lookup("bypass")
    entry = found.pop(key, None)
    if isinstance(entry, dict) and isinstance(entry.get("deps"), dict) and isinstance(entry.get("body"), bytes):
        deps: dict[str, Any] = entry["deps"]
        others = [k for k in deps if k not in found]
        current = dict(found)
        if others:  # not known here yet: fetched now, and with the entry from now on
            _known_dependencies.remember(key, deps, known)
            current.update(cache.get_many(others) or {})
        if entry_is_current(entry, current):
            return _Lookup("hit", entry["body"])
    return _Lookup("miss", seen=found)


class Dependencies:
    """The generations the entry being built will be stored with (None: it will not be stored)."""

    def __init__(self, cache: Cache, read: CachedRead, generations: dict[str, Any] | None,
                 seen: dict[str, Any] | None = None):
        self._cache = cache
        self._read = read
        self.generations = generations
        self._seen = seen or {}  # generations fetched by the look-up: read before the data too

    def add(self, namespace: Namespace, ids: Iterable[str]) -> None:
        """Depend on these ids' generations too. Call it BEFORE reading the data they cover."""
        if namespace not in self._read.depends_on:
            raise ValueError(f"the {self._read.name} does not declare a dependency on {namespace.name}")
        keys = [namespace.key(i) for i in ids]
        if self.generations is None or not keys:
            return
        found = read_generations(self._cache, keys, known=self._seen)
        self.generations = None if found is None else {**self.generations, **found}


Builder = Callable[[Dependencies], Any]


def read_through(cache: Cache, read: CachedRead, subject: Any, patterns: Iterable[str], build: Builder) -> Served:
    """Cache-aside for one declared read of `subject` (a product id, or a normalized query).

    A current entry is a hit. Otherwise the generations the read declares are read first,
    then `build` reads the database (it may add dependencies it finds), and its result is
    encoded as JSON once and stored with them, unless it is None, the read's pattern is off,
    or memcached is away.
    """
    key = read.key(subject)
    known = read.known_generations(subject)
    found = _lookup(cache, key, known, read.pattern in patterns)
    if found.status == "hit":
        _report(read, "hit")
        return Served(found.body, "hit")
    generations = None if found.status == "bypass" else read_generations(cache, known, known=found.seen)
    deps = Dependencies(cache, read, generations, found.seen)  # read before the database, never after
    value = build(deps)
    body = None if value is None else _encode(value)
    if body is not None and deps.generations is not None:
        cache.set(key, {"body": body, "deps": deps.generations})
        _known_dependencies.remember(key, deps.generations, known)
    _report(read, found.status)
    return Served(body, found.status)


def _report(read: CachedRead, status: str) -> None:
    """How the read was served, counted in the metrics (the client is told by `Served.response`)."""
    CACHE_REQUESTS.labels(SERVICE, read.pattern, status).inc()
