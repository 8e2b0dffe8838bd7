"""Suites: the experiments a readiness gate runs, in order, with the gate's own thresholds.

A suite is a ``GameDay`` document beside the experiments (``experiments/suites/*.yaml``), and the
same document is the custom resource the operator runs. Experiment paths are relative to the suite
file; in a cluster each names the ``ChaosExperiment`` object of its file's stem
(``../acquirer-slowdown.yaml`` or ``acquirer-slowdown``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from paychaos.durations import Duration
from paychaos.experiments.loading import Problem, ProbeNames, SpecError, load_experiment, parse_document, read_document
from paychaos.experiments.spec import ChaosExperiment, Resource, _Spec
from paychaos.targets import Inventory

SUITE_KIND = "GameDay"


class Thresholds(_Spec):
    """What the gate demands beyond the experiment's own checks."""

    time_to_detect: Duration | None = None  # fault start -> a probe first sees the breach
    recovery_time: Duration | None = None  # revert -> SLOs back within objective


class SuiteEntry(_Spec):
    # A path, relative to the suite file; in a cluster, the ChaosExperiment named by its stem.
    experiment: str = Field(min_length=1)
    thresholds: Thresholds = Thresholds()

    @property
    def object_name(self) -> str:
        """The ChaosExperiment this entry names in a cluster: ``../pod-kill.yaml`` -> ``pod-kill``."""
        name = Path(self.experiment).name
        return name.removesuffix(".yaml").removesuffix(".yml")


class SuiteSpec(_Spec):
    description: str
    experiments: list[SuiteEntry] = Field(min_length=1)
    # Between experiments the stack must be back to healthy (every replica ready, no fault left,
    # breakers closed, consumers caught up) within this long, or the gate stops with an error.
    settle_within: Duration = timedelta(seconds=90)
    # For the operator: run the game day at each time of this cron expression (five fields, UTC),
    # e.g. "0 3 * * 1" every Monday at 03:00. Without it the operator runs it once per edit.
    # `paychaos gate` runs a suite once, now, whatever its schedule.
    schedule: str | None = None

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and not is_cron(value):
            raise ValueError(f"{value!r} is not a cron expression of five fields (minute hour day-of-month month "
                             "day-of-week), e.g. '0 3 * * 1' for Mondays at 03:00 UTC")
        return value


class GameDay(Resource):
    kind: Literal["GameDay"]
    spec: SuiteSpec


def is_cron(expression: str) -> bool:
    from croniter import croniter

    return len(expression.split()) == 5 and croniter.is_valid(expression)


def next_time(expression: str, after: datetime) -> datetime:
    """The first time of the cron ``expression`` (UTC) strictly after ``after``."""
    from croniter import croniter

    return croniter(expression, after.astimezone(UTC)).get_next(datetime)


@dataclass(frozen=True)
class Planned:
    entry: SuiteEntry
    path: Path
    experiment: ChaosExperiment


@dataclass(frozen=True)
class Suite:
    gameday: GameDay
    planned: list[Planned]

    @property
    def name(self) -> str:
        return self.gameday.name


def load_suite(path: str | Path, inventory: Inventory | None = None, *, probes: ProbeNames | None = None) -> Suite:
    """Read a suite and every experiment it lists; all problems of all files at once."""
    source = str(path)
    gameday, tree = parse_document(read_document(path, "a suite"), source, GameDay, SUITE_KIND, "a suite")
    base = Path(path).parent
    problems: list[Problem] = []
    planned: list[Planned] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(gameday.spec.experiments):
        where = ("spec", "experiments", i, "experiment")
        experiment_path = base / entry.experiment
        if not experiment_path.is_file():
            line, written = tree.locate(where)
            problems.append(Problem(source, line, written, f"no experiment file {entry.experiment!r} next to the suite"))
            continue
        try:
            experiment = load_experiment(experiment_path, inventory, probes=probes)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        if experiment.name in seen:
            line, written = tree.locate(where)
            problems.append(Problem(source, line, written, f"experiment {experiment.name!r} is listed twice (also item {seen[experiment.name]})"))
            continue
        seen[experiment.name] = i
        planned.append(Planned(entry, experiment_path, experiment))
    if problems:
        raise SpecError(problems)
    return Suite(gameday, planned)


__all__ = ["GameDay", "Planned", "Suite", "SuiteEntry", "Thresholds", "is_cron", "load_suite", "next_time"]
