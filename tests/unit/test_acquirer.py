"""The acquirer simulator's memory of payment ids: first answer wins, the oldest is forgotten."""

from __future__ import annotations

from paychaos.platform.services.acquirer import remember


def test_the_first_amount_for_an_id_is_kept() -> None:
    memory: dict[str, int | None] = {}
    assert remember(memory, "p1", 500) == 500
    assert remember(memory, "p1", 700) == 500  # a reused id with another amount is refused upstream


def test_memory_is_bounded_and_forgets_the_oldest_first() -> None:
    memory: dict[str, int | None] = {}
    for i in range(5):
        remember(memory, f"p{i}", i, limit=3)
    assert list(memory) == ["p2", "p3", "p4"]
    assert remember(memory, "p0", 99, limit=3) == 99  # forgotten, so taken as new
