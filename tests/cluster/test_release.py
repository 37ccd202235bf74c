"""`make test-cluster`, part one: an installed release, driven through its gateway as a user's CI would.

Only the Kubernetes API (client and `kubectl`) and HTTP on GATEWAY_URL (tests/cluster/conftest.py):

1. the public routes answer as on the local stack: a compact journey from sign-up to an import
   job run by the workers through Kafka, and the OpenAPI documents;
2. `X-Served-By` names the catalog Deployment's running pods;
3. `kubectl scale` of catalog 2 -> 4 -> 2 under an open-loop read load: every read a 200, all four
   pods answer while there are four;
4. a catalog pod and a user pod deleted (default grace) under an open-loop read load of product
   pages that call the user service: every read a 200.

Replica counts a test changes are restored after it, pass or fail. Each load's counts are printed
at the end of the run.
"""
from __future__ import annotations

import time
import uuid

import requests

from tests.cluster.conftest import TIMEOUT, Account, Cluster, OpenLoopLoad, Periodic, kubectl, scale, sign_up
from tests.functional.api_checks import assert_error

LOAD_RATE = 40.0          # reads per second: far below the edge's 6,000 reads per minute per client
IMPORT_TIMEOUT = 120
# Seconds for a new replica to be picked by the gateway: once the cluster DNS's cache (30 s), then the
# gateway's (5 s), list it.
SERVED_BY_TIMEOUT = 45


def get(url: str, **kwargs) -> requests.Response:
    return requests.get(url, timeout=TIMEOUT, **kwargs)


# ---- 1. the public routes ---------------------------------------------------------------------

def test_a_users_journey_from_sign_up_to_an_import(gateway):
    buyer = sign_up(gateway, "Cluster Buyer")
    taken = requests.post(f"{gateway}/v1/users", json={"email": buyer.email.upper(), "password": "another pass 99",
                                                       "display_name": "Twin"}, timeout=TIMEOUT)
    assert_error(taken, 409)
    wrong = requests.post(f"{gateway}/v1/sessions", json={"email": buyer.email, "password": "not it at all"},
                          timeout=TIMEOUT)
    assert_error(wrong, 401)
    me = get(f"{gateway}/v1/users/me", headers=buyer.auth)
    assert me.status_code == 200 and me.json()["id"] == buyer.id, me.text

    seller = sign_up(gateway, "Cluster Maker")
    category = f"cj{uuid.uuid4().hex[:10]}"
    created = requests.post(f"{gateway}/v1/products", headers=seller.auth, timeout=TIMEOUT, json={
        "name": "Green Lamp", "description": "A lamp, green.", "price_cents": 4200, "currency": "EUR",
        "category": category, "tags": ["lamp"], "stock": 2})
    assert created.status_code == 201, created.text
    product = created.json()
    assert product["seller_id"] == seller.id and product["name"] == "Green Lamp", product
    page = get(f"{gateway}/v1/products/{product['id']}")
    assert page.status_code == 200, page.text
    assert page.json()["seller"]["display_name"] == "Cluster Maker", page.json()
    assert page.json()["rating"] == {"average": None, "count": 0}, page.json()

    patch = {"price_cents": 3900}
    refused = requests.patch(f"{gateway}/v1/products/{product['id']}", json=patch, headers=buyer.auth,
                             timeout=TIMEOUT)
    assert_error(refused, 403)
    patched = requests.patch(f"{gateway}/v1/products/{product['id']}", json=patch, headers=seller.auth,
                             timeout=TIMEOUT)
    assert patched.status_code == 200 and patched.json()["price_cents"] == 3900, patched.text
    review = requests.post(f"{gateway}/v1/products/{product['id']}/reviews", json={"rating": 4, "text": "Bright."},
                           headers=buyer.auth, timeout=TIMEOUT)
    assert review.status_code == 201, review.text
    again = requests.post(f"{gateway}/v1/products/{product['id']}/reviews", json={"rating": 1, "text": "Twice."},
                          headers=buyer.auth, timeout=TIMEOUT)
    assert_error(again, 409)
    page = get(f"{gateway}/v1/products/{product['id']}").json()
    assert page["product"]["price_cents"] == 3900, page
    assert page["rating"] == {"average": 4.0, "count": 1}, page
    assert [(r["text"], r["author"]["display_name"]) for r in page["reviews"]] == [("Bright.", "Cluster Buyer")], page

    listed = get(f"{gateway}/v1/products", params={"category": category}).json()
    assert [item["id"] for item in listed["items"]] == [product["id"]] and listed["total"] == 1, listed

    items = [{"name": f"Imported {i:03d}", "description": "From the cluster test.", "price_cents": 100 + i,
              "currency": "EUR", "category": category, "stock": 1} for i in range(25)]
    accepted = requests.post(f"{gateway}/v1/imports", json=items, headers=seller.auth, timeout=TIMEOUT)
    assert accepted.status_code == 202 and accepted.json()["status"] == "queued", accepted.text
    job = wait_for_job(gateway, seller, accepted.json()["status_url"])
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"done": 25, "total": 25}, job
    assert job["result"]["imported"] == 25 and job["result"]["rejected"] == [], job
    listed = get(f"{gateway}/v1/products", params={"category": category, "per_page": 50}).json()
    assert listed["total"] == 26, listed
    assert {item["name"] for item in listed["items"]} == {"Green Lamp"} | {item["name"] for item in items}, listed
    categories = get(f"{gateway}/v1/categories").json()["items"]
    assert [c["product_count"] for c in categories if c["slug"] == category] == [26], categories


