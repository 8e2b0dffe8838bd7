"""``paychaos run`` and ``paychaos export``: execute an experiment, or hand it to Chaos Toolkit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from paychaos.cli.console import err, fail, say
from paychaos.cli.targeting import RunDirOption, TargetArgumentsOption, TargetOption, chosen_target
from paychaos.experiments.compiling import compile_experiment
from paychaos.experiments.loading import SpecError, load_experiment
from paychaos.experiments.spec import ChaosExperiment
from paychaos.probes.catalogue import CatalogueError, load_catalogue
from paychaos.probes.verdicts import EXIT_CODES
from paychaos.reporting import formatting
from paychaos.targets import Target, UnsupportedTarget, catalogue_of, for_spec
from paychaos.targets.external import TargetFileError

VERDICT_STYLE = {"passed": "bold green", "failed": "bold red", "inconclusive": "bold yellow", "aborted": "bold yellow", "error": "bold red"}
CHECK_MARKS = {"passed": "[green]✓[/]", "inconclusive": "[yellow]?[/]"}


def run(
    experiment: Annotated[Path, typer.Argument(help="An experiment YAML (kind: ChaosExperiment)")],
    journal: Annotated[Path, typer.Option(help="Where to write the journal (Chaos Toolkit format + a paychaos section)")] = Path(
        "out/journal.json"
    ),
    run_dir: RunDirOption = None,
    target_file: TargetOption = None,
    target_arguments: TargetArgumentsOption = None,
) -> None:
    """Run an experiment against the stack: load, faults on the timeline, checks, verdict.

    The stack is the reference platform's (`paychaos stack up`, `--run-dir`), or your own,
    described by a target file (`--target FILE`): then the file decides where it runs, whatever
    the experiment's `target` says, and a fault its driver cannot inject is refused up front.

    Every fault is reverted whatever happens (success, failure, stop condition, Ctrl-C, SIGTERM);
    if this process dies, `paychaos halt` reverts what it left. Exits 0 only when the verdict
    is `passed` (1 failed, 2 aborted, 3 error, 4 inconclusive: a check saw too little to judge,
    such as too few requests for the quantile it asks, or none of what the experiment must exercise).
    A run that cannot start (an invalid spec, no stack, a target that does not answer) exits 3
    too: nothing was judged, so it is never mistaken for a failed verdict.
    """
    from paychaos.experiments.running import NotRunnable
    from paychaos.experiments.running import run as run_experiment

    chosen = chosen_target(run_dir, target_file, target_arguments)
    try:
        spec = load_experiment(experiment, chosen.inventory(), probes=catalogue_of(chosen, load_catalogue()))
    except (SpecError, CatalogueError) as exc:
        raise fail(str(exc), code=EXIT_CODES["error"]) from None
    say(f"running {spec.name}: {spec.spec.description}")
    try:
        target = _spec_target(spec, chosen)
        if target is chosen:
            say(f"on {target.where}")
        outcome = run_experiment(spec, target=target, journal_path=journal.resolve(), progress=say)
    except (NotRunnable, UnsupportedTarget, TargetFileError) as exc:
        raise fail(str(exc), code=EXIT_CODES["error"]) from None
    for check in outcome.journal["paychaos"]["checks"]:
        mark = CHECK_MARKS.get(check["verdict"], "[red]✗[/]")
        room = "" if check.get("margin") is None else f"  margin {check['margin']:g}"
        err.print(f"  {mark} {check['phase']:<18} {check['kind']:<9} {check['name']:<32} observed {check['observed']}  expected {check['threshold']}{room}")
        if check["verdict"] == "inconclusive":
            err.print(f"      {check['detail']}")
    times = outcome.journal["paychaos"]["times"]
    err.print(f"  time to detect {formatting.seconds(times['timeToDetect'])}, recovery {formatting.seconds(times['recoveryTime'])}")
    style = VERDICT_STYLE[outcome.verdict]
    err.print(f"[{style}]{outcome.verdict.upper()}[/] {outcome.reason}")
    err.print(f"journal: {outcome.journal_path}")
    raise typer.Exit(EXIT_CODES[outcome.verdict])


def export(
    experiment: Annotated[Path, typer.Argument(help="An experiment YAML")],
    format: Annotated[str, typer.Option("--format", help="Only `chaostoolkit` for now")] = "chaostoolkit",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout")] = None,
    run_dir: RunDirOption = None,
    target_file: TargetOption = None,
    out_dir: Annotated[Path, typer.Option(help="Where the exported run keeps its load artifacts")] = Path("out/artifacts"),
) -> None:
    """Compile an experiment to a Chaos Toolkit experiment that plain `chaos run` executes.

    The export declares the paychaos control, so `chaos run` gets the same load, sampling,
    stop conditions and reverts as `paychaos run` (the verdict is in the journal's probe outputs).
    Its activities carry the target (`--run-dir` or `--target`): `chaos run` needs no environment.
    """
    if format != "chaostoolkit":
        raise fail(f"unknown format {format!r}: expected chaostoolkit")
    chosen = chosen_target(run_dir, target_file)
    try:
        # Checked against the target it will run on, as `run` does (a fault its driver lacks is refused here).
        # And against the probe catalogue, as `run` is: unknown names, invariants without the exercise that guards them.
        spec = load_experiment(experiment, chosen.inventory() if chosen.platform != "local" else None,
                               probes=catalogue_of(chosen, load_catalogue()))
        target = _spec_target(spec, chosen)
    except (SpecError, CatalogueError) as exc:
        raise fail(str(exc)) from None
    except UnsupportedTarget as exc:
        raise fail(str(exc)) from None
    text = json.dumps(compile_experiment(spec, target.arguments(), str(out_dir.resolve())), indent=2)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        say(f"wrote {output}")
    else:
        typer.echo(text)


def _spec_target(spec: ChaosExperiment, chosen: Target) -> Target:
    """Where the experiment runs: a target chosen on the command line other than the local stack
    (a target file) decides; otherwise the experiment's own ``target`` (its local stack is
    ``--run-dir``'s)."""
    if chosen.platform != "local":
        return chosen
    return for_spec(spec.spec.target.platform, run_dir=chosen.arguments()["location"], namespace=spec.spec.target.namespace)
