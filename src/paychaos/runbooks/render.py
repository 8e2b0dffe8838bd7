"""Rendering runbooks: the experiment's runbook section, and what its last rehearsal showed.

``render_runbook`` and ``render_index`` are pure (spec and journal in, Markdown out); only
``write_runbooks`` touches files. Templates render with StrictUndefined, so every value is
passed explicitly, None included, and a template that names a missing value fails loudly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from paychaos.durations import format_duration
from paychaos.experiments.spec import ChaosExperiment, Fault
from paychaos.probes.catalogue import Slo
from paychaos.probes.verdicts import bound_holds, bounds
from paychaos.reporting import formatting
from paychaos.reporting.alerts import alert_name, referenced_slos
from paychaos.reporting.journals import JournalError, Run, points, read_run
from paychaos.reporting.observations import Observations, observe

# An experiment and the journal of its last run, or None when it has not been rehearsed yet.
Rehearsal = tuple[ChaosExperiment, Mapping[str, Any] | None]

INDEX = "index.md"
_MARKER = "paychaos-runbook"
_MARKER_LINE = re.compile(rf"^<!-- {_MARKER} (\{{.*\}}) -->$")

_templates = Environment(
    loader=PackageLoader("paychaos.runbooks", "templates"),
    undefined=StrictUndefined,
    autoescape=False,  # Markdown: the runbook text is written in Markdown on purpose
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class IndexEntry:
    """One line of the index, also kept at the top of each runbook so the index can be rebuilt."""

    experiment: str
    severity: str | None
    verdict: str | None  # None: not rehearsed yet
    date: str | None
    alerts: tuple[str, ...]


@dataclass(frozen=True)
class _Alert:
    name: str
    slo: str
    objective: str
    observed: str


@dataclass(frozen=True)
class _Check:
    label: str
    verdict: str
    observed: str
    threshold: str
    detail: str


@dataclass(frozen=True)
class _Rehearsal:
    date: str
    result: str
    reason: str
    time_to_detect: float | None
    recovery_time: float | None
    users_saw: list[str]
    behaviour: list[str]
    checks: list[_Check]


def render_runbook(experiment: ChaosExperiment, journal: Mapping[str, Any] | None, slos: Mapping[str, Slo] | None = None) -> str:
    """The runbook of one failure mode. With ``slos`` (the SLO catalogue) the alerts table also
    says each SLO's objective and how far the rehearsal pushed it."""
    return _render(experiment, _run_of(experiment, journal), slos)[0]


def _render(experiment: ChaosExperiment, run: Run | None, slos: Mapping[str, Slo] | None) -> tuple[str, IndexEntry]:
    """The runbook and its index entry, from one reading of the journal."""
    entry = _index_entry(experiment, run)
    text = _templates.get_template("runbook.md.j2").render(
        marker=_marker(entry),
        name=experiment.name,
        description=experiment.spec.description,
        severity=entry.severity,
        owner=experiment.metadata.labels.get("owner"),
        runbook=experiment.spec.runbook,
        faults=[_fault(f) for f in experiment.spec.faults],
        alerts=[_alert(name, slos, run) for name in referenced_slos(experiment)],
        rehearsal=_rehearsal(run) if run is not None else None,
    )
    return text, entry


def _index_entry(experiment: ChaosExperiment, run: Run | None) -> IndexEntry:
    return IndexEntry(
        experiment=experiment.name,
        severity=experiment.metadata.labels.get("severity"),
        verdict=run.verdict.result if run is not None else None,
        date=formatting.date(run.started) if run is not None else None,
        alerts=tuple(alert_name(slo) for slo in referenced_slos(experiment)),
    )


def render_index(entries: Sequence[IndexEntry]) -> str:
    ordered = sorted(entries, key=lambda e: e.experiment)
    alerts: dict[str, list[IndexEntry]] = {}
    for entry in ordered:
        for alert in entry.alerts:
            alerts.setdefault(alert, []).append(entry)
    return _templates.get_template("index.md.j2").render(
        entries=ordered,
        alerts=sorted(alerts.items()),
        marks=formatting.VERDICT_MARKS,
    )


def read_index_entry(text: str) -> IndexEntry | None:
    """The index entry a rendered runbook carries on its first line; None for other Markdown."""
    match = _MARKER_LINE.match(text.split("\n", 1)[0])
    if match is None:
        return None
    try:
        data = json.loads(match.group(1))
        return IndexEntry(data["experiment"], data["severity"], data["verdict"], data["date"], tuple(data["alerts"]))
    except (ValueError, KeyError, TypeError):
        return None


def write_runbooks(rehearsals: Iterable[Rehearsal], directory: Path, slos: Mapping[str, Slo] | None = None) -> list[Path]:
    """Write ``<experiment>.md`` for each rehearsal and rebuild ``index.md`` from every runbook in
    ``directory``, so that rendering one experiment keeps the others in the index."""
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    entries: dict[str, IndexEntry] = {}
    for path in sorted(directory.glob("*.md")):
        if path.name != INDEX and (entry := read_index_entry(path.read_text(encoding="utf-8"))) is not None:
            entries[entry.experiment] = entry
    for experiment, journal in rehearsals:
        path = directory / f"{experiment.name}.md"
        text, entries[experiment.name] = _render(experiment, _run_of(experiment, journal), slos)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    index = directory / INDEX
    index.write_text(render_index(list(entries.values())), encoding="utf-8")
    return [*written, index]


