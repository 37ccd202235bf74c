"""Field types shared by request models: identifiers and human text with sane limits."""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Annotated, Any

from bson import ObjectId
from pydantic import AfterValidator, BeforeValidator, WithJsonSchema

# Control (Cc, but newline and tab), surrogate (Cs) and private-use (Co) characters, as one
# character class: a regex scans a long text in C, where a loop over unicodedata.category did
# it in Python (most of the CPU of validating a 10,000-product import). tests/functional/test_bad_input.py
# checks the class against unicodedata for every code point.
_CONTROL_CHARS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd]")
# Bidirectional overrides and isolates let one name pose as another ("trojan source").
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
# Line breaks other than the control characters above: tab, newline, and the Zl and Zp separators.
_LINE_BREAKS = re.compile("[\n\t\u2028\u2029]")


def _normalize(value: object) -> object:
    """NFC first, so length limits count the characters a person sees."""
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


def _normalize_and_strip(value: object) -> object:
    return unicodedata.normalize("NFC", value).strip() if isinstance(value, str) else value


def _clean_text(value: str) -> str:
    if _CONTROL_CHARS.search(value):
        raise ValueError("must not contain control characters")
    if _BIDI_CONTROLS.search(value):
        raise ValueError("must not contain bidirectional control characters")
    return value


def _single_line(value: str) -> str:
    if _LINE_BREAKS.search(value):
        raise ValueError("must be a single line")
    return value


def validate_object_id(value: str) -> str:
    if not ObjectId.is_valid(value):
        raise ValueError("is not a valid id (24 hexadecimal characters)")
    return value.lower()


def _length(min_length: int, max_length: int):
    def check(value: str) -> str:
        if len(value) < min_length:
            raise ValueError("must not be empty" if min_length == 1 else f"must be at least {min_length} characters")
        if len(value) > max_length:
            raise ValueError(f"must be at most {max_length} characters, got {len(value)}")
        return value

    return check


# The same rules as _clean_text and _single_line, as JSON Schema patterns for the OpenAPI document.
_FORBIDDEN = "\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069\\ud800-\\udfff\\ue000-\\uf8ff"
LONG_TEXT_PATTERN = f"^[^{_FORBIDDEN}]*$"
SHORT_TEXT_PATTERN = f"^[^{_FORBIDDEN}\\n\\t\\r\\u2028\\u2029]*\\S[^{_FORBIDDEN}\\n\\t\\r\\u2028\\u2029]*$"


def whole_number(value: object) -> object:
    """JSON has one number type: 155.0 is the integer 155 (JSON Schema agrees); 155.5 is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def short_text(max_length: int, min_length: int = 1):
    """One line of text, trimmed, NFC-normalized (limits count normalized characters), no control characters."""
    return _text(min_length, max_length, _normalize_and_strip, [_clean_text, _single_line],
                 SHORT_TEXT_PATTERN if min_length else None)


def long_text(max_length: int, min_length: int = 0):
    """Multi-line text, NFC-normalized, without control characters other than newlines and tabs."""
    return _text(min_length, max_length, _normalize, [_clean_text], LONG_TEXT_PATTERN)


def _text(min_length: int, max_length: int, normalize: Callable[[Any], Any], checks: list[Callable[[str], str]],
          pattern: str | None):
    """A text field: normalized first, then its length (in normalized characters) and `checks`."""
    schema = {"type": "string", "minLength": min_length, "maxLength": max_length,
              **({"pattern": pattern} if pattern else {})}
    return Annotated[(str, BeforeValidator(normalize), AfterValidator(_length(min_length, max_length)),
                      *(AfterValidator(check) for check in checks), WithJsonSchema(schema))]


ObjectIdStr = Annotated[str, AfterValidator(validate_object_id)]
