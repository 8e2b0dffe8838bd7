"""The editable probe catalogues: named SLOs (PromQL), money invariants (SQL), the exercises an
experiment must provoke, and the series vocabulary (``series.yaml``, see ``probes.series``).

They live in the top-level ``probes/`` folder so that users adapt them to their own stack;
``PAYCHAOS_PROBES_DIR`` points elsewhere.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from paychaos.durations import Duration
from paychaos.probes.series import SERIES_FILE, Vocabulary

PROBES_DIR_ENV = "PAYCHAOS_PROBES_DIR"
EXERCISES_FILE = "exercises.yaml"
M = TypeVar("M", bound="BaseModel")


class CatalogueError(Exception):
    """The catalogue is missing or malformed: the message says which file and what to fix."""


def requests_needed(quantile: float | None, below: float | None, above: float | None, unit: str) -> int:
    """The fewest requests a window must hold before an SLO over it says anything.

    A quantile q over fewer than 1/(1-q) requests is their maximum: the p99 of 34 payments is the
    slowest one. A ratio bound p is only told apart from 1.0 by one request in 1/(1-p): 0.99
    availability over 34 payments without a failure has not shown 0.99. Counts and rates judge
    any window with data."""
    if quantile is not None:
        return math.ceil(1 / (1 - quantile) - 1e-9)
    if unit == "ratio":
        if above is not None and 0 < above < 1:
            return math.ceil(1 / (1 - above) - 1e-9)
        if below is not None and 0 < below < 1:
            return math.ceil(1 / below - 1e-9)
    return 1


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    above: float | Duration | None = None
    below: float | Duration | None = None

    @model_validator(mode="after")
    def _one(self) -> Objective:
        if (self.above is None) == (self.below is None):
            raise ValueError("an objective has exactly one of above or below")
        return self


class Slo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)
    description: str
    query: str
    objective: Objective
    unit: Literal["ratio", "seconds", "count"]
    # How many requests the SLO is computed over in $window: a window holding too few of them
    # is judged inconclusive rather than passed. Without it, the evidence cannot be weighed.
    volume: str | None = None
    quantile: float | None = Field(default=None, gt=0, lt=1)  # for a latency quantile (0.99 = p99)
    min_requests: int | None = Field(default=None, ge=1)  # overrides the count derived from the bound

    def promql(self, window: str) -> str:
        return Template(self.query).safe_substitute(window=window).strip()

    def volume_promql(self, window: str) -> str | None:
        return Template(self.volume).safe_substitute(window=window).strip() if self.volume else None

    def needed(self, below: float | None, above: float | None) -> int:
        """Requests a window needs before this SLO, held to this bound, says anything."""
        return self.min_requests or requests_needed(self.quantile, below, above, self.unit)


class Exercise(BaseModel):
    """Something an experiment exists to provoke (a retry, a takeover, a redelivered event),
    counted over the run: a check that guards a path nobody walked has not passed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    # One source: PromQL of a counter's increase over $window, or the load's client record.
    promql: str | None = None
    client: Literal["retried-payments", "double-taps"] | None = None
    # Invariants that hold vacuously unless this happened in the run: an experiment checking one
    # of them must also declare this exercise (experiments/references.py refuses it otherwise).
    guards: tuple[str, ...] = ()
    # What to look at when a run saw too few, if not simply too little traffic or too short a fault.
    when_short: str | None = Field(default=None, alias="whenShort")
    # "run": over the whole method; "fault": from the first fault's injection on, when what must be
    # seen is the path walked under the fault (cashback booked before it proves nothing about it).
    counted_from: Literal["run", "fault"] = Field(default="run", alias="countedFrom")

    @model_validator(mode="after")
    def _one_source(self) -> Exercise:
        if (self.promql is None) == (self.client is None):
            raise ValueError("an exercise is counted from exactly one of promql or client")
        if self.counted_from == "fault" and self.client is not None:
            raise ValueError("countedFrom: fault needs a promql count (the load's record covers the whole run)")
        return self

    def query(self, window: str) -> str:
        assert self.promql is not None
        return Template(self.promql).safe_substitute(window=window).strip()


class SloFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slos: dict[str, Slo]


class ExerciseFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exercises: dict[str, Exercise]


@dataclass(frozen=True)
class Catalogue:
    root: Path
    slos: dict[str, Slo]
    invariants: dict[str, str]  # name -> SQL returning the violating rows
    exercises: dict[str, Exercise] = field(default_factory=dict)
    series: Vocabulary | None = None

    @property
    def vocabulary(self) -> Vocabulary:
        if self.series is None:
            raise CatalogueError(f"no series vocabulary: expected {self.root / SERIES_FILE}")
        return self.series

    def slo(self, name: str) -> Slo:
        try:
            return self.slos[name]
        except KeyError:
            raise CatalogueError(f"no SLO named {name!r} in {self.root / 'slo.yaml'} (known: {', '.join(sorted(self.slos))})") from None

    def exercise(self, name: str) -> Exercise:
        try:
            return self.exercises[name]
        except KeyError:
            raise CatalogueError(f"no exercise named {name!r} in {self.root / EXERCISES_FILE} (known: {', '.join(sorted(self.exercises))})") from None

    def invariant(self, name: str) -> str:
        try:
            return self.invariants[name]
        except KeyError:
            raise CatalogueError(
                f"no invariant {name!r}: expected {self.root / 'invariants' / (name + '.sql')} "
                f"(known: {', '.join(sorted(self.invariants))})"
            ) from None


def probes_dir() -> Path:
    configured = os.environ.get(PROBES_DIR_ENV)
    return Path(configured).expanduser().resolve() if configured else Path("probes").resolve()


def load_catalogue(root: Path | None = None) -> Catalogue:
    root = root or probes_dir()
    slo_file = root / "slo.yaml"
    if not slo_file.is_file():
        raise CatalogueError(f"no SLO catalogue at {slo_file}: run from the project folder or set {PROBES_DIR_ENV}")
    slos = _read(slo_file, SloFile).slos
    exercise_file = root / EXERCISES_FILE
    exercises = _read(exercise_file, ExerciseFile).exercises if exercise_file.is_file() else {}
    invariants = {p.stem: p.read_text(encoding="utf-8") for p in sorted((root / "invariants").glob("*.sql"))}
    for name, exercise in exercises.items():
        if unknown := [g for g in exercise.guards if g not in invariants]:
            raise CatalogueError(f"{exercise_file}: exercise {name!r} guards {', '.join(map(repr, unknown))}, "
                                 f"which {root / 'invariants'} does not hold (known: {', '.join(sorted(invariants))})")
    series_file = root / SERIES_FILE
    if not series_file.is_file():
        raise CatalogueError(f"no series vocabulary at {series_file}: copy the project's probes/{SERIES_FILE} and adapt its queries")
    return Catalogue(root, slos, invariants, exercises, _read(series_file, Vocabulary))


def _read(path: Path, model: type[M]) -> M:
    try:
        return model.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (yaml.YAMLError, ValueError) as exc:
        raise CatalogueError(f"{path}: {str(exc).splitlines()[0]}") from None