# -- what goes into a runbook -----------------------------------------------------------------


def _run_of(experiment: ChaosExperiment, journal: Mapping[str, Any] | None) -> Run | None:
    if journal is None:
        return None
    run = read_run(experiment.name, journal)
    recorded = (journal.get("paychaos") or {}).get("experiment")
    if recorded != experiment.name:
        raise JournalError(f"the journal is of experiment {recorded!r}, not {experiment.name!r}")
    return run


def _marker(entry: IndexEntry) -> str:
    fields = {"experiment": entry.experiment, "severity": entry.severity, "verdict": entry.verdict, "date": entry.date}
    data = json.dumps({**fields, "alerts": list(entry.alerts)}, ensure_ascii=False)
    safe = data.replace("--", "-\\u002d")  # "--" may not appear inside an HTML comment; JSON reads it back as "--"
    return f"<!-- {_MARKER} {safe} -->"


def _fault(fault: Fault) -> str:
    """``slowDownstream (proxy acquirer, latency 3s, jitter 200ms) at 15s for 30s``."""
    action = fault.action.model_dump(by_alias=True, mode="json", exclude_none=True)
    params = ", ".join(f"{k} {_plain(v)}" for k, v in action.items())
    return f"{fault.kind} ({params}) at {format_duration(fault.at)} for {format_duration(fault.for_)}"


def _plain(value: object) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k} {_plain(v)}" for k, v in value.items())
    return str(value)


def _alert(slo_name: str, slos: Mapping[str, Slo] | None, run: Run | None) -> _Alert:
    slo = slos.get(slo_name) if slos is not None else None
    if slo is None:
        return _Alert(alert_name(slo_name), slo_name, formatting.MISSING, formatting.MISSING)
    below, above, _ = bounds(slo.objective)
    bound = above if above is not None else below
    assert bound is not None
    objective = f"{'above' if above is not None else 'below'} {_slo_value(bound, slo.unit)}"
    return _Alert(alert_name(slo_name), slo_name, objective, _slo_observed(run, slo_name, slo, below, above) if run else formatting.MISSING)


def _slo_observed(run: Run, name: str, slo: Slo, below: float | None, above: float | None) -> str:
    start = min((f.at for f in run.faults), default=0.0)
    values = [v for t, v in points(run, f"slo:{name}") if t >= start]
    if not values:
        return "not sampled"
    worst = min(values) if above is not None else max(values)
    outside = sum(not bound_holds(v, below, above) for v in values)
    if not outside:
        return f"held (worst {_slo_value(worst, slo.unit)})"
    return f"worst {_slo_value(worst, slo.unit)}; outside the objective in {outside} of {len(values)} per-second samples"


def _slo_value(value: float, unit: str) -> str:
    if unit != "seconds":
        return formatting.number(value)
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:g} s"


def _rehearsal(run: Run) -> _Rehearsal:
    seen = observe(run)
    return _Rehearsal(
        date=formatting.date(run.started),
        result=run.verdict.result,
        reason=run.verdict.reason,
        time_to_detect=run.times.time_to_detect,
        recovery_time=run.times.recovery_time,
        users_saw=_users_saw(seen),
        behaviour=_behaviour(run, seen),
        checks=[_Check(c.label, c.verdict, formatting.number(c.observed), c.threshold, c.detail) for c in run.checks],
    )


def _users_saw(seen: Observations) -> list[str]:
    out = []
    if seen.error_ratio_worst is not None:
        before = f"{seen.error_ratio_before:.1%} before the fault" if seen.error_ratio_before is not None else "no baseline"
        out.append(f"Failed requests ({seen.error_ratio_source}-side): {before}, at worst {seen.error_ratio_worst:.1%}.")
    if seen.p99_ms_worst is not None:
        before = f"{seen.p99_ms_before:.0f} ms before the fault" if seen.p99_ms_before is not None else "no baseline"
        out.append(f"p99 latency ({seen.p99_source}-side): {before}, at worst {seen.p99_ms_worst:.0f} ms.")
    return out


def _behaviour(run: Run, seen: Observations) -> list[str]:
    out = []
    for b in seen.breakers:
        if b.opened_after is not None:
            text = f"The {b.name} circuit breaker opened {b.opened_after:.1f} s after the fault started"
            if b.open_everywhere_after is not None:
                text += f", on all {b.replicas} replicas after {b.open_everywhere_after:.1f} s"
            if b.closed_after is not None:
                text += f"; it closed on every replica {b.closed_after:.1f} s after the revert."
            else:
                text += "; it had not closed on every replica when the run ended."
            out.append(text)
        elif b.replicas is not None:
            out.append(f"The {b.name} circuit breaker stayed closed.")
    backlogs = ", ".join(f"the {name} backlog at {peak}" for name, peak in seen.backlog_peaks.items())
    for group, peak in seen.lag_peaks.items():
        out.append(f"Consumer group {group}'s lag peaked at {peak} messages" + (f"; {backlogs}." if backlogs else "."))
    if backlogs and not seen.lag_peaks:
        out.append(f"Backlogs peaked: {backlogs}.")
    failed = run.failed_checks
    if run.checks:
        out.append(
            f"{len(run.checks) - len(failed)} of {len(run.checks)} checks passed"
            + (": " + "; ".join(f"{c.label} {formatting.expectation(c.observed, c.threshold)}" for c in failed) + "." if failed else ".")
        )
    return out

