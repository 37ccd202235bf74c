"""Memcached access for cache-aside: a client that never fails a request, and the
namespace generations that make cached data stale at once after a write.

A look-up that cannot reach memcached says so (None), callers answer from the database
(`X-Cache: bypass`), and the next call tries memcached again, so caching resumes by
itself when it returns.
"""
from __future__ import annotations

import functools
import logging
import random
import time
from typing import Any

from pymemcache import serde
from pymemcache.client.base import PooledClient
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import MemcacheError

from .config import Settings

log = logging.getLogger(__name__)


class CacheUnavailable(Exception):
    """memcached could not be reached for this call; `refused`: it is not running at all."""

    def __init__(self, message: str, refused: bool = False):
        super().__init__(message)
        self.refused = refused


INVALIDATION_ATTEMPTS = 4


class Cache:
    """Cache-aside client: keys spread over the servers by rendezvous hashing, short timeouts.

    Every call reaches the real server (pymemcache's HashClient is not used because it
    answers a default value, silently, while it considers a server failed); a server that
    just failed is skipped for `BREAKER_SECONDS`, and that too is reported as a failure.
    """

    BREAKER_SECONDS = 0.5

    def __init__(self, settings: Settings):
        timeout = settings.memcached_timeout_ms / 1000
        self._clients: dict[str, PooledClient] = {}
        self._hash = RendezvousHash()
        for item in settings.memcached_servers:
            host, _, port = item.rpartition(":")
            self._clients[item] = PooledClient(
                (host, int(port)), connect_timeout=timeout, timeout=timeout, serde=serde.pickle_serde,
                max_pool_size=32, no_delay=True,
            )
            self._hash.add_node(item)
        self._single = next(iter(self._clients))
        self._node_of = functools.lru_cache(maxsize=65536)(self._hash.get_node)  # keys repeat: hash each once
        self._broken_until: dict[str, float] = {}
        self.default_ttl = settings.cache_ttl_seconds
        self._last_warning = 0.0

    def _server(self, key: str) -> str:
        if len(self._clients) == 1:  # hashing (murmur3 in pure Python) was 16% of a cache hit's CPU
            return self._single
        return self._node_of(key)

    def _run(self, server: str, call, force: bool = False):
        if not force and time.monotonic() < self._broken_until.get(server, 0.0):
            raise CacheUnavailable(f"{server} failed moments ago")
        try:
            try:
                return call(self._clients[server])
            except (OSError, MemcacheError):
                # A pooled connection from before a memcached restart fails once and is
                # dropped; only a second failure, on a fresh connection, means it is down.
                return call(self._clients[server])
        except (OSError, MemcacheError) as exc:
            self._broken_until[server] = time.monotonic() + self.BREAKER_SECONDS
            if time.monotonic() - self._last_warning > 5:
                self._last_warning = time.monotonic()
                log.warning("memcached %s unavailable: %s", server, exc)
            raise CacheUnavailable(str(exc), refused=isinstance(exc, ConnectionRefusedError)) from None

    def _ttl(self, ttl: int | None) -> int:
        return self.default_ttl if ttl is None else ttl

    def get_many(self, keys: list[str]) -> dict[str, Any] | None:
        """Values found (one round trip per server); None when memcached cannot be reached."""
        by_server: dict[str, list[str]] = {}
        for key in keys:
            by_server.setdefault(self._server(key), []).append(key)
        found: dict[str, Any] = {}
        try:
            for server, server_keys in by_server.items():
                found.update(self._run(server, lambda c, k=server_keys: c.get_many(k)))
        except CacheUnavailable:
            return None
        return found

    def get(self, key: str) -> Any | None:
        """The value, or None when absent or when memcached cannot be reached."""
        values = self.get_many([key])
        return None if values is None else values.get(key)

    def set(self, key: str, value: Any, ttl: int | None = None) -> bool:
        return self._store("set", key, value, ttl)

    def set_now(self, key: str, value: Any, ttl: int | None = None) -> None:
        """Like set, ignoring the breaker and raising CacheUnavailable (for invalidations)."""
        self._run(self._server(key), lambda c: c.set(key, value, expire=self._ttl(ttl), noreply=False), force=True)

    def add(self, key: str, value: Any, ttl: int | None = None) -> bool:
        """Store only if absent; False when present or when memcached is down. ttl=0: no expiry."""
        return self._store("add", key, value, ttl)

    def _store(self, command: str, key: str, value: Any, ttl: int | None) -> bool:
        """memcached's `set` or `add`, waiting for its answer; False when it did not store or is down."""
        try:
            return bool(self._run(self._server(key), lambda c: getattr(c, command)(
                key, value, expire=self._ttl(ttl), noreply=False)))
        except CacheUnavailable:
            return False

    def delete(self, key: str) -> bool:
        try:
            self._run(self._server(key), lambda c: c.delete(key, noreply=False))
        except CacheUnavailable:
            return False
        return True

    def incr(self, key: str) -> int | None:
        """Add one; None when the key is absent. Raises CacheUnavailable.

        Always tries the server, even right after a failure: an invalidation must not be
        skipped because memcached was away a moment ago.
        """
        return self._run(self._server(key), lambda c: c.incr(key, 1, noreply=False), force=True)

    def check(self) -> None:
        """Raise unless every memcached server answers (used by /readyz)."""
        for server in self._clients:
            self._broken_until.pop(server, None)
            self._run(server, lambda c: c.version())


