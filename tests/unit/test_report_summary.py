"""Markdown (CI job summary) and terminal summaries of a gate run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paychaos.reporting.summary import markdown_summary, text_summary, write_step_summary


def test_markdown_table_of_experiments(journal: dict[str, Any]) -> None:
    text = markdown_summary([("acquirer-slowdown", journal), ("zone-loss-az-a", None)], "pre-campaign")
    assert text.startswith("## paychaos gate `pre-campaign`: 1 of 2 experiments did not pass\n")
    assert "| acquirer-slowdown | ✅ passed | 2.8 s | 21.6 s | 16/16 passed |" in text
    assert "| zone-loss-az-a | ⚠️ error | — | — | none judged |" in text


def test_a_passed_gate_lists_nothing_that_failed(journal: dict[str, Any]) -> None:
    text = markdown_summary([("acquirer-slowdown", journal)], "pre-campaign")
    assert "the experiment passed" in text and "did not pass" not in text


def test_failed_checks_with_observed_against_expected(failed_journal: dict[str, Any]) -> None:
    failed_journal["paychaos"]["checks"][2]["detail"] = "open after 40s | too late"
    text = markdown_summary([("acquirer-slowdown", failed_journal)], "pre-campaign")
    assert "| acquirer-slowdown | ❌ failed | 2.8 s | 21.6 s | 15/16 passed |" in text
    assert "**acquirer-slowdown**: expect breaker acquirer.opens: observed 40.2, expected <= 15s" in text
    assert "| `expect/breaker/acquirer.opens` | failed | 40.2 | <= 15s | open after 40s \\| too late |" in text


def test_times_not_measured_read_as_a_dash(journal: dict[str, Any]) -> None:
    journal["paychaos"]["times"] = {"timeToDetect": None, "recoveryTime": None}
    assert "| acquirer-slowdown | ✅ passed | — | — | 16/16 passed |" in markdown_summary([("acquirer-slowdown", journal)], "g")


def test_terminal_summary_fits_one_screen(journal: dict[str, Any], failed_journal: dict[str, Any]) -> None:
    failed_journal["paychaos"]["experiment"] = "acquirer-slowdown-2"
    text = text_summary([("acquirer-slowdown", journal), ("acquirer-slowdown-2", failed_journal), ("zone-loss-az-a", None)], "pre-campaign")
    lines = text.splitlines()
    assert lines[0] == "gate pre-campaign: 2 of 3 experiments did not pass"
    assert lines[1].split() == ["✓", "acquirer-slowdown", "passed", "detect", "2.8", "s", "recover", "21.6", "s", "checks", "16/16", "passed"]
    assert "      failed expect/breaker/acquirer.opens: observed 40.2, expected <= 15s" in lines
    assert len(lines) <= 24 and max(map(len, lines)) <= 100


def test_step_summary_is_appended_only_under_ci(tmp_path: Path, journal: dict[str, Any]) -> None:
    markdown = markdown_summary([("acquirer-slowdown", journal)], "pre-campaign")
    assert write_step_summary(markdown, environ={}) is None
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n", encoding="utf-8")
    assert write_step_summary(markdown, environ={"GITHUB_STEP_SUMMARY": str(target)}) == target
    assert target.read_text(encoding="utf-8") == "earlier step\n" + markdown


def test_the_json_summary_carries_each_verdict_and_the_worst_as_the_suites(journal: dict[str, Any], failed_journal: dict[str, Any]) -> None:
    from paychaos.reporting.summary import json_summary

    summary = json_summary([("acquirer-slowdown", journal), ("zone-loss-az-a", None)], "pre-campaign")
    assert summary["verdict"] == "error" and summary["reason"] == "1 of 2 experiments did not pass"
    assert summary["experiments"][0] == {"name": "acquirer-slowdown", "verdict": "passed", "reason": journal["paychaos"]["verdict"]["reason"],
                                         "timeToDetect": 2.76, "recoveryTime": 21.61, "failedChecks": []}
    # A failure outranks an error: the stack is broken, whatever else the gate could not judge.
    failed_journal["paychaos"]["experiment"] = "acquirer-slowdown-2"
    summary = json_summary([("zone-loss-az-a", None), ("acquirer-slowdown-2", failed_journal)], "pre-campaign")
    assert summary["verdict"] == "failed"
    assert summary["experiments"][1]["failedChecks"] == ["expect/breaker/acquirer.opens"]
    assert json_summary([("acquirer-slowdown", journal)], "g")["verdict"] == "passed"
