"""The shop at / (charts/scaleshop/files/shop/) in a real browser, against the test stack's gateway.

Headless Debian Chromium through Playwright (tests/functional/browser.py: loopback only, uncaught
script errors fail the test); every test also fails on a Content-Security-Policy violation. The
journeys are the user's: sign up, sell, find by search, review, watch the product page go from a
cache miss to a hit in "Under the hood"; import a file with bad items; a review holding markup.
Screenshots are kept in reports/browser/<test>/.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from playwright.sync_api import Page, expect

from stack import servers
from stack.layout import REPO
from tests.functional.api_checks import TIMEOUT, create_product
from tests.functional.conftest import replica_url, sign_up, unique_email

CACHE = Path(os.environ.get("SCALESHOP_CACHE", REPO / ".cache")).resolve()
HELM = CACHE / "bin" / "helm"
CSP_DIRECTIVES = {"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'"}


def watch(page: Page, problems: list[str]) -> None:
    """Collect CSP violations (Chromium reports them on the console) and uncaught errors of `page`."""
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text else None)
    page.on("pageerror", lambda error: problems.append(str(error)))


def hood_cache(page: Page, request: str) -> str:
    """The X-Cache cell of the last row of "Under the hood" for `request` (e.g. "GET /v1/products/<id>")."""
    exact = re.compile(f"^{re.escape(request)}$")
    row = page.locator("#hood-rows tr").filter(has=page.locator("td.request", has_text=exact))
    expect(row.last).to_be_visible()
    return row.last.locator("td").nth(4).inner_text()


def sign_up_in_page(page: Page, gateway: str, display_name: str) -> str:
    email = unique_email("shopper")
    page.goto(f"{gateway}/#/signup")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_label("Display name").fill(display_name)
    page.get_by_role("button", name="Create my account").click()
    # Slow on purpose: the password's hash (argon2) takes a while on a busy machine.
    expect(page.locator("#notice")).to_contain_text(f"Welcome, {display_name}.", timeout=30_000)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return email


@pytest.fixture
def problems(browser_page) -> list[str]:
    found: list[str] = []
    watch(browser_page.page, found)
    yield found
    assert not found, f"CSP violations or script errors: {found}"


# ---- the page itself, without a browser ----------------------------------------------------------

def test_the_shop_is_served_at_the_root_with_a_csp_and_v1_is_unchanged(gateway):
    page = requests.get(f"{gateway}/", timeout=TIMEOUT)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '<script type="module" src="/app.js">' in page.text and "<script>" not in page.text
    csp = {part.strip() for part in page.headers["Content-Security-Policy"].split(";")}
    assert CSP_DIRECTIVES <= csp and not any("unsafe" in part for part in csp), csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    script = requests.get(f"{gateway}/app.js", timeout=TIMEOUT)
    assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")
    assert "Content-Security-Policy" in script.headers
    # The API answers as before: JSON from the services, the JSON 404 for paths nothing serves.
    listing = requests.get(f"{gateway}/v1/products", timeout=TIMEOUT)
    assert listing.status_code == 200 and listing.headers["Content-Type"].startswith("application/json")
    assert re.match(r"^catalog-\d+$", listing.headers["X-Served-By"])
    assert "Content-Security-Policy" not in listing.headers
    for path in ("/v1/nothing-here", "/v1/products-x", "/nowhere", "/index.htm"):
        missing = requests.get(f"{gateway}{path}", timeout=TIMEOUT)
        assert missing.status_code == 404, path
        assert missing.json()["error"]["code"] == "not_found" and missing.headers["X-Served-By"] == "gateway"
    assert requests.get(f"{gateway}/v1/users/{'0' * 24}", timeout=TIMEOUT).json()["error"]["code"] == "not_found"


def test_the_chart_ships_the_shop_files_to_the_gateway_pod():
    """files/shop/ is the one home of the shop: the chart's gateway-shop ConfigMap holds each of its files, and
    the gateway pod mounts it where its nginx.conf serves from (gateway.shopRoot)."""
    out = subprocess.run([str(HELM), "template", "scaleshop", str(servers.CHART)], capture_output=True, text=True,
                         timeout=120, env=servers.helm_env(CACHE), check=True).stdout
    objects = [doc for doc in yaml.safe_load_all(out) if doc]
    shop = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "scaleshop-gateway-shop")
    assert shop["data"] == {path.name: path.read_text() for path in servers.SHOP_FILES.iterdir()}
    root = yaml.safe_load((servers.CHART / "values.yaml").read_text())["gateway"]["shopRoot"]
    gateway = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "scaleshop-gateway")
    pod = gateway["spec"]["template"]["spec"]
    volume = next(v["name"] for v in pod["volumes"] if v.get("configMap", {}).get("name") == "scaleshop-gateway-shop")
    assert {"name": volume, "mountPath": root, "readOnly": True} in pod["containers"][0]["volumeMounts"]
    conf = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "scaleshop-gateway")
    assert f"root {root};" in conf["data"]["nginx.conf"]


# ---- journeys in the browser -----------------------------------------------------------------------

def test_sell_find_review_and_watch_the_cache(browser_page, problems, gateway):
    seller = browser_page.page
    word = f"teapot{uuid.uuid4().hex[:8]}"
    name = f"Blue {word}"
    sign_up_in_page(seller, gateway, "Sally Seller")
    seller.get_by_role("link", name="Sell").click()
    seller.get_by_label("Name").fill(name)
    seller.get_by_label("Description").fill("A blue teapot, 1 litre.")
    seller.get_by_label("Price", exact=True).fill("24.50")
    seller.get_by_label("Currency").fill("EUR")
    seller.get_by_label("Category").fill("kitchen")
    seller.get_by_label("Tags").fill("tea, blue")
    seller.get_by_role("button", name="Put on sale").click()
    expect(seller.get_by_role("heading", level=1)).to_have_text(name)
    product_id = seller.url.rsplit("/", 1)[1]
    assert hood_cache(seller, f"GET /v1/products/{product_id}") == "miss"
    browser_page.screenshot("1-seller-product-page-miss")

    # A second user, in a tab of their own (sessionStorage is per tab), finds it by search and reviews it.
    reviewer = seller.context.new_page()
    watch(reviewer, problems)
    sign_up_in_page(reviewer, gateway, "Rita Reviewer")
    reviewer.get_by_label("Search").fill(word)
    reviewer.get_by_role("button", name="Search").click()
    expect(reviewer.get_by_role("heading", level=1)).to_have_text(f"Results for “{word}”")
    reviewer.get_by_role("link", name=name).click()
    expect(reviewer.locator(".facts")).to_contain_text("Sally Seller")
    reviewer.get_by_label("Rating").select_option("4")
    reviewer.get_by_label("Your review").fill("Pours without a drip.")
    reviewer.get_by_role("button", name="Publish review").click()
    review = reviewer.locator(".review").first
    expect(review.locator(".review-text")).to_have_text("Pours without a drip.")
    expect(review.locator(".author")).to_have_text("Rita Reviewer")
    expect(reviewer.locator(".rating")).to_contain_text("4.0 / 5 from 1 review")
    reviewer.screenshot(path=str(browser_page.artifacts / "2-reviewer-sees-the-review.png"), full_page=True)

    # One review per product: a second one is refused with a sentence, not a code.
    reviewer.get_by_label("Your review").fill("Again!")
    reviewer.get_by_role("button", name="Publish review").click()
    expect(reviewer.get_by_role("alert")).to_have_text(
        "You have already reviewed this product: one review per product.")

    # The seller reloads: the page the reviewer's read put in the cache is a hit, and shows the review.
    seller.reload()
    expect(seller.locator(".review-text")).to_have_text("Pours without a drip.")
    assert hood_cache(seller, f"GET /v1/products/{product_id}") == "hit"
    # The replica that served it: catalog-N locally, a catalog pod's name (<release>-catalog-...) in a cluster.
    served_by = seller.locator("#hood-rows tr").first.locator("td").nth(3).inner_text()
    assert re.search(r"(^|-)catalog-", served_by), served_by
    browser_page.screenshot("3-seller-product-page-hit")
    seller.set_viewport_size({"width": 390, "height": 844})
    # At phone width the page fits the screen: nothing scrolls sideways but "Under the hood"'s table,
    # in a box of its own, and the page's heading, its review and the menu are on screen, not cut.
    page_width = seller.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert page_width[0] <= page_width[1], f"the page is wider than a 390 px screen: {page_width}"
    for part in (seller.get_by_role("heading", level=1), seller.locator(".review-text"),
                 seller.get_by_role("link", name="Sell")):
        box = part.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    browser_page.screenshot("4-product-page-phone-width")
    reviewer.close()


def test_an_import_with_three_bad_items_shows_progress_to_the_end_and_the_errors(browser_page, problems, gateway,
                                                                                  tmp_path):
    page = browser_page.page
    category = f"imp-{uuid.uuid4().hex[:8]}"
    items: list[dict] = [{"name": f"Imported {i}", "description": "", "price_cents": 100 + i, "currency": "EUR",
                          "category": category} for i in range(1000)]
    items[10]["price_cents"] = -5
    items[500]["currency"] = "euro"
    items[999] = {"name": "no price"}
    upload = tmp_path / "products.json"
    upload.write_text(json.dumps(items))
    sign_up_in_page(page, gateway, "Ivan Importer")
    page.get_by_role("link", name="Import").click()
    page.get_by_label(re.compile("^Products file")).set_input_files(upload)
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#main")).to_contain_text("Import finished: 997 imported, 3 rejected.", timeout=120_000)
    expect(page.locator(".percent")).to_have_text("100 % (1000 of 1000)")
    assert page.locator("progress").evaluate("bar => [bar.value, bar.max]") == [1000, 1000]
    rejected = page.locator(".rejected li")
    expect(rejected).to_have_count(3)
    texts = rejected.all_inner_texts()
    assert [re.search(r"index (\d+)", text).group(1) for text in texts] == ["10", "500", "999"], texts
    assert "price_cents" in texts[0] and "currency" in texts[1]
    assert page.locator("#hood-rows td.request", has_text="POST /v1/imports").count() == 1
    browser_page.screenshot("import-finished-with-3-rejected")
    # The imported products are in the shop: their category with its count, pages, a sort, a price range.
    page.get_by_role("link", name="Shop", exact=True).click()
    shown_as = category.replace("-", " ").title()
    page.locator(".categories li", has_text="(997)").get_by_role("link", name=shown_as).click()
    expect(page.locator(".results .hint").first).to_have_text("997 products")
    expect(page.locator(".pages span")).to_have_text("Page 1 of 84")
    page.get_by_role("link", name="Next →").click()
    expect(page.locator(".pages span")).to_have_text("Page 2 of 84")
    page.get_by_label("Sort by").select_option("price_desc")
    page.get_by_label("Lowest price").fill("10")
    page.get_by_label("Highest price").fill("10.50")
    page.get_by_role("button", name="Search").click()
    expect(page.locator(".results .hint").first).to_have_text("51 products")  # 1000..1050 cents: items 900..950
    expect(page.locator(".card h2").first).to_have_text("Imported 950")
    browser_page.screenshot("browse-category-sorted-and-filtered")


def test_a_review_with_markup_shows_as_text_and_runs_nothing(browser_page, problems, gateway):
    seller = sign_up(gateway, display_name="Mark Up")
    product = create_product(gateway, seller.auth, f"xss-{uuid.uuid4().hex[:8]}")
    page = browser_page.page
    sign_up_in_page(page, gateway, "<b>Eve</b>")
    page.goto(f"{gateway}/#/p/{product['id']}")
    hostile = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"><b>bold</b>'
    page.get_by_label("Your review").fill(hostile)
    page.get_by_role("button", name="Publish review").click()
    expect(page.locator(".review-text")).to_have_text(hostile)
    expect(page.locator(".review .author")).to_have_text("<b>Eve</b>")
    assert page.evaluate("window.pwned") is None
    assert page.locator("#main script, #main img, #main b").count() == 0
    browser_page.screenshot("review-with-markup-as-text")
    # The token is in sessionStorage only: not in the address, not in a cookie.
    token = page.evaluate("JSON.parse(sessionStorage.getItem('scaleshop.session')).token")
    assert token and token not in page.url and not page.context.cookies()


def test_profile_edit_delete_export_and_sign_in_again(browser_page, problems, gateway):
    page = browser_page.page
    email = sign_up_in_page(page, gateway, "Petra Profile")
    page.get_by_role("link", name="My account").click()
    page.get_by_label("About me").fill("I sell <i>kettles</i>.")
    page.get_by_role("button", name="Save profile").click()
    expect(page.locator("#main")).to_contain_text("Your profile is saved.")
    # Sell, edit and delete a product of mine.
    page.get_by_role("link", name="Sell").click()
    page.get_by_label("Name").fill("Old kettle")
    page.get_by_label("Price", exact=True).fill("10")
    page.get_by_label("Category").fill(f"kettles-{uuid.uuid4().hex[:6]}")
    page.get_by_role("button", name="Put on sale").click()
    page.get_by_role("link", name="Edit this product").click()
    page.get_by_label("Name").fill("Shiny kettle")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Shiny kettle")
    product_path = page.url.split("#", 1)[1]
    page.get_by_role("link", name="Edit this product").click()
    page.get_by_role("button", name="Delete this product").click()
    page.get_by_role("button", name="Really delete? Press again").click()
    expect(page.locator("#notice")).to_have_text("The product is deleted.")
    page.goto(f"{gateway}/#{product_path}")
    expect(page.get_by_role("alert")).to_contain_text("no product")
    # Export my data: the download is the export job's JSON, with my profile in it.
    page.get_by_role("link", name="My account").click()
    page.get_by_role("button", name="Export my data").click()
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("link", name="download scaleshop-export.json").click(timeout=60_000)
    exported = json.loads(open(download.value.path()).read())
    assert "I sell <i>kettles</i>." in json.dumps(exported)
    browser_page.screenshot("account-with-export")
    # Sign out (the token is revoked), then back in with the keyboard only.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('scaleshop.session')") is None
    page.get_by_role("link", name="Sign in").click()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("not my password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("wrong email or password", timeout=30_000)  # the API's words
    page.get_by_label("Email").fill("")
    page.get_by_label("Password").fill("")
    page.get_by_role("heading", level=1).focus()
    page.keyboard.press("Tab")  # from the focused heading to the first field
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type("correct horse battery")
    page.keyboard.press("Enter")
    expect(page.locator("#notice")).to_have_text("You are signed in.", timeout=30_000)


def _all_ready_with(stack, dependencies: tuple[str, ...], timeout: float = 120) -> None:
    """Wait until every replica (user, catalog, worker) reports each of `dependencies` up again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [requests.get(f"{replica_url(stack, name)}/readyz", timeout=TIMEOUT).json() for name in stack.replicas]
        if all(state["dependencies"].get(dependency, {"state": "up"})["state"] == "up"  # a worker has no cache
               for state in states for dependency in dependencies):
            return
        time.sleep(0.5)
    raise AssertionError(f"{dependencies} did not come back within {timeout:.0f}s")


