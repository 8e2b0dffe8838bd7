"""Durations as people write them in specs and configuration: ``300ms``, ``45s``, ``2m``, ``1h``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> timedelta:
    """Parse ``45s``-style text (or a timedelta) into a timedelta; bare numbers are refused."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a duration such as '300ms', '45s' or '2m'")
    match = _PATTERN.match(value)
    if not match:
        raise ValueError(f"expected a duration such as '300ms', '45s' or '2m', got {value!r}")
    number, unit = match.groups()
    try:
        return timedelta(seconds=float(number) * _UNIT_SECONDS[unit])
    except OverflowError:
        raise ValueError(f"duration {value!r} is too long") from None


def format_duration(value: timedelta) -> str:
    millis = round(value.total_seconds() * 1000)
    if millis % 60_000 == 0 and millis:
        return f"{millis // 60_000}m"
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s|m|h)$", "examples": ["300ms", "45s", "2m"]}),
]
