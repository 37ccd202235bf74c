"""Browser fixtures: Debian's Chromium, headless, driven by Playwright (PyPI) for the page tests.

Playwright's own browser download is never used: `stack/install.sh` installs Debian's chromium and
Playwright launches that binary with the flags that keep it off the network (no background
networking, component updates, sync or QUIC). Every page runs in a fresh context whose requests may
only go to loopback: any other address is aborted and fails the test, so a page that reaches for a
CDN is caught here. Screenshots go to reports/browser/<test name>/ and are kept as test artifacts.
"""
from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

from stack.layout import REPO

SCREENSHOT_DIR = REPO / "reports" / "browser"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


@dataclass
class BrowserPage:
    """One page of a fresh browser context, with what it tried to reach off loopback."""

    page: Page
    artifacts: Path
    off_loopback: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        """Save a full-page screenshot as reports/browser/<test>/<name>.png; returns its path."""
        path = self.artifacts / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


# Per module, not per session: while Playwright's sync API runs, its event loop is the running loop of
# the main thread, and any later asyncio.run() there (the load generator's tests) would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: run `make install` (stack/install.sh browser)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def browser_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[BrowserPage]:
    """A page in a new context (no cookies or storage from other tests), loopback only."""
    artifacts = SCREENSHOT_DIR / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    wrapped = BrowserPage(page=page, artifacts=artifacts)

    def only_loopback(route: Route) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK_HOSTS:
            route.continue_()
        else:
            wrapped.off_loopback.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    page.on("pageerror", lambda error: wrapped.page_errors.append(str(error)))
    try:
        yield wrapped
    finally:
        context.close()
    assert not wrapped.off_loopback, f"the page reached off this machine: {wrapped.off_loopback}"
    assert not wrapped.page_errors, f"uncaught errors in the page's scripts: {wrapped.page_errors}"
