"""Memcached access for cache-aside: a client that never fails a request.

A look-up or store that cannot reach memcached returns as a miss (or does nothing)
and marks the cache as down; callers answer from the database, and the next call
tries memcached again, so caching resumes by itself when it returns.
"""
from __future__ import annotations

import logging
import random
import time
from typing import Any

from pymemcache.client.hash import HashClient
from pymemcache import serde

from .config import Settings

log = logging.getLogger(__name__)


class Cache:
    """Thin cache-aside wrapper over pymemcache's HashClient with short timeouts."""

    def __init__(self, settings: Settings):
        timeout = settings.memcached_timeout_ms / 1000
        servers = []
        for item in settings.memcached_servers:
            host, _, port = item.rpartition(":")
            servers.append((host, int(port)))
        self._client = HashClient(
            servers,
            connect_timeout=timeout,
            timeout=timeout,
            serde=serde.pickle_serde,
            use_pooling=True,
            max_pool_size=32,
            retry_attempts=1,
            dead_timeout=1,
            ignore_exc=False,
        )
        self.default_ttl = settings.cache_ttl_seconds
        self.last_error: str | None = None
        self.last_error_at = 0.0

    def _failed(self, exc: Exception) -> None:
        if self.last_error is None or time.monotonic() - self.last_error_at > 5:
            log.warning("memcached unavailable: %s", exc)
        self.last_error, self.last_error_at = f"{type(exc).__name__}: {exc}", time.monotonic()

    def _ok(self) -> None:
        self.last_error = None

    def get(self, key: str) -> Any | None:
        try:
            value = self._client.get(key)
        except Exception as exc:  # noqa: BLE001 - any cache failure is a miss
            self._failed(exc)
            return None
        self._ok()
        return value

    def get_many(self, keys: list[str]) -> dict[str, Any] | None:
        """Values found (one round trip per server); None when memcached cannot be reached."""
        try:
            values = self._client.get_many(keys)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return None
        self._ok()
        return values

    def incr(self, key: str) -> int | None:
        """Add one; None when the key is absent or memcached cannot be reached."""
        try:
            value = self._client.incr(key, 1, noreply=False)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return None
        self._ok()
        return value

    def set(self, key: str, value: Any, ttl: int | None = None) -> bool:
        try:
            self._client.set(key, value, expire=self.default_ttl if ttl is None else ttl, noreply=False)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return False
        self._ok()
        return True

    def add(self, key: str, value: Any, ttl: int | None = None) -> bool:
        """Store only if absent; False when present or when memcached is down. ttl=0: no expiry."""
        try:
            stored = self._client.add(key, value, expire=self.default_ttl if ttl is None else ttl, noreply=False)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return False
        self._ok()
        return bool(stored)

    def delete(self, key: str) -> bool:
        try:
            self._client.delete(key, noreply=False)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return False
        self._ok()
        return True

    @property
    def down(self) -> bool:
        """True when the last call could not reach memcached."""
        return self.last_error is not None

    def check(self) -> None:
        """Raise if no memcached server answers (used by /readyz)."""
        for client in self._client.clients.values():
            client.version()


# ---- Namespace generations: how a write makes cached data unreachable at once ------------
#
# A cached entry records the generation of every namespace its data came from (a product,
# a user's profile, "all listings"). A write bumps the generations it touches *after* its
# database write and *before* it answers. A reader reads the generations *before* it reads
# the database and stores them with what it read; an entry whose recorded generations are
# not all current is a miss. So an entry built from data older than a write can never be
# served after that write returned, even if a slow reader stores it late (the cache-aside
# race), and no key ever has to be found and deleted.

def user_generation_key(user_id: str) -> str:
    """Bumped by the user service whenever a public profile changes."""
    return f"gen:user:{user_id}"


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
    """Make every entry that depends on these namespaces stale. False if memcached was unreachable."""
    ok = True
    for key in keys:
        if cache.incr(key) is None and not cache.down:
            cache.set(key, _fresh_generation(), ttl=0)  # absent (evicted): any fresh value will do
        ok = ok and not cache.down
    return ok


def entry_is_current(entry: Any, generations: dict[str, Any]) -> bool:
    deps = entry.get("deps") if isinstance(entry, dict) else None
    return isinstance(deps, dict) and all(generations.get(k) == v for k, v in deps.items())
