"""paychaos faults as Chaos Toolkit actions (``"provider": {"type": "python", "module": "paychaos.ctk.actions"}``).

Arguments are plain JSON: a fault is the spec's dict (``fault.model_dump(by_alias=True, mode="json")``),
the target is ``Target.arguments()`` (``{"platform": "local", "location": RUN_DIR}``); without
one, the local stack of PAYCHAOS_RUN_DIR (default ``.paychaos/run``).
"""

# No `from __future__ import annotations`: chaoslib's discovery reads the annotations as types.

from chaoslib.exit import exit_gracefully

from paychaos.ctk import timeline
from paychaos.experiments import context
from paychaos.experiments.context import RunContext
from paychaos.experiments.spec import Fault, Limits
from paychaos.faults import records
from paychaos.faults.planning import PlanError, partitions_needed, plan_fault
from paychaos.probes.verdicts import CheckResult
from paychaos.targets import from_arguments

__all__ = ["inject_fault", "revert_fault", "halt_all"]


def inject_fault(fault: dict, experiment: str, index: int, at: float = 0.0, limits: dict | None = None,
                 target: dict | None = None) -> dict:
    """Inject one paychaos fault ``at`` seconds after the method started; record it first so it can be halted.

    Plans against the stack as it is now and refuses plans beyond ``limits`` (the spec's
    ``limits``; defaults when omitted). Returns the plan that was executed.
    """
    spec_fault = Fault.model_validate(fault)
    spec_limits = Limits.model_validate(limits or {})
    reached = timeline.wait_until(at)
    on = from_arguments(target)
    driver = on.driver()
    name = f"{spec_fault.kind}-{index}"
    try:
        observed = driver.observe(partitions_needed([spec_fault]))
        plan = plan_fault(spec_fault, observed, spec_limits, experiment=experiment, index=index)
    except PlanError as exc:
        raise _not_injected(name, "refused", str(exc)) from None
    try:
        record = records.inject(on.ledger(), driver, plan)
    except Exception as exc:
        raise _not_injected(name, "failed", str(exc)) from exc
    _judged(CheckResult("faults", "fault", name, "passed", record.summary, "injected, and its effect seen",
                        f"injected at t={reached:.1f}s", {"plan": record.plan, "effect": record.effect}))
    return {"id": record.id, "kind": plan.kind, "summary": record.summary, "injectedAt": record.recorded_at,
            "offset": round(reached, 3), "plan": record.plan, "effect": record.effect}


class FaultNotInjected(Exception):
    """The fault was refused by the planner (blast radius, a target that is not there) or the
    driver could not inject it or see its effect. The run ends as ``error``."""


def _not_injected(name: str, how: str, reason: str) -> FaultNotInjected:
    """The verdict's evidence for a fault that did not happen, then the run is stopped: the
    checks after it would judge a stack that was never faulted."""
    _judged(CheckResult("faults", "fault", name, "error", None, "injected, and its effect seen", f"{how}: {reason}"))
    ctx = _context()
    if ctx is not None:
        ctx.record(f"fault-{how}", fault=name, reason=reason)
        exit_gracefully()  # as a stop condition does: the method ends, every rollback runs
    return FaultNotInjected(f"{name} {how}: {reason}")


def _judged(result: CheckResult) -> None:
    ctx = _context()
    if ctx is not None:
        ctx.judged([result])


def _context() -> RunContext | None:
    try:
        return context.current()
    except RuntimeError:  # run by a plain `chaos run` without the paychaos control
        return None


def revert_fault(experiment: str, index: int, at: float | None = None, target: dict | None = None) -> dict:
    """Revert a recorded fault (at ``at`` seconds after the method start, if given). Reverting twice is fine."""
    reached = timeline.wait_until(at) if at is not None else None
    on = from_arguments(target)
    record = records.revert(on.ledger(), on.driver(), f"{experiment}-{index}")
    return {"id": f"{experiment}-{index}", "reverted": record is not None,
            "summary": record.summary if record else "no active fault recorded (already reverted)",
            "offset": round(reached, 3) if reached is not None else None}


def halt_all(target: dict | None = None) -> list:
    """Revert every fault recorded on the target by a dead run or by this process."""
    on = from_arguments(target)
    return [{"id": r.id, "kind": r.kind, "summary": r.summary, "ownerPid": r.owner.pid}
            for r in records.halt(on.ledger(), on.driver())]
