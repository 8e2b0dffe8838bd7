"""Reading run journals: the ``paychaos`` section of a Chaos Toolkit journal as typed data (the
models of ``experiments.journal``, which the engine writes with), and the questions every
renderer asks of a run (a series, the fault windows).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from paychaos.experiments.journal import CheckRecord, FaultRecord, Section, TimelineEvent, Times, Verdict
from paychaos.experiments.spec import ChaosExperiment
from paychaos.probes.verdicts import first_in

# What every renderer takes: (experiment name, its journal dict, or None when the run left none).
Journals = Sequence[tuple[str, Mapping[str, Any] | None]]


class JournalError(Exception):
    """Not a paychaos run journal, or one missing what was asked of it: the message says what to do."""


@dataclass(frozen=True)
class Run:
    """One experiment's run as the reports see it."""

    name: str
    verdict: Verdict
    started: datetime | None
    duration: float  # seconds; 0 when the journal does not say
    timeline: list[TimelineEvent]
    faults: list[FaultRecord]
    samples: list[dict[str, float | None]]
    checks: list[CheckRecord]
    times: Times

    @property
    def passed(self) -> bool:
        return self.verdict.result == "passed"

    @property
    def failed_checks(self) -> list[CheckRecord]:
        return [c for c in self.checks if c.verdict != "passed"]


NO_JOURNAL = "no journal: the run did not start, or ended before writing one"


def read_runs(journals: Journals) -> list[Run]:
    return [read_run(name, journal) for name, journal in journals]


def read_run(name: str, journal: Mapping[str, Any] | None) -> Run:
    """The run named ``name`` from a journal dict; ``None`` stands for a run that left no journal."""
    if journal is None:
        return Run(name, Verdict(result="error", reason=NO_JOURNAL), None, 0.0, [], [], [], [], Times())
    section = journal.get("paychaos")
    if not isinstance(section, Mapping):
        raise JournalError(f"{name}: not a paychaos run journal (it has no 'paychaos' section)")
    try:
        parsed = Section.model_validate(section)
    except ValidationError as exc:
        raise JournalError(f"{name}: the journal's paychaos section is malformed: {_first_error(exc)}") from None
    duration = journal.get("duration")
    return Run(
        name=name,
        verdict=parsed.verdict,
        started=_timestamp(journal.get("start")),
        duration=float(duration) if isinstance(duration, int | float) else 0.0,
        timeline=parsed.timeline,
        faults=parsed.faults,
        samples=parsed.samples,
        checks=parsed.checks,
        times=parsed.times,
    )


def load_journal(path: Path) -> dict[str, Any]:
    """Read a journal file; every way it can be wrong is one JournalError line."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise JournalError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JournalError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("paychaos"), dict):
        raise JournalError(f"{path}: not a paychaos run journal: give the journal.json that `paychaos run` wrote")
    return data


def experiment_of(journal: Mapping[str, Any]) -> ChaosExperiment:
    """The ChaosExperiment the run was compiled from, as the paychaos control carried it."""
    controls = (journal.get("experiment") or {}).get("controls") or []
    for control in controls:
        if isinstance(control, Mapping) and control.get("name") == "paychaos":
            spec = ((control.get("provider") or {}).get("arguments") or {}).get("spec")
            if spec is None:
                break
            try:
                return ChaosExperiment.model_validate(spec)
            except ValidationError as exc:
                raise JournalError(
                    f"the journal's experiment spec is not valid any more ({_first_error(exc)}): give the experiment YAML with --journal"
                ) from None
    raise JournalError("the journal carries no experiment spec (no paychaos control): give the experiment YAML too")


# -- questions asked of a run -----------------------------------------------------------------


def points(run: Run, key: str) -> list[tuple[float, float]]:
    """(t, value) of every sample where ``key`` was measured."""
    out: list[tuple[float, float]] = []
    for sample in run.samples:
        value, t = sample.get(key), sample.get("t")
        if value is not None and t is not None:
            out.append((t, value))
    return out


def measured(run: Run, key: str) -> bool:
    return any(sample.get(key) is not None for sample in run.samples)


def end_of(run: Run) -> float:
    """The last moment the journal saw, in seconds since the method start."""
    times = [s["t"] for s in run.samples if s.get("t") is not None] + [e.t for e in run.timeline]
    return max(times, default=0.0)


def fault_windows(run: Run) -> list[tuple[float, float]]:
    """When faults were active: as the timeline stamped them, else as scheduled.

    A fault injected but never reverted (an aborted run) is shown active until its scheduled
    end, or the end of the journal when that is not known either.
    """
    scheduled = {f.index: (f.at, f.at + f.for_) for f in run.faults}
    injected: dict[str, float] = {}
    reverted: dict[str, float] = {}
    for event in run.timeline:
        key = _fault_key(event)
        if key is None:
            continue
        if event.event == "fault-injected":
            injected.setdefault(key, event.t)
        elif event.event == "fault-reverted":
            reverted.setdefault(key, event.t)
    if not injected:
        return sorted(scheduled.values())
    windows = []
    for key, start in injected.items():
        index = int(key) if key.isdigit() else None
        planned_end = scheduled[index][1] if index in scheduled else end_of(run)
        windows.append((start, reverted.get(key, planned_end)))
    return sorted(windows)


def first_after(series: list[tuple[float, float]], start: float, holds: Callable[[float], bool]) -> float | None:
    """Seconds from ``start`` to the first point at or after it where ``holds``, to the hundredth; None if never."""
    delay = first_in(series, start, holds)
    return None if delay is None else round(delay, 2)


def _fault_key(event: TimelineEvent) -> str | None:
    """The fault an inject/revert event belongs to: ``inject-slowDownstream-0`` -> ``0``."""
    activity = event.detail.get("activity")
    if not isinstance(activity, str) or event.event not in ("fault-injected", "fault-reverted"):
        return None
    return activity.rsplit("-", 1)[-1]


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]