@pytest.mark.lifecycle
def test_the_shop_works_degraded_with_the_cache_and_kafka_down(browser_page, problems, stack, gateway, tmp_path):
    """Memcached and Kafka stopped: pages still show (X-Cache: bypass under the hood), a review is
    published and shown, an import is accepted and waits, queued; nothing breaks in the page."""
    seller = sign_up(gateway, display_name="Dora Degraded")
    product = create_product(gateway, seller.auth, f"deg-{uuid.uuid4().hex[:8]}")
    page = browser_page.page
    sign_up_in_page(page, gateway, "Rudi Reader")
    stack.stop_server("memcached")
    stack.stop_server("kafka")
    try:
        page.goto(f"{gateway}/#/p/{product['id']}")
        expect(page.get_by_role("heading", level=1)).to_have_text(product["name"])
        assert hood_cache(page, f"GET /v1/products/{product['id']}") == "bypass"
        page.get_by_label("Your review").fill("Still works.")
        page.get_by_role("button", name="Publish review").click()
        expect(page.locator(".review-text")).to_have_text("Still works.", timeout=30_000)
        upload = tmp_path / "two.json"
        upload.write_text(json.dumps([{"name": "Queued", "description": "", "price_cents": 1, "currency": "EUR",
                                       "category": "queued"}] * 2))
        page.get_by_role("link", name="Import").click()
        page.get_by_label(re.compile("^Products file")).set_input_files(upload)
        page.get_by_role("button", name="Import").click()
        expect(page.locator("#main")).to_contain_text("Import queued", timeout=30_000)
        expect(page.locator(".percent")).to_have_text("0 % (0 of 2)")
        browser_page.screenshot("cache-and-kafka-down")
        page.goto(f"{gateway}/#/")  # leave the import page: its polling stops with the view
    finally:
        stack.start_server("memcached")
        stack.start_server("kafka")
        _all_ready_with(stack, ("memcached", "kafka"))
