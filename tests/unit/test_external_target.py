"""A target file (kind: Target): what it says, what it refuses, and how its series lie over the catalogue's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from paychaos.cli.app import app
from paychaos.cli.targeting import chosen_target
from paychaos.experiments.loading import SpecError, parse_experiment
from paychaos.faults import records
from paychaos.faults.driving import InjectionFailed
from paychaos.faults.planning import FaultPlan
from paychaos.probes.catalogue import load_catalogue
from paychaos.targets import Inventory, catalogue_of, from_arguments
from paychaos.targets.external import ExternalTarget, TargetFileError, ToxiproxyDriver, overlay
from paychaos.targets.local import LocalTarget

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

TARGET = """\
apiVersion: paychaos.io/v1alpha1
kind: Target
metadata: {name: staging}
spec:
  prometheus: http://127.0.0.1:9
  edge: http://127.0.0.1:9
  ledger: {dsnFile: secrets/ledger.dsn}
  breakers:
    acquirer: {callsToOpen: 7}
  series:
    breakers:
      names:
        acquirer: {}
        ledger: {failsFast: vector(0.01)}
    backlogs: {}
"""


@pytest.fixture
def target_file(tmp_path: Path) -> Path:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "ledger.dsn").write_text("postgresql://u:hidden@127.0.0.1:9/ledger\n")
    path = tmp_path / "staging.yaml"
    path.write_text(TARGET)
    return path


def test_a_target_file_gives_endpoints_a_ledger_beside_it_and_its_breakers_settings(target_file: Path) -> None:
    target = ExternalTarget.at(str(target_file))
    assert target.endpoints().ledger_dsn == "postgresql://u:hidden@127.0.0.1:9/ledger"  # from the secret file
    assert target.ledger().root == target_file.parent / ".paychaos" / "staging"
    assert target.calls_to_open("acquirer") == 7 and target.calls_to_open("ledger") is None
    # A compiled activity finds it again from its arguments alone.
    again = from_arguments(target.arguments())
    assert isinstance(again, ExternalTarget) and again.path == target_file.resolve()


def test_its_series_lie_over_the_catalogues(target_file: Path) -> None:
    catalogue = load_catalogue(ROOT / "probes")
    vocabulary = catalogue_of(ExternalTarget.at(str(target_file)), catalogue).vocabulary
    # names: the stack's own, replacing the catalogue's whole; conventions kept.
    assert sorted(vocabulary.breakers.names) == ["acquirer", "ledger"]
    ledger = vocabulary.breaker("ledger")
    assert ledger is not None and ledger.fails_fast == "vector(0.01)"
    assert ledger.open == catalogue.vocabulary.breakers.conventions.open
    # The catalogue's acquirer failsFast was its own query, gone with the catalogue's names.
    acquirer = vocabulary.breaker("acquirer")
    assert acquirer is not None and acquirer.fails_fast is None
    assert vocabulary.backlogs == {}  # an empty map clears
    assert vocabulary.traffic == catalogue.vocabulary.traffic and vocabulary.settled == catalogue.vocabulary.settled


def test_overlay_merges_mappings_and_replaces_names_and_lists() -> None:
    base = {"a": {"x": 1, "y": 2}, "names": {"p": 1}, "l": [1], "k": {"names": {"q": 1}, "z": 3}}
    over = {"a": {"y": 5}, "l": [2], "k": {"names": {"r": 2}}}
    assert overlay(base, over) == {"a": {"x": 1, "y": 5}, "names": {"p": 1}, "l": [2], "k": {"names": {"r": 2}, "z": 3}}


def test_a_bad_target_file_is_told_with_its_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TARGET.replace("http://127.0.0.1:9\n  edge", "prometheus.internal:9090\n  edge")
                   .replace("callsToOpen: 7", "callsToOpen: 0"))
    result = runner.invoke(app, ["validate", "--target", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:5: spec.prometheus:" in result.stderr
    assert f"{bad}:9: spec.breakers.acquirer.callsToOpen:" in result.stderr
    # Where a compiled activity reads it, the error says how to see every problem.
    with pytest.raises(TargetFileError, match="paychaos validate --target"):
        ExternalTarget.at(str(bad))


def test_unknown_series_sections_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(TARGET.replace("    backlogs: {}", "    backlog: {}"))
    result = runner.invoke(app, ["validate", "--target", str(bad)])
    assert result.exit_code == 1 and "unknown section 'backlog'" in result.stderr, result.stderr


def test_not_ready_names_the_endpoint_that_does_not_answer(target_file: Path, tmp_path: Path) -> None:
    target = ExternalTarget.at(str(target_file))
    why = target.not_ready()
    assert why is not None and "spec.prometheus does not answer" in why
    (tmp_path / "secrets" / "ledger.dsn").unlink()
    why = ExternalTarget.at(str(target_file)).not_ready()
    assert why is not None and "spec.ledger.dsnFile" in why and "hidden" not in why


SLOW_THEN_KILL = """\
apiVersion: paychaos.io/v1alpha1
kind: ChaosExperiment
metadata: {name: two-faults}
spec:
  description: x
  faults:
    - {at: 1s, for: 5s, slowDownstream: {proxy: acquirer, latency: 3000ms}}
    - {at: 1s, for: 5s, podKill: {service: payment, count: 1}}
