"""The lab console in Debian's Chromium (Playwright), against the session's stack: the operator
token typed in, a load started at a fixed rate, catalog scaled 2→3 until the third replica's
throughput shows, back to 2, the cache switched off until the hit ratio is zero and the round trips
per request rise, then on again; a screenshot of each state in reports/browser/<test>/, and the
delay from each action to its visible effect printed (the README quotes them)."""
from __future__ import annotations

import subprocess
import sys
import time

from playwright.sync_api import Page

from stack.control import Stack, console_token
from stack.layout import REPO
from tests.functional.browser import BrowserPage
from tests.functional.console_api import restore, wait_idle

LOAD_RATE = 15  # requests/s: the catalog keeps up with it with its cache off on a 2-core machine
SEED = ["--seed", "1", "--users", "2", "--products", "200", "--reviews", "0"]


def latest(page: Page, panel: str) -> dict[str, float]:
    """A panel's latest value per series, as the page lists them under the chart."""
    items = page.eval_on_selector_all(f"#panel-{panel} .latest li",
                                      "els => els.map(e => [e.dataset.series, e.dataset.value])")
    return {name: float(value) for name, value in items if value not in ("null", "undefined")}


def serving(page: Page) -> set[str]:
    return {name for name, value in latest(page, "throughput").items() if value > 0}


def wait_page(page: Page, check, timeout: float, what: str) -> float:
    """Poll what the page shows until `check` is true; the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what}: not on the page within {timeout:.0f}s"
        page.wait_for_timeout(500)
    return time.monotonic() - started


def act(page: Page, button: str) -> float:
    page.click(button)
    page.wait_for_function("() => !document.getElementById('action-result').textContent.includes('running…')")
    result = page.inner_text("#action-result")
    assert "accepted" in result or ": ok" in result, result
    return time.monotonic()


def test_console_shows_cause_and_effect(stack: Stack, browser_page: BrowserPage):
    subprocess.run([sys.executable, "-m", "loadgen", "seed", "--target", stack.layout.gateway_url, *SEED],
                   check=True, cwd=REPO, capture_output=True, timeout=300)
    wait_idle(stack)
    page = browser_page.page
    delays: dict[str, float] = {}
    try:
        page.goto(f"{stack.layout.gateway_url}/console/")
        page.fill("#token", console_token(stack.layout))
        page.click("#token-form button")
        assert page.inner_text("#token-state") == "token set"
        assert console_token(stack.layout) not in page.url

        page.fill("#load-rate", str(LOAD_RATE))
        page.fill("#load-duration", "240")
        page.fill("#load-mix", "product=70,browse=30")
        act(page, "#load-start")
        wait_page(page, lambda: {"catalog-1", "catalog-2"} <= serving(page)
                  and min(latest(page, "hit-ratio").values(), default=0) > 0.3, 90, "both catalog replicas serving")
        round_trips_cached = latest(page, "round-trips")["catalog"]
        browser_page.screenshot("1-load-catalog-2")

        page.select_option("#scale-service", "catalog")
        page.fill("#scale-replicas", "3")
        acted = act(page, "#scale-form button[type=submit]")
        wait_page(page, lambda: latest(page, "throughput").get("catalog-3", 0) > 0, 90, "catalog-3's throughput")
        delays["scale catalog 2→3 → catalog-3's throughput shown"] = time.monotonic() - acted
        assert page.locator('#replicas [data-replica="catalog-3"].ready').count() == 1
        browser_page.screenshot("2-catalog-3")
        wait_idle(stack)
        page.fill("#scale-replicas", "2")
        act(page, "#scale-form button[type=submit]")
        wait_idle(stack)

        page.uncheck("#cache-objects")
        page.uncheck("#cache-queries")
        acted = act(page, "#cache-form button[type=submit]")
        wait_idle(stack)
        restarted = time.monotonic()
        wait_page(page, lambda: latest(page, "hit-ratio") and max(latest(page, "hit-ratio").values()) == 0
                  and latest(page, "round-trips").get("catalog", 0) > round_trips_cached, 90,
                  "the hit ratio at zero and more round trips")
        delays["cache off (rolling restart of 2 replicas)"] = restarted - acted
        delays["cache off, restart done → hit ratio 0 shown"] = time.monotonic() - restarted
        browser_page.screenshot("3-cache-off")

        page.check("#cache-objects")
        page.check("#cache-queries")
        acted = act(page, "#cache-form button[type=submit]")
        wait_idle(stack)
        restarted = time.monotonic()
        wait_page(page, lambda: min(latest(page, "hit-ratio").values(), default=0) > 0.3, 90, "the hit ratio back up")
        delays["cache on, restart done → hit ratio > 0.3 shown"] = time.monotonic() - restarted
        labels = [m["label"] for m in page.evaluate("fetch('api/marks').then(r => r.json())")["marks"]]
        assert {"scale catalog=3", "cache off", "cache objects,queries"} <= set(labels)
        browser_page.screenshot("4-cache-on")
    finally:
        restore(stack)
    for what, seconds in delays.items():
        print(f"[console] {what}: {seconds:.1f} s")
