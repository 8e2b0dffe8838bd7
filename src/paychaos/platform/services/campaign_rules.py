"""The campaign's money rules: PayPay-Step monthly tiers and flash cashback caps.

Pure functions on integer yen (floor division, no floats), shared by the consumer, the status
API and the batch re-aggregation so that all three agree on what a payment earns.
"""

from __future__ import annotations

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
    user_id: str = Field(min_length=1)
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


def cashback_transfer_id(payment_id: str, *, suffix: str | None = None) -> str:
    """The ledger transfer id of a grant: stable per payment, unless dedupe is switched off."""
    return f"cashback:{payment_id}" if suffix is None else f"cashback:{payment_id}:{suffix}"
