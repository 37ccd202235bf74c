"""Authorization (issue 7, item 3): every route x {anonymous, other user, owner}, and bad tokens.

The matrix below is the rule book: for each route of both services, the status each kind of
caller gets. "owner" is the user the resource belongs to (the account for /v1/users/me, the
seller of the product, the submitter of the job); "other user" is any other signed-in user.
On routes that act on the caller's own account (/v1/users/me, /v1/sessions/current) the other
user only ever reaches their own account, never the owner's. On public routes the Authorization
header changes nothing. Every scenario re-reads the state afterwards: a refused request
changed nothing, an allowed one did exactly what it says.

Then tokens: expired, tampered, signed with another secret, of another algorithm, revoked,
missing a claim, from another issuer: each is 401 on a protected route of each service, and a
token built correctly (the control) is accepted there. And job ids: another user's job answers
exactly what a job id that does not exist answers.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
import requests

from tests.functional.api_checks import TIMEOUT, assert_error, create_product, post_raw, unique_slug
from tests.functional.conftest import Account, sign_up

ANONYMOUS, OTHER, OWNER = "anonymous", "other user", "owner"
ROLES = (ANONYMOUS, OTHER, OWNER)

PUBLIC = "public"
SIGNED_IN = "any signed-in user"
OWN_ACCOUNT = "the caller's own account"
SELLER_ONLY = "seller only"
OWNER_ONLY = "owner only"

ERROR_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found"}


# ---- the world a scenario runs in ---------------------------------------------------------------

@dataclass
class World:
    """Two accounts, a category of this test's own and, made on demand, the owner's product and job."""

    base: str
    owner: Account
    other: Account
    db: Any
    category: str = field(default_factory=lambda: unique_slug("authz"))
    _product: dict | None = None
    _job_id: str | None = None

    def account(self, role: str) -> Account | None:
        return {ANONYMOUS: None, OTHER: self.other, OWNER: self.owner}[role]

    def headers(self, role: str) -> dict[str, str]:
        account = self.account(role)
        return account.auth if account else {}

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def get(self, path: str, headers: dict[str, str] | None = None, **kwargs) -> requests.Response:
        return requests.get(self.url(path), headers=headers or {}, timeout=TIMEOUT, **kwargs)

    def product(self) -> dict:
        """A product the owner sells (created on first use)."""
        if self._product is None:
            self._product = create_product(self.base, self.owner.auth, self.category, name="Owner's Lamp")
        return self._product

    def job_id(self) -> str:
        """A job the owner submitted (an export, created on first use)."""
        if self._job_id is None:
            response = requests.post(self.url("/v1/users/me/export"), headers=self.owner.auth, timeout=TIMEOUT)
            assert response.status_code == 202, response.text
            self._job_id = response.json()["job_id"]
        return self._job_id

    def page(self, product_id: str) -> dict:
        response = self.get(f"/v1/products/{product_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def me(self, account: Account) -> dict:
        response = self.get("/v1/users/me", account.auth)
        assert response.status_code == 200, response.text
        return response.json()

    def jobs_of(self, user_id: str | None = None) -> int:
        return self.db.jobs.count_documents({} if user_id is None else {"owner_id": user_id})


def expect(response: requests.Response, status: int) -> None:
    """`response` has `status`; an error is the JSON error of DESIGN.md with its code."""
    if status >= 400:
        assert_error(response, status, ERROR_CODES[status])
        if status == 401:
            assert response.headers.get("WWW-Authenticate", "").lower().startswith("bearer"), response.headers
    else:
        assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text[:500]}"


def sign_in(base: str, account: Account) -> str:
    response = requests.post(f"{base}/v1/sessions", json={"email": account.email, "password": account.password},
                             timeout=TIMEOUT)
    assert response.status_code == 201, response.text
    return response.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---- the matrix ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    label: str  # "METHOD path", with the path as the OpenAPI document spells it
    rule: str
    expected: dict[str, int]
    scenario: Callable[[World, str, int], None]


MATRIX: dict[str, Route] = {}


def route(label: str, rule: str, *, anonymous: int, other: int, owner: int):
    """Register the scenario of one route with the status each kind of caller must get."""
    def register(scenario: Callable[[World, str, int], None]) -> Callable[[World, str, int], None]:
        MATRIX[label] = Route(label, rule, {ANONYMOUS: anonymous, OTHER: other, OWNER: owner}, scenario)
        return scenario
    return register


#      route                                          rule          anonymous   other user   owner
@route("POST /v1/users",                              PUBLIC,       anonymous=201, other=201, owner=201)
def sign_up_route(w: World, role: str, status: int) -> None:
    email = f"authz-{uuid.uuid4().hex[:12]}@example.com"
    response = requests.post(w.url("/v1/users"), json={"email": email, "password": "long enough password",
                                                       "display_name": "Newcomer"},
                             headers=w.headers(role), timeout=TIMEOUT)
    expect(response, status)
    created = response.json()
    assert created["email"] == email and created["id"] not in (w.owner.id, w.other.id)
    assert w.get(f"/v1/users/{created['id']}").json()["display_name"] == "Newcomer"


@route("GET /v1/users",                               PUBLIC,       anonymous=200, other=200, owner=200)
def profiles_route(w: World, role: str, status: int) -> None:
    response = w.get(f"/v1/users?ids={w.owner.id},{w.other.id}", w.headers(role))
    expect(response, status)
    items = response.json()["items"]
    assert [item["id"] for item in items] == [w.owner.id, w.other.id]
    assert all(set(item) == {"id", "display_name", "bio", "created_at"} for item in items), items  # no email


@route("GET /v1/users/{user_id}",                     PUBLIC,       anonymous=200, other=200, owner=200)
def profile_route(w: World, role: str, status: int) -> None:
    response = w.get(f"/v1/users/{w.owner.id}", w.headers(role))
    expect(response, status)
    assert response.json()["id"] == w.owner.id
    assert set(response.json()) == {"id", "display_name", "bio", "created_at"}, response.json()  # no email


@route("GET /v1/users/me",                            OWN_ACCOUNT,  anonymous=401, other=200, owner=200)
def me_route(w: World, role: str, status: int) -> None:
    response = w.get("/v1/users/me", w.headers(role))
    expect(response, status)
    if status == 200:  # the caller's own account, whoever asks
        caller = w.account(role)
        assert (response.json()["id"], response.json()["email"]) == (caller.id, caller.email)


@route("PATCH /v1/users/me",                          OWN_ACCOUNT,  anonymous=401, other=200, owner=200)
def patch_me_route(w: World, role: str, status: int) -> None:
    before = {account.id: w.me(account) for account in (w.owner, w.other)}
    bio = f"written by {role} {uuid.uuid4().hex[:8]}"
    response = requests.patch(w.url("/v1/users/me"), json={"bio": bio}, headers=w.headers(role), timeout=TIMEOUT)
    expect(response, status)
    caller = w.account(role)
    for account in (w.owner, w.other):
        now = w.me(account)
        if caller is not None and account.id == caller.id:
            assert response.json()["id"] == caller.id and now["bio"] == bio
        else:
            assert now == before[account.id], f"{role} changed {account.display_name}'s account"


@route("POST /v1/users/me/export",                    OWN_ACCOUNT,  anonymous=401, other=202, owner=202)
def export_route(w: World, role: str, status: int) -> None:
    jobs_before = w.jobs_of()
    response = requests.post(w.url("/v1/users/me/export"), headers=w.headers(role), timeout=TIMEOUT)
    expect(response, status)
    if status != 202:
        assert w.jobs_of() == jobs_before, "a refused export recorded a job"
        return
    job_id = response.json()["job_id"]
    caller = w.account(role)
    stranger = w.other if caller is w.owner else w.owner
    assert w.get(f"/v1/jobs/{job_id}", caller.auth).status_code == 200
    expect(w.get(f"/v1/jobs/{job_id}", stranger.auth), 404)


@route("POST /v1/sessions",                           PUBLIC,       anonymous=201, other=201, owner=201)
def sign_in_route(w: World, role: str, status: int) -> None:
    response = requests.post(w.url("/v1/sessions"), json={"email": w.owner.email, "password": w.owner.password},
                             headers=w.headers(role), timeout=TIMEOUT)
    expect(response, status)
    assert response.json()["user_id"] == w.owner.id  # the credentials decide, not the caller's token
    assert w.me(Account(w.owner.id, "", "", "", response.json()["token"]))["id"] == w.owner.id


@route("DELETE /v1/sessions/current",                 OWN_ACCOUNT,  anonymous=401, other=204, owner=204)
def sign_out_route(w: World, role: str, status: int) -> None:
    # Fresh sessions, so the module's tokens survive: the owner's and the other user's.
    tokens = {OWNER: sign_in(w.base, w.owner), OTHER: sign_in(w.base, w.other)}
    sent = {"Authorization": f"Bearer {tokens[role]}"} if role in tokens else {}
    response = requests.delete(w.url("/v1/sessions/current"), headers=sent, timeout=TIMEOUT)
    expect(response, status)
    for holder, token in tokens.items():
        revoked = holder == role
        for check in ("/v1/users/me", f"/v1/jobs/{uuid.uuid4().hex}"):  # user service, catalog service
            answer = w.get(check, bearer(token))
            if revoked:
                expect(answer, 401)
            else:
                assert answer.status_code in (200, 404), f"{role}'s sign-out revoked {holder}'s token: {answer.text}"


@route("POST /v1/products",                           SIGNED_IN,    anonymous=401, other=201, owner=201)
def create_product_route(w: World, role: str, status: int) -> None:
    body = {"name": "Teapot", "description": "Holds tea.", "price_cents": 2500, "currency": "EUR",
            "category": w.category}
    response = requests.post(w.url("/v1/products"), json=body, headers=w.headers(role), timeout=TIMEOUT)
    expect(response, status)
    listed = w.get(f"/v1/products?category={w.category}").json()["items"]
    if status == 201:
        assert response.json()["seller_id"] == w.account(role).id  # the caller is the seller
        assert [item["id"] for item in listed] == [response.json()["id"]]
    else:
        assert listed == [], "a refused create added a product"


@route("GET /v1/products",                            PUBLIC,       anonymous=200, other=200, owner=200)
def list_products_route(w: World, role: str, status: int) -> None:
    product = w.product()
    response = w.get(f"/v1/products?category={w.category}", w.headers(role))
    expect(response, status)
    assert [item["id"] for item in response.json()["items"]] == [product["id"]]


@route("GET /v1/products/{product_id}",               PUBLIC,       anonymous=200, other=200, owner=200)
def product_page_route(w: World, role: str, status: int) -> None:
    product = w.product()
    response = w.get(f"/v1/products/{product['id']}", w.headers(role))
    expect(response, status)
    assert response.json()["product"] == product
    assert response.json()["seller"]["id"] == w.owner.id and "email" not in response.json()["seller"]


@route("PATCH /v1/products/{product_id}",             SELLER_ONLY,  anonymous=401, other=403, owner=200)
def patch_product_route(w: World, role: str, status: int) -> None:
    product = w.product()
    response = requests.patch(w.url(f"/v1/products/{product['id']}"), json={"name": "Hijacked", "price_cents": 1},
                              headers=w.headers(role), timeout=TIMEOUT)
    expect(response, status)
    now = w.page(product["id"])["product"]
    if status == 200:
        assert (now["name"], now["price_cents"], now["seller_id"]) == ("Hijacked", 1, w.owner.id)
    else:
        assert now == product, "a refused change changed the product"


@route("DELETE /v1/products/{product_id}",            SELLER_ONLY,  anonymous=401, other=403, owner=204)
def delete_product_route(w: World, role: str, status: int) -> None:
    product = w.product()
    response = requests.delete(w.url(f"/v1/products/{product['id']}"), headers=w.headers(role), timeout=TIMEOUT)
    expect(response, status)
    if status == 204:
        expect(w.get(f"/v1/products/{product['id']}"), 404)
        assert w.get(f"/v1/products?category={w.category}").json()["items"] == []
    else:
        assert w.page(product["id"])["product"] == product, "a refused delete changed the product"
        assert [item["id"] for item in w.get(f"/v1/products?category={w.category}").json()["items"]] \
            == [product["id"]]


@route("POST /v1/products/{product_id}/reviews",      SIGNED_IN,    anonymous=401, other=201, owner=201)
def review_route(w: World, role: str, status: int) -> None:
    product = w.product()
    response = requests.post(w.url(f"/v1/products/{product['id']}/reviews"), json={"rating": 4, "text": "Fine."},
                             headers=w.headers(role), timeout=TIMEOUT)
    expect(response, status)
    page = w.page(product["id"])
    if status == 201:
        assert [review["author"]["id"] for review in page["reviews"]] == [w.account(role).id]
        assert page["rating"] == {"average": 4.0, "count": 1}
    else:
        assert page["reviews"] == [] and page["rating"] == {"average": None, "count": 0}


@route("GET /v1/categories",                          PUBLIC,       anonymous=200, other=200, owner=200)
def categories_route(w: World, role: str, status: int) -> None:
    w.product()
    response = w.get("/v1/categories", w.headers(role))
    expect(response, status)
    counts = {item["slug"]: item["product_count"] for item in response.json()["items"]}
    assert counts.get(w.category) == 1, counts.get(w.category)


@route("GET /v1/categories/stats",                    PUBLIC,       anonymous=200, other=200, owner=200)
def category_stats_route(w: World, role: str, status: int) -> None:
    response = w.get("/v1/categories/stats", w.headers(role))
    expect(response, status)
    assert isinstance(response.json()["items"], list)


@route("POST /v1/imports",                            SIGNED_IN,    anonymous=401, other=202, owner=202)
def import_route(w: World, role: str, status: int) -> None:
    jobs_before = w.jobs_of()
    body = [{"name": "Imported", "description": "From a file.", "price_cents": 100, "currency": "EUR",
             "category": w.category}]
    response = requests.post(w.url("/v1/imports"), json=body, headers=w.headers(role), timeout=TIMEOUT)
    expect(response, status)
    if status != 202:
        assert w.jobs_of() == jobs_before, "a refused import recorded a job"
        return
    caller = w.account(role)
    stranger = w.other if caller is w.owner else w.owner
    job_id = response.json()["job_id"]
    assert w.get(f"/v1/jobs/{job_id}", caller.auth).status_code == 200
    expect(w.get(f"/v1/jobs/{job_id}", stranger.auth), 404)


@route("GET /v1/jobs/{job_id}",                       OWNER_ONLY,   anonymous=401, other=404, owner=200)
def job_route(w: World, role: str, status: int) -> None:
    job_id = w.job_id()
    response = w.get(f"/v1/jobs/{job_id}", w.headers(role))
    expect(response, status)
    if status == 200:
        assert response.json()["id"] == job_id and response.json()["type"] == "export"
    else:  # nothing about the job leaks: the answer is the one for an id that does not exist
        assert response.json() == w.get(f"/v1/jobs/{uuid.uuid4().hex}", w.headers(role)).json()


# ---- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def owner(gateway) -> Account:
    return sign_up(gateway, display_name="Olivia Owner")


@pytest.fixture(scope="module")
def other(gateway) -> Account:
    return sign_up(gateway, display_name="Oscar Other")


@pytest.fixture
def world(gateway, owner, other, db) -> World:
    return World(gateway, owner, other, db)


# ---- the matrix, run -------------------------------------------------------------------------------

CELLS = [pytest.param(label, role, id=f"{label} | {role} -> {MATRIX[label].expected[role]}")
         for label in MATRIX for role in ROLES]


@pytest.mark.parametrize(("label", "role"), CELLS)
def test_route(world, label, role):
    entry = MATRIX[label]
    entry.scenario(world, role, entry.expected[role])


def test_matrix_covers_every_route_and_matches_the_specs(gateway):
    """Every operation of both OpenAPI documents has a row, and a route is refused to anonymous
    callers exactly when its document says it needs a bearer token."""
    secured: dict[str, bool] = {}
    for service in ("user", "catalog"):
        spec = requests.get(f"{gateway}/openapi/{service}.json", timeout=TIMEOUT).json()
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                secured[f"{method.upper()} {path}"] = bool(operation.get("security"))
    assert set(MATRIX) == set(secured), (f"routes without a row: {sorted(set(secured) - set(MATRIX))}; "
                                         f"rows without a route: {sorted(set(MATRIX) - set(secured))}")
    for label, entry in MATRIX.items():
        assert (entry.rule != PUBLIC) == secured[label] == (entry.expected[ANONYMOUS] == 401), label


# ---- authentication comes before the body -------------------------------------------------------------

BAD_BODIES = {
    "malformed JSON": ("application/json", b'{"name": '),
    "not JSON": ("text/plain", b"name=Teapot"),
    "fails validation": ("application/json", b'{"price_cents": "free", "unknown": 1}'),
}


def secured_routes_with_a_body(gateway: str) -> list[tuple[str, str]]:
    """(method, path) of every operation of both OpenAPI documents that needs a token and takes a body,
    with each path parameter filled in with an id that does not exist."""
    routes = []
    for service in ("user", "catalog"):
        spec = requests.get(f"{gateway}/openapi/{service}.json", timeout=TIMEOUT).json()
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                if operation.get("security") and "requestBody" in operation:
                    routes.append((method.upper(), re.sub(r"\{[^}]+\}", uuid.uuid4().hex, path)))
    return routes


@pytest.mark.parametrize("token", [None, "not-a-token"], ids=["no token", "invalid token"])
@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_a_caller_without_a_valid_token_gets_401_whatever_the_body(gateway, case, token):
    """Authentication runs before the body is read: a caller without a valid token learns nothing about
    what a route accepts (401, never 400, 415 or 422), on every route that needs a token and takes a body."""
    content_type, data = BAD_BODIES[case]
    routes = secured_routes_with_a_body(gateway)
    assert ("POST", "/v1/products") in routes and ("PATCH", "/v1/users/me") in routes, routes
    headers = bearer(token) if token else {}
    for method, path in routes:
        expect(post_raw(f"{gateway}{path}", data, content_type, headers=headers, method=method), 401)


# ---- tokens --------------------------------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: dict) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims_for(user_id: str, **overrides: Any) -> dict:
    """Claims like the server's own (sub, jti, iat, exp, iss); an override of None drops the claim."""
    now = int(time.time())
    claims = {"sub": user_id, "jti": uuid.uuid4().hex, "iat": now, "exp": now + 600, "iss": "scaleshop"}
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def hs256_with_header(header: dict, claims: dict, secret: str) -> str:
    """A token whose header says what `header` says, signed HMAC-SHA256 with `secret` whatever it says."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def changed_payload(token: str, **changes: Any) -> str:
    """The token with claims changed and the original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return ".".join([header, b64json(claims), signature])


