"""The payment service's decisions, pure: what to do with an idempotency key already claimed, and what
a downstream reply means for the saga. No I/O here; ``payment.py`` and ``saga.py`` execute them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

TERMINAL = frozenset({"completed", "declined", "failed"})


class Claim(enum.Enum):
    REUSED = "reused"  # same key, different request: refuse
    REPLAY = "replay"  # finished: return the stored response verbatim
    TAKE_OVER = "take_over"  # aborted (retryable): run it again here
    WAIT = "wait"  # pending: its owner is running it, or the recovery loop will resume it


@dataclass(frozen=True)
class Existing:
    request_hash: str
    status: str


def decide_claim(existing: Existing, request_hash: str, *, waited: bool = False) -> Claim:
    """What a request with this key does, given the payment that already holds the key.

    ``waited`` is true when this request has been waiting on the owner: an owner that then
    aborts has just answered for both, so the waiter returns that answer instead of retrying at
    once against a dependency that is down.

    A pending payment is waited for even when its owner died (its lease expired): only the
    recovery loop resumes those, so a dead owner's payment is finished the same way whether or
    not anybody retries it, and a recovery loop that stopped working shows on every such retry.
    """
    if existing.request_hash != request_hash:
        return Claim.REUSED
    if existing.status in TERMINAL:
        return Claim.REPLAY
    if existing.status == "aborted":
        return Claim.REPLAY if waited else Claim.TAKE_OVER
    return Claim.WAIT


class Ledger(enum.Enum):
    APPLIED = "applied"  # 201, or 200 replayed: the transfer exists
    INSUFFICIENT_FUNDS = "insufficient_funds"
    UNKNOWN_ACCOUNT = "unknown_account"
    EXCLUDED = "excluded"  # the mutually exclusive transfer (settle vs refund) applied first
    VOIDED = "voided"  # the id is void: the transfer was never applied and never will be
    UNAVAILABLE = "unavailable"  # no answer, or one that says nothing about the transfer


def classify_ledger(status: int | None, code: str | None) -> Ledger:
    if status in (200, 201):
        return Ledger.APPLIED
    if status == 422 and code == "INSUFFICIENT_FUNDS":
        return Ledger.INSUFFICIENT_FUNDS
    if status == 404 and code == "UNKNOWN_ACCOUNT":
        return Ledger.UNKNOWN_ACCOUNT
    if status == 409 and code == "TRANSFER_EXCLUDED":
        return Ledger.EXCLUDED
    if status == 409 and code == "TRANSFER_VOIDED":
        return Ledger.VOIDED
    return Ledger.UNAVAILABLE


def classify_void(status: int | None, code: str | None) -> Ledger:
    """What the ledger's answer to voiding a transfer id says about the transfer."""
    if status in (200, 201):
        return Ledger.VOIDED
    if status == 409 and code == "TRANSFER_APPLIED":
        return Ledger.APPLIED
    return Ledger.UNAVAILABLE


class Card(enum.Enum):
    APPROVED = "approved"
    DECLINED = "declined"
    UNAVAILABLE = "unavailable"


def classify_authorization(status: int | None) -> Card:
    if status == 201:
        return Card.APPROVED
    if status == 402:
        return Card.DECLINED
    return Card.UNAVAILABLE


def breaker_counts_as_failure(status: int | None) -> bool:
    """An acquirer call fails (for the breaker) when it got no answer or a server error; a decline is an answer."""
    return status is None or status >= 500
