"""Helpers of the console's functional and browser tests: its token, its API, waiting for an action
to finish, and leaving the session's stack as the other tests expect it (catalog ×2, cache on)."""
from __future__ import annotations

import time

import requests

from stack.control import Stack, console_token


def headers(stack: Stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {console_token(stack.layout)}"}


def api(stack: Stack, path: str) -> str:
    return f"{stack.layout.gateway_url}/console/api/{path}"


def state(stack: Stack) -> dict:
    response = requests.get(api(stack, "state"), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_idle(stack: Stack, timeout: float = 240) -> dict:
    """Wait until no action runs; the console's state then."""
    deadline = time.monotonic() + timeout
    while True:
        current = state(stack)
        if current["running"] is None:
            return current
        assert time.monotonic() < deadline, f"the console still runs '{current['running']}' after {timeout:.0f}s"
        time.sleep(0.5)


def restore(stack: Stack) -> None:
    """No load run, catalog ×2, the cache on; the session's Stack re-reads the state file."""
    requests.delete(api(stack, "actions/load"), headers=headers(stack), timeout=30)
    wait_idle(stack)
    if state(stack)["cache_patterns"] != "objects,queries":
        requests.post(api(stack, "actions/cache"), json={"patterns": ["objects", "queries"]},
                      headers=headers(stack), timeout=30)
        wait_idle(stack)
    stack.reload()
    stack.scale("catalog", 2)
