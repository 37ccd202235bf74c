"""Bearer tokens: any replica accepts a token another issued; a revoked or forged token is refused everywhere.

DESIGN.md: "A token is accepted by any replica of any service without a call to the replica
that issued it"; after DELETE /v1/sessions/current "the token is rejected by every replica of
every service from then on".
"""
from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
import requests

from tests.functional.api_checks import TIMEOUT, assert_error
from tests.functional.conftest import replica_url, sign_up

ISSUER = "scaleshop"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def me(base: str, headers: dict[str, str]) -> requests.Response:
    return requests.get(f"{base}/v1/users/me", headers=headers, timeout=TIMEOUT)


def assert_unauthorized(response: requests.Response) -> None:
    assert_error(response, 401, "unauthorized")
    assert response.headers.get("WWW-Authenticate", "").lower().startswith("bearer"), response.headers


def sign_in(base: str, account) -> requests.Response:
    return requests.post(f"{base}/v1/sessions", json={"email": account.email, "password": account.password},
                         timeout=TIMEOUT)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def claims_for(user_id: str, *, lifetime: int = 600, issued_ago: int = 0, **overrides) -> dict:
    now = int(time.time()) - issued_ago
    claims = {"sub": user_id, "jti": uuid.uuid4().hex, "iat": now, "exp": now + lifetime, "iss": ISSUER}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture
def replicas(stack, gateway) -> dict[str, str]:
    return {"user-1": replica_url(stack, "user-1"), "user-2": replica_url(stack, "user-2"), "gateway": gateway}


# ---- one token, every replica ---------------------------------------------------------------

def test_token_from_one_replica_works_on_the_other_and_the_gateway(gateway, replicas):
    account = sign_up(gateway, display_name="Roaming")
    issued = sign_in(replicas["user-1"], account)
    assert issued.status_code == 201, issued.text
    assert issued.headers.get("X-Served-By") == "user-1"
    token = issued.json()["token"]

    for name in ("user-1", "user-2"):
        response = me(replicas[name], bearer(token))
        assert response.status_code == 200, response.text
        assert response.headers.get("X-Served-By") == name
        assert response.json()["id"] == account.id
    served_by = set()
    for _ in range(6):  # through the gateway, whichever replica it picks
        response = me(gateway, bearer(token))
        assert response.status_code == 200, response.text
        assert response.json()["id"] == account.id
        served_by.add(response.headers.get("X-Served-By"))
    assert served_by <= {"user-1", "user-2"}


def test_token_revoked_on_one_replica_is_refused_everywhere(gateway, replicas):
    account = sign_up(gateway, display_name="Leaving")
    token = sign_in(replicas["user-1"], account).json()["token"]
    # Every replica has seen the token as valid (and may have cached that) before the revocation.
    for base in replicas.values():
        assert me(base, bearer(token)).status_code == 200

    revoked = requests.delete(f"{replicas['user-2']}/v1/sessions/current", headers=bearer(token), timeout=TIMEOUT)
    assert revoked.status_code == 204, revoked.text
    assert revoked.headers.get("X-Served-By") == "user-2"

    for name in ("user-1", "user-2"):
        response = me(replicas[name], bearer(token))
        assert_unauthorized(response)
        assert response.headers.get("X-Served-By") == name
    for _ in range(6):
        assert_unauthorized(me(gateway, bearer(token)))
    # Not for writes either.
    assert_unauthorized(requests.patch(f"{replicas['user-1']}/v1/users/me", json={"bio": "after logout"},
                                       headers=bearer(token), timeout=TIMEOUT))
    assert requests.get(f"{gateway}/v1/users/{account.id}", timeout=TIMEOUT).json()["bio"] == ""

    # Signing in again gives a new token that works everywhere.
    fresh = sign_in(replicas["user-1"], account)
    assert fresh.status_code == 201, fresh.text
    new_token = fresh.json()["token"]
    assert new_token != token
    for base in replicas.values():
        response = me(base, bearer(new_token))
        assert response.status_code == 200, response.text
        assert response.json()["id"] == account.id
    # ... and the old one stays refused.
    assert_unauthorized(me(replicas["user-1"], bearer(token)))


# ---- forged, broken and missing tokens ------------------------------------------------------

@pytest.fixture(scope="module")
def victim(gateway):
    """An account whose real token the forgeries start from."""
    return sign_up(gateway, display_name="Victim")


def tampered_payload(token: str) -> str:
    header, payload, signature = token.split(".")
    middle = len(payload) // 2
    replacement = "A" if payload[middle] != "A" else "B"
    return ".".join([header, payload[:middle] + replacement + payload[middle + 1:], signature])


