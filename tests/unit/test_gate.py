"""The gate's own logic: suites load with file:line errors, thresholds judge measured times."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from paychaos.experiments.gating import GateEntry, gate_passed, threshold_checks
from paychaos.experiments.loading import SpecError
from paychaos.experiments.suites import Thresholds, load_suite
from paychaos.reporting.journals import read_run

ROOT = Path(__file__).resolve().parents[2]
SUITE = """\
apiVersion: paychaos.io/v1alpha1
kind: GameDay
metadata: {name: small}
spec:
  description: Two experiments.
  experiments:
    - experiment: {first}
      thresholds: {timeToDetect: 10s}
    - experiment: {second}
"""


def write_suite(tmp_path: Path, first: str, second: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE.replace("{first}", first).replace("{second}", second), encoding="utf-8")
    return path


def test_the_shipped_suite_loads_every_catalogue_experiment_in_order() -> None:
    suite = load_suite(ROOT / "experiments" / "suites" / "pre-campaign.yaml")
    assert [p.experiment.name for p in suite.planned] == [
        "acquirer-slowdown", "pod-kill-payment", "ledger-kill-slow-db", "ledger-db-brownout", "ledger-db-hang", "kafka-broker-failure", "zone-loss-az-a",
        "acquirer-hang", "acquirer-brownout", "campaign-redelivery", "noon-admission", "kafka-majority-loss",
    ]
    smoke = load_suite(ROOT / "experiments" / "suites" / "smoke.yaml")
    assert [p.experiment.name for p in smoke.planned] == ["pod-kill-payment", "acquirer-hang"]
    assert suite.planned[0].entry.thresholds.time_to_detect == timedelta(seconds=15)


def test_experiment_paths_are_relative_to_the_suite(tmp_path: Path) -> None:
    experiments = ROOT / "experiments"
    suite = load_suite(write_suite(tmp_path, str(experiments / "pod-kill-payment.yaml"), str(experiments / "zone-loss-az-a.yaml")))
    assert [p.path.name for p in suite.planned] == ["pod-kill-payment.yaml", "zone-loss-az-a.yaml"]


def test_a_missing_experiment_and_a_duplicate_are_named_at_their_lines(tmp_path: Path) -> None:
    same = str(ROOT / "experiments" / "pod-kill-payment.yaml")
    path = write_suite(tmp_path, "nowhere.yaml", same)
    with pytest.raises(SpecError) as caught:
        load_suite(path)
    assert str(caught.value) == f"{path}:7: spec.experiments[0].experiment: no experiment file 'nowhere.yaml' next to the suite"
    path = write_suite(tmp_path, same, same)
    with pytest.raises(SpecError) as caught:
        load_suite(path)
    assert str(caught.value) == (
        f"{path}:9: spec.experiments[1].experiment: experiment 'pod-kill-payment' is listed twice (also item 0)"
    )


def test_suite_mistakes_are_one_line_each_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(SUITE.replace("{first}", "a.yaml").replace("{second}", "b.yaml").replace("timeToDetect: 10s", "timeToDetekt: 10s"))
    with pytest.raises(SpecError) as caught:
        load_suite(path)
    assert str(caught.value) == f"{path}:8: spec.experiments[0].thresholds.timeToDetekt: unknown field 'timeToDetekt' (did you mean 'timeToDetect'?)"
    path.write_text(SUITE.replace("GameDay", "ChaosExperiment"))
    with pytest.raises(SpecError) as caught:
        load_suite(path)
    assert str(caught.value) == f"{path}:2: kind: expected 'GameDay', got 'ChaosExperiment': this file is not a suite"


def test_a_broken_experiment_in_a_suite_is_reported_in_its_own_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text((ROOT / "experiments" / "pod-kill-payment.yaml").read_text().replace("service: payment", "service: Payment"))
    with pytest.raises(SpecError) as caught:
        load_suite(write_suite(tmp_path, "broken.yaml", str(ROOT / "experiments" / "zone-loss-az-a.yaml")))
    assert str(caught.value).startswith(f"{broken}:")


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ({"timeToDetect": 3.2, "recoveryTime": 20.0}, ["passed", "passed"]),
        ({"timeToDetect": 12.0, "recoveryTime": 20.0}, ["failed", "passed"]),
        ({"timeToDetect": 3.2, "recoveryTime": 31.0}, ["passed", "failed"]),
        ({"timeToDetect": None, "recoveryTime": 30.0}, ["failed", "passed"]),  # not measured is not a pass
        ({}, ["failed", "failed"]),
    ],
)
def test_thresholds_judge_the_measured_times(times: dict, expected: list[str]) -> None:
    checks = threshold_checks(times, Thresholds(time_to_detect=timedelta(seconds=10), recovery_time=timedelta(seconds=30)))
    assert [c.verdict for c in checks] == expected
    assert [c.name for c in checks] == ["timeToDetect", "recoveryTime"]
    assert all(c.phase == "gate" and c.threshold.startswith("<= ") for c in checks)


def test_no_thresholds_no_checks() -> None:
    assert threshold_checks({"timeToDetect": 99.0}, Thresholds()) == []


def test_the_gate_passes_only_when_every_experiment_and_threshold_passed() -> None:
    ok = GateEntry("a", {}, "passed", "3 checks passed")
    late = GateEntry("b", {}, "passed", "3 checks passed",
                     threshold_checks({"recoveryTime": 50.0}, Thresholds(recovery_time=timedelta(seconds=30))))
    failed = GateEntry("c", {}, "failed", "expect slo ...")
    assert gate_passed([ok])
    assert not gate_passed([ok, late])
    assert not gate_passed([ok, failed])
    assert not gate_passed([])


def test_the_gated_journal_is_derived_and_the_runs_own_is_left_as_written(journal: dict[str, Any]) -> None:
    written = copy.deepcopy(journal)
    late = threshold_checks({"recoveryTime": 50.0}, Thresholds(recovery_time=timedelta(seconds=30)))
    gated = GateEntry("acquirer-slowdown", journal, "passed", "16 checks passed", late).gated_journal()
    assert journal == written  # nothing of the run's own journal changed
    section = read_run("acquirer-slowdown", gated)
    assert section.verdict.result == "failed" and "not the gate's thresholds on recoveryTime" in section.verdict.reason
    assert [c.label for c in section.checks][-1] == "gate/threshold/recoveryTime"
    assert len(section.checks) == len(written["paychaos"]["checks"]) + 1
    assert gated["experiment"] == written["experiment"]  # the rest of the Chaos Toolkit journal is carried over
    # A run that left no journal still reads as a run: its verdict and the gate's checks.
    missing = read_run("gone", GateEntry("gone", None, "error", "`paychaos run` exited 3 without a journal").gated_journal())
    assert (missing.verdict.result, missing.checks) == ("error", [])


def test_each_experiment_runs_as_its_own_process_on_the_gates_target(tmp_path: Path) -> None:
    # A real `paychaos run` child, told its target as --target-arguments: here the local stack of an
    # empty run dir, so it refuses to start, and the gate says so instead of inventing a verdict.
    from paychaos.experiments.gating import run_entry
    from paychaos.targets.local import LocalTarget

    suite = load_suite(ROOT / "experiments" / "suites" / "smoke.yaml")
    said: list[str] = []
    entry = run_entry(suite.planned[0], LocalTarget.at(str(tmp_path / "nothing-here")), tmp_path, said.append)
    assert entry.verdict == "error" and entry.reason == "`paychaos run` exited 3 without a journal", entry.reason


def test_a_schedule_is_a_five_field_cron_expression_refused_at_its_line(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from paychaos.experiments.suites import next_time

    experiments = ROOT / "experiments"
    path = write_suite(tmp_path, str(experiments / "pod-kill-payment.yaml"), str(experiments / "zone-loss-az-a.yaml"))
    text = path.read_text()
    path.write_text(text.replace("  experiments:\n", "  schedule: '0 3 * * 1'\n  experiments:\n", 1))
    assert load_suite(path).gameday.spec.schedule == "0 3 * * 1"
    assert next_time("0 3 * * 1", datetime(2026, 12, 4, 14, 0, tzinfo=UTC)) == datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    for bad in ("0 3 * *", "61 * * * *", "0 3 * * 1 2026"):
        path.write_text(text.replace("  experiments:\n", f"  schedule: '{bad}'\n  experiments:\n", 1))
        with pytest.raises(SpecError) as caught:
            load_suite(path)
        assert str(caught.value).startswith(f"{path}:6: spec.schedule: '{bad}' is not a cron expression of five fields"), caught.value


def test_in_a_cluster_an_entry_names_the_experiment_object_of_its_files_stem() -> None:
    from paychaos.experiments.suites import SuiteEntry

    assert [SuiteEntry(experiment=e).object_name for e in ("../pod-kill-payment.yaml", "pod-kill-payment", "x/y.yml")] == [
        "pod-kill-payment", "pod-kill-payment", "y"]
