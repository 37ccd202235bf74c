"""The user service's request checks (services/user/models.py through its views), on the app built by
`create_app` with fakes: bad input is refused with a 422 naming the field before the database is asked
(the unit suite's database is down, so a request that reached it would answer 503)."""
from __future__ import annotations

import pytest

from services.user.models import MAX_BATCH_IDS, ProfileBatchQuery

GOOD_SIGN_UP = {"email": "ada@example.com", "password": "correct horse", "display_name": "Ada"}


def fields_of(response) -> set[str]:
    assert response.status_code == 422, response.data
    error = response.get_json()["error"]
    assert error["code"] == "validation_failed", error
    return {detail["field"] for detail in error["details"]}


@pytest.mark.parametrize("change, field", [
    ({"email": "not-an-email"}, "email"),
    ({"password": "short"}, "password"),
    ({"password": "x" * 257}, "password"),
    ({"display_name": ""}, "display_name"),
    ({"display_name": 42}, "display_name"),
    ({"is_admin": True}, "is_admin"),
])
def test_a_bad_sign_up_is_refused_naming_the_field(user_service, change, field):
    response = user_service.client.post("/v1/users", json={**GOOD_SIGN_UP, **change})
    assert fields_of(response) == {field}


def test_a_sign_up_missing_fields_names_each_of_them(user_service):
    assert fields_of(user_service.client.post("/v1/users", json={"email": "ada@example.com"})) == {
        "password", "display_name"}


def test_a_valid_sign_up_reaches_the_database(user_service):
    response = user_service.client.post("/v1/users", json=GOOD_SIGN_UP)
    assert response.status_code == 503, response.data  # the unit suite's database is down


@pytest.mark.parametrize("ids", ["", " , ", "nothex", ",".join(["0" * 24] * (MAX_BATCH_IDS + 1))])
def test_a_bad_batch_of_profile_ids_is_refused(user_service, ids):
    assert fields_of(user_service.client.get("/v1/users", query_string={"ids": ids})) == {"ids"}


def test_a_batch_of_profile_ids_is_read_once_each_in_the_order_asked():
    first, second = "a" * 24, "b" * 24
    query = ProfileBatchQuery(ids=f" {first.upper()},{second}, {first} ")
    assert query.id_list() == [first, second]
