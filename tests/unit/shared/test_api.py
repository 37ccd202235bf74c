"""@operation: authentication comes before any look at the body or query, and the token is verified once.

A bare app with the shared error handlers and three routes shows the order; the real services'
apps (tests/unit/conftest.py) show that their routes declare it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from pydantic import Field

from services.shared import auth
from services.shared.api import QueryParams, RequestBody, operation
from services.shared.errors import register_error_handlers
from tests.unit.fakes import FakeCache

SECRET = "unit-test-secret-of-at-least-32-bytes"


class Thing(RequestBody):
    name: str = Field(min_length=1)


class ThingQuery(QueryParams):
    limit: int = Field(ge=1)


class CountingCache(FakeCache):
    """A FakeCache that counts look-ups."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get_many(self, keys: list[str]) -> dict[str, Any] | None:
        self.reads += 1
        return super().get_many(keys)


class RevokedTokens:
    """The one query auth sends to the revoked_tokens collection."""

    def __init__(self) -> None:
        self.ids: set[str] = set()

    def find_one(self, query: dict, projection: dict | None = None) -> dict | None:
        return {"_id": query["_id"]} if query["_id"] in self.ids else None


@dataclass
class FakeResources:
    """What require_principal reads from the app: the secret, the database and the cache."""

    auth_secret: str = SECRET
    cache: CountingCache = field(default_factory=CountingCache)
    revoked: RevokedTokens = field(default_factory=RevokedTokens)

    @property
    def db(self) -> dict[str, RevokedTokens]:
        return {auth.REVOKED: self.revoked}


@pytest.fixture
def res() -> FakeResources:
    return FakeResources()


@pytest.fixture
def client(res):
    app = Flask(__name__)
    app.extensions["scaleshop"] = res
    register_error_handlers(app)

    @app.post("/things")
    @operation("Make a thing", tag="things", auth=True, body=Thing)
    def make_thing(body: Thing, principal: auth.Principal):
        return {"seller": principal.user_id, "name": body.name}, 201

    @app.get("/things")
    @operation("Find things", tag="things", auth=True, query=ThingQuery)
    def find_things(query: ThingQuery, principal: auth.Principal):
        return {"caller": principal.user_id, "limit": query.limit}

    @app.post("/open-things")
    @operation("Make a thing, no token needed", tag="things", body=Thing)
    def make_open_thing(body: Thing):
        return {"name": body.name}, 201

    return app.test_client()


def bearer(user_id: str = "u1") -> dict[str, str]:
    token, _ = auth.issue_token(SECRET, user_id, 3600)
    return {"Authorization": f"Bearer {token}"}


BAD_BODIES = {
    "malformed JSON": ("application/json", b'{"name": '),
    "not JSON": ("text/plain", b"name=lamp"),
    "fails validation": ("application/json", json.dumps({"name": "", "extra": 1}).encode()),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_anonymous_caller_with_a_bad_body_gets_401(client, case):
    content_type, data = BAD_BODIES[case]
    response = client.post("/things", data=data, content_type=content_type)
    assert response.status_code == 401, response.get_json()
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_anonymous_caller_with_a_bad_query_gets_401(client):
    response = client.get("/things?limit=zero&unknown=1")
    assert response.status_code == 401


def test_invalid_token_with_a_bad_body_gets_401(client):
    response = client.post("/things", data=b"{", content_type="application/json",
                           headers={"Authorization": "Bearer not-a-jwt"})
    assert response.status_code == 401
    assert response.get_json()["error"]["message"] == "the token is invalid"


def test_revoked_token_with_a_bad_body_gets_401(client, res):
    headers = bearer()
    principal = auth.decode_token(SECRET, headers["Authorization"].split()[1])
    res.revoked.ids.add(principal.token_id)
    response = client.post("/things", json={"name": ""}, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["message"] == "the token has been revoked"


@pytest.mark.parametrize("case, status", [("malformed JSON", 400), ("not JSON", 415), ("fails validation", 422)])
def test_signed_in_caller_with_a_bad_body_gets_the_body_error(client, case, status):
    content_type, data = BAD_BODIES[case]
    response = client.post("/things", data=data, content_type=content_type, headers=bearer())
    assert response.status_code == status, response.get_json()


def test_signed_in_caller_with_a_bad_query_gets_422(client):
    response = client.get("/things?limit=zero", headers=bearer())
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["field"] == "limit"


def test_the_view_gets_the_principal_verified_once(client, res):
    """The operation authenticates and hands the view the principal: one revocation look-up a request."""
    response = client.post("/things", json={"name": "Lamp"}, headers=bearer("seller-7"))
    assert response.status_code == 201
    assert response.get_json() == {"seller": "seller-7", "name": "Lamp"}
    assert res.cache.reads == 1, "the revocation was looked up more than once in one request"


def test_each_request_is_authenticated_anew(client, res):
    headers = bearer("u2")
    assert client.get("/things?limit=3", headers=headers).get_json() == {"caller": "u2", "limit": 3}
    assert client.get("/things?limit=3").status_code == 401  # nothing of the previous request lingers
    assert client.get("/things?limit=4", headers=bearer("u3")).get_json() == {"caller": "u3", "limit": 4}


def test_a_route_without_auth_validates_the_body_of_anyone(client):
    assert client.post("/open-things", json={"name": ""}).status_code == 422
    assert client.post("/open-things", json={"name": "Lamp"}).status_code == 201


@pytest.mark.parametrize("content_type, data", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_the_catalog_answers_an_anonymous_product_with_a_bad_body_401(catalog_service, content_type, data):
    """Whatever the body, and though the database of the unit apps is down: no token needs no database."""
    response = catalog_service.client.post("/v1/products", data=data, content_type=content_type)
    assert response.status_code == 401, response.get_json()
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_the_user_service_answers_an_anonymous_profile_change_with_a_bad_body_401(user_service):
    response = user_service.client.patch("/v1/users/me", json={"display_name": 42, "email": "x"})
    assert response.status_code == 401, response.get_json()
