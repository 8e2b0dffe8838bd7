"""Verdict rules: pure functions from samples and a timeline to judged results.

No I/O and no clock here: the run engine feeds per-second samples in, and unit tests feed
hand-made series, so every rule is testable without a stack.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

Verdict = Literal["passed", "failed", "error"]
FinalVerdict = Literal["passed", "failed", "aborted", "error"]


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the method started
    values: dict[str, float | None]


@dataclass
class CheckResult:
    phase: str  # steadyState.before | expect | after | steadyState.after
    kind: str
    name: str
    verdict: Verdict
    observed: float | str | None
    threshold: str
    detail: str = ""
    evidence: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _values(samples: list[Sample], key: str, start: float, end: float) -> list[tuple[float, float]]:
    return [(s.t, v) for s in samples if start <= s.t <= end and (v := s.values.get(key)) is not None]


def bound_holds(value: float, below: float | None, above: float | None) -> bool:
    if below is not None:
        return value < below
    assert above is not None
    return value > above


def judge_bound(
    samples: list[Sample], key: str, start: float, end: float, below: float | None, above: float | None
) -> tuple[Verdict, float | None, str]:
    """A bound over a window: the worst sample in it decides."""
    series = _values(samples, key, start, end)
    if not series:
        return "failed", None, f"no data for {key} between {start:.0f}s and {end:.0f}s"
    worst = max(v for _, v in series) if below is not None else min(v for _, v in series)
    return ("passed" if bound_holds(worst, below, above) else "failed"), worst, f"worst of {len(series)} samples"


def first_time(
    samples: list[Sample], key: str, start: float, predicate: object, end: float = float("inf")
) -> float | None:
    """Seconds after ``start`` at which ``predicate(value)`` first held, or None."""
    for t, v in _values(samples, key, start, end):
        if predicate(v):  # type: ignore[operator]
            return t - start
    return None


def judge_within(delay: float | None, within: float, what: str) -> tuple[Verdict, float | None, str]:
    if delay is None:
        return "failed", None, f"{what} not observed"
    return ("passed" if delay <= within else "failed"), round(delay, 2), f"{what} after {delay:.1f}s"


def stop_condition_met(
    samples: list[Sample], key: str, below: float | None, above: float | None, hold: float
) -> float | None:
    """The time at which a stop condition has held for ``hold`` seconds, or None.

    Stop conditions are phrased as the bad state (``above: 0.5``): they are met when the bound
    *holds*. Samples without data break the streak: no data is not evidence of harm.
    """
    streak_start: float | None = None
    for s in samples:
        v = s.values.get(key)
        if v is not None and bound_holds(v, below, above):
            streak_start = s.t if streak_start is None else streak_start
            if s.t - streak_start >= hold:
                return s.t
        else:
            streak_start = None
    return None


def final_verdict(
    *,
    journal_status: str,
    steady_state_before_met: bool | None,
    results: list[CheckResult],
    stop_reason: str | None,
    errors: list[str],
) -> tuple[FinalVerdict, str]:
    """One verdict for the run, and why. ``paychaos run`` exits 0 only on ``passed``.

    chaostoolkit-lib ends a run whose steady state failed *before* the method as ``completed``
    (exit 0); we read the journal ourselves so that such a run is ``failed``.
    """
    if stop_reason:
        return "aborted", f"stop condition met: {stop_reason}"
    if errors:
        return "error", errors[0]
    if journal_status == "interrupted":
        return "aborted", "interrupted (Ctrl-C or SIGTERM); every fault was reverted"
    if steady_state_before_met is False:
        before = [r for r in results if r.phase == "steadyState.before" and r.verdict != "passed"]
        reason = "; ".join(f"{r.name}: {r.detail}" for r in before) or "see the journal"
        return "failed", f"steady state did not hold before the faults ({reason})"
    failed = [r for r in results if r.verdict != "passed"]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return "failed", f"{first.phase} {first.kind} {first.name}: observed {first.observed}, expected {first.threshold}{more}"
    if journal_status not in ("completed",):
        return "error", f"chaostoolkit ended the run as {journal_status}"
    return "passed", f"{len(results)} checks passed"
