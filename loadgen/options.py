"""Parsing of option values: durations, rates, percentages, SLOs, lists. Errors are ValueError."""
from __future__ import annotations

import re

from .engine import SLO_KEYS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """'10' / '10s' / '500ms' / '2m' -> seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration (e.g. 30, 30s, 500ms, 2m)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def milliseconds(text: str) -> float:
    """'250' / '250ms' / '0.25s' -> milliseconds (a bare number is milliseconds)."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a latency (e.g. 250ms, 0.5s)")
    if match.group(2) is None:
        return float(match.group(1))
    return float(match.group(1)) * _UNITS[match.group(2)] * 1000


def fraction(text: str) -> float:
    """'1%' -> 0.01, '0.01' -> 0.01."""
    text = str(text).strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a fraction (e.g. 1% or 0.01)") from None
    if not 0 <= value <= 1:
        raise ValueError(f"{text!r} must be between 0% and 100%")
    return value


def slo(text: str) -> dict[str, float]:
    """'p99=250ms' / 'p50=20ms,p99=200ms' / '250ms' (p99) -> {'p99': 250.0}."""
    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in str(text).split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            key, value = "p99", item
        key = key.strip().lower().replace(".", "")
        if key not in SLO_KEYS:
            raise ValueError(f"--slo: {key!r} is not one of {', '.join(SLO_KEYS)}")
        out[key] = milliseconds(value)
        if out[key] <= 0:
            raise ValueError("--slo latencies must be positive")
    if not out:
        raise ValueError("--slo needs at least one bound, e.g. p99=250ms")
    return out


def int_list(text: str, name: str, low: int, high: int) -> list[int]:
    try:
        values = [int(p) for p in str(text).split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values or any(not low <= v <= high for v in values):
        raise ValueError(f"{name} values must be between {low} and {high}, got {text!r}")
    return values