def swapped_subject(token: str, other_user_id: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = other_user_id
    return ".".join([header, b64url_json(claims), signature])


def unsigned(claims: dict) -> str:
    return ".".join([b64url_json({"alg": "none", "typ": "JWT"}), b64url_json(claims), ""])


def bad_headers(kind: str, victim, secret: str, other_id: str) -> dict[str, str]:
    token = victim.token
    claims = claims_for(victim.id)
    return {
        "missing header": {},
        "empty header": {"Authorization": ""},
        "scheme only": {"Authorization": "Bearer"},
        "scheme and blank": {"Authorization": "Bearer    "},
        "wrong scheme Basic": {"Authorization": "Basic " + base64.b64encode(b"user:pass").decode()},
        "wrong scheme with a real token": {"Authorization": f"Token {token}"},
        "token without scheme": {"Authorization": token},
        "garbage": bearer("garbage"),
        "three garbage segments": bearer("abc.def.ghi"),
        "tampered payload": bearer(tampered_payload(token)),
        "payload swapped to another user": bearer(swapped_subject(token, other_id)),
        "signature removed": bearer(token.rsplit(".", 1)[0] + "."),
        "signed with another secret": bearer(jwt.encode(claims, "another secret of the right length!",
                                                        algorithm="HS256")),
        "expired": bearer(jwt.encode(claims_for(victim.id, lifetime=3600, issued_ago=7200), secret,
                                     algorithm="HS256")),
        "alg none": bearer(unsigned(claims)),
        "alg none, no dot": bearer(unsigned(claims)[:-1]),
        "HS512 with the real secret": bearer(jwt.encode(claims, secret, algorithm="HS512")),
        "wrong issuer": bearer(jwt.encode(claims_for(victim.id, iss="someone-else"), secret, algorithm="HS256")),
        "no jti": bearer(jwt.encode(claims_for(victim.id, jti=None), secret, algorithm="HS256")),
        "no exp": bearer(jwt.encode(claims_for(victim.id, exp=None), secret, algorithm="HS256")),
    }[kind]


BAD_KINDS = ["missing header", "empty header", "scheme only", "scheme and blank", "wrong scheme Basic",
             "wrong scheme with a real token", "token without scheme", "garbage", "three garbage segments",
             "tampered payload", "payload swapped to another user", "signature removed",
             "signed with another secret", "expired", "alg none", "alg none, no dot",
             "HS512 with the real secret", "wrong issuer", "no jti", "no exp"]


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 with the real secret
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_token_is_401_unauthorized_on_every_protected_route(gateway, victim, auth_secret, kind):
    other = sign_up(gateway, display_name="Other") if kind == "payload swapped to another user" else None
    headers = bad_headers(kind, victim, auth_secret, other.id if other else victim.id)
    assert_unauthorized(me(gateway, headers))
    assert_unauthorized(requests.patch(f"{gateway}/v1/users/me", json={"display_name": "Hijacked"},
                                       headers=headers, timeout=TIMEOUT))
    assert_unauthorized(requests.delete(f"{gateway}/v1/sessions/current", headers=headers, timeout=TIMEOUT))
    # Nothing changed: the victim's name is intact and the real token still works.
    assert requests.get(f"{gateway}/v1/users/{victim.id}", timeout=TIMEOUT).json()["display_name"] == "Victim"
    if other is not None:
        assert requests.get(f"{gateway}/v1/users/{other.id}", timeout=TIMEOUT).json()["display_name"] == "Other"
    assert me(gateway, victim.auth).status_code == 200


def test_a_token_built_like_the_servers_own_is_accepted(gateway, victim, auth_secret):
    # Control for the forgeries above: with the right secret, algorithm and claims, a
    # hand-made token is accepted, so each refusal is due to the one thing that differs.
    token = jwt.encode(claims_for(victim.id), auth_secret, algorithm="HS256")
    response = me(gateway, bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == victim.id


def test_expired_token_says_so(gateway, victim, auth_secret):
    token = jwt.encode(claims_for(victim.id, lifetime=60, issued_ago=120), auth_secret, algorithm="HS256")
    response = me(gateway, bearer(token))
    assert_unauthorized(response)
    assert "expire" in response.json()["error"]["message"].lower()


def test_scheme_name_is_case_insensitive(gateway, victim):
    # RFC 7235: the auth-scheme is case-insensitive.
    response = me(gateway, {"Authorization": f"bearer {victim.token}"})
    assert response.status_code == 200, response.text


def test_valid_token_for_an_account_that_does_not_exist(gateway, auth_secret):
    token = jwt.encode(claims_for("0" * 23 + "1"), auth_secret, algorithm="HS256")
    assert_error(me(gateway, bearer(token)), 404, "not_found")
    assert_error(requests.patch(f"{gateway}/v1/users/me", json={"bio": "x"}, headers=bearer(token), timeout=TIMEOUT),
                 404, "not_found")


def test_signed_token_with_a_malformed_subject_is_not_a_server_error(gateway, auth_secret):
    token = jwt.encode(claims_for("not-an-object-id"), auth_secret, algorithm="HS256")
    for response in (me(gateway, bearer(token)),
                     requests.patch(f"{gateway}/v1/users/me", json={"bio": "x"}, headers=bearer(token),
                                    timeout=TIMEOUT)):
        assert response.status_code in (401, 404), response.text
        assert_error(response, response.status_code)
