"""HTTP layer for /v1/sessions: sign in (issue a token) and sign out (revoke it everywhere)."""
from __future__ import annotations

from flask import Blueprint

from services.shared import auth
from services.shared.api import iso_time, operation
from services.shared.app import resources
from services.shared.auth import Principal
from services.shared.errors import Unauthorized

from . import accounts
from .models import NewSession, Session

sessions_bp = Blueprint("sessions", __name__)


@sessions_bp.post("/v1/sessions")
@operation("Sign in: trade email and password for a bearer token", tag="sessions", body=NewSession,
           responses={201: Session, 401: "Wrong email or password"})
def create_session(body: NewSession):
    res = resources()
    doc = accounts.check_password(res.db, accounts.password_hasher, body.email, body.password)
    if doc is None:
        raise Unauthorized("wrong email or password")
    token, principal = auth.issue_token(res.auth_secret, str(doc["_id"]), res.settings.token_ttl_seconds)
    return {"token": token, "user_id": principal.user_id, "expires_at": iso_time(principal.expires_at)}, 201


@sessions_bp.delete("/v1/sessions/current")
@operation("Sign out: the token is refused by every replica from now on", tag="sessions", auth=True,
           responses={204: None})
def delete_current_session(principal: Principal):
    res = resources()
    auth.revoke(res.db, res.cache, principal)
    return "", 204
