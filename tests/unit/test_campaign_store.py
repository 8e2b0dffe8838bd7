"""The one order in which the campaign's writers lock its aggregate tables."""

from __future__ import annotations

import pytest

from paychaos.platform.services.campaign_store import WRITE_ORDER, in_write_order


def test_tables_come_back_in_the_write_order_whatever_order_they_are_named_in() -> None:
    assert in_write_order("campaign.grants", "campaign.flash_users", "campaign.budgets") == [
        "campaign.flash_users", "campaign.budgets", "campaign.grants"]
    assert in_write_order(*reversed(WRITE_ORDER)) == list(WRITE_ORDER)


def test_a_table_without_a_place_in_the_order_is_refused() -> None:
    with pytest.raises(ValueError, match="campaign.processed_events"):
        in_write_order("campaign.grants", "campaign.processed_events")
