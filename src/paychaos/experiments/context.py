"""The state of the experiment running in this process, shared by the paychaos control and probes.

Chaos Toolkit calls controls and probes as plain functions; they meet here. One experiment
runs per process (chaostoolkit-lib's signal handling requires the main thread anyway).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from paychaos.experiments.spec import ChaosExperiment
from paychaos.probes.catalogue import Catalogue
from paychaos.probes.verdicts import CheckResult, Sample
from paychaos.targets import Endpoints, Target


@dataclass
class TimelineEvent:
    wall: float  # time.time() when it happened
    event: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, origin: float) -> dict[str, Any]:
        """With ``t`` in seconds since ``origin`` (the method start; negative before it)."""
        return {
            "t": round(self.wall - origin, 3),
            "at": datetime.fromtimestamp(self.wall, UTC).isoformat(),
            "event": self.event,
            "detail": self.detail,
        }


@dataclass
class RunContext:
    experiment: ChaosExperiment
    target: Target
    endpoints: Endpoints
    catalogue: Catalogue
    out_dir: Path
    created: float = field(default_factory=time.time)
    method_started: float | None = None
    timeline: list[TimelineEvent] = field(default_factory=list)
    results: list[CheckResult] = field(default_factory=list)
    stop_reason: str | None = None
    errors: list[str] = field(default_factory=list)
    sampler: Any = None  # paychaos.experiments.sampling.Sampler
    load: Any = None  # paychaos.load.running.LoadRunner
    lock: threading.Lock = field(default_factory=threading.Lock)

    def started_at(self) -> float:
        return self.method_started if self.method_started is not None else self.created

    def now(self) -> float:
        return time.time() - self.started_at()

    def record(self, event: str, wall: float | None = None, **detail: Any) -> TimelineEvent:
        entry = TimelineEvent(time.time() if wall is None else wall, event, detail)
        with self.lock:
            self.timeline.append(entry)
        return entry

    def judged(self, results: list[CheckResult]) -> list[CheckResult]:
        """Add judged checks to the run's results (activities run on several threads); returns them."""
        with self.lock:
            self.results.extend(results)
        return results

    def samples(self) -> list[Sample]:
        """Samples so far, stamped with seconds since the method started."""
        if self.sampler is None:
            return []
        origin = self.started_at()
        return [Sample(round(s.t - origin, 3), s.values) for s in self.sampler.snapshot()]

    def timing_slos(self) -> tuple[list[str], list[str]]:
        """The SLOs that time the run, detection's and recovery's: the spec's, else the catalogue's."""
        times, defaults = self.experiment.spec.times, self.catalogue.vocabulary.times
        return (times.detect if times.detect is not None else defaults.detect,
                times.recover if times.recover is not None else defaults.recover)

    def fault_window(self, index: int) -> tuple[float, float]:
        fault = self.experiment.spec.faults[index]
        return fault.at.total_seconds(), fault.ends_at.total_seconds()


_current: RunContext | None = None


def set_current(ctx: RunContext | None) -> None:
    global _current
    _current = ctx


def current() -> RunContext:
    if _current is None:
        raise RuntimeError("no paychaos experiment is running in this process (is the paychaos control declared?)")
    return _current
