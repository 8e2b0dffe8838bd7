"""The campaign's money rules: PayPay-Step monthly tiers and flash cashback caps.

Pure functions on integer yen (floor division, no floats), shared by the consumer, the status
API and the batch re-aggregation so that all three agree on what a payment earns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from paychaos.platform.topology import FlashSpec, StepSpec, StepTier

#: Campaign months follow the Japanese calendar (JST has no daylight saving).
CAMPAIGN_TZ = timezone(timedelta(hours=9), "JST")
#: The same zone, named for PostgreSQL, so SQL re-aggregation buckets months identically.
CAMPAIGN_TZ_SQL = "Asia/Tokyo"


class PaymentEvent(BaseModel):
    """A ``payment.completed`` event from the ``payments`` topic."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: str
    type: Literal["payment.completed"]
    payment_id: str = Field(min_length=1)
    idempotency_key: str | None = None
    # As long as the payment API allows: the aggregates' notifications carry it (8000 bytes at most).
    user_id: str = Field(min_length=1, max_length=64)
    merchant_id: str
    amount: int = Field(ge=0)
    method: Literal["balance", "card"]
    completed_at: AwareDatetime


def month_of(moment: datetime) -> str:
    """``YYYY-MM`` of the campaign month a moment falls in."""
    return moment.astimezone(CAMPAIGN_TZ).strftime("%Y-%m")


def counts_for_step(amount: int, step: StepSpec) -> bool:
    """Only payments of at least ``minAmount`` count towards the monthly payment count."""
    return amount >= step.min_amount


def tier_for(payments: int, value: int, step: StepSpec) -> StepTier | None:
    """The highest tier whose payment count and monthly value are both met."""
    met = [t for t in step.tiers if payments >= t.payments and value >= t.value]
    return max(met, key=lambda t: t.bps) if met else None


def next_tier(payments: int, value: int, step: StepSpec) -> StepTier | None:
    """The lowest tier above the current one, or None at the top."""
    current = tier_for(payments, value, step)
    floor_bps = current.bps if current else -1
    above = [t for t in step.tiers if t.bps > floor_bps]
    return min(above, key=lambda t: t.bps) if above else None


@dataclass(frozen=True)
class FlashGrant:
    amount: int  # yen to grant now; 0 when nothing is due
    limited_by: Literal["percent", "per_payment_cap", "per_user_cap", "budget", "exhausted"]


def flash_grant(
    amount: int, flash: FlashSpec, *, user_granted: int, budget_remaining: int, exhausted: bool
) -> FlashGrant:
    """Cashback for one payment: ``floor(amount × percent / 100)`` within every cap that applies."""
    if exhausted:
        return FlashGrant(0, "exhausted")
    candidates: list[tuple[int, Literal["percent", "per_payment_cap", "per_user_cap", "budget"]]] = [
        (amount * flash.percent // 100, "percent"),
        (flash.per_payment_cap, "per_payment_cap"),
        (max(0, flash.per_user_cap - user_granted), "per_user_cap"),
        (max(0, budget_remaining), "budget"),
    ]
    # min() keeps the first of equal values, so "percent" wins ties: it is the natural amount.
    granted, reason = min(candidates, key=lambda c: c[0])
    return FlashGrant(granted, reason)


def grants_in_order(
    events: Iterable[PaymentEvent], flash: FlashSpec, *, user_granted: Mapping[str, int], budget_remaining: int,
    exhausted: bool,
) -> list[int]:
    """The cashback of each event of a batch, applied in order: what one grants counts against
    its user's cap and the budget for every event after it, as if each had its own transaction."""
    granted = dict(user_granted)
    amounts = []
    for event in events:
        due = flash_grant(event.amount, flash, user_granted=granted.get(event.user_id, 0),
                          budget_remaining=budget_remaining, exhausted=exhausted)
        amounts.append(due.amount)
        granted[event.user_id] = granted.get(event.user_id, 0) + due.amount
        budget_remaining -= due.amount
    return amounts


def step_deltas(events: Iterable[PaymentEvent], step: StepSpec) -> dict[tuple[str, str], tuple[int, int]]:
    """What a batch adds to each (user, month) of Step progress: payments that count, and value."""
    deltas: dict[tuple[str, str], tuple[int, int]] = {}
    for event in events:
        key = (event.user_id, month_of(event.completed_at))
        payments, value = deltas.get(key, (0, 0))
        deltas[key] = (payments + int(counts_for_step(event.amount, step)), value + event.amount)
    return deltas


def cashback_transfer_id(payment_id: str, *, suffix: str | None = None) -> str:
    """The ledger transfer id of a grant: stable per payment, unless dedupe is switched off."""
    return f"cashback:{payment_id}" if suffix is None else f"cashback:{payment_id}:{suffix}"
