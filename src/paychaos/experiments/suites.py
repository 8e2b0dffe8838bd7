"""Suites: the experiments a readiness gate runs, in order, with the gate's own thresholds.

A suite is a ``GameDay`` document beside the experiments (``experiments/suites/*.yaml``), shaped
like the custom resource the operator will read. Experiment paths are relative to the suite file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field

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
    experiment: str  # a path, relative to the suite file
    thresholds: Thresholds = Thresholds()


class SuiteSpec(_Spec):
    description: str
    experiments: list[SuiteEntry] = Field(min_length=1)
    # Between experiments the stack must be back to healthy (every replica ready, no fault left,
    # breakers closed, consumers caught up) within this long, or the gate stops with an error.
    settle_within: Duration = timedelta(seconds=90)


class GameDay(Resource):
    kind: Literal["GameDay"]
    spec: SuiteSpec


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


__all__ = ["GameDay", "Planned", "Suite", "SuiteEntry", "Thresholds", "load_suite"]
