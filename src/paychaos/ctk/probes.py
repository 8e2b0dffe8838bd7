"""paychaos checks as Chaos Toolkit probes: steady state (a boolean for the tolerance) and
judged checks (a result record for the journal; the paychaos verdict reads it)."""

from __future__ import annotations

from typing import Any

from paychaos.experiments import context
from paychaos.experiments.spec import Check
from paychaos.probes.judging import judge as judge_check
from paychaos.probes.judging import judge_exercises

__all__ = ["exercised", "judge", "steady_state"]


def steady_state(check: dict[str, Any], phase: str = "steadyState") -> bool:
    """Whether a steady-state check holds now (before the faults, and again after)."""
    ctx = context.current()
    label = "steadyState.after" if ctx.method_started is not None else "steadyState.before"
    results = ctx.judged(judge_check(ctx, Check.model_validate(check), label))
    return all(r.verdict == "passed" for r in results)


def judge(check: dict[str, Any], phase: str) -> list[dict[str, Any]]:
    """Judge an expect/after check; never raises, so one failed check does not stop the others."""
    ctx = context.current()
    results = ctx.judged(judge_check(ctx, Check.model_validate(check), phase))
    return [r.to_dict() for r in results]


def exercised(exercise: dict[str, int], phase: str = "after") -> list[dict[str, Any]]:
    """Count what the run provoked against what the spec says it must; short is inconclusive."""
    ctx = context.current()
    results = ctx.judged(judge_exercises(ctx, exercise, phase))
    return [r.to_dict() for r in results]
