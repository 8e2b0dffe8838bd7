"""The status read model's copy: rows from the snapshot and from notifications, ordered by version."""

from __future__ import annotations

from paychaos.platform.services.campaign_store import StatusRow
from paychaos.platform.services.campaign_view import Aggregates, Transactions


def step(user: str, payments: int, value: int, version: int, month: str = "2026-12") -> dict[str, object]:
    return {"user_id": user, "month": month, "payments": payments, "value": value, "version": version}


def loaded() -> Aggregates:
    copy = Aggregates("noon-flash")
    copy.apply("budgets", {"campaign": "noon-flash", "remaining": 5000, "exhausted": False, "version": 10})
    copy.apply("step_progress", step("u1", 3, 900, 7))
    copy.apply("flash_users", {"campaign": "noon-flash", "user_id": "u1", "granted": 180, "version": 8})
    return copy


def test_a_user_reads_as_the_database_would_read_them() -> None:
    copy = loaded()
    assert copy.status("u1", "2026-12") == StatusRow(3, 900, 180, 5000, False)
    assert copy.status("u1", "2027-01") == StatusRow(0, 0, 180, 5000, False)  # a new month starts at zero
    assert copy.status("u2", "2026-12") == StatusRow(0, 0, 0, 5000, False)  # no payment yet


def test_an_announced_change_older_than_the_snapshot_changes_nothing() -> None:
    copy = loaded()
    copy.apply("step_progress", step("u1", 2, 600, 5))  # committed before the snapshot, announced after it
    copy.apply("budgets", {"campaign": "noon-flash", "remaining": 6000, "exhausted": False, "version": 9})
    assert copy.status("u1", "2026-12") == StatusRow(3, 900, 180, 5000, False)
    copy.apply("step_progress", step("u1", 4, 1400, 12))
    copy.apply("budgets", {"campaign": "noon-flash", "remaining": 4900, "exhausted": True, "version": 13})
    assert copy.status("u1", "2026-12") == StatusRow(4, 1400, 180, 4900, True)


def test_a_deleted_row_goes_and_its_reinsert_comes_back() -> None:
    copy = loaded()
    copy.apply("step_progress", step("u1", 3, 900, 7), deleted=True)  # the re-aggregation's repair
    assert copy.status("u1", "2026-12") == StatusRow(0, 0, 180, 5000, False)
    copy.apply("step_progress", step("u1", 3, 950, 20))
    assert copy.status("u1", "2026-12") == StatusRow(3, 950, 180, 5000, False)


def test_a_delete_of_an_older_version_than_held_keeps_the_row() -> None:
    copy = loaded()
    copy.apply("step_progress", step("u1", 1, 100, 2), deleted=True)
    assert copy.status("u1", "2026-12") == StatusRow(3, 900, 180, 5000, False)


def test_other_campaigns_are_not_mixed_in_and_no_budget_means_no_answer() -> None:
    copy = loaded()
    copy.apply("flash_users", {"campaign": "other", "user_id": "u1", "granted": 999, "version": 30})
    copy.apply("budgets", {"campaign": "other", "remaining": 1, "exhausted": True, "version": 31})
    assert copy.status("u1", "2026-12") == StatusRow(3, 900, 180, 5000, False)
    assert Aggregates("noon-flash").status("u1", "2026-12") is None  # the database answers instead


def test_a_transaction_is_taken_whole_once_the_next_begins_or_nothing_more_comes() -> None:
    gather = Transactions()
    first = [{"tx": 7, "table": "step_progress", "n": i} for i in range(3)]
    assert [gather.add(c) for c in first] == [[], [], []]  # still gathering: a read sees none of it
    second = {"tx": 8, "table": "budgets"}
    assert gather.add(second) == first  # the next transaction's first change ends the one before
    assert gather.flush() == [second] and gather.flush() == []


def test_a_repair_read_between_its_deletes_and_inserts_is_never_seen() -> None:
    copy = loaded()
    repair = [{"tx": 9, "table": "step_progress", "deleted": True, "row": step("u1", 3, 900, 7)},
              {"tx": 9, "table": "step_progress", "deleted": False, "row": step("u1", 3, 900, 21)}]
    gather = Transactions()
    for change in repair:
        copy.apply_all(gather.add(change))
        assert copy.status("u1", "2026-12") == StatusRow(3, 900, 180, 5000, False)
    copy.apply_all(gather.flush())
    assert copy.status("u1", "2026-12") == StatusRow(3, 900, 180, 5000, False) and copy.step[("u1", "2026-12")][2] == 21
