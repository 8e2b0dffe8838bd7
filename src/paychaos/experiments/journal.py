"""The ``paychaos`` section of a run's journal: one typed model, written by the engine, derived
by the gate (never mutated), read by the reports and runbooks.

Reading ignores keys a newer engine adds, so reports keep working on newer journals.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from paychaos.probes.verdicts import CheckResult, FinalVerdict
from paychaos.probes.verdicts import Verdict as CheckVerdict


class _Record(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class TimelineEvent(_Record):
    t: float  # seconds since the method started; negative before it
    at: str | None = None
    event: str
    detail: dict[str, Any] = {}


class FaultRecord(_Record):
    index: int
    kind: str
    at: float
    for_: float = Field(alias="for")
    spec: dict[str, Any] = {}


class CheckRecord(_Record):
    phase: str  # steadyState.before | expect | after | steadyState.after | gate
    kind: str
    name: str
    verdict: CheckVerdict
    observed: int | float | str | None = None
    threshold: str = ""
    detail: str = ""
    evidence: dict[str, Any] = {}
    margin: float | None = None  # headroom in the threshold's unit; negative when it failed

    @classmethod
    def of(cls, result: CheckResult) -> CheckRecord:
        return cls.model_validate(result.to_dict())

    @property
    def label(self) -> str:
        """``expect/breaker/acquirer.opens``: the phase, kind and name, unique within a run."""
        return f"{self.phase}/{self.kind}/{self.name}"


class Times(_Record):
    time_to_detect: float | None = None
    recovery_time: float | None = None


class Verdict(_Record):
    result: FinalVerdict
    reason: str = ""


class LoadFiles(_Record):
    stats: str | None = None  # the load's per-second stats (CSV)
    acknowledged: str | None = None  # its record of every payment the app saw acknowledged (JSON lines)


class Section(_Record):
    experiment: str
    method_started_at: float | None = None
    timeline: list[TimelineEvent] = []
    faults: list[FaultRecord] = []
    samples: list[dict[str, float | None]] = []
    checks: list[CheckRecord] = []
    times: Times = Times()
    verdict: Verdict
    load: LoadFiles = LoadFiles()

    def to_json(self) -> dict[str, Any]:
        """As it is written into the journal (camelCase keys, JSON values; evidence of a type JSON
        has no word for is written as its text, as the journal always did)."""
        return self.model_dump(mode="json", by_alias=True, fallback=str)
