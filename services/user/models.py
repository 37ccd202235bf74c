"""Request and response bodies of the user service (validation and OpenAPI both use these)."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator, model_validator

from services.shared.api import QueryParams, RequestBody
from services.shared.validation import long_text, short_text, validate_object_id

MAX_BATCH_IDS = 100

DisplayName = short_text(80)
Bio = long_text(1000)
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]


class NewUser(RequestBody):
    email: Annotated[EmailStr, StringConstraints(max_length=254)]
    password: Password
    display_name: DisplayName


class NewSession(RequestBody):
    email: Annotated[str, StringConstraints(min_length=1, max_length=254)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]


def _without_default(schema: dict) -> None:
    """The schema of an optional field that may not be null: it has no default to show."""
    schema.pop("default", None)


class ProfileUpdate(RequestBody):
    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    # Absent means "keep"; null is not a value (422), so a name can never be blanked.
    display_name: DisplayName = Field(None, json_schema_extra=_without_default)
    bio: Bio = Field(None, json_schema_extra=_without_default)

    @model_validator(mode="after")
    def _something_to_change(self) -> ProfileUpdate:
        if self.display_name is None and self.bio is None:
            raise ValueError("give display_name, bio or both")
        return self


class ProfileBatchQuery(QueryParams):
    ids: str = Field(description=f"Comma-separated user ids, at most {MAX_BATCH_IDS}")

    @field_validator("ids")
    @classmethod
    def _ids(cls, value: str) -> str:
        ids = [part.strip() for part in value.split(",") if part.strip()]
        if not ids:
            raise ValueError("give at least one id")
        if len(ids) > MAX_BATCH_IDS:
            raise ValueError(f"at most {MAX_BATCH_IDS} ids per request, got {len(ids)}")
        for item in ids:
            validate_object_id(item)
        return ",".join(ids)

    def id_list(self) -> list[str]:
        return list(dict.fromkeys(part.lower() for part in self.ids.split(",")))


class User(BaseModel):
    """The signed-in user's own account"""

    id: str
    email: str
    display_name: str
    bio: str
    created_at: str


class PublicProfile(BaseModel):
    """A user's public profile"""

    id: str
    display_name: str
    bio: str
    created_at: str


class ProfileBatch(BaseModel):
    """Public profiles, in the order asked; ids that match nobody are listed in `missing`"""

    items: list[PublicProfile]
    missing: list[str]


class Session(BaseModel):
    """A new session: a bearer token and when it expires"""

    token: str
    user_id: str
    expires_at: str
