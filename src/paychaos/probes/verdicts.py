"""Verdict rules: pure functions from samples and a timeline to judged results.

No I/O and no clock here: the run engine feeds per-second samples in, and unit tests feed
hand-made series, so every rule is testable without a stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

from paychaos.probes.series import breaker_key

Verdict = Literal["passed", "failed", "inconclusive", "error"]
FinalVerdict = Literal["passed", "failed", "inconclusive", "aborted", "error"]

# `paychaos run` exits by verdict; the gate reads a run's verdict back from its exit code.
EXIT_CODES: dict[str, int] = {"passed": 0, "failed": 1, "aborted": 2, "error": 3, "inconclusive": 4}


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
    # Headroom in the threshold's unit: positive passed with room, negative failed by that much.
    margin: float | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class _Bounded(Protocol):
    below: float | timedelta | None
    above: float | timedelta | None


def _number(value: float | timedelta | None) -> float | None:
    return value.total_seconds() if isinstance(value, timedelta) else value


def bounds(spec: _Bounded) -> tuple[float | None, float | None, str]:
    """A bound (an experiment's SLO bound, a catalogue objective) in seconds or plain numbers,
    and how to print it."""
    below, above = _number(spec.below), _number(spec.above)
    return below, above, (f"< {below:g}" if below is not None else f"> {above:g}")


def margin(observed: float | None, below: float | None = None, above: float | None = None) -> float | None:
    """How far ``observed`` sits inside its bound (negative: outside), in the bound's unit."""
    if observed is None:
        return None
    if below is not None:
        return round(below - observed, 4)
    if above is not None:
        return round(observed - above, 4)
    return None


def _values(samples: list[Sample], key: str, start: float, end: float) -> list[tuple[float, float]]:
    return [(s.t, v) for s in samples if start <= s.t <= end and (v := s.values.get(key)) is not None]


def bound_holds(value: float, below: float | None, above: float | None) -> bool:
    if below is not None:
        return value < below
    assert above is not None
    return value > above


def judge_bound(
    samples: list[Sample], key: str, start: float, end: float, below: float | None, above: float | None, hold: float = 0.0
) -> tuple[Verdict, float | None, str]:
    """A bound over a window. Without ``hold`` the worst sample decides; with it, the bound fails
    only when it was broken for ``hold`` seconds on end, as a Prometheus alert's ``for:`` does.
    A per-second SLO over a few requests a second swings on one failed request: ``hold`` says how
    long a breach must last to be one."""
    series = _values(samples, key, start, end)
    if not series:
        return "failed", None, f"no data for {key} between {start:.0f}s and {end:.0f}s"
    worst = max(v for _, v in series) if below is not None else min(v for _, v in series)
    if hold <= 0:
        return ("passed" if bound_holds(worst, below, above) else "failed"), worst, f"worst of {len(series)} samples"
    longest, since = longest_run(series, lambda v: not bound_holds(v, below, above))
    if longest >= hold:
        return "failed", worst, f"broken for {hold:g}s on end from {since:.0f}s (worst of {len(series)} samples)"
    if longest:
        return "passed", worst, f"broken for {longest:.0f}s at most, under the {hold:g}s it may last (worst {worst:.4g})"
    return "passed", worst, f"worst of {len(series)} samples"


def held_for(series: list[tuple[float, Any]], predicate: Callable[[Any], bool], hold: float) -> float | None:
    """The time at which ``predicate`` has held on every sample for ``hold`` seconds, or None.
    A sample where it does not hold breaks the streak."""
    streak_start: float | None = None
    for t, v in series:
        if predicate(v):
            streak_start = t if streak_start is None else streak_start
            if t - streak_start >= hold:
                return t
        else:
            streak_start = None
    return None


def longest_run(series: list[tuple[float, float]], predicate: Callable[[float], bool]) -> tuple[float, float | None]:
    """The longest stretch over which ``predicate`` held, in seconds from its first to its last
    sample, and when it began (None if it never held)."""
    longest, began, streak_start = 0.0, None, None
    for t, v in series:
        if predicate(v):
            streak_start = t if streak_start is None else streak_start
            if began is None or t - streak_start > longest:
                longest, began = t - streak_start, streak_start
        else:
            streak_start = None
    return longest, began


def weighted_ratio(samples: list[Sample], rate_key: str, ratio_key: str, start: float, end: float) -> tuple[float, int, float] | None:
    """Σ(rate × ratio) / Σ rate over a window: the share over all requests, not the worst second.
    With it, the seconds it saw and Σ rate: the requests, for samples a second apart."""
    pairs = [(s.values.get(rate_key), s.values.get(ratio_key)) for s in samples if start <= s.t <= end]
    usable = [(r, q) for r, q in pairs if r is not None and q is not None and r > 0]
    total = sum(r for r, _ in usable)
    if not usable or total <= 0:
        return None
    return sum(r * q for r, q in usable) / total, len(usable), total


def first_time(
    samples: list[Sample], key: str, start: float, predicate: Callable[[float], bool], end: float = float("inf")
) -> float | None:
    """Seconds after ``start`` at which ``predicate(value)`` first held, or None."""
    return first_in(_values(samples, key, start, end), start, predicate)


def settled_after(
    samples: list[Sample], key: str, start: float, predicate: Callable[[float], bool], end: float = float("inf")
) -> float | None:
    """Seconds after ``start`` from which ``predicate(value)`` held on every sample up to ``end``,
    or None when the last one fails it. Unlike ``first_time``, a moment of calm before the
    trouble arrives (a lag gauge not yet updated) is not taken for recovery."""
    since = None
    for t, v in _values(samples, key, start, end):
        if not predicate(v):
            since = None
        elif since is None:
            since = t
    return None if since is None else since - start


def first_in(
    series: list[tuple[float, float]], start: float, predicate: Callable[[float], bool], end: float = float("inf")
) -> float | None:
    """The same over (t, value) points: seconds after ``start`` to the first one where it held."""
    return next((t - start for t, v in series if start <= t <= end and predicate(v)), None)


OPEN_SETTLE = 5.0  # seconds open everywhere before refused calls alone fill the 5 s rate window


def refused_while_open(samples: list[Sample], start: float, end: float, breaker: str) -> list[tuple[float, float]]:
    """Median latency of the calls ``breaker`` refused, at seconds when every replica's breaker had
    been open for a while. Median, not p99: half-open trial calls wait out the timeout, by design."""
    out: list[tuple[float, float]] = []
    streak: float | None = None
    for s in samples:
        if not start <= s.t <= end:
            continue
        opened, replicas = s.values.get(breaker_key("open", breaker)), s.values.get(breaker_key("replicas", breaker))
        if opened is not None and replicas and opened >= replicas:
            streak = s.t if streak is None else streak
            latency = s.values.get(breaker_key("fails_fast", breaker))
            if s.t - streak >= OPEN_SETTLE and latency is not None:
                out.append((s.t, latency))
        else:
            streak = None
    return out


CONFIDENCE_Z = 1.96  # a 95 % interval


def surely_breached(observed: float, seen: float, below: float | None, above: float | None) -> tuple[float, float] | None:
    """A ratio (a share of the window's requests) seen over too few requests to show that it holds:
    its 95 % Wilson interval, when the whole interval breaks the bound. Then the breach does not
    depend on the traffic that was missing (availability 0.3 over 74 requests is under 0.99 whatever
    more requests would have shown); None when it might, and the check is inconclusive, not failed
    (one failure in 30 requests is 0.967, but 0.99 is still inside its interval)."""
    if seen <= 0:
        return None
    z2 = CONFIDENCE_Z**2
    centre = (observed + z2 / (2 * seen)) / (1 + z2 / seen)
    spread = CONFIDENCE_Z * math.sqrt(observed * (1 - observed) / seen + z2 / (4 * seen * seen)) / (1 + z2 / seen)
    low, high = max(0.0, centre - spread), min(1.0, centre + spread)
    breached = (above is not None and high <= above) or (below is not None and low >= below)
    return (round(low, 4), round(high, 4)) if breached else None


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
    series = [(s.t, s.values.get(key)) for s in samples]
    return held_for(series, lambda v: v is not None and bound_holds(v, below, above), hold)


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
    (exit 0), and goes on after a fault action that raised; we read the journal ourselves so
    that the first is ``failed`` and the second ``error``: a fault that never happened tested
    nothing, whatever the checks said. A check that saw too little to judge makes the run
    ``inconclusive``, never ``passed`` (Jepsen's ``unknown``); a check that failed still fails it.
    """
    not_injected = [r for r in results if r.kind == "fault" and r.verdict != "passed"]
    if not_injected:
        first = not_injected[0]
        return "error", f"{first.name} {first.detail}; the stack was not faulted as the spec says, so nothing was tested"
    if stop_reason:
        return "aborted", f"stop condition met: {stop_reason}"
    if errors:
        return "error", errors[0]
    if journal_status == "interrupted":
        return "aborted", "interrupted (Ctrl-C or SIGTERM); every fault was reverted"
    before = [r for r in results if r.phase == "steadyState.before" and r.verdict != "passed"]
    if steady_state_before_met is False and not all(r.verdict == "inconclusive" for r in before):
        reason = "; ".join(f"{r.name}: {r.detail}" for r in before) or "see the journal"
        return "failed", f"steady state did not hold before the faults ({reason})"
    # A failure is a finding even beside checks that could not judge; then errors, then thin evidence.
    verdicts: tuple[Literal["failed", "error", "inconclusive"], ...] = ("failed", "error", "inconclusive")
    for verdict in verdicts:
        found = [r for r in results if r.verdict == verdict]
        if found:
            first = found[0]
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            said = f"observed {first.observed}, expected {first.threshold}" if verdict == "failed" else first.detail
            return verdict, f"{first.phase} {first.kind} {first.name}: {said}{more}"
    if steady_state_before_met is False:
        return "inconclusive", "the steady state could not be judged before the faults"
    if journal_status not in ("completed",):
        return "error", f"chaostoolkit ended the run as {journal_status}"
    return "passed", f"{len(results)} checks passed"
