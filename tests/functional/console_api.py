"""Helpers of the console's tests: its API through a gateway (`ConsoleAt`: the local stack's, or a
release's in tests/cluster/), waiting for an action to finish, and leaving the session's stack as
the other tests expect it (catalog ×2, cache on)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import requests

from stack.control import Stack, console_token


@dataclass(frozen=True)
class ConsoleAt:
    """A console reached through a gateway: the gateway's base URL and the operator token."""
    gateway_url: str
    token: str

    def api(self, path: str) -> str:
        return f"{self.gateway_url}/console/api/{path}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def state(self) -> dict:
        response = requests.get(self.api("state"), timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_idle(self, timeout: float = 240) -> dict:
        """Wait until no action runs; the console's state then."""
        deadline = time.monotonic() + timeout
        while True:
            current = self.state()
            if current["running"] is None:
                return current
            assert time.monotonic() < deadline, f"the console still runs '{current['running']}' after {timeout:.0f}s"
            time.sleep(0.5)

    def restore(self, catalog_replicas: int = 2) -> None:
        """No load run, the cache on, catalog at `catalog_replicas`: through the console's own actions."""
        requests.delete(self.api("actions/load"), headers=self.headers(), timeout=30)
        self.wait_idle()
        if self.state()["cache_patterns"] != "objects,queries":
            requests.post(self.api("actions/cache"), json={"patterns": ["objects", "queries"]},
                          headers=self.headers(), timeout=30)
            self.wait_idle()
        running = [r for r in self.state()["replicas"]["catalog"] if r["state"] == "running"]
        if len(running) != catalog_replicas:
            requests.post(self.api("actions/scale"), json={"service": "catalog", "replicas": catalog_replicas},
                          headers=self.headers(), timeout=30)
            self.wait_idle()


def at(stack: Stack) -> ConsoleAt:
    return ConsoleAt(stack.layout.gateway_url, console_token(stack.layout))


def headers(stack: Stack) -> dict[str, str]:
    return at(stack).headers()


def api(stack: Stack, path: str) -> str:
    return at(stack).api(path)


def state(stack: Stack) -> dict:
    return at(stack).state()


def wait_idle(stack: Stack, timeout: float = 240) -> dict:
    return at(stack).wait_idle(timeout)


def restore(stack: Stack) -> None:
    """No load run, catalog ×2, the cache on; the session's Stack re-reads the state file."""
    at(stack).restore()
    stack.reload()
    stack.scale("catalog", 2)
