"""Every catalog route through the gateway, as a client sees it (DESIGN.md "Catalog service").

Products, the product page, changes and deletion by the seller only, reviews, the filtered,
sorted and paged product list, and the categories with their counts. All data is created
through the public API; each test uses its own category slug so it sees only its own products.
"""
from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import re

import pytest
import requests
from bson import ObjectId

from tests.functional.api_checks import TIMEOUT, assert_error, create_product, post_raw, product_body, unique_slug
from tests.functional.conftest import Account, sign_up

OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
PRODUCT_FIELDS = {"id", "seller_id", "name", "description", "price_cents", "currency", "category", "tags",
                  "stock", "rating", "created_at", "updated_at"}
PROFILE_FIELDS = {"id", "display_name", "bio", "created_at"}
UNKNOWN_ID = "0" * 23 + "1"


def parse_time(text: str) -> dt.datetime:
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", text), text
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def page_of(base: str, product_id: str) -> requests.Response:
    return requests.get(f"{base}/v1/products/{product_id}", timeout=TIMEOUT)


def listing(base: str, **params) -> dict:
    response = requests.get(f"{base}/v1/products", params=params, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def review(base: str, account: Account, product_id: str, rating, text: str = "") -> requests.Response:
    return requests.post(f"{base}/v1/products/{product_id}/reviews", json={"rating": rating, "text": text},
                         headers=account.auth, timeout=TIMEOUT)


def sign_up_many(base: str, count: int, prefix: str) -> list[Account]:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda i: sign_up(base, display_name=f"{prefix} {i}"), range(count)))


@pytest.fixture(scope="module")
def seller(gateway) -> Account:
    return sign_up(gateway, display_name="Sally Seller")


@pytest.fixture(scope="module")
def other(gateway) -> Account:
    return sign_up(gateway, display_name="Otto Other")


@pytest.fixture(scope="module")
def reviewers(gateway) -> list[Account]:
    return sign_up_many(gateway, 12, "Reviewer")


# ---- POST /v1/products ----------------------------------------------------------------------

def test_create_product_returns_it_with_the_caller_as_seller(gateway, seller):
    category = unique_slug()
    before = dt.datetime.now(dt.UTC)
    response = requests.post(f"{gateway}/v1/products", json=product_body(category, tags=["mug", "blue"]),
                             headers=seller.auth, timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == PRODUCT_FIELDS
    assert OBJECT_ID.match(body["id"])
    assert body["seller_id"] == seller.id
    assert (body["name"], body["description"], body["price_cents"], body["currency"]) == \
        ("Blue Mug", "A mug, blue.", 1299, "EUR")
    assert body["category"] == category
    assert body["tags"] == ["mug", "blue"]
    assert body["stock"] == 3
    assert body["rating"] == {"average": None, "count": 0}
    created = parse_time(body["created_at"])
    assert abs((created - before).total_seconds()) < 10
    assert body["updated_at"] == body["created_at"]


def test_create_product_defaults_tags_and_stock(gateway, seller):
    body = product_body(unique_slug())
    del body["tags"], body["stock"]
    response = requests.post(f"{gateway}/v1/products", json=body, headers=seller.auth, timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    assert response.json()["tags"] == [] and response.json()["stock"] == 0


def test_create_product_trims_the_name(gateway, seller):
    created = create_product(gateway, seller.auth, unique_slug(), name="  Spaced Out  ")
    assert created["name"] == "Spaced Out"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}],
                         ids=["no token", "bad token", "wrong scheme"])
def test_create_product_needs_a_valid_token(gateway, headers):
    category = unique_slug()
    response = requests.post(f"{gateway}/v1/products", json=product_body(category), headers=headers,
                             timeout=TIMEOUT)
    assert_error(response, 401, "unauthorized")
    assert listing(gateway, category=category)["total"] == 0


BAD_PRODUCT_FIELDS = [
    ("price_cents", -1), ("price_cents", 12.5), ("price_cents", "1299"), ("price_cents", True),
    ("price_cents", None), ("price_cents", 10_000_000_001), ("price_cents", 2 ** 70),
    ("currency", "eur"), ("currency", "EURO"), ("currency", "E1R"), ("currency", ""), ("currency", 978),
    ("category", "Bad Slug"), ("category", "UPPER"), ("category", "a_b"), ("category", "-lead"),
    ("category", "trail-"), ("category", "two--dashes"), ("category", ""), ("category", "x" * 41),
    ("category", "caf\u00e9"), ("category", ["a"]),
    ("tags", ["Bad"]), ("tags", ["with space"]), ("tags", "mug"), ("tags", [1]), ("tags", ["x" * 31]),
    ("tags", [f"t{i}" for i in range(21)]), ("tags", [""]), ("tags", None),
    ("name", ""), ("name", "   "), ("name", "x" * 121), ("name", "two\nlines"), ("name", "bell\x07"),
    ("name", 42),
    ("description", "x" * 5001), ("description", "nul\x00"), ("description", None),
    ("stock", -1), ("stock", 1_000_000_001), ("stock", "3"), ("stock", 1.5),
]


