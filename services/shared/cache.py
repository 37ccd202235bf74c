"""Memcached access for cache-aside: a client that never fails a request.

A look-up or store that cannot reach memcached returns as a miss (or does nothing)
and marks the cache as down; callers answer from the database, and the next call
tries memcached again, so caching resumes by itself when it returns.
"""
from __future__ import annotations

import logging
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

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        try:
            values = self._client.get_many(keys)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return {}
        self._ok()
        return values

    def set(self, key: str, value: Any, ttl: int | None = None) -> bool:
        try:
            self._client.set(key, value, expire=ttl or self.default_ttl, noreply=False)
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)
            return False
        self._ok()
        return True

    def add(self, key: str, value: Any, ttl: int | None = None) -> bool:
        """Store only if absent; False when present or when memcached is down."""
        try:
            stored = self._client.add(key, value, expire=ttl or self.default_ttl, noreply=False)
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

    def check(self) -> None:
        """Raise if no memcached server answers (used by /readyz)."""
        for client in self._client.clients.values():
            client.version()