"""


def test_a_fault_the_targets_driver_cannot_inject_is_refused_at_validation() -> None:
    inventory = Inventory(replicas={"payment": {"az-a": 2}}, zones=("az-a",), proxies=("acquirer",), topics={}, brokers=(),
                          fault_kinds=("slowDownstream",))
    with pytest.raises(SpecError) as caught:
        parse_experiment(SLOW_THEN_KILL, "x.yaml", inventory)
    (problem,) = caught.value.problems
    assert problem.line == 8 and problem.path == "spec.faults[1].podKill"
    assert problem.message == "the target's driver cannot inject podKill: it has slowDownstream"
    # Every kind, when the driver does not say (the reference platform's).
    assert parse_experiment(SLOW_THEN_KILL, "x.yaml", Inventory(
        replicas={"payment": {"az-a": 2}}, zones=("az-a",), proxies=("acquirer",), topics={}, brokers=())).name == "two-faults"


def test_run_dir_and_target_are_one_or_the_other(target_file: Path) -> None:
    result = runner.invoke(app, ["halt", "--run-dir", "x", "--target", str(target_file)])
    assert result.exit_code == 2 and "give one of --run-dir" in result.stderr


def test_a_fault_kind_the_driver_refuses_leaves_no_record_that_halt_would_trip_on(tmp_path: Path) -> None:
    ledger, driver = records.FileLedger(tmp_path), ToxiproxyDriver("http://127.0.0.1:9")
    plan = FaultPlan(experiment="x", index=0, kind="poisonEvents", at=1.0, duration=5.0, topic="payments", poison=5)
    with pytest.raises(InjectionFailed, match="injects slowDownstream only, not poisonEvents"):
        records.inject(ledger, driver, plan)
    assert ledger.records() == [] and records.halt(ledger, driver) == []


def test_with_its_toxiproxy_silent_the_fault_kinds_are_still_checked(target_file: Path, tmp_path: Path) -> None:
    target_file.write_text(TARGET.replace("  edge: http://127.0.0.1:9\n", "  edge: http://127.0.0.1:9\n  toxiproxy: http://127.0.0.1:9\n"))
    spec = tmp_path / "two.yaml"
    spec.write_text(SLOW_THEN_KILL)
    result = runner.invoke(app, ["validate", "--target", str(target_file), str(spec)])
    assert result.exit_code == 1
    assert "proxy names not checked" in result.stderr
    assert f"{spec}:8: spec.faults[1].podKill: the target's driver cannot inject podKill" in result.stderr
    assert "proxy" not in result.stderr.split("podKill")[-1]  # the unknown proxy list is not held against it


def test_the_environment_names_the_target_unless_a_run_dir_is_given(target_file: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYCHAOS_TARGET", str(target_file))
    assert isinstance(chosen_target(None, None), ExternalTarget)
    assert isinstance(chosen_target(tmp_path / "run", None), LocalTarget)  # an explicit --run-dir wins over the environment
    local = LocalTarget.at(str(tmp_path / "run"))
    assert isinstance(chosen_target(None, None, json.dumps(local.arguments())), LocalTarget)
