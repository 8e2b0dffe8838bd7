"""A spec compiles to a valid Chaos Toolkit experiment with faults in time order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from chaoslib.experiment import ensure_experiment_is_valid

from paychaos.experiments.compiling import compile_experiment
from paychaos.experiments.loading import load_experiment

CATALOGUE = sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", CATALOGUE, ids=lambda p: p.stem)
def test_catalogue_compiles_to_a_valid_chaostoolkit_experiment(path: Path) -> None:
    compiled = compile_experiment(load_experiment(path), {"platform": "local", "location": "run"}, "out")
    ensure_experiment_is_valid(compiled)
    assert compiled["controls"][0]["provider"]["module"] == "paychaos.ctk.control"
    actions = [a for a in compiled["method"] if a["type"] == "action" and a["name"].startswith(("inject-", "revert-"))]
    times = [a["provider"]["arguments"]["at"] for a in actions]
    assert times == sorted(times)
    assert len(compiled["rollbacks"]) == len(actions) // 2


def compiled_method(tmp_path: Path, spec: str) -> list[dict[str, Any]]:
    path = tmp_path / "x.yaml"
    path.write_text(f"apiVersion: paychaos.io/v1alpha1\nkind: ChaosExperiment\n{spec}")
    return compile_experiment(load_experiment(path), {"platform": "local", "location": "run"}, "out")["method"]


def test_overlapping_faults_interleave_and_a_revert_due_with_an_inject_goes_first(tmp_path: Path) -> None:
    method = compiled_method(tmp_path, """
metadata: {name: two-faults}
spec:
  description: two faults
  faults:
    - {at: 10s, for: 10s, podKill: {service: payment}}
    - {at: 5s, for: 15s, slowDownstream: {proxy: acquirer, latency: 500ms}}
    - {at: 20s, for: 5s, zoneLoss: {zone: az-b}}
""")
    names = [a["name"] for a in method if a["type"] == "action"]
    assert names[:6] == [
        "inject-slowDownstream-1", "inject-podKill-0", "revert-podKill-0",
        "revert-slowDownstream-1", "inject-zoneLoss-2", "revert-zoneLoss-2",
    ]
    assert names[-1] == "stop-load"


def test_checks_that_read_the_whole_load_record_are_judged_once_the_load_has_stopped(tmp_path: Path) -> None:
    method = compiled_method(tmp_path, """
metadata: {name: cut-payments}
spec:
  description: a payment cut in half
  load: {duration: 60s}
  faults:
    - {at: 10s, for: 10s, podKill: {service: payment}}
  after:
    - traffic: {paymentsAnsweredWithin: 4s}
    - recovery: {slo: payments-availability, within: 30s}
    - invariant: no-double-charge
""")
    names = [a["name"] for a in method]
    # The recovery is live and judged while the load runs; the payments' wait and the invariants
    # need every payment's outcome.
    assert names[-4:] == ["after-0-recovery", "stop-load", "after-1-traffic", "after-2-invariant"]
