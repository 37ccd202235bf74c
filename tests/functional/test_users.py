"""Every route of the user service, through the gateway, as a client sees it (DESIGN.md "User service")."""
from __future__ import annotations

import datetime as dt
import re
import threading

import pytest
import requests

from tests.functional.api_checks import TIMEOUT, assert_error
from tests.functional.conftest import replica_url, sign_up, unique_email

PASSWORD = "correct horse battery"
OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
PUBLIC_FIELDS = {"id", "display_name", "bio", "created_at"}


def parse_time(text: str) -> dt.datetime:
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", text), text
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert moment.utcoffset() == dt.timedelta(0), f"not UTC: {text}"
    return moment


def create_user(base: str, email: str, display_name: str = "Someone", password: str = PASSWORD):
    return requests.post(f"{base}/v1/users", json={"email": email, "password": password,
                                                   "display_name": display_name}, timeout=TIMEOUT)


def sign_in(base: str, email: str, password: str = PASSWORD):
    return requests.post(f"{base}/v1/sessions", json={"email": email, "password": password}, timeout=TIMEOUT)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unknown_id() -> str:
    return "0" * 23 + "1"


# ---- POST /v1/users ------------------------------------------------------------------------

def test_sign_up_returns_the_new_account_without_password(gateway):
    email = unique_email("signup")
    before = dt.datetime.now(dt.UTC)
    response = create_user(gateway, email, display_name="Ada Lovelace")
    after = dt.datetime.now(dt.UTC)

    assert response.status_code == 201, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert {"id", "email", "display_name", "created_at"} <= set(body)
    assert OBJECT_ID.match(body["id"]), body["id"]
    assert body["email"] == email
    assert body["display_name"] == "Ada Lovelace"
    created = parse_time(body["created_at"])
    assert before - dt.timedelta(seconds=5) <= created <= after + dt.timedelta(seconds=5)
    assert not {key for key in body if "password" in key.lower() or "hash" in key.lower()}, body
    assert PASSWORD not in response.text
    assert "argon2" not in response.text and "$2b$" not in response.text


def test_two_sign_ups_get_different_ids(gateway):
    first = create_user(gateway, unique_email("a"))
    second = create_user(gateway, unique_email("b"))
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] != second.json()["id"]


def test_email_taken_is_409_even_in_another_case(gateway):
    email = unique_email("Taken")
    assert create_user(gateway, email).status_code == 201
    for variant in (email, email.upper(), email.lower(), email.swapcase()):
        assert_error(create_user(gateway, variant, display_name="Impostor"), 409, "conflict")
    # The original account is untouched: its password still signs in.
    assert sign_in(gateway, email).status_code == 201


@pytest.mark.parametrize("route", ["gateway", "user-1 vs user-2"])
def test_concurrent_sign_ups_with_one_email_create_one_account(stack, gateway, route):
    bases = [gateway, gateway] if route == "gateway" else [replica_url(stack, "user-1"), replica_url(stack, "user-2")]
    for _ in range(3):
        email = unique_email("race")
        variants = [email, email.upper()]  # same account, compared case-insensitively
        barrier = threading.Barrier(2)
        results: list[requests.Response | BaseException] = [None, None]  # type: ignore[list-item]

        def attempt(i: int, barrier=barrier, results=results, variants=variants) -> None:
            try:
                barrier.wait(timeout=10)
                results[i] = create_user(bases[i], variants[i], display_name=f"racer {i}")
            except BaseException as exc:  # noqa: BLE001 - reported below
                results[i] = exc

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert all(isinstance(r, requests.Response) for r in results), results
        statuses = sorted(r.status_code for r in results)
        assert statuses == [201, 409], [(r.status_code, r.text) for r in results]
        loser = next(r for r in results if r.status_code == 409)
        assert_error(loser, 409, "conflict")
        winner = next(r for r in results if r.status_code == 201)
        # Exactly one account: the winner's password signs in and gives the winner's id.
        session = sign_in(gateway, email)
        assert session.status_code == 201, session.text
        assert session.json()["user_id"] == winner.json()["id"]


# ---- POST /v1/sessions ----------------------------------------------------------------------

def test_sign_in_returns_a_working_token(gateway):
    email = unique_email("signin")
    user = create_user(gateway, email).json()
    before = dt.datetime.now(dt.UTC)
    response = sign_in(gateway, email)

    assert response.status_code == 201, response.text
    body = response.json()
    assert {"token", "user_id", "expires_at"} <= set(body)
    assert body["user_id"] == user["id"]
    assert isinstance(body["token"], str) and body["token"].count(".") == 2
    expires = parse_time(body["expires_at"])
    assert before + dt.timedelta(minutes=1) <= expires <= before + dt.timedelta(days=31)
    me = requests.get(f"{gateway}/v1/users/me", headers=bearer(body["token"]), timeout=TIMEOUT)
    assert me.status_code == 200, me.text
    assert me.json()["id"] == user["id"]


