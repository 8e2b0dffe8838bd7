"""The HTML report of a gate run: one self-contained file, plots as inline SVG, no network.

Per experiment: its verdict, request rate, error ratio, p99, breaker state and consumer lag
over time with the fault windows shaded, the table of judged checks and the timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from paychaos.reporting import formatting
from paychaos.experiments.journal import CheckRecord, FaultRecord, TimelineEvent
from paychaos.reporting.journals import Journals, Run, read_runs
from paychaos.reporting.plots import FAULT_COLOUR, run_plots
from paychaos.reporting.summary import checks_passed, headline

_templates = Environment(
    loader=PackageLoader("paychaos.reporting", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class _CheckView:
    phase: str
    kind: str
    name: str
    verdict: str
    observed: str
    threshold: str
    margin: str  # headroom inside the threshold; negative when it failed
    detail: str
    evidence: str


@dataclass(frozen=True)
class _EventView:
    t: str
    event: str
    summary: str


@dataclass(frozen=True)
class _ExperimentView:
    name: str
    result: str
    reason: str
    started: str
    duration: str
    time_to_detect: str
    recovery_time: str
    checks_passed: str
    faults: list[str]
    plots: list[Markup]  # inline <svg> elements, already safe
    checks: list[_CheckView]
    timeline: list[_EventView]


def html_report(journals: Journals, suite: str) -> str:
    runs = read_runs(journals)
    return _templates.get_template("report.html.j2").render(
        suite=suite,
        headline=headline(runs),
        fault_colour=FAULT_COLOUR,
        experiments=[_experiment(run) for run in runs],
    )


def write_html_report(journals: Journals, suite: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html_report(journals, suite), encoding="utf-8")


def _experiment(run: Run) -> _ExperimentView:
    return _ExperimentView(
        name=run.name,
        result=run.verdict.result,
        reason=run.verdict.reason,
        started=formatting.date(run.started),
        duration=formatting.seconds(run.duration) if run.duration else formatting.MISSING,
        time_to_detect=formatting.seconds(run.times.time_to_detect),
        recovery_time=formatting.seconds(run.times.recovery_time),
        checks_passed=checks_passed(run),
        faults=[_fault(run, fault) for fault in run.faults],
        plots=[Markup(plot.svg) for plot in run_plots(run)] if run.samples else [],
        checks=[_check(check) for check in run.checks],
        timeline=[_event(event) for event in run.timeline],
    )


def _fault(run: Run, fault: FaultRecord) -> str:
    """``slowDownstream on proxy acquirer: latency +3000ms ±200ms, at 15 s for 30 s``."""
    activity = f"inject-{fault.kind}-{fault.index}"
    said = next((e.detail.get("summary") for e in run.timeline if e.detail.get("activity") == activity), None)
    return f"{said if isinstance(said, str) else fault.kind}, at {fault.at:g} s for {fault.for_:g} s"


def _check(check: CheckRecord) -> _CheckView:
    return _CheckView(
        phase=check.phase,
        kind=check.kind,
        name=check.name,
        verdict=check.verdict,
        observed=formatting.number(check.observed),
        threshold=check.threshold,
        margin=formatting.number(check.margin),
        detail=check.detail,
        evidence=formatting.evidence(check.evidence),
    )


def _event(event: TimelineEvent) -> _EventView:
    summary = event.detail.get("summary")
    if not isinstance(summary, str):
        summary = formatting.evidence(event.detail)
    return _EventView(f"{event.t:.1f} s", event.event, summary)