@dataclass
class Victim:
    """The account whose identity the bad tokens try to use, with a job of its own."""

    account: Account
    job_id: str
    category: str
    revoked_token: str


@pytest.fixture(scope="module")
def victim(gateway) -> Victim:
    account = sign_up(gateway, display_name="Vera Victim")
    export = requests.post(f"{gateway}/v1/users/me/export", headers=account.auth, timeout=TIMEOUT)
    assert export.status_code == 202, export.text
    revoked = sign_in(gateway, account)
    assert requests.delete(f"{gateway}/v1/sessions/current", headers=bearer(revoked), timeout=TIMEOUT).status_code \
        == 204
    return Victim(account, export.json()["job_id"], unique_slug("tokens"), revoked)


def bad_token(kind: str, victim: Victim, secret: str, other_id: str) -> str:
    user_id = victim.account.id
    good = jwt.encode(claims_for(user_id), secret, algorithm="HS256")
    return {
        "expired": jwt.encode(claims_for(user_id, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
                              secret, algorithm="HS256"),
        "tampered: subject changed to another user": changed_payload(victim.account.token, sub=other_id),
        "tampered: expiry extended": changed_payload(victim.account.token, exp=int(time.time()) + 10 * 365 * 86400),
        "signed with another secret": jwt.encode(claims_for(user_id), "not the secret, but just as long!",
                                                 algorithm="HS256"),
        "alg none, unsigned": f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(claims_for(user_id))}.",
        "alg none, real signature kept": ".".join([b64json({"alg": "none", "typ": "JWT"})] + good.split(".")[1:]),
        "HS512 with the real secret": jwt.encode(claims_for(user_id), secret, algorithm="HS512"),
        "RS256 header, HMAC signature with the real secret": hs256_with_header({"alg": "RS256", "typ": "JWT"},
                                                                               claims_for(user_id), secret),
        "RS256 header, made-up signature": f"{b64json({'alg': 'RS256', 'typ': 'JWT'})}."
                                           f"{b64json(claims_for(user_id))}.{b64url(b'x' * 256)}",
        "revoked (signed out)": victim.revoked_token,
        "missing sub": jwt.encode(claims_for(user_id, sub=None), secret, algorithm="HS256"),
        "missing jti": jwt.encode(claims_for(user_id, jti=None), secret, algorithm="HS256"),
        "missing iat": jwt.encode(claims_for(user_id, iat=None), secret, algorithm="HS256"),
        "missing exp": jwt.encode(claims_for(user_id, exp=None), secret, algorithm="HS256"),
        "missing iss": jwt.encode(claims_for(user_id, iss=None), secret, algorithm="HS256"),
        "wrong issuer": jwt.encode(claims_for(user_id, iss="not-scaleshop"), secret, algorithm="HS256"),
    }[kind]


