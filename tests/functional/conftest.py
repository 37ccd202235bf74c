"""Starts one isolated local stack for the whole test session and stops it at the end.

The stack has its own data folder (a pytest temp dir) and its own ports (every port
shifted by SCALESHOP_TEST_PORT_OFFSET, default stack/layout.py's TEST_PORT_OFFSET), so it
never touches a stack started with `make up`, `make chaos` or `make bench`. It is stopped
by pid when the session ends, even on failure.
"""
from __future__ import annotations

import atexit
import itertools
import os
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from pymongo import MongoClient

from stack.control import Stack
from stack.layout import REPO, TEST_PORT_OFFSET, TEST_SECOND_STACK_SHIFT, Layout
from tests.functional.browser import browser, browser_page  # noqa: F401  (the page tests' fixtures)

PORT_OFFSET = int(os.environ.get("SCALESHOP_TEST_PORT_OFFSET", TEST_PORT_OFFSET))
# The ports of a second stack, for tests that need its layout but never start it.
SECOND_STACK_PORT_OFFSET = PORT_OFFSET + TEST_SECOND_STACK_SHIFT
# Settings every replica of the test stack gets (nothing leaks in from the caller's env).
TEST_SETTINGS = {"LOG_LEVEL": "INFO", "GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "4",
                 "GUNICORN_GRACEFUL_TIMEOUT": "10"}


def _interrupt_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # pytest then runs the teardown: the stack is stopped


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    layout = Layout(
        run_dir=tmp_path_factory.mktemp("stack"),
        cache_dir=Path(os.environ.get("SCALESHOP_CACHE", REPO / ".cache")).resolve(),
        port_offset=PORT_OFFSET,
    )
    the_stack = Stack(layout, log=lambda msg: print(f"[test stack] {msg}"))
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    atexit.register(the_stack.down)  # last resort if the session dies before the finalizer
    try:
        the_stack.up(settings=TEST_SETTINGS)
        yield the_stack
    finally:
        the_stack.down()
        atexit.unregister(the_stack.down)


@pytest.fixture(scope="session")
def gateway(stack: Stack) -> str:
    return stack.layout.gateway_url


@pytest.fixture(scope="session")
def db(stack: Stack):
    """The stack's database, for tests that check what an API call wrote (or inject a fault)."""
    client = MongoClient(f"mongodb://127.0.0.1:{stack.layout.db_port}/", serverSelectionTimeoutMS=10_000)
    try:
        yield client["scaleshop"]
    finally:
        client.close()


def replica_url(stack: Stack, name: str) -> str:
    return f"http://127.0.0.1:{stack.replicas[name].port}"


@pytest.fixture(scope="session")
def auth_secret(stack: Stack) -> str:
    return (stack.layout.run_dir / "auth_secret").read_text().strip()


_counter = itertools.count()


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{next(_counter)}-{uuid.uuid4().hex[:8]}@example.com"


@dataclass
class Account:
    id: str
    email: str
    password: str
    display_name: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def sign_up(base_url: str, display_name: str = "Test User", password: str = "correct horse battery",
            timeout: float = 10) -> Account:
    """Create an account and sign in, through the public API, checking the bodies of DESIGN.md."""
    email = unique_email()
    created = requests.post(f"{base_url}/v1/users", json={"email": email, "password": password,
                                                           "display_name": display_name}, timeout=timeout)
    assert created.status_code == 201, created.text
    user = created.json()
    assert user["email"] == email and user["display_name"] == display_name and user["id"], user
    session = requests.post(f"{base_url}/v1/sessions", json={"email": email, "password": password}, timeout=timeout)
    assert session.status_code == 201, session.text
    assert session.json()["user_id"] == user["id"], session.text
    return Account(user["id"], email, password, display_name, session.json()["token"])


@pytest.fixture
def account(gateway: str) -> Account:
    return sign_up(gateway)


# Modules that leave the shared stack with much more data and queued work (tens of thousands
# of imported products and their events) run last, in this order, so they cannot slow the
# others down. The chaos run goes first of the two: after the jobs tests, the database (FerretDB
# on SQLite, one writer) is saturated for minutes folding their 10,000-product imports' events.
HEAVY_MODULES = ("test_chaos.py", "test_jobs.py")


def pytest_collection_modifyitems(items):
    def weight(item) -> int:
        name = item.path.name
        return HEAVY_MODULES.index(name) + 1 if name in HEAVY_MODULES else 0

    items.sort(key=weight)
