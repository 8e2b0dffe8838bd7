"""Unit-test fixtures: a real run journal (acquirer-slowdown) to make report variants from."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
JOURNAL = ROOT / "tests" / "data" / "journal-acquirer-slowdown.json"


@pytest.fixture(scope="session")
def _journal_data() -> dict[str, Any]:
    return json.loads(JOURNAL.read_text(encoding="utf-8"))


@pytest.fixture
def journal(_journal_data: dict[str, Any]) -> dict[str, Any]:
    """A fresh copy of the journal of a passed acquirer-slowdown run, for a test to edit."""
    return copy.deepcopy(_journal_data)


def _fail_check(journal: dict[str, Any], name: str, observed: object, verdict: str = "failed") -> dict[str, Any]:
    """The journal with one check turned ``verdict`` and the run's verdict following it."""
    section = journal["paychaos"]
    check = next(c for c in section["checks"] if c["name"] == name)
    check.update(verdict=verdict, observed=observed)
    reason = f"{check['phase']} {check['kind']} {name}: observed {observed}, expected {check['threshold']}"
    section["verdict"] = {"result": "failed" if verdict == "failed" else "error", "reason": reason}
    return journal


@pytest.fixture
def fail_check() -> Callable[..., dict[str, Any]]:
    """``fail_check(journal, "acquirer.opens", 40.2)``: turn one check (and the run) to failed or error."""
    return _fail_check


@pytest.fixture
def failed_journal(_journal_data: dict[str, Any]) -> dict[str, Any]:
    """Another copy, of the run with its breaker opening too late: one failed check, verdict failed."""
    return _fail_check(copy.deepcopy(_journal_data), "acquirer.opens", 40.2)
