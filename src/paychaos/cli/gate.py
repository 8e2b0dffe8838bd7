"""``paychaos gate``: the pre-campaign readiness gate that CI runs and blocks a release on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from paychaos.cli.console import err, fail, say
from paychaos.cli.targeting import NamespaceOption, RunDirOption, TargetOption, chosen_target
from paychaos.experiments.loading import SpecError
from paychaos.experiments.suites import Suite, load_suite
from paychaos.installing import MissingTool
from paychaos.platform.runtime import stacking
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.state import supervisor_alive
from paychaos.probes.catalogue import CatalogueError, load_catalogue
from paychaos.reporting.journals import Journals
from paychaos.targets import Target, catalogue_of
from paychaos.targets.local import LocalTarget

DEFAULT_SUITE = Path("experiments/suites/pre-campaign.yaml")


def gate(
    suite: Annotated[Path, typer.Argument(help="A suite YAML (kind: GameDay), e.g. experiments/suites/pre-campaign.yaml")] = DEFAULT_SUITE,
    out: Annotated[Path, typer.Option(help="Where journals, the report and the summaries go")] = Path("out"),
    junit: Annotated[Path | None, typer.Option(help="JUnit XML for the CI server [default: OUT/junit.xml]")] = None,
    report: Annotated[Path | None, typer.Option(help="The HTML report [default: OUT/report.html]")] = None,
    runbooks: Annotated[Path, typer.Option(help="Where the runbooks are written, with their index")] = Path("runbooks"),
    keep: Annotated[bool, typer.Option("--keep", help="Leave a stack this gate started running afterwards")] = False,
    run_dir: RunDirOption = None,
    target_file: TargetOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Run a suite of experiments as a readiness gate: exit 0 only if every experiment passed.

    Uses the running stack, or starts one (and stops it afterwards unless --keep); with `--target
    FILE`, the stack that file describes, and with `--namespace NS` a Kubernetes namespace (neither
    is started or stopped here). Between two
    experiments the stack must settle back to healthy. Writes OUT/junit.xml (a testcase per
    experiment and per check), OUT/report.html (plots and evidence), OUT/summary.md (for a CI job
    summary; also appended to $GITHUB_STEP_SUMMARY when set), OUT/summary.json (for scripts), the journals in OUT/journals/, and a
    runbook per experiment, written from what this run observed.
    """
    rd = RunDir(run_dir.resolve()) if run_dir else RunDir.default()
    chosen = chosen_target(run_dir, target_file, namespace=namespace)
    target = chosen if chosen.platform != "local" else None  # the local stack may be started here
    passed = run_gate(suite, rd, target=target, out=out, junit=junit or out / "junit.xml", report=report or out / "report.html",
                      runbooks=runbooks, keep=keep)
    raise typer.Exit(0 if passed else 1)


def run_gate(suite: Path, rd: RunDir, *, out: Path, junit: Path, report: Path, runbooks: Path, keep: bool,
             target: Target | None = None) -> bool:
    """The gate from suite file to written outputs; whether it passed. Raises typer.Exit on bad input.
    ``target``: a stack this gate neither starts nor stops; the local stack of ``rd`` when None."""
    from paychaos.experiments.gating import gate_passed, run_suite

    running = target is not None or supervisor_alive(rd) is not None
    on = target or LocalTarget(rd)
    try:
        catalogue = catalogue_of(on, load_catalogue())
        loaded = load_suite(suite, on.inventory() if running else None, probes=catalogue)
    except (SpecError, CatalogueError) as exc:
        raise fail(str(exc)) from None
    if loaded.gameday.spec.schedule:
        say(f"note: the schedule {loaded.gameday.spec.schedule!r} is the operator's; the gate runs the suite once, now")
    say(f"gate {loaded.name}: {len(loaded.planned)} experiments — {', '.join(p.experiment.name for p in loaded.planned)}")
    started_here = False
    if not running:
        try:
            stacking.up(rd, wait=True, progress=say)
        except (MissingTool, stacking.StackError) as exc:
            raise fail(str(exc)) from None
        started_here = True
    try:
        entries = run_suite(loaded, on, catalogue.vocabulary, out.resolve(), say)
    finally:
        if started_here and not keep:
            stacking.down(rd, progress=say)
    journals = [(e.name, e.gated_journal()) for e in entries]
    write_outputs(loaded, journals, out=out, junit=junit, report=report, runbooks=runbooks)
    print_summary(loaded, journals)
    for label, path in (("report", report), ("junit", junit), ("summary", out / "summary.md"), ("runbooks", runbooks / "index.md")):
        err.print(f"  {label:<8} {path}")
    return gate_passed(entries)


def write_outputs(suite: Suite, journals: Journals, *, out: Path, junit: Path, report: Path, runbooks: Path) -> None:
    """JUnit, the HTML report, the Markdown and JSON summaries and the runbooks, from the gate's journals."""
    from paychaos.reporting.html import write_html_report
    from paychaos.reporting.junit import write_junit
    from paychaos.reporting.summary import json_summary, markdown_summary, write_step_summary
    from paychaos.runbooks.render import write_runbooks

    write_junit(journals, suite.name, junit)
    write_html_report(journals, suite.name, report)
    markdown = markdown_summary(journals, suite.name)
    (out / "summary.md").write_text(markdown, encoding="utf-8")
    summary = json_summary(with_not_run(suite, journals), suite.name)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_step_summary(markdown)
    rehearsed = dict(journals)
    # Every experiment of the suite gets its runbook, rehearsed or not (the gate may stop early).
    write_runbooks([(p.experiment, rehearsed.get(p.experiment.name)) for p in suite.planned], runbooks, load_catalogue().slos)


def print_summary(suite: Suite, journals: Journals) -> None:
    """One screen: each experiment's verdict and times, and every check that did not pass."""
    from paychaos.reporting.summary import text_summary

    err.print("")
    err.print(text_summary(with_not_run(suite, journals), suite.name), markup=False, highlight=False, soft_wrap=True)


def with_not_run(suite: Suite, journals: Journals) -> Journals:
    """The gate's journals, and an error for each experiment it stopped before."""
    skipped = {"result": "error", "reason": "not run: the gate stopped before it"}
    return [*journals, *((p.experiment.name, {"paychaos": {"experiment": p.experiment.name, "verdict": skipped}})
                         for p in suite.planned[len(journals):])]
