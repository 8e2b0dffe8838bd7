"""The request mix of an app user: the payment share a spec asks for is what the user sends."""

from __future__ import annotations

import pytest

from paychaos.load.mix import CYCLE_LENGTH, app_cycle


def test_the_default_is_an_ordinary_day_ten_status_checks_a_payment() -> None:
    cycle = app_cycle()
    assert cycle.count("pay") == 2 and cycle.count("wallet") == 2 and len(cycle) == CYCLE_LENGTH


@pytest.mark.parametrize("share", [0.1, 0.25, 0.5, 0.75, 1.0])
def test_the_payment_share_is_kept_and_payments_are_spread_out(share: float) -> None:
    cycle = app_cycle(share)
    assert cycle.count("pay") == round(share * CYCLE_LENGTH)
    gaps = [i for i, step in enumerate(cycle) if step == "pay"]
    spacing = [b - a for a, b in zip(gaps, gaps[1:])]
    assert not spacing or max(spacing) - min(spacing) <= 1


def test_a_tiny_share_still_pays_once_a_cycle() -> None:
    assert app_cycle(0.001).count("pay") == 1