TOKEN_KINDS = ["expired", "tampered: subject changed to another user", "tampered: expiry extended",
               "signed with another secret", "alg none, unsigned", "alg none, real signature kept",
               "HS512 with the real secret", "RS256 header, HMAC signature with the real secret",
               "RS256 header, made-up signature", "revoked (signed out)", "missing sub", "missing jti",
               "missing iat", "missing exp", "missing iss", "wrong issuer"]


def call_protected(base: str, target: str, victim: Victim, headers: dict[str, str]) -> requests.Response:
    """A protected route of each service: GET /v1/users/me (user); POST /v1/products and
    GET /v1/jobs/{id} (catalog)."""
    if target == "user: GET /v1/users/me":
        return requests.get(f"{base}/v1/users/me", headers=headers, timeout=TIMEOUT)
    if target == "catalog: POST /v1/products":
        body = {"name": "Forged", "description": "Should not exist.", "price_cents": 1, "currency": "EUR",
                "category": victim.category}
        return requests.post(f"{base}/v1/products", json=body, headers=headers, timeout=TIMEOUT)
    assert target == "catalog: GET /v1/jobs/{job_id}"
    return requests.get(f"{base}/v1/jobs/{victim.job_id}", headers=headers, timeout=TIMEOUT)


PROTECTED = ["user: GET /v1/users/me", "catalog: POST /v1/products", "catalog: GET /v1/jobs/{job_id}"]


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 with the real secret
@pytest.mark.parametrize("target", PROTECTED)
@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_bad_token_is_refused(gateway, auth_secret, victim, other, kind, target):
    token = bad_token(kind, victim, auth_secret, other.id)
    expect(call_protected(gateway, target, victim, bearer(token)), 401)
    # Nothing was created in the victim's (or anyone's) name.
    listed = requests.get(f"{gateway}/v1/products?category={victim.category}", timeout=TIMEOUT).json()
    assert listed["items"] == [], listed


