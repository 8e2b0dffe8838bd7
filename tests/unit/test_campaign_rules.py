"""Campaign money rules: Step tiers, flash cashback caps and budget, months in JST."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from paychaos.platform.services.campaign import campaign_status
from paychaos.platform.services.campaign_rules import (
    cashback_transfer_id,
    counts_for_step,
    PaymentEvent,
    flash_grant,
    grants_in_order,
    month_of,
    next_tier,
    step_deltas,
    tier_for,
)
from paychaos.platform.services.campaign_store import StatusRow
from paychaos.platform.topology import CampaignSpec, FlashSpec, StepSpec

STEP = StepSpec.model_validate(
    {
        "min_amount": 100,
        "tiers": [
            {"payments": 0, "value": 0, "bps": 50},
            {"payments": 30, "value": 50_000, "bps": 100},
            {"payments": 50, "value": 100_000, "bps": 150},
        ],
    }
)
FLASH = FlashSpec(name="noon-flash", percent=20, per_payment_cap=1000, per_user_cap=3000, budget=5_000_000)


class TestStep:
    def test_min_amount(self) -> None:
        assert counts_for_step(100, STEP) and not counts_for_step(99, STEP)

    @pytest.mark.parametrize(
        ("payments", "value", "bps"),
        [
            (0, 0, 50),
            (29, 1_000_000, 50),  # value met, count not
            (30, 49_999, 50),  # count met, value not
            (30, 50_000, 100),
            (49, 99_999, 100),
            (50, 100_000, 150),
            (500, 10_000_000, 150),
        ],
    )
    def test_tier_needs_both_count_and_value(self, payments: int, value: int, bps: int) -> None:
        tier = tier_for(payments, value, STEP)
        assert tier is not None and tier.bps == bps

    def test_next_tier(self) -> None:
        upcoming = next_tier(10, 20_000, STEP)
        assert upcoming is not None and upcoming.bps == 100
        assert next_tier(50, 100_000, STEP) is None

    def test_no_tier_without_a_free_one(self) -> None:
        strict = StepSpec.model_validate({"min_amount": 100, "tiers": [{"payments": 1, "value": 1, "bps": 50}]})
        assert tier_for(0, 0, strict) is None
        upcoming = next_tier(0, 0, strict)
        assert upcoming is not None and upcoming.bps == 50


class TestFlash:
    def grant(
        self, amount: int, *, user: int = 0, budget: int = 5_000_000, exhausted: bool = False
    ) -> tuple[int, str]:
        g = flash_grant(amount, FLASH, user_granted=user, budget_remaining=budget, exhausted=exhausted)
        return g.amount, g.limited_by

    def test_percent_floors_integer_yen(self) -> None:
        assert self.grant(1234) == (246, "percent")  # 246.8 → 246
        assert self.grant(4) == (0, "percent")

    def test_per_payment_cap(self) -> None:
        assert self.grant(10_000) == (1000, "per_payment_cap")
        assert self.grant(5000) == (1000, "percent")  # exactly at the cap: the natural amount

    def test_per_user_cap_counts_what_was_granted(self) -> None:
        assert self.grant(10_000, user=2500) == (500, "per_user_cap")
        assert self.grant(10_000, user=3000) == (0, "per_user_cap")
        assert self.grant(10_000, user=3500) == (0, "per_user_cap")

    def test_budget_remaining(self) -> None:
        assert self.grant(10_000, budget=300) == (300, "budget")
        assert self.grant(10_000, budget=0) == (0, "budget")

    def test_exhausted_grants_nothing(self) -> None:
        assert self.grant(10_000, exhausted=True) == (0, "exhausted")

    def test_user_total_never_exceeds_cap(self) -> None:
        granted = 0
        for amount in [7000, 9000, 3000, 12_000, 800, 50_000]:
            granted += self.grant(amount, user=granted)[0]
        assert granted == FLASH.per_user_cap


def event(n: int, user: str, amount: int, at: datetime = datetime(2026, 12, 4, 3, tzinfo=UTC)) -> PaymentEvent:
    return PaymentEvent(event_id=f"e{n}", type="payment.completed", payment_id=f"p{n}", user_id=user,
                        merchant_id="m1", amount=amount, method="balance", completed_at=at)


class TestBatch:
    """A batch applied in one transaction grants what the same events applied one by one would."""

    def test_each_grant_counts_against_the_user_cap_and_budget_of_the_next(self) -> None:
        events = [event(1, "u1", 5000), event(2, "u2", 5000), event(3, "u1", 5000), event(4, "u1", 5000),
                  event(5, "u2", 5000)]
        # u1 has 1500 of its 3000 cap; the budget has 2600 left.
        amounts = grants_in_order(events, FLASH, user_granted={"u1": 1500}, budget_remaining=2600, exhausted=False)
        one_by_one, granted, budget = [], {"u1": 1500}, 2600
        for e in events:
            g = flash_grant(e.amount, FLASH, user_granted=granted.get(e.user_id, 0), budget_remaining=budget,
                            exhausted=False).amount
            one_by_one.append(g)
            granted[e.user_id] = granted.get(e.user_id, 0) + g
            budget -= g
        assert amounts == one_by_one == [1000, 1000, 500, 0, 100]  # u1 capped at 3000, then the budget runs out

    def test_an_exhausted_budget_grants_nothing(self) -> None:
        assert grants_in_order([event(1, "u1", 5000)], FLASH, user_granted={}, budget_remaining=10**6,
                               exhausted=True) == [0]

    def test_step_deltas_sum_per_user_and_month_counting_only_eligible_payments(self) -> None:
        december, january = datetime(2026, 12, 4, 3, tzinfo=UTC), datetime(2026, 12, 31, 16, tzinfo=UTC)
        events = [event(1, "u1", 100, december), event(2, "u1", 99, december), event(3, "u2", 500, december),
                  event(4, "u1", 300, january)]  # 16:00 UTC on the 31st is January in JST
        assert step_deltas(events, STEP) == {("u1", "2026-12"): (1, 199), ("u2", "2026-12"): (1, 500),
                                             ("u1", "2027-01"): (1, 300)}


def test_month_is_japanese_calendar() -> None:
    assert month_of(datetime(2026, 11, 30, 14, 59, tzinfo=UTC)) == "2026-11"
    assert month_of(datetime(2026, 11, 30, 15, 0, tzinfo=UTC)) == "2026-12"  # 00:00 JST on Dec 1


def test_transfer_ids() -> None:
    assert cashback_transfer_id("p1") == "cashback:p1"
    assert cashback_transfer_id("p1", suffix="ab12") == "cashback:p1:ab12"


def test_status_shows_tier_progress_and_caps() -> None:
    spec = CampaignSpec(step=STEP, flash=FLASH)
    row = StatusRow(payments=12, value=20_000, granted=1200, budget_remaining=-5, budget_exhausted=True)
    status = campaign_status(spec, "u00001", datetime(2026, 11, 23, 3, 0, tzinfo=UTC), row)
    assert status.month == "2026-11"
    assert status.step.tier_bps == 50
    assert status.step.next_tier is not None
    assert (status.step.next_tier.payments_needed, status.step.next_tier.value_needed) == (18, 30_000)
    assert status.flash.user_cap_remaining == 1800
    assert status.flash.budget_remaining == 0 and status.flash.budget_exhausted
