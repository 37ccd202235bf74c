"""Field types shared by request models: identifiers and human text with sane limits."""
from __future__ import annotations

import unicodedata
from typing import Annotated

from bson import ObjectId
from pydantic import AfterValidator, StringConstraints


def _clean_text(value: str) -> str:
    value = unicodedata.normalize("NFC", value)
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Co") and ch not in "\n\t" for ch in value):
        raise ValueError("must not contain control characters")
    return value


def _single_line(value: str) -> str:
    if "\n" in value or "\t" in value:
        raise ValueError("must be a single line")
    return value


def validate_object_id(value: str) -> str:
    if not ObjectId.is_valid(value):
        raise ValueError("is not a valid id (24 hexadecimal characters)")
    return value.lower()


def short_text(max_length: int, min_length: int = 1):
    """One line of text, trimmed, Unicode-normalized, without control characters."""
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length),
        AfterValidator(_clean_text),
        AfterValidator(_single_line),
    ]


def long_text(max_length: int, min_length: int = 0):
    """Multi-line text, Unicode-normalized, without control characters other than newlines and tabs."""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length), AfterValidator(_clean_text)]


ObjectIdStr = Annotated[str, AfterValidator(validate_object_id)]
