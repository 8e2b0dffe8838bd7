"""What a payment answer means to the app: acknowledged, final without money moving, or retry.

Pure rules, no I/O: the CampaignUser acts on them, tests check them without a platform.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

Verdict = Literal["completed", "declined", "final", "retry"]

#: The code of an unanswered payment the load stopped before it had its answer.
STOPPED = "LOAD_STOPPED"

#: The platform's answers that a retry with the same key may change.
RETRYABLE = frozenset({0, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no HTTP answer (connection refused or reset, timeout)
    body: dict[str, Any] | None = None
    retry_after: float | None = None
    replayed: bool = False  # Idempotency-Replayed: the stored answer of a finished payment

    @property
    def error(self) -> dict[str, Any]:
        error = (self.body or {}).get("error")
        return error if isinstance(error, dict) else {}


def judge(answer: Answer) -> Verdict:
    """``completed``/``declined`` are promises to the user (recorded); ``final`` ends without one."""
    if answer.status == 201 and (answer.body or {}).get("status") == "completed":
        return "completed"
    if answer.status == 402:
        return "declined"
    if answer.status == 409 and answer.error.get("code") != "PAYMENT_IN_PROGRESS":
        return "final"  # IDEMPOTENCY_KEY_REUSED: retrying cannot help
    # A stored failure (502 failed, 503 aborted) replays forever: the payment is over, no money moved.
    if answer.error.get("status") in ("failed", "aborted") and answer.status in (502, 503):
        return "final"
    if answer.replayed and answer.status >= 500:
        return "final"
    if answer.status in RETRYABLE:
        return "retry"
    return "final"


def backoff(attempt: int, retry_after: float | None, rng: random.Random, base: float = 0.2, cap: float = 4.0) -> float:
    """Seconds before retry ``attempt`` (1-based): full-jitter exponential, never before Retry-After."""
    jittered = rng.uniform(0, min(cap, base * 2 ** (attempt - 1)))
    return max(jittered, retry_after or 0.0)


def parse_retry_after(value: str | None, cap: float = 30.0) -> float | None:
    """Retry-After in seconds (the platform sends whole seconds; HTTP dates are not used here)."""
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), cap)
    except ValueError:
        return None
