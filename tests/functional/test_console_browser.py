"""The lab console in Debian's Chromium (Playwright), against the session's stack: the operator
token typed in, a load started at a fixed rate, catalog scaled 2→3 until the third replica's
throughput shows, back to 2, the cache switched off until the hit ratio is zero and the round trips
per request rise, then on again; a screenshot of each state in reports/browser/<test>/, and the
delay from each action to its visible effect printed (the README quotes them).

The journey (`console_journey`) takes the console as a `ConsoleAt` (a gateway and a token), so
tests/cluster/test_console.py runs the same one against a release."""
from __future__ import annotations

import subprocess
import sys
import time

from playwright.sync_api import Page

from stack.control import Stack
from stack.layout import REPO
from tests.functional.browser import BrowserPage
from tests.functional.console_api import ConsoleAt, at, restore, wait_idle

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


def catalog_replicas(console: ConsoleAt) -> set[str]:
    """The catalog replicas running now (in a cluster, not those terminating in their drain)."""
    return {replica["name"] for replica in console.state()["replicas"]["catalog"] if replica["state"] == "running"}


def act(page: Page, button: str) -> float:
    page.click(button)
    page.wait_for_function("() => !document.getElementById('action-result').textContent.includes('running…')")
    result = page.inner_text("#action-result")
    assert "accepted" in result or ": ok" in result, result
    return time.monotonic()


def console_journey(console: ConsoleAt, browser_page: BrowserPage, timeout: float = 90,
                    load_seconds: int = 240) -> dict[str, float]:
    """Load (for `load_seconds`: longer than the journey), scale catalog 2→3 and back, cache off
    and on, each seen on the page within `timeout` seconds; a screenshot of each state; the delays
    from each action to its effect."""
    page = browser_page.page
    delays: dict[str, float] = {}
    page.goto(f"{console.gateway_url}/console/")
    page.fill("#token", console.token)
    page.click("#token-form button")
    assert page.inner_text("#token-state") == "token set"
    assert console.token not in page.url

    page.fill("#load-rate", str(LOAD_RATE))
    page.fill("#load-duration", str(load_seconds))
    page.fill("#load-mix", "product=70,browse=30")
    act(page, "#load-start")
    two = catalog_replicas(console)
    assert len(two) == 2, two
    wait_page(page, lambda: two <= serving(page) and min(latest(page, "hit-ratio").values(), default=0) > 0.3,
              timeout, "both catalog replicas serving")
    round_trips_cached = latest(page, "round-trips")["catalog"]
    browser_page.screenshot("1-load-catalog-2")

    page.select_option("#scale-service", "catalog")
    page.fill("#scale-replicas", "3")
    acted = act(page, "#scale-form button[type=submit]")
    console.wait_idle()
    (third,) = catalog_replicas(console) - two
    wait_page(page, lambda: latest(page, "throughput").get(third, 0) > 0, timeout, f"{third}'s throughput")
    delays["scale catalog 2→3 → the third replica's throughput shown"] = time.monotonic() - acted
    assert page.locator(f'#replicas [data-replica="{third}"].ready').count() == 1
    browser_page.screenshot("2-catalog-3")
    page.fill("#scale-replicas", "2")
    act(page, "#scale-form button[type=submit]")
    console.wait_idle()

    page.uncheck("#cache-objects")
    page.uncheck("#cache-queries")
    acted = act(page, "#cache-form button[type=submit]")
    console.wait_idle()
    restarted = time.monotonic()
    wait_page(page, lambda: latest(page, "hit-ratio") and max(latest(page, "hit-ratio").values()) == 0
              and latest(page, "round-trips").get("catalog", 0) > round_trips_cached, timeout,
              "the hit ratio at zero and more round trips")
    delays["cache off (rolling restart of 2 replicas)"] = restarted - acted
    delays["cache off, restart done → hit ratio 0 shown"] = time.monotonic() - restarted
    browser_page.screenshot("3-cache-off")

    page.check("#cache-objects")
    page.check("#cache-queries")
    acted = act(page, "#cache-form button[type=submit]")
    console.wait_idle()
    restarted = time.monotonic()
    wait_page(page, lambda: min(latest(page, "hit-ratio").values(), default=0) > 0.3, timeout, "the hit ratio back up")
    delays["cache on, restart done → hit ratio > 0.3 shown"] = time.monotonic() - restarted
    labels = [m["label"] for m in page.evaluate("fetch('api/marks').then(r => r.json())")["marks"]]
    assert {"scale catalog=3", "cache off", "cache objects,queries"} <= set(labels)
    browser_page.screenshot("4-cache-on")
    for what, seconds in delays.items():
        print(f"[console] {what}: {seconds:.1f} s")
    return delays


def test_console_shows_cause_and_effect(stack: Stack, browser_page: BrowserPage):
    subprocess.run([sys.executable, "-m", "loadgen", "seed", "--target", stack.layout.gateway_url, *SEED],
                   check=True, cwd=REPO, capture_output=True, timeout=300)
    wait_idle(stack)
    try:
        console_journey(at(stack), browser_page)
    finally:
        restore(stack)