def test_sign_in_email_is_case_insensitive(gateway):
    email = unique_email("CaseLogin")
    user = create_user(gateway, email).json()
    response = sign_in(gateway, email.upper())
    assert response.status_code == 201, response.text
    assert response.json()["user_id"] == user["id"]


def test_sign_in_refuses_wrong_password_and_unknown_email_alike(gateway):
    email = unique_email("wrongpw")
    assert create_user(gateway, email).status_code == 201
    wrong_password = assert_error(sign_in(gateway, email, "not the password"), 401, "unauthorized")
    unknown_email = assert_error(sign_in(gateway, unique_email("nobody")), 401, "unauthorized")
    # Same answer either way: the response does not tell which emails have accounts.
    assert wrong_password["message"] == unknown_email["message"]


def test_each_sign_in_gives_a_distinct_token(gateway, account):
    again = sign_in(gateway, account.email, account.password)
    assert again.status_code == 201
    assert again.json()["token"] != account.token


# ---- GET and PATCH /v1/users/me -------------------------------------------------------------

def test_get_me_returns_own_account_with_email(gateway, account):
    response = requests.get(f"{gateway}/v1/users/me", headers=account.auth, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == account.id
    assert body["email"] == account.email
    assert body["display_name"] == account.display_name
    assert body["bio"] == ""
    parse_time(body["created_at"])
    assert not {key for key in body if "password" in key.lower() or "hash" in key.lower()}, body


def test_me_needs_a_token(gateway):
    assert_error(requests.get(f"{gateway}/v1/users/me", timeout=TIMEOUT), 401, "unauthorized")
    assert_error(requests.patch(f"{gateway}/v1/users/me", json={"bio": "x"}, timeout=TIMEOUT), 401, "unauthorized")


def test_patch_me_changes_display_name_and_bio_everywhere(gateway, stack, account):
    changes = {"display_name": "New Name", "bio": "Collector of rare stamps.\nLives by the sea."}
    response = requests.patch(f"{gateway}/v1/users/me", json=changes, headers=account.auth, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["display_name"] == changes["display_name"]
    assert body["bio"] == changes["bio"]
    assert body["id"] == account.id and body["email"] == account.email

    me = requests.get(f"{gateway}/v1/users/me", headers=account.auth, timeout=TIMEOUT).json()
    assert (me["display_name"], me["bio"]) == (changes["display_name"], changes["bio"])
    # The public profile shows the change at once, whichever replica answers.
    for base in (gateway, replica_url(stack, "user-1"), replica_url(stack, "user-2")):
        profile = requests.get(f"{base}/v1/users/{account.id}", timeout=TIMEOUT)
        assert profile.status_code == 200, profile.text
        assert (profile.json()["display_name"], profile.json()["bio"]) == (changes["display_name"], changes["bio"])


def test_patch_me_with_one_field_leaves_the_other(gateway, account):
    first = requests.patch(f"{gateway}/v1/users/me", json={"bio": "only the bio"}, headers=account.auth,
                           timeout=TIMEOUT)
    assert first.status_code == 200, first.text
    assert first.json()["display_name"] == account.display_name
    second = requests.patch(f"{gateway}/v1/users/me", json={"display_name": "Only The Name"},
                            headers=account.auth, timeout=TIMEOUT)
    assert second.status_code == 200, second.text
    assert second.json()["bio"] == "only the bio"
    assert second.json()["display_name"] == "Only The Name"


def test_patch_me_can_clear_the_bio(gateway, account):
    requests.patch(f"{gateway}/v1/users/me", json={"bio": "temporary"}, headers=account.auth, timeout=TIMEOUT)
    response = requests.patch(f"{gateway}/v1/users/me", json={"bio": ""}, headers=account.auth, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json()["bio"] == ""
    assert requests.get(f"{gateway}/v1/users/{account.id}", timeout=TIMEOUT).json()["bio"] == ""


def test_patch_me_changes_only_the_callers_account(gateway, account):
    other = sign_up(gateway, display_name="Bystander")
    response = requests.patch(f"{gateway}/v1/users/me", json={"display_name": "Changed"}, headers=account.auth,
                              timeout=TIMEOUT)
    assert response.status_code == 200
    assert requests.get(f"{gateway}/v1/users/{other.id}", timeout=TIMEOUT).json()["display_name"] == "Bystander"


# ---- GET /v1/users/{id} ---------------------------------------------------------------------

def test_public_profile_has_no_email(gateway, account):
    response = requests.get(f"{gateway}/v1/users/{account.id}", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PUBLIC_FIELDS
    assert body["id"] == account.id
    assert body["display_name"] == account.display_name
    assert body["bio"] == ""
    parse_time(body["created_at"])
    assert account.email not in response.text
    assert account.email.split("@")[0] not in response.text


def test_public_profile_needs_no_token(gateway, account):
    # Anonymous and signed-in callers see the same public profile.
    anonymous = requests.get(f"{gateway}/v1/users/{account.id}", timeout=TIMEOUT)
    signed_in = requests.get(f"{gateway}/v1/users/{account.id}", headers=account.auth, timeout=TIMEOUT)
    assert anonymous.status_code == signed_in.status_code == 200
    assert anonymous.json() == signed_in.json()


@pytest.mark.parametrize("user_id", [
    unknown_id(),          # well-formed, nobody has it
    "not-an-id",
    "12345",
    "zzzzzzzzzzzzzzzzzzzzzzzz",  # 24 characters, not hexadecimal
    "0" * 25,
    "abcdefghijkl",        # 12 characters (the length of a binary ObjectId)
    "%E2%82%AC" * 12,      # 12 euro signs
])
def test_unknown_or_malformed_user_id_is_404_json(gateway, user_id):
    assert_error(requests.get(f"{gateway}/v1/users/{user_id}", timeout=TIMEOUT), 404, "not_found")


# ---- GET /v1/users?ids= ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def three_users(gateway):
    return [sign_up(gateway, display_name=f"Batch {i}") for i in range(3)]


def batch(gateway: str, ids: list[str] | str):
    value = ids if isinstance(ids, str) else ",".join(ids)
    return requests.get(f"{gateway}/v1/users", params={"ids": value}, timeout=TIMEOUT)


def test_batch_returns_profiles_in_the_order_asked_and_lists_missing(gateway, three_users):
    a, b, c = three_users
    missing = unknown_id()
    response = batch(gateway, [c.id, missing, a.id, b.id])
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["id"] for item in body["items"]] == [c.id, a.id, b.id]
    assert [item["display_name"] for item in body["items"]] == ["Batch 2", "Batch 0", "Batch 1"]
    assert body["missing"] == [missing]
    for item in body["items"]:
        assert set(item) == PUBLIC_FIELDS, item
    for user in three_users:
        assert user.email not in response.text


def test_batch_with_every_id_missing(gateway):
    ids = [f"{n:024x}" for n in (7, 8)]
    response = batch(gateway, ids)
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "missing": ids}


def test_batch_of_exactly_100_ids_is_accepted(gateway, three_users):
    a, b, c = three_users
    fillers = [f"{n:024x}" for n in range(1, 98)]
    ids = [b.id] + fillers[:50] + [a.id] + fillers[50:] + [c.id]
    assert len(ids) == 100 == len(set(ids))
    response = batch(gateway, ids)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["id"] for item in body["items"]] == [b.id, a.id, c.id]
    assert body["missing"] == fillers


def test_batch_of_101_ids_is_422(gateway):
    ids = [f"{n:024x}" for n in range(1, 102)]
    assert_error(batch(gateway, ids), 422, "validation_failed", field="ids")


@pytest.mark.parametrize("ids", [
    "not-an-id",
    f"{'0' * 23}1,not-an-id",
    f"{'0' * 23}1,{'g' * 24}",
    "0" * 23,
])
def test_batch_with_a_malformed_id_is_422(gateway, ids):
    assert_error(batch(gateway, ids), 422, "validation_failed", field="ids")


@pytest.mark.parametrize("query", ["ids=", "ids=,,", "ids=%20", ""])
def test_batch_without_ids_is_422(gateway, query):
    response = requests.get(f"{gateway}/v1/users?{query}", timeout=TIMEOUT)
    assert_error(response, 422, "validation_failed", field="ids")


# ---- DELETE /v1/sessions/current ------------------------------------------------------------

def test_sign_out_is_204_and_ends_only_that_session(gateway, account):
    other_session = sign_in(gateway, account.email, account.password).json()["token"]

    response = requests.delete(f"{gateway}/v1/sessions/current", headers=account.auth, timeout=TIMEOUT)
    assert response.status_code == 204, response.text
    assert response.content == b""

    assert_error(requests.get(f"{gateway}/v1/users/me", headers=account.auth, timeout=TIMEOUT), 401, "unauthorized")
    assert_error(requests.delete(f"{gateway}/v1/sessions/current", headers=account.auth, timeout=TIMEOUT),
                 401, "unauthorized")
    # Another session of the same user is not affected.
    still = requests.get(f"{gateway}/v1/users/me", headers=bearer(other_session), timeout=TIMEOUT)
    assert still.status_code == 200, still.text


def test_sign_out_needs_a_token(gateway):
    assert_error(requests.delete(f"{gateway}/v1/sessions/current", timeout=TIMEOUT), 401, "unauthorized")