@pytest.mark.parametrize("target", PROTECTED)
def test_a_token_built_like_the_servers_own_is_accepted(gateway, auth_secret, victim, target):
    """The control: right secret, algorithm and claims. So each refusal above is due to its one defect."""
    token = jwt.encode(claims_for(victim.account.id), auth_secret, algorithm="HS256")
    response = call_protected(gateway, target, victim, bearer(token))
    assert response.status_code in (200, 201), response.text
    if target == "catalog: POST /v1/products":  # tidy up, so the bad-token checks see an empty category
        assert requests.delete(f"{gateway}/v1/products/{response.json()['id']}", headers=bearer(token),
                               timeout=TIMEOUT).status_code == 204


# ---- job ids reveal nothing -------------------------------------------------------------------

def comparable(response: requests.Response) -> tuple:
    """What a caller can observe, less what differs on every response (request id, replica, date)."""
    varying = {"x-request-id", "x-served-by", "date", "x-db-round-trips"}
    headers = sorted((name.lower(), value) for name, value in response.headers.items() if name.lower() not in varying)
    return response.status_code, response.content, headers


@pytest.mark.parametrize("state", ["queued or running", "finished"])
def test_another_users_job_looks_exactly_like_no_job(gateway, owner, other, state):
    job_id = requests.post(f"{gateway}/v1/users/me/export", headers=owner.auth, timeout=TIMEOUT).json()["job_id"]
    if state == "finished":
        deadline = time.monotonic() + 30
        while requests.get(f"{gateway}/v1/jobs/{job_id}", headers=owner.auth,
                           timeout=TIMEOUT).json()["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, "the export did not finish within 30 s"
            time.sleep(0.2)
    others_job = requests.get(f"{gateway}/v1/jobs/{job_id}", headers=other.auth, timeout=TIMEOUT)
    expect(others_job, 404)
    for unknown in (uuid.uuid4().hex, job_id[:-1] + ("0" if job_id[-1] != "0" else "1"), "x" * 64):
        assert comparable(requests.get(f"{gateway}/v1/jobs/{unknown}", headers=other.auth, timeout=TIMEOUT)) \
            == comparable(others_job), unknown
    # Before authentication, existence does not show either.
    anonymous = [requests.get(f"{gateway}/v1/jobs/{job}", timeout=TIMEOUT) for job in (job_id, uuid.uuid4().hex)]
    expect(anonymous[0], 401)
    assert comparable(anonymous[0]) == comparable(anonymous[1])
    # And the owner does see it: the id was real all along.
    assert requests.get(f"{gateway}/v1/jobs/{job_id}", headers=owner.auth, timeout=TIMEOUT).status_code == 200
