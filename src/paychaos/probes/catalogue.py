"""The editable probe catalogues: named SLOs (PromQL) and money invariants (SQL).

They live in the top-level ``probes/`` folder so that users adapt them to their own stack;
``PAYCHAOS_PROBES_DIR`` points elsewhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

from paychaos.durations import Duration

PROBES_DIR_ENV = "PAYCHAOS_PROBES_DIR"


class CatalogueError(Exception):
    """The catalogue is missing or malformed: the message says which file and what to fix."""


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
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    query: str
    objective: Objective
    unit: Literal["ratio", "seconds", "count"]

    def promql(self, window: str) -> str:
        return Template(self.query).safe_substitute(window=window).strip()


class SloFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slos: dict[str, Slo]


@dataclass(frozen=True)
class Catalogue:
    root: Path
    slos: dict[str, Slo]
    invariants: dict[str, str]  # name -> SQL returning the violating rows

    def slo(self, name: str) -> Slo:
        try:
            return self.slos[name]
        except KeyError:
            raise CatalogueError(f"no SLO named {name!r} in {self.root / 'slo.yaml'} (known: {', '.join(sorted(self.slos))})") from None

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
    try:
        slos = SloFile.model_validate(yaml.safe_load(slo_file.read_text(encoding="utf-8"))).slos
    except (yaml.YAMLError, ValueError) as exc:
        raise CatalogueError(f"{slo_file}: {str(exc).splitlines()[0]}") from None
    invariants = {p.stem: p.read_text(encoding="utf-8") for p in sorted((root / "invariants").glob("*.sql"))}
    return Catalogue(root, slos, invariants)
