"""Service identity (services/shared/service_identity.py): tokens that prove a call is internal,
and never pass as a user's token (nor a user's token as theirs)."""
from __future__ import annotations

import time

import jwt
import pytest

from services.shared import auth, service_identity
from services.shared.errors import Unauthorized
from services.shared.service_identity import (
    HEADER,
    InvalidServiceToken,
    ServiceCredential,
    issue_service_token,
    service_caller,
    verify_service_token,
)

SECRET = "unit-test-secret-0123456789abcdef"


def test_a_service_token_names_its_service():
    issued = issue_service_token(SECRET, "catalog")
    assert verify_service_token(SECRET, issued.token) == "catalog"
    assert service_caller({HEADER: issued.token}, SECRET) == "catalog"
    assert issued.expires_at - time.time() == pytest.approx(service_identity.SERVICE_TOKEN_TTL_SECONDS, abs=2)


def test_an_expired_service_token_is_refused():
    long_ago = time.time() - 3600
    expired = issue_service_token(SECRET, "catalog", ttl_seconds=60, now=long_ago)
    with pytest.raises(InvalidServiceToken, match="expired"):
        verify_service_token(SECRET, expired.token)
    assert service_caller({HEADER: expired.token}, SECRET) is None


def test_a_token_signed_with_another_secret_is_refused():
    forged = issue_service_token("another-secret-0123456789abcdef-0123", "catalog")
    with pytest.raises(InvalidServiceToken):
        verify_service_token(SECRET, forged.token)


def test_a_token_for_another_audience_is_refused():
    now = int(time.time())
    claims = {"iss": auth.ISSUER, "aud": "somebody-else", "sub": "service:catalog", "iat": now, "exp": now + 60}
    with pytest.raises(InvalidServiceToken, match="(?i)audience"):
        verify_service_token(SECRET, jwt.encode(claims, SECRET, algorithm=auth.ALGORITHM))


def test_a_token_whose_subject_is_not_a_service_is_refused():
    now = int(time.time())
    claims = {"iss": auth.ISSUER, "aud": service_identity.AUDIENCE, "sub": "user-42", "iat": now, "exp": now + 60}
    with pytest.raises(InvalidServiceToken, match="not a service"):
        verify_service_token(SECRET, jwt.encode(claims, SECRET, algorithm=auth.ALGORITHM))


def test_a_user_token_never_passes_as_a_service_token():
    user_token, _ = auth.issue_token(SECRET, "64b000000000000000000001", ttl_seconds=600)
    with pytest.raises(InvalidServiceToken):
        verify_service_token(SECRET, user_token)
    assert service_caller({HEADER: user_token}, SECRET) is None


def test_a_service_token_never_passes_as_a_user_token():
    token = issue_service_token(SECRET, "catalog").token
    with pytest.raises(Unauthorized):
        auth.decode_token(SECRET, token)


@pytest.mark.parametrize("headers", [{}, {HEADER: ""}, {HEADER: "not a token"}, {"Authorization": "Bearer x"}])
def test_a_request_without_a_valid_service_token_is_edge_traffic(headers):
    assert service_caller(headers, SECRET) is None


def test_a_credential_reuses_its_token_until_shortly_before_it_expires():
    clock = [1_000_000.0]
    credential = ServiceCredential(SECRET, "catalog", clock=lambda: clock[0])
    first = credential.token()
    clock[0] += service_identity.SERVICE_TOKEN_TTL_SECONDS - service_identity.RENEW_BEFORE_SECONDS - 1
    assert credential.token() == first
    clock[0] += 1  # RENEW_BEFORE_SECONDS left: signed again
    renewed = credential.token()
    assert renewed != first
    assert jwt.decode(renewed, options={"verify_signature": False})["iat"] == int(clock[0])
    assert credential.headers() == {HEADER: renewed}


def test_one_credential_per_secret_and_service_in_a_process():
    assert service_identity.credential_for(SECRET, "catalog") is service_identity.credential_for(SECRET, "catalog")
    assert service_identity.credential_for(SECRET, "catalog") is not service_identity.credential_for(SECRET, "worker")
