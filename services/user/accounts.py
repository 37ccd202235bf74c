"""Accounts and profiles: the user service's business logic, free of HTTP.

Each function takes the database (and the password hasher) as arguments. Emails are
unique case-insensitively through a unique index on `email_lower`, so two concurrent
sign-ups with one email give one account and one EmailTaken.
"""
from __future__ import annotations

import datetime as dt

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from bson import ObjectId
from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.shared.api import iso_time
from services.shared.cache import Cache
from services.shared.cache_deps import Change, Write, invalidate
from services.shared.errors import Conflict

USERS = "users"

password_hasher = PasswordHasher()  # argon2id, argon2-cffi's RFC 9106 low-memory defaults
_DUMMY_HASH = password_hasher.hash("not a real password")


class EmailTaken(Conflict):
    """Another account already uses this email (compared case-insensitively)."""


def create_indexes(db: Database) -> None:
    db[USERS].create_index([("email_lower", ASCENDING)], unique=True, name="email_lower_unique")


def own_view(doc: dict) -> dict:
    return {
        "id": str(doc["_id"]),
        "email": doc["email"],
        "display_name": doc["display_name"],
        "bio": doc.get("bio", ""),
        "created_at": iso_time(doc["created_at"]),
    }


def public_view(doc: dict) -> dict:
    return {
        "id": str(doc["_id"]),
        "display_name": doc["display_name"],
        "bio": doc.get("bio", ""),
        "created_at": iso_time(doc["created_at"]),
    }


def register(db: Database, hasher: PasswordHasher, email: str, password: str, display_name: str) -> dict:
    now = dt.datetime.now(dt.UTC)
    now = now.replace(microsecond=now.microsecond // 1000 * 1000)  # what MongoDB keeps
    doc = {
        "_id": ObjectId(),
        "email": email,
        "email_lower": email.lower(),
        "password_hash": hasher.hash(password),
        "display_name": display_name,
        "bio": "",
        "created_at": now,
        "updated_at": now,
    }
    try:
        db[USERS].insert_one(doc)
    except DuplicateKeyError:
        raise EmailTaken("an account with this email already exists") from None
    return doc


def check_password(db: Database, hasher: PasswordHasher, email: str, password: str) -> dict | None:
    """The account when email and password match, else None (same work either way)."""
    doc = db[USERS].find_one({"email_lower": email.lower()})
    try:
        hasher.verify(doc["password_hash"] if doc else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    return doc


def find_user(db: Database, user_id: str) -> dict | None:
    if not ObjectId.is_valid(user_id):
        return None
    return db[USERS].find_one({"_id": ObjectId(user_id)})


def find_profiles(db: Database, user_ids: list[str]) -> tuple[list[dict], list[str]]:
    """Profiles for `user_ids` in one `$in` query, in the order asked, and the ids not found."""
    docs = db[USERS].find(
        {"_id": {"$in": [ObjectId(i) for i in user_ids]}},
        {"display_name": 1, "bio": 1, "created_at": 1},
    )
    by_id = {str(doc["_id"]): doc for doc in docs}
    found = [by_id[i] for i in user_ids if i in by_id]
    return found, [i for i in user_ids if i not in by_id]


def update_profile(db: Database, cache: Cache, user_id: str, changes: dict) -> dict | None:
    """Apply the changes, then make every cached page that shows this profile stale."""
    if not ObjectId.is_valid(user_id):
        return None
    changes = {key: value for key, value in changes.items() if value is not None}
    changes["updated_at"] = dt.datetime.now(dt.UTC)
    doc = db[USERS].find_one_and_update(
        {"_id": ObjectId(user_id)}, {"$set": changes}, return_document=ReturnDocument.AFTER
    )
    if doc is not None:
        invalidate(cache, [Change(Write.PROFILE_CHANGED, user_id)])
    return doc
