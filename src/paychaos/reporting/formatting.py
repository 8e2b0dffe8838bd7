"""How numbers, durations and evidence read in every output, so that reports agree.

Integers stay integers (counts and money are never shown as ``405.0``); measured floats get
four significant digits; a value that was not measured reads as a dash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

MISSING = "—"


def number(value: object) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def seconds(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f} s"


def evidence(value: Mapping[str, Any]) -> str:
    """Evidence as one line of JSON (integers stay integers); empty evidence is an empty string."""
    return json.dumps(value, ensure_ascii=False, default=str) if value else ""


def date(value: datetime | None) -> str:
    """``2026-11-23 13:03 UTC``: when a run started, to the minute."""
    return MISSING if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def expectation(observed: object, threshold: str) -> str:
    return f"observed {number(observed)}, expected {threshold}"


VERDICT_MARKS = {"passed": "✅", "failed": "❌", "inconclusive": "❔", "aborted": "⛔", "error": "⚠️"}
