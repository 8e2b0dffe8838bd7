"""``paychaos plan`` (what an experiment would hit, touching nothing) and ``paychaos halt`` (revert leftovers)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from paychaos.cli.console import err, fail, say
from paychaos.cli.targeting import NamespaceOption, RunDirOption, TargetOption, chosen_target
from paychaos.experiments.loading import SpecError, load_experiment
from paychaos.experiments.spec import ChaosExperiment
from paychaos.faults import records
from paychaos.faults.driving import TargetUnreachable
from paychaos.faults.planning import PlanError, partitions_needed, plan_fault
from paychaos.targets import Target


def _load(path: Path, target: Target) -> ChaosExperiment:
    # With the running stack's names the loader also checks the spec's (file:line errors).
    try:
        return load_experiment(path, target.inventory())
    except SpecError as exc:
        raise fail(str(exc)) from None


def plan(
    experiment: Annotated[Path, typer.Argument(help="An experiment file (ChaosExperiment YAML)", metavar="EXP.yaml")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout")] = False,
    run_dir: RunDirOption = None,
    target_file: TargetOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Show exactly what each fault of an experiment would hit on the running stack; change nothing.

    Replicas by name and pid, the zone, the Kafka broker and its zone, the proxy and its toxics.
    Exits 1 when a fault is refused (blast-radius limits, unknown names).
    """
    target = chosen_target(run_dir, target_file, namespace=namespace)
    spec = _load(experiment, target)
    driver = target.driver()
    try:
        observed = driver.observe(partitions_needed(spec.spec.faults))
    except TargetUnreachable as exc:
        raise fail(str(exc)) from None
    out: list[dict[str, Any]] = []
    refused = 0
    for index, fault in enumerate(spec.spec.faults):
        try:
            fault_plan = plan_fault(fault, observed, spec.spec.limits, experiment=spec.name, index=index)
        except PlanError as exc:
            refused += 1
            out.append({"index": index, "kind": fault.kind, "refused": type(exc).__name__, "reason": str(exc)})
            if not as_json:
                err.print(f"[bold red]faults[{index}] {fault.kind} refused:[/] {exc}")
            continue
        out.append({**fault_plan.to_dict(), "summary": fault_plan.headline()})
        if not as_json:
            typer.echo(fault_plan.describe())
    if as_json:
        typer.echo(json.dumps({"experiment": spec.name, "faults": out}, indent=2))
    elif not refused:
        say(f"{len(out)} fault(s) planned against {target.where}; nothing was changed")
    if refused:
        raise typer.Exit(1)


def halt(
    run_dir: RunDirOption = None,
    target_file: TargetOption = None,
    namespace: NamespaceOption = None,
    force: Annotated[bool, typer.Option("--force", help="Also revert faults of a run that is still alive, or that ran on another machine (a cluster ledger), and free its lock")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the stack to be whole again")] = 120.0,
) -> None:
    """Revert every fault a dead run left behind (hold markers, toxics, killed replicas); idempotent.

    Prints what it reverted and waits until the stack is whole again. Faults of a run that is
    still alive are left to it unless `--force`.
    """
    target = chosen_target(run_dir, target_file, namespace=namespace)
    driver, ledger = target.driver(), target.ledger()
    try:
        reverted = records.halt(ledger, driver, include_live=force)
    except records.HaltIncomplete as exc:
        for record in exc.reverted:
            err.print(f"reverted {record.id}: {record.summary}")
        raise fail(str(exc)) from None
    for record in reverted:
        err.print(f"reverted {record.id}: {record.summary} (left by pid {record.owner.pid})")
    for record in records.live_records(ledger):
        say(f"left {record.id} to its live run (pid {record.owner.pid}); `paychaos halt --force` (with the same target) reverts it too")
    if not reverted:
        err.print("nothing to revert")
        return
    deadline = time.monotonic() + timeout
    pending = list(reverted)
    while pending and time.monotonic() < deadline:
        pending = [r for r in pending if not driver.verify_reverted(r)]
        if pending:
            time.sleep(0.5)
    if pending:
        raise fail(f"reverted, but not whole again after {timeout:.0f}s: "
                   f"{', '.join(r.id for r in pending)} on {target.where}")
    err.print(f"[green]whole again[/]: {len(reverted)} fault(s) reverted on {target.where}")