# ---- Namespace generations: how a write makes cached data unreachable at once ------------
#
# A cached entry records the generation of every namespace its data came from (a product,
# a user's profile, "all listings"). A write bumps the generations it touches *after* its
# database write and *before* it answers. A reader reads the generations *before* it reads
# the database and stores them with what it read; an entry whose recorded generations are
# not all current is a miss. So an entry built from data older than a write can never be
# served after that write returned, even if a slow reader stores it late (the cache-aside
# race), and no key ever has to be found and deleted. Which read depends on which
# namespaces, and which write bumps which, is declared in cache_deps.py.

def _fresh_generation() -> int:
    # Random start: a generation key that was evicted never comes back at an old value.
    return random.getrandbits(60)


def read_generations(cache: Cache, keys: list[str], known: dict[str, Any] | None = None) -> dict[str, int] | None:
    """Current generation of each key (created where missing); None when memcached is down."""
    found = {k: v for k, v in (known or {}).items() if k in keys}
    missing = [k for k in keys if k not in found]
    if missing:
        values = cache.get_many(missing)
        if values is None:
            return None
        found.update(values)
    for key in keys:
        if not isinstance(found.get(key), int):
            cache.add(key, _fresh_generation(), ttl=0)
            value = cache.get(key)
            if not isinstance(value, int):
                return None
            found[key] = value
    return found


def bump_generations(cache: Cache, keys: list[str]) -> bool:
    """Make every entry that depends on these namespaces stale. False if memcached was unreachable.

    A memcached that refuses connections is down for every replica, and it comes back
    empty, so nothing stale survives it. One that is up but did not answer (a timeout or
    a reset connection) may not have applied the bump and still serves the old entries to
    other replicas, so the bump is tried again, up to `INVALIDATION_ATTEMPTS` times, before
    the write answers (a bump applied twice does no harm).
    """
    ok = True
    for key in keys:
        for attempt in range(1, INVALIDATION_ATTEMPTS + 1):
            try:
                if cache.incr(key) is None:  # absent (evicted): any fresh value will do
                    cache.set_now(key, _fresh_generation(), ttl=0)
                break
            except CacheUnavailable as exc:
                if exc.refused or attempt == INVALIDATION_ATTEMPTS:
                    log.error("could not invalidate %s after %d attempt(s): %s", key, attempt, exc)
                    ok = False
                    break
                time.sleep(0.05 * attempt)
    return ok


def entry_is_current(entry: Any, generations: dict[str, Any]) -> bool:
    deps = entry.get("deps") if isinstance(entry, dict) else None
    return isinstance(deps, dict) and all(generations.get(k) == v for k, v in deps.items())
