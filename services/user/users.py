"""HTTP layer for /v1/users: sign-up, the caller's own account, public profiles."""
from __future__ import annotations

from flask import Blueprint

from services.shared import jobs
from services.shared.api import operation
from services.shared.app import resources
from services.shared.auth import Principal
from services.shared.errors import NotFound
from services.shared.job_models import JobAccepted, accepted

from . import accounts
from .models import NewUser, ProfileBatch, ProfileBatchQuery, ProfileUpdate, PublicProfile, User

users_bp = Blueprint("users", __name__)


@users_bp.post("/v1/users")
@operation("Create an account", tag="users", body=NewUser, responses={201: User, 409: "Email already registered"})
def create_user(body: NewUser):
    doc = accounts.register(resources().db, accounts.password_hasher, body.email, body.password, body.display_name)
    return accounts.own_view(doc), 201


@users_bp.get("/v1/users/me")
@operation("The signed-in user's account", tag="users", auth=True, responses={200: User})
def get_me(principal: Principal):
    doc = accounts.find_user(resources().db, principal.user_id)
    if doc is None:
        raise NotFound("the account no longer exists")
    return accounts.own_view(doc)


@users_bp.patch("/v1/users/me")
@operation("Change the signed-in user's profile", tag="users", auth=True, body=ProfileUpdate, responses={200: User})
def patch_me(body: ProfileUpdate, principal: Principal):
    res = resources()
    doc = accounts.update_profile(res.db, res.cache, principal.user_id, body.model_dump(exclude_unset=True))
    if doc is None:
        raise NotFound("the account no longer exists")
    return accounts.own_view(doc)


@users_bp.get("/v1/users/<user_id>")
@operation("A user's public profile", tag="users", responses={200: PublicProfile})
def get_profile(user_id: str):
    doc = accounts.find_user(resources().db, user_id)
    if doc is None:
        raise NotFound("no user with this id")
    return accounts.public_view(doc)


@users_bp.get("/v1/users")
@operation("Public profiles of up to 100 users (the batch read other services join on)",
           tag="users", query=ProfileBatchQuery, responses={200: ProfileBatch})
def list_profiles(query: ProfileBatchQuery):
    found, missing = accounts.find_profiles(resources().db, query.id_list())
    return {"items": [accounts.public_view(doc) for doc in found], "missing": missing}


@users_bp.post("/v1/users/me/export")
@operation("Export everything the signed-in user owns, as a job (answers 202 at once)", tag="users", auth=True,
           responses={202: JobAccepted})
def export_me(principal: Principal):
    res = resources()
    doc = jobs.submit(res.db, res.publisher, "export", principal.user_id, total=3)
    return accepted(doc)
