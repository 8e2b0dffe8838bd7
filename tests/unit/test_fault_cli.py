"""`paychaos plan` / `paychaos halt` without a stack, the fault ledger on disk, and the Chaos Toolkit extension."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest
from typer.testing import CliRunner

from paychaos.cli.app import app
from paychaos.ctk import timeline
from paychaos.experiments.spec import Fault, Limits
from paychaos.faults import records
from paychaos.faults.records import FileLedger
from paychaos.targets.local.driver import LocalDriver
from paychaos.faults.planning import Observed, ObservedBroker, ObservedReplica, plan_fault
from paychaos.platform.runtime.paths import RunDir

runner = CliRunner()


def dead_owner() -> records.Owner:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    owner = records.Owner(pid=proc.pid, started=psutil.Process(proc.pid).create_time())
    proc.wait()
    return owner


def zone_loss_record(run_dir: RunDir, owner: records.Owner) -> records.FaultRecord:
    observed = Observed(zones=("az-a", "az-b"), replicas=(ObservedReplica("ledger-az-b-1", "ledger", "az-b", True, 1),),
                        brokers=(ObservedBroker(2, "kafka-2", "az-b", True),))
    plan = plan_fault(Fault.model_validate({"at": "1s", "for": "5s", "zoneLoss": {"zone": "az-b"}}), observed,
                      Limits(max_percent=100), experiment="gone", index=0)
    record = records.FaultRecord(id=plan.id, experiment="gone", index=0, kind=plan.kind, driver="local",
                                 summary=plan.headline(), plan=plan.to_dict(), owner=owner, recorded_at=time.time())
    FileLedger(run_dir.root).write(record)
    return record


@pytest.mark.parametrize("args", [["plan"], ["halt"]])
def test_help(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_halt_with_nothing_recorded_is_a_quiet_success(tmp_path) -> None:
    result = runner.invoke(app, ["halt", "--run-dir", str(tmp_path)])
    assert result.exit_code == 0 and "nothing to revert" in result.output


def test_halt_reverts_a_dead_runs_zone_hold_even_with_the_stack_down(tmp_path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.ensure()
    (run_dir.zones_down / "az-b").touch()
    zone_loss_record(run_dir, dead_owner())
    first = runner.invoke(app, ["halt", "--run-dir", str(tmp_path)])
    assert first.exit_code == 0, first.output
    assert "reverted gone-0: zoneLoss az-b" in first.output
    assert not (run_dir.zones_down / "az-b").exists() and records.active_records(FileLedger(run_dir.root)) == []
    again = runner.invoke(app, ["halt", "--run-dir", str(tmp_path)])
    assert again.exit_code == 0 and "nothing to revert" in again.output


def test_halt_leaves_a_live_owners_fault_unless_forced(tmp_path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.ensure()
    (run_dir.zones_down / "az-b").touch()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = records.Owner(pid=live.pid, started=psutil.Process(live.pid).create_time())
        zone_loss_record(run_dir, owner)
        assert records.halt(FileLedger(run_dir.root), LocalDriver(run_dir)) == []
        assert (run_dir.zones_down / "az-b").exists()
        assert [r.id for r in records.halt(FileLedger(run_dir.root), LocalDriver(run_dir), include_live=True)] == ["gone-0"]
        assert not (run_dir.zones_down / "az-b").exists()
    finally:
        live.kill()
        live.wait()


def test_plan_without_a_stack_is_one_clear_line(tmp_path) -> None:
    spec = tmp_path / "exp.yaml"
    spec.write_text(
        "apiVersion: paychaos.io/v1alpha1\nkind: ChaosExperiment\nmetadata: {name: x}\n"
        "spec: {description: d, faults: [{at: 1s, for: 2s, zoneLoss: {zone: az-a}}]}\n"
    )
    result = runner.invoke(app, ["plan", str(spec), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1 and "paychaos stack up" in result.output and "Traceback" not in result.output


def test_plan_of_an_invalid_spec_is_one_clear_line(tmp_path) -> None:
    spec = tmp_path / "exp.yaml"
    spec.write_text("apiVersion: paychaos.io/v1alpha1\nkind: ChaosExperiment\nmetadata: {name: x}\nspec: {faults: []}\n")
    result = runner.invoke(app, ["plan", str(spec), "--run-dir", str(tmp_path)])
    assert result.exit_code == 1 and "exp.yaml" in result.output and "Traceback" not in result.output


def test_a_lock_held_by_a_live_pid_names_its_holder(tmp_path) -> None:
    run_dir = RunDir(tmp_path)
    driver = LocalDriver(run_dir)
    lock = records.acquire_lock(FileLedger(run_dir.root), "first", driver)
    with pytest.raises(records.ExperimentLocked, match=r"experiment 'first' \(pid \d+.*\) since \d{4}-"):
        records.acquire_lock(FileLedger(run_dir.root), "second", driver)
    lock.release()
    records.acquire_lock(FileLedger(run_dir.root), "second", driver).release()


def test_a_dead_runs_lock_is_taken_over_after_halting_its_faults(tmp_path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.ensure()
    owner = dead_owner()
    (run_dir.zones_down / "az-b").touch()
    zone_loss_record(run_dir, owner)
    FileLedger(run_dir.root).lock_path.write_text(records.LockHolder(experiment="died", started=1.0, owner=owner).model_dump_json())
    with records.acquire_lock(FileLedger(run_dir.root), "next", LocalDriver(run_dir)) as lock:
        assert lock.holder.experiment == "next"
        assert not (run_dir.zones_down / "az-b").exists() and records.active_records(FileLedger(run_dir.root)) == []


# -- the Chaos Toolkit extension --------------------------------------------------------------


def test_chaos_toolkit_discovers_the_actions_through_the_top_level_package() -> None:
    from chaoslib.discovery.discover import discover

    found = discover("paychaos", discover_system=False, download_and_install=False)
    assert found["extension"]["name"] == "paychaos"
    actions = {a["name"]: a for a in found["activities"] if a["type"] == "action"}
    assert set(actions) == {"inject_fault", "revert_fault", "halt_all"}
    assert {a["mod"] for a in found["activities"] if a["type"] == "probe"} == {"paychaos.ctk.probes"}
    assert all(a["type"] == "action" and a["mod"] == "paychaos.ctk.actions" for a in actions.values())
    args = {a["name"]: a.get("type") for a in actions["inject_fault"]["arguments"]}
    assert args == {"fault": "mapping", "experiment": "string", "index": "integer", "at": "number", "limits": "object",
                    "target": "object"}


def test_fault_activities_wait_for_their_offset_from_the_method_start() -> None:
    now = [1000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    timeline.reset()
    try:
        timeline.mark_method_started(995.0)
        assert timeline.wait_until(8.0, clock=lambda: now[0], sleep=sleep) == 8.0
        assert slept == [3.0]
        assert timeline.wait_until(2.0, clock=lambda: now[0], sleep=sleep) == 8.0  # already past: no wait
        assert slept == [3.0]
        timeline.reset()
        timeline.before_method_control({})
        assert timeline.method_started_at() is not None
    finally:
        timeline.reset()