def wait_for_job(gateway: str, owner: Account, status_url: str) -> dict:
    deadline = time.monotonic() + IMPORT_TIMEOUT
    while True:
        response = get(f"{gateway}{status_url}", headers=owner.auth)
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] in {"succeeded", "failed"} or time.monotonic() > deadline:
            return job
        time.sleep(0.5)


def test_the_openapi_documents_are_served(gateway):
    for service, path in (("user", "/v1/users"), ("catalog", "/v1/products")):
        response = get(f"{gateway}/openapi/{service}.json")
        assert response.status_code == 200, response.text
        document = response.json()
        assert document["openapi"].startswith("3.") and path in document["paths"], sorted(document["paths"])


# ---- 2. X-Served-By ---------------------------------------------------------------------------

def test_x_served_by_names_the_running_catalog_pods(gateway, cluster: Cluster, product):
    catalog = cluster.deployment_name("catalog")
    names = [get(f"{gateway}/v1/products/{product['id']}").headers.get("X-Served-By", "") for _ in range(40)]
    running = cluster.serving_pod_names(catalog)
    assert len(set(names)) >= 2, names
    assert set(names) <= running, f"answered by {sorted(set(names))}; running pods of {catalog}: {sorted(running)}"


# ---- 3. scaling under load --------------------------------------------------------------------

def test_scaling_catalog_2_to_4_to_2_under_load_fails_no_request(gateway, cluster: Cluster, restore_replicas,
                                                                 product):
    catalog = cluster.deployment_name("catalog")
    restore_replicas(catalog)
    if cluster.replicas(catalog) != 2:
        scale(catalog, 2)
    cluster.wait_until_only(catalog, 2)
    paths = [f"/v1/products/{product['id']}", f"/v1/products?category={product['category']}"]
    with OpenLoopLoad(gateway, paths, rate=LOAD_RATE) as load:
        time.sleep(3)
        scale(catalog, 4)
        at_four = cluster.serving_pod_names(catalog)
        seen_at_four = load.wait_until_served_by(at_four, time.monotonic(), SERVED_BY_TIMEOUT)
        scale(catalog, 2)
        at_two = cluster.wait_until_only(catalog, 2)
        time.sleep(3)
    load.summary("catalog 2 -> 4 -> 2")
    assert len(at_four) == 4, at_four
    assert at_four <= seen_at_four, f"pods at 4: {sorted(at_four)}; answered: {sorted(seen_at_four)}"
    assert at_two < at_four
    assert not load.failures(), load.failures()[:20]
    assert len(load.answers()) == load.sent > LOAD_RATE * 10


# ---- 4. pods deleted under load ---------------------------------------------------------------

class ProductWriter(Periodic):
    """PATCHes the product every `interval` s, so the next page read misses the cache and calls the user service."""

    def __init__(self, gateway: str, seller: Account, product: dict, interval: float = 1.0):
        super().__init__(interval, name="writer")
        self.url = f"{gateway}/v1/products/{product['id']}"
        self.seller = seller
        self.statuses: list[int | str] = []
        self.stock = 0

    def tick(self) -> None:
        self.stock += 1
        try:
            response = requests.patch(self.url, json={"stock": self.stock}, headers=self.seller.auth, timeout=TIMEOUT)
            self.statuses.append(response.status_code)
        except requests.RequestException as error:
            self.statuses.append(type(error).__name__)


def test_a_catalog_pod_and_a_user_pod_deleted_under_load_fail_no_read(gateway, cluster: Cluster, restore_replicas,
                                                                       seller, product):
    catalog, user = cluster.deployment_name("catalog"), cluster.deployment_name("user")
    restore_replicas(catalog)
    restore_replicas(user)
    replicas = {catalog: cluster.replicas(catalog), user: cluster.replicas(user)}
    for deployment, count in replicas.items():
        cluster.wait_until_only(deployment, count)
    page = f"/v1/products/{product['id']}"
    paths = [page, f"/v1/users/{seller.id}"]
    with ProductWriter(gateway, seller, product) as writer, OpenLoopLoad(gateway, paths, rate=LOAD_RATE) as load:
        time.sleep(3)
        victims = [sorted(cluster.serving_pod_names(catalog))[0], sorted(cluster.serving_pod_names(user))[0]]
        deleted_at = time.monotonic()
        kubectl("delete", "pod", *victims)
        after = {deployment: cluster.wait_until_only(deployment, count) for deployment, count in replicas.items()}
        replacements = (after[catalog] | after[user]) - set(victims)
        seen = load.wait_until_served_by(replacements, deleted_at, SERVED_BY_TIMEOUT)
        time.sleep(3)
    load.summary(f"deleted {' and '.join(victims)}")
    writes = {str(status): writer.statuses.count(status) for status in set(writer.statuses)}
    print(f"[deleted pods] product PATCHes meanwhile: {writes}", flush=True)
    assert not set(victims) & (after[catalog] | after[user]), after
    assert replacements <= seen, f"replacements {sorted(replacements)}; answered: {sorted(seen)}"
    assert not load.failures(), load.failures()[:20]
    assert len(load.answers()) == load.sent > LOAD_RATE * 10
    misses = [o for o in load.answers() if o.path == page and o.cache == "miss" and o.due >= deleted_at]
    assert misses, "no product page read missed the cache after the deletion: the user service was not called"
