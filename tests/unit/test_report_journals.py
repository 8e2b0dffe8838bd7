"""Reading run journals, and what their samples show: fault windows, breaker, clients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from paychaos.reporting.journals import JournalError, experiment_of, fault_windows, load_journal, read_run
from paychaos.reporting.observations import observe


def test_a_journal_reads_as_a_run(journal: dict[str, Any]) -> None:
    run = read_run("acquirer-slowdown", journal)
    assert run.passed and run.verdict.reason == "16 checks passed"
    assert run.duration == pytest.approx(110.41, abs=0.01)
    assert run.started is not None and run.started.isoformat().startswith("2026-11-23T13:03:13")
    assert len(run.checks) == 16 and run.failed_checks == []
    assert run.checks[2].label == "expect/breaker/acquirer.opens"
    assert run.checks[1].observed == 0 and isinstance(run.checks[1].observed, int)  # counts stay integers
    assert run.times.time_to_detect == 2.76 and run.times.recovery_time == 21.61


def test_a_missing_journal_is_an_error_run() -> None:
    run = read_run("zone-loss-az-a", None)
    assert run.verdict.result == "error" and "no journal" in run.verdict.reason
    assert run.checks == [] and run.samples == []


def test_keys_a_newer_engine_adds_are_ignored(journal: dict[str, Any]) -> None:
    journal["paychaos"]["gate"] = {"thresholds": {}}
    journal["paychaos"]["checks"][0]["newField"] = 1
    assert read_run("acquirer-slowdown", journal).passed


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda j: j.pop("paychaos"), "no 'paychaos' section"),
        (lambda j: j["paychaos"].pop("verdict"), "verdict"),
        (lambda j: j["paychaos"]["checks"][0].update(verdict="maybe"), "checks.0.verdict"),
    ],
)
def test_a_malformed_journal_is_one_clear_error(journal: dict[str, Any], edit: Any, message: str) -> None:
    edit(journal)
    with pytest.raises(JournalError, match=message):
        read_run("acquirer-slowdown", journal)


def test_loading_a_journal_file(tmp_path: Path, journal: dict[str, Any]) -> None:
    good = tmp_path / "journal.json"
    good.write_text(json.dumps(journal), encoding="utf-8")
    assert load_journal(good)["paychaos"]["experiment"] == "acquirer-slowdown"
    with pytest.raises(JournalError, match="cannot read"):
        load_journal(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(JournalError, match="not JSON"):
        load_journal(tmp_path / "broken.json")
    (tmp_path / "chaos.json").write_text(json.dumps({"status": "completed"}), encoding="utf-8")
    with pytest.raises(JournalError, match="not a paychaos run journal"):
        load_journal(tmp_path / "chaos.json")


def test_the_experiment_travels_in_the_journal(journal: dict[str, Any]) -> None:
    experiment = experiment_of(journal)
    assert experiment.name == "acquirer-slowdown"
    assert experiment.spec.runbook is not None and experiment.spec.runbook.kubernetes_mitigation
    journal["experiment"]["controls"] = []
    with pytest.raises(JournalError, match="give the experiment YAML"):
        experiment_of(journal)


def test_fault_windows_are_when_the_timeline_says_faults_acted(journal: dict[str, Any]) -> None:
    assert fault_windows(read_run("a", journal)) == [(15.061, 45.0)]


def test_without_timeline_events_fault_windows_are_the_schedule(journal: dict[str, Any]) -> None:
    journal["paychaos"]["timeline"] = [e for e in journal["paychaos"]["timeline"] if not e["event"].startswith("fault-")]
    assert fault_windows(read_run("a", journal)) == [(15.0, 45.0)]


def test_a_fault_never_reverted_is_active_until_its_scheduled_end(journal: dict[str, Any]) -> None:
    journal["paychaos"]["timeline"] = [e for e in journal["paychaos"]["timeline"] if e["event"] != "fault-reverted"]
    assert fault_windows(read_run("a", journal)) == [(15.061, 45.0)]


def test_the_breaker_and_the_clients_as_observed(journal: dict[str, Any]) -> None:
    seen = observe(read_run("a", journal))
    # Counted from the scheduled fault start and revert, as the engine's checks count them.
    [breaker] = seen.breakers  # the breakers are read from the sample keys: one, the acquirer's
    assert breaker.name == "acquirer" and breaker.opened_after == 5.77
    assert breaker.open_everywhere_after == 7.77 and breaker.replicas == 3
    assert breaker.closed_after == 21.61
    assert (seen.error_ratio_source, seen.error_ratio_before, seen.error_ratio_worst) == ("client", 0.0, 0.0781)
    assert (seen.p99_source, seen.p99_ms_before, seen.p99_ms_worst) == ("client", 170.0, 1800.0)
    assert (seen.lag_peaks, seen.backlog_peaks) == ({"campaign": 7}, {"outbox": 6})


def test_server_side_series_are_preferred_when_the_journal_has_them(journal: dict[str, Any]) -> None:
    for sample in journal["paychaos"]["samples"]:
        sample["error_ratio"] = 0.25 if 20 <= sample["t"] <= 30 else 0.0
        sample["p99"] = 2.5 if 20 <= sample["t"] <= 30 else 0.05  # seconds
    seen = observe(read_run("a", journal))
    assert (seen.error_ratio_source, seen.error_ratio_worst) == ("server", 0.25)
    assert (seen.p99_source, seen.p99_ms_before, seen.p99_ms_worst) == ("server", 50.0, 2500.0)


def test_a_breaker_that_never_opened(journal: dict[str, Any]) -> None:
    for sample in journal["paychaos"]["samples"]:
        sample["breaker_open:acquirer"] = 0.0
    [breaker] = observe(read_run("a", journal)).breakers
    assert breaker.opened_after is None and breaker.closed_after is None and breaker.replicas == 3