@pytest.mark.parametrize("field,value", BAD_PRODUCT_FIELDS,
                         ids=[f"{f}={str(v)[:20]!r}" for f, v in BAD_PRODUCT_FIELDS])
def test_create_product_with_a_bad_field_is_422_naming_it(gateway, seller, field, value):
    category = unique_slug()
    body = dict(product_body(category), **{field: value})
    response = requests.post(f"{gateway}/v1/products", json=body, headers=seller.auth, timeout=TIMEOUT)
    assert_error(response, 422, "validation_failed")
    error = response.json()["error"]
    named = [d["field"] for d in error["details"]]
    assert any(name == field or name.startswith(f"{field}.") for name in named), named
    if field != "category":
        assert listing(gateway, category=category)["total"] == 0


@pytest.mark.parametrize("field", ["name", "description", "price_cents", "currency", "category"])
def test_create_product_without_a_required_field_is_422_naming_it(gateway, seller, field):
    body = product_body(unique_slug())
    del body[field]
    response = requests.post(f"{gateway}/v1/products", json=body, headers=seller.auth, timeout=TIMEOUT)
    assert_error(response, 422, "validation_failed", field=field)


@pytest.mark.parametrize("extra", ["colour", "seller_id", "id", "rating", "created_at"])
def test_create_product_with_an_unknown_or_server_owned_field_is_422(gateway, seller, extra):
    body = product_body(unique_slug(), **{extra: "x"})
    response = requests.post(f"{gateway}/v1/products", json=body, headers=seller.auth, timeout=TIMEOUT)
    assert_error(response, 422, "validation_failed", field=extra)


def test_create_product_accepts_the_longest_allowed_values(gateway, seller):
    category = "t" + unique_slug()[1:] + "-" + "z" * 26
    assert len(category) == 40
    body = product_body(category, name="n" * 120, description="d\n" * 2500, price_cents=10_000_000_000,
                        tags=[f"{i:02d}" + "x" * 28 for i in range(20)], stock=1_000_000_000, currency="JPY")
    response = requests.post(f"{gateway}/v1/products", json=body, headers=seller.auth, timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == "n" * 120 and len(created["description"]) == 5000
    assert created["tags"] == body["tags"] and created["price_cents"] == 10_000_000_000
    # Read back, miss then hit: a price this large is a 64-bit integer in the database.
    for _ in range(2):
        page = page_of(gateway, created["id"])
        assert page.status_code == 200, page.text
        assert page.json()["product"]["price_cents"] == 10_000_000_000
        listed = listing(gateway, category=category, sort="price_desc")
        assert [item["price_cents"] for item in listed["items"]] == [10_000_000_000]


def test_whole_number_floats_are_integers_as_json_schema_says(gateway, seller):
    created = create_product(gateway, seller.auth, unique_slug(), price_cents=2599.0, stock=3.0)
    assert created["price_cents"] == 2599 and isinstance(created["price_cents"], int) and created["stock"] == 3


def test_create_product_free_item_and_no_stock_are_valid(gateway, seller):
    created = create_product(gateway, seller.auth, unique_slug(), price_cents=0, stock=0)
    assert created["price_cents"] == 0 and created["stock"] == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_create_product_body_not_declared_json_is_415(gateway, seller, content_type):
    response = post_raw(f"{gateway}/v1/products", json.dumps(product_body(unique_slug())), content_type,
                        headers=seller.auth)
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize("data", [b'{"name": "x", ', b"not json", b"", b'{"price_cents": NaN}'],
                         ids=["truncated", "bare word", "empty", "NaN"])
def test_create_product_malformed_json_is_400(gateway, seller, data):
    assert_error(post_raw(f"{gateway}/v1/products", data, headers=seller.auth), 400, "malformed_json")


@pytest.mark.parametrize("document", [b"[]", b'"text"', b"42", b"null", b"true"])
def test_create_product_body_that_is_not_an_object_is_422(gateway, seller, document):
    assert_error(post_raw(f"{gateway}/v1/products", document, headers=seller.auth), 422, "validation_failed")


def test_create_product_body_too_large_is_413(gateway, seller):
    body = product_body(unique_slug(), description="x" * (2 * 1024 * 1024))
    response = requests.post(f"{gateway}/v1/products", json=body, headers=seller.auth, timeout=TIMEOUT)
    assert_error(response, 413)


# ---- GET /v1/products/{id}: the product page ------------------------------------------------

def test_product_page_has_product_category_seller_rating_and_reviews(gateway, seller):
    category = unique_slug() + "-garden-tools"
    created = create_product(gateway, seller.auth, category, name="Rake")
    response = page_of(gateway, created["id"])
    assert response.status_code == 200, response.text
    assert response.headers["X-Cache"] in ("miss", "hit", "bypass")
    page = response.json()
    assert set(page) == {"product", "category", "seller", "rating", "reviews"}
    assert page["product"] == created
    assert page["category"]["slug"] == category
    assert isinstance(page["category"]["name"], str) and "Garden Tools" in page["category"]["name"]
    assert set(page["seller"]) == PROFILE_FIELDS  # public profile: no email
    assert page["seller"]["id"] == seller.id and page["seller"]["display_name"] == "Sally Seller"
    assert page["rating"] == {"average": None, "count": 0}
    assert page["reviews"] == []


def test_product_page_id_is_case_insensitive(gateway, seller):
    created = create_product(gateway, seller.auth, unique_slug())
    response = page_of(gateway, created["id"].upper())
    assert response.status_code == 200, response.text
    assert response.json()["product"]["id"] == created["id"]


def test_product_page_shows_the_ten_latest_reviews_with_authors(gateway, seller, reviewers):
    created = create_product(gateway, seller.auth, unique_slug())
    ratings = [5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 5, 5]
    posted = []
    for account, rating in zip(reviewers, ratings):
        response = review(gateway, account, created["id"], rating, f"review by {account.display_name}")
        assert response.status_code == 201, response.text
        posted.append(response.json())
    page = page_of(gateway, created["id"]).json()
    assert page["rating"] == {"average": round(sum(ratings) / 12, 2), "count": 12}
    assert page["product"]["rating"] == page["rating"]
    shown = page["reviews"]
    assert len(shown) == 10
    assert [r["id"] for r in shown] == [r["id"] for r in reversed(posted)][:10]  # latest first
    for item, account in zip(shown, list(reversed(reviewers))[:10]):
        assert set(item) == {"id", "product_id", "rating", "text", "created_at", "author"}
        assert item["product_id"] == created["id"]
        assert item["text"] == f"review by {account.display_name}"
        assert set(item["author"]) == PROFILE_FIELDS
        assert item["author"]["id"] == account.id and item["author"]["display_name"] == account.display_name
    times = [parse_time(r["created_at"]) for r in shown]
    assert times == sorted(times, reverse=True)


@pytest.mark.parametrize("product_id", [UNKNOWN_ID, "ffffffffffffffffffffffff", "nope", "0" * 25, "x" * 300,
                                        "caf%C3%A9", "a%20b", "%01", "'%3B--", "1e3", "%7B%22%24gt%22%3A%22%22%7D"])
def test_unknown_or_malformed_product_id_is_404_json(gateway, product_id):
    assert_error(page_of(gateway, product_id), 404, "not_found")


def test_nul_in_a_product_id_is_a_json_error(gateway):
    response = page_of(gateway, "%00")
    assert_error(response, response.status_code if response.status_code in (400, 404) else 404)


# ---- PATCH /v1/products/{id} ----------------------------------------------------------------

def test_seller_can_change_a_product(gateway, seller):
    created = create_product(gateway, seller.auth, unique_slug())
    new_category = unique_slug()
    changes = {"name": "Red Mug", "description": "Now red.", "price_cents": 1500, "currency": "USD",
               "category": new_category, "tags": ["red"], "stock": 9}
    response = requests.patch(f"{gateway}/v1/products/{created['id']}", json=changes, headers=seller.auth,
                              timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in changes} == changes
    assert body["id"] == created["id"] and body["seller_id"] == seller.id
    assert body["created_at"] == created["created_at"]
    assert parse_time(body["updated_at"]) >= parse_time(created["updated_at"])
    page = page_of(gateway, created["id"]).json()
    assert page["product"] == body
    assert page["category"]["slug"] == new_category


def test_patch_with_one_field_keeps_the_others(gateway, seller):
    created = create_product(gateway, seller.auth, unique_slug())
    response = requests.patch(f"{gateway}/v1/products/{created['id']}", json={"stock": 0}, headers=seller.auth,
                              timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    expected = dict(created, stock=0, updated_at=response.json()["updated_at"])
    assert response.json() == expected


def _unchanged(gateway: str, created: dict) -> None:
    page = page_of(gateway, created["id"])
    assert page.status_code == 200
    assert page.json()["product"] == created


def test_another_user_cannot_change_or_delete_a_product(gateway, seller, other):
    created = create_product(gateway, seller.auth, unique_slug())
    url = f"{gateway}/v1/products/{created['id']}"
    assert_error(requests.patch(url, json={"price_cents": 1}, headers=other.auth, timeout=TIMEOUT), 403,
                 "forbidden")
    assert_error(requests.delete(url, headers=other.auth, timeout=TIMEOUT), 403, "forbidden")
    _unchanged(gateway, created)
    assert listing(gateway, category=created["category"])["total"] == 1


def test_anonymous_cannot_change_or_delete_a_product(gateway, seller):
    created = create_product(gateway, seller.auth, unique_slug())
    url = f"{gateway}/v1/products/{created['id']}"
    assert_error(requests.patch(url, json={"price_cents": 1}, timeout=TIMEOUT), 401, "unauthorized")
    assert_error(requests.delete(url, timeout=TIMEOUT), 401, "unauthorized")
    _unchanged(gateway, created)


@pytest.mark.parametrize("product_id", [UNKNOWN_ID, "nope", "x" * 300])
def test_change_or_delete_of_an_unknown_product_is_404(gateway, seller, product_id):
    url = f"{gateway}/v1/products/{product_id}"
    assert_error(requests.patch(url, json={"price_cents": 1}, headers=seller.auth, timeout=TIMEOUT), 404,
                 "not_found")
    assert_error(requests.delete(url, headers=seller.auth, timeout=TIMEOUT), 404, "not_found")


@pytest.mark.parametrize("body,field", [
    ({}, None), ({"price_cents": None}, "price_cents"), ({"name": None}, "name"), ({"price_cents": -5}, "price_cents"),
    ({"currency": "usd"}, "currency"), ({"category": "No Way"}, "category"), ({"tags": ["A"]}, "tags.0"),
    ({"seller_id": UNKNOWN_ID}, "seller_id"), ({"rating": {"average": 5}}, "rating"), ({"colour": "red"}, "colour"),
    ({"name": "x" * 121}, "name"),
], ids=lambda v: repr(v)[:30])
def test_patch_with_bad_input_is_422_and_changes_nothing(gateway, seller, body, field):
    created = create_product(gateway, seller.auth, unique_slug())
    response = requests.patch(f"{gateway}/v1/products/{created['id']}", json=body, headers=seller.auth,
                              timeout=TIMEOUT)
    assert_error(response, 422, "validation_failed", field=field)
    _unchanged(gateway, created)


def test_patch_body_not_json_is_415_and_malformed_is_400(gateway, seller):
    created = create_product(gateway, seller.auth, unique_slug())
    url = f"{gateway}/v1/products/{created['id']}"
    assert_error(post_raw(url, '{"stock": 1}', "text/plain", headers=seller.auth, method="PATCH"), 415)
    assert_error(post_raw(url, '{"stock": ', headers=seller.auth, method="PATCH"), 400, "malformed_json")
    _unchanged(gateway, created)


# ---- DELETE /v1/products/{id} ---------------------------------------------------------------

def test_seller_deletes_a_product_and_it_is_gone_everywhere(gateway, seller, other):
    category = unique_slug()
    keep = create_product(gateway, seller.auth, category, name="Keep")
    gone = create_product(gateway, seller.auth, category, name="Gone")
    assert review(gateway, other, gone["id"], 4).status_code == 201
    assert page_of(gateway, gone["id"]).status_code == 200  # cached before the delete
    assert listing(gateway, category=category)["total"] == 2

    response = requests.delete(f"{gateway}/v1/products/{gone['id']}", headers=seller.auth, timeout=TIMEOUT)
    assert response.status_code == 204, response.text
    assert response.content == b""

    assert_error(page_of(gateway, gone["id"]), 404, "not_found")
    listed = listing(gateway, category=category)
    assert [p["id"] for p in listed["items"]] == [keep["id"]] and listed["total"] == 1
    assert gone["id"] not in [p["id"] for p in listing(gateway, q="gone", per_page=100)["items"]]
    counts = {c["slug"]: c["product_count"] for c in requests.get(f"{gateway}/v1/categories",
                                                                  timeout=TIMEOUT).json()["items"]}
    assert counts[category] == 1
    url = f"{gateway}/v1/products/{gone['id']}"
    assert_error(requests.delete(url, headers=seller.auth, timeout=TIMEOUT), 404, "not_found")
    assert_error(requests.patch(url, json={"stock": 1}, headers=seller.auth, timeout=TIMEOUT), 404, "not_found")
    assert_error(review(gateway, seller, gone["id"], 5), 404, "not_found")


# ---- POST /v1/products/{id}/reviews ---------------------------------------------------------

def test_review_is_created_once_per_user(gateway, seller, other):
    created = create_product(gateway, seller.auth, unique_slug())
    response = review(gateway, other, created["id"], 4, "Nice mug.")
    assert response.status_code == 201, response.text
    body = response.json()
    assert {"id", "product_id", "rating", "text", "created_at"} <= set(body)
    assert OBJECT_ID.match(body["id"])
    assert (body["product_id"], body["rating"], body["text"]) == (created["id"], 4, "Nice mug.")

    for rating in (4, 1):
        assert_error(review(gateway, other, created["id"], rating, "again"), 409, "conflict")
    page = page_of(gateway, created["id"]).json()
    assert page["rating"] == {"average": 4.0, "count": 1}
    assert [(r["id"], r["rating"], r["text"]) for r in page["reviews"]] == [(body["id"], 4, "Nice mug.")]
    assert page["reviews"][0]["author"]["id"] == other.id


def test_concurrent_double_review_counts_once(gateway, seller, other):
    created = create_product(gateway, seller.auth, unique_slug())
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(lambda _: review(gateway, other, created["id"], 5).status_code, range(6)))
    assert codes == [201] + [409] * 5
    assert page_of(gateway, created["id"]).json()["rating"] == {"average": 5.0, "count": 1}


def test_concurrent_reviews_of_one_product_are_all_counted(gateway, seller, reviewers):
    ratings = [5, 4, 3, 2, 1, 5, 4, 3, 2, 1, 5, 5]
    counted = []
    for _ in range(3):
        created = create_product(gateway, seller.auth, unique_slug())
        with concurrent.futures.ThreadPoolExecutor(len(reviewers)) as pool:
            codes = list(pool.map(
                lambda pair, product=created: review(gateway, pair[0], product["id"], pair[1]).status_code,
                zip(reviewers, ratings)))
        assert codes == [201] * len(ratings)
        counted.append(page_of(gateway, created["id"]).json()["rating"])
    assert counted == [{"average": round(sum(ratings) / 12, 2), "count": 12}] * 3


def test_concurrent_changes_to_different_fields_are_all_kept(gateway, seller):
    changes = [{"name": "New Name"}, {"description": "New text"}, {"price_cents": 4242}, {"currency": "USD"},
               {"tags": ["new"]}, {"stock": 77}]
    lost = []
    for _ in range(3):
        created = create_product(gateway, seller.auth, unique_slug())
        url = f"{gateway}/v1/products/{created['id']}"
        with concurrent.futures.ThreadPoolExecutor(len(changes)) as pool:
            codes = list(pool.map(lambda c, url=url: requests.patch(url, json=c, headers=seller.auth,
                                                                    timeout=TIMEOUT).status_code, changes))
        assert codes == [200] * len(changes)
        shown = page_of(gateway, created["id"]).json()["product"]
        lost.append([key for change in changes for key, value in change.items() if shown[key] != value])
    assert lost == [[]] * 3, f"fields that lost their change: {lost}"


def test_review_text_is_optional(gateway, seller, other):
    created = create_product(gateway, seller.auth, unique_slug())
    response = requests.post(f"{gateway}/v1/products/{created['id']}/reviews", json={"rating": 3},
                             headers=other.auth, timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    assert response.json()["text"] == ""


@pytest.mark.parametrize("body,field", [
    ({"rating": 0}, "rating"), ({"rating": 6}, "rating"), ({"rating": -1}, "rating"), ({"rating": 2.5}, "rating"),
    ({"rating": "5"}, "rating"), ({"rating": True}, "rating"), ({"rating": None}, "rating"), ({}, "rating"),
    ({"rating": 5, "text": "x" * 2001}, "text"), ({"rating": 5, "text": 7}, "text"),
    ({"rating": 5, "author_id": UNKNOWN_ID}, "author_id"), ({"rating": 5, "stars": 5}, "stars"),
], ids=lambda v: repr(v)[:30])
def test_bad_review_is_422_and_not_counted(gateway, seller, other, body, field):
    created = create_product(gateway, seller.auth, unique_slug())
    response = requests.post(f"{gateway}/v1/products/{created['id']}/reviews", json=body, headers=other.auth,
                             timeout=TIMEOUT)
    assert_error(response, 422, "validation_failed", field=field)
    assert page_of(gateway, created["id"]).json()["rating"] == {"average": None, "count": 0}


@pytest.mark.parametrize("rating", [1, 5])
def test_ratings_at_the_bounds_are_accepted(gateway, seller, other, rating):
    created = create_product(gateway, seller.auth, unique_slug())
    assert review(gateway, other, created["id"], rating).status_code == 201
    assert page_of(gateway, created["id"]).json()["rating"] == {"average": float(rating), "count": 1}


def test_review_needs_a_token(gateway, seller):
    created = create_product(gateway, seller.auth, unique_slug())
    response = requests.post(f"{gateway}/v1/products/{created['id']}/reviews", json={"rating": 5},
                             timeout=TIMEOUT)
    assert_error(response, 401, "unauthorized")


@pytest.mark.parametrize("product_id", [UNKNOWN_ID, "nope"])
def test_review_on_an_unknown_product_is_404(gateway, other, product_id):
    assert_error(review(gateway, other, product_id, 5), 404, "not_found")


def test_review_body_not_json_is_415_and_malformed_is_400(gateway, seller, other):
    created = create_product(gateway, seller.auth, unique_slug())
    url = f"{gateway}/v1/products/{created['id']}/reviews"
    assert_error(post_raw(url, '{"rating": 5}', "text/plain", headers=other.auth), 415)
    assert_error(post_raw(url, '{"rating": ', headers=other.auth), 400, "malformed_json")


def test_rating_average_and_count_follow_every_review(gateway, seller, reviewers):
    created = create_product(gateway, seller.auth, unique_slug())
    ratings = [5, 4, 4, 1, 3, 2, 2]
    for n, (account, rating) in enumerate(zip(reviewers, ratings), start=1):
        assert review(gateway, account, created["id"], rating).status_code == 201
        expected = {"average": round(sum(ratings[:n]) / n, 2), "count": n}
        assert page_of(gateway, created["id"]).json()["rating"] == expected
        item = listing(gateway, category=created["category"])["items"][0]
        assert item["rating"] == expected
    assert expected == {"average": 3.0, "count": 7}


# ---- GET /v1/products: filters, sorting, paging ---------------------------------------------

@pytest.fixture(scope="module")
def shelf(gateway, seller, reviewers):
    """Six products in one category: names, prices, tags and ratings chosen to order clearly."""
    category = unique_slug()
    specs = [  # name, price, tags, ratings
        ("Teapot", 2500, ["kitchen", "tea"], [5, 5]),
        ("apple corer", 900, ["kitchen"], [3]),
        ("Blue Teacup", 1200, ["tea", "cup"], [4, 5]),
        ("Zinc Bucket", 2500, ["garden"], []),
        ("Mug", 900, ["cup"], [5, 4, 3]),
        ("garden hose", 4000, ["garden", "water"], [2]),
    ]
    products = []
    for name, price, tags, ratings in specs:
        product = create_product(gateway, seller.auth, category, name=name, price_cents=price, tags=tags)
        for account, rating in zip(reviewers, ratings):
            assert review(gateway, account, product["id"], rating).status_code == 201
        products.append(product)
    return category, {p["name"]: p for p in products}


def names(result: dict) -> list[str]:
    return [p["name"] for p in result["items"]]


def test_list_filters_by_category(gateway, shelf, seller):
    category, products = shelf
    result = listing(gateway, category=category)
    assert result["total"] == 6 and sorted(names(result)) == sorted(products)
    assert all(p["category"] == category for p in result["items"])
    assert listing(gateway, category=category.upper())["total"] == 6
    assert listing(gateway, category=unique_slug())["total"] == 0


def test_list_items_are_full_products(gateway, shelf):
    category, products = shelf
    for item in listing(gateway, category=category)["items"]:
        assert set(item) == PRODUCT_FIELDS
        assert item["id"] == products[item["name"]]["id"]


@pytest.mark.parametrize("q,expected", [
    ("tea", {"Teapot", "Blue Teacup"}),          # name substring and tag
    ("TEACUP", {"Blue Teacup"}),                 # case-insensitive
    ("cup", {"Blue Teacup", "Mug"}),             # Mug only by its tag
    ("kitchen", {"Teapot", "apple corer"}),      # tag only
    ("garden", {"Zinc Bucket", "garden hose"}),
    ("water", {"garden hose"}),
    ("e c", {"apple corer"}),                    # inside a name, with a space
    ("nothing-like-this", set()),
    (".*", set()), ("(", set()), ("[a-z]", set()), ("\\", set()),  # text, not a pattern
])
def test_list_q_finds_text_in_names_and_tags(gateway, shelf, q, expected):
    category, _ = shelf
    assert set(names(listing(gateway, category=category, q=q, per_page=100))) == expected


def test_list_filters_by_price_inclusive(gateway, shelf):
    category, _ = shelf
    assert set(names(listing(gateway, category=category, min_price=1200, max_price=2500))) == \
        {"Teapot", "Blue Teacup", "Zinc Bucket"}
    assert set(names(listing(gateway, category=category, min_price=2500))) == \
        {"Teapot", "Zinc Bucket", "garden hose"}
    assert set(names(listing(gateway, category=category, max_price=900))) == {"apple corer", "Mug"}
    assert names(listing(gateway, category=category, min_price=900, max_price=900, sort="name")) == \
        ["apple corer", "Mug"]
    assert listing(gateway, category=category, min_price=4001)["total"] == 0


def test_list_min_price_above_max_price_is_422(gateway):
    response = requests.get(f"{gateway}/v1/products", params={"min_price": 10, "max_price": 9}, timeout=TIMEOUT)
    assert_error(response, 422, "validation_failed")


@pytest.mark.parametrize("sort,expected", [
    ("newest", ["garden hose", "Mug", "Zinc Bucket", "Blue Teacup", "apple corer", "Teapot"]),
    ("price_asc", [["apple corer", "Mug"], "Blue Teacup", ["Teapot", "Zinc Bucket"], "garden hose"]),
    ("price_desc", ["garden hose", ["Teapot", "Zinc Bucket"], "Blue Teacup", ["apple corer", "Mug"]]),
    ("rating", ["Teapot", "Blue Teacup", "Mug", "apple corer", "garden hose", "Zinc Bucket"]),
    ("name", ["apple corer", "Blue Teacup", "garden hose", "Mug", "Teapot", "Zinc Bucket"]),
])
def test_list_sorts_correctly_and_stably(gateway, shelf, sort, expected):
    """Ties (equal prices) may come in any order, but always the same one, page after page."""
    category, products = shelf
    full = names(listing(gateway, category=category, sort=sort))
    position = 0
    for group in expected:
        group = group if isinstance(group, list) else [group]
        assert sorted(full[position:position + len(group)]) == sorted(group), (sort, full)
        position += len(group)
    assert position == len(full) == 6
    for _ in range(3):
        assert names(listing(gateway, category=category, sort=sort)) == full
    paged = []
    for page in (1, 2, 3):
        paged += names(listing(gateway, category=category, sort=sort, per_page=2, page=page))
    assert paged == full
    if sort in ("price_asc", "price_desc"):  # ties broken the same way in both directions
        ties = [n for n in full if products[n]["price_cents"] == 2500]
        ids = [products[n]["id"] for n in ties]
        assert ids == sorted(ids)


def test_list_default_sort_is_newest(gateway, shelf):
    category, _ = shelf
    assert names(listing(gateway, category=category)) == names(listing(gateway, category=category, sort="newest"))


def test_list_rating_sort_puts_equal_averages_with_more_reviews_first(gateway, seller, reviewers):
    category = unique_slug()
    one = create_product(gateway, seller.auth, category, name="One review")
    three = create_product(gateway, seller.auth, category, name="Three reviews")
    none = create_product(gateway, seller.auth, category, name="No reviews")
    assert review(gateway, reviewers[0], one["id"], 4).status_code == 201
    for account in reviewers[:3]:
        assert review(gateway, account, three["id"], 4).status_code == 201
    assert names(listing(gateway, category=category, sort="rating")) == ["Three reviews", "One review", "No reviews"]
    assert none["rating"]["count"] == 0


def test_list_pagination(gateway, shelf):
    category, _ = shelf
    full = names(listing(gateway, category=category, sort="name"))
    pages = [listing(gateway, category=category, sort="name", per_page=4, page=n) for n in (1, 2, 3)]
    assert [(p["page"], p["per_page"], p["total"], p["pages"]) for p in pages] == \
        [(1, 4, 6, 2), (2, 4, 6, 2), (3, 4, 6, 2)]
    assert names(pages[0]) == full[:4] and names(pages[1]) == full[4:] and names(pages[2]) == []
    exact = listing(gateway, category=category, per_page=3)
    assert (exact["total"], exact["pages"], len(exact["items"])) == (6, 2, 3)
    default = listing(gateway, category=category)
    assert (default["page"], default["per_page"], default["pages"]) == (1, 20, 1)
    biggest = listing(gateway, category=category, per_page=100)
    assert biggest["per_page"] == 100 and len(biggest["items"]) == 6
    empty = listing(gateway, category=unique_slug())
    assert (empty["items"], empty["total"], empty["pages"]) == ([], 0, 0)
    far = listing(gateway, category=category, page=10_000, per_page=100)
    assert far["items"] == [] and far["total"] == 6


@pytest.mark.parametrize("params,field", [
    ({"per_page": 101}, "per_page"), ({"per_page": 0}, "per_page"), ({"per_page": -1}, "per_page"),
    ({"per_page": "ten"}, "per_page"), ({"page": 0}, "page"), ({"page": -3}, "page"), ({"page": "x"}, "page"),
    ({"page": 10_001}, "page"), ({"page": "1.5"}, "page"), ({"sort": "cheapest"}, "sort"),
    ({"sort": "PRICE_ASC"}, "sort"), ({"min_price": -1}, "min_price"), ({"max_price": "lots"}, "max_price"),
    ({"min_price": 10 ** 30}, "min_price"), ({"colour": "red"}, "colour"), ({"page": ["1", "2"]}, "page"),
    ({"q": "x" * 101}, "q"), ({"category": "c" * 41}, "category"),
], ids=lambda v: repr(v)[:30])
def test_list_bad_query_is_422_naming_the_parameter(gateway, params, field):
    response = requests.get(f"{gateway}/v1/products", params=params, timeout=TIMEOUT)
    assert_error(response, 422, "validation_failed", field=field)


# ---- GET /v1/categories ---------------------------------------------------------------------

def test_categories_count_products(gateway, seller):
    first, second = unique_slug() + "-home", unique_slug()
    made = [create_product(gateway, seller.auth, first) for _ in range(3)]
    create_product(gateway, seller.auth, second)

    def counts() -> dict[str, dict]:
        response = requests.get(f"{gateway}/v1/categories", timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        assert all(set(c) == {"slug", "name", "product_count"} for c in items)
        return {c["slug"]: c for c in items}

    now = counts()
    assert now[first]["product_count"] == 3 and now[second]["product_count"] == 1
    assert now[first]["name"].endswith("Home")
    requests.patch(f"{gateway}/v1/products/{made[0]['id']}", json={"category": second}, headers=seller.auth,
                   timeout=TIMEOUT).raise_for_status()
    now = counts()
    assert now[first]["product_count"] == 2 and now[second]["product_count"] == 2
    for product in made[1:]:
        assert requests.delete(f"{gateway}/v1/products/{product['id']}", headers=seller.auth,
                               timeout=TIMEOUT).status_code == 204
    now = counts()
    assert now.get(first, {"product_count": 0})["product_count"] == 0
    assert now[second]["product_count"] == 2
    assert [c["slug"] for c in counts().values()] == sorted(counts())  # listed by slug


def test_a_change_that_outlived_its_request_cannot_undo_a_newer_one(gateway, seller, db):
    """A PATCH whose database write timed out in the service may still be applied later by the
    database. Writes are a compare-and-set on the product's version, so that late write is a
    no-op once a newer change has landed (it used to overwrite it)."""
    from services.catalog import store
    from services.shared.cache_deps import not_cached

    product = create_product(gateway, seller.auth, unique_slug())
    stale_version = db["products"].find_one({"_id": ObjectId(product["id"])})["version"]
    newer = requests.patch(f"{gateway}/v1/products/{product['id']}", headers=seller.auth, timeout=TIMEOUT,
                           json={"price_cents": 2000, "description": "the newer change"})
    assert newer.status_code == 200, newer.text
    late = store.update_product(db, product["id"], {"price_cents": 1500, "description": "the late write"},
                                expected_version=stale_version, announce=not_cached)
    assert late is None
    page = requests.get(f"{gateway}/v1/products/{product['id']}", timeout=TIMEOUT).json()["product"]
    assert (page["price_cents"], page["description"]) == (2000, "the newer change")
