"""Compiling a ChaosExperiment spec into a Chaos Toolkit experiment (pure: dicts in, dict out).

The result runs under ``paychaos run`` and under plain ``chaos run``: the paychaos control it
declares starts the load, samples metrics and watches stop conditions; faults and checks are
paychaos activities (``paychaos.ctk``), so any Chaos Toolkit activity can sit beside them.
"""

from __future__ import annotations

from typing import Any

from paychaos.experiments.spec import ChaosExperiment, Check

ACTIONS = "paychaos.ctk.actions"
PROBES = "paychaos.ctk.probes"
CONTROL = "paychaos.ctk.control"


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def _python(module: str, func: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "python", "module": module, "func": func, "arguments": arguments}


def _check_probe(check: Check, phase: str, n: int, func: str = "judge") -> dict[str, Any]:
    return {
        "type": "probe",
        "name": f"{phase}-{n}-{check.kind}",
        "provider": _python(PROBES, func, check=_dump(check), phase=phase),
    }


def compile_experiment(experiment: ChaosExperiment, target: dict[str, str], out_dir: str) -> dict[str, Any]:
    """The Chaos Toolkit experiment of a spec. ``target`` (``Target.arguments()``) goes into every
    fault action and the control, so that a plain `chaos run` of it, in any shell, injects into
    the target it samples."""
    spec = experiment.spec
    name = experiment.name
    events: list[tuple[float, int, str, int]] = []
    for i, fault in enumerate(spec.faults):
        events.append((fault.at.total_seconds(), 1, "inject", i))
        events.append((fault.ends_at.total_seconds(), 0, "revert", i))  # a revert due with an inject goes first
    method: list[dict[str, Any]] = []
    for at, _, what, i in sorted(events):
        fault = spec.faults[i]
        if what == "inject":
            provider = _python(
                ACTIONS, "inject_fault", fault=_dump(fault), experiment=name, index=i, at=at, limits=_dump(spec.limits),
                target=target,
            )
        else:
            provider = _python(ACTIONS, "revert_fault", experiment=name, index=i, at=at, target=target)
        method.append({"type": "action", "name": f"{what}-{fault.kind}-{i}", "provider": provider})
    method += [_check_probe(c, "expect", n) for n, c in enumerate(spec.expect)]
    # The money invariants and the payments' answer times read the load's record of payments,
    # complete only once the load has stopped and flushed.
    on_record = [c for c in spec.after if c.invariant is not None or (c.traffic is not None and c.traffic.reads_whole_record)]
    after_live = [c for c in spec.after if c not in on_record]
    method += [_check_probe(c, "after", n) for n, c in enumerate(after_live)]
    method.append({"type": "action", "name": "stop-load", "provider": _python(CONTROL, "stop_load")})
    method += [_check_probe(c, "after", len(after_live) + n) for n, c in enumerate(on_record)]
    if spec.exercise:  # counted last, once the load's record of retries is complete
        method.append({"type": "probe", "name": "after-exercised",
                       "provider": _python(PROBES, "exercised", exercise=dict(spec.exercise), phase="after")})

    compiled: dict[str, Any] = {
        "version": "1.0.0",
        "title": name,
        "description": spec.description,
        "tags": [f"{k}={v}" for k, v in sorted(experiment.metadata.labels.items())] + ["paychaos"],
        "controls": [
            {
                "name": "paychaos",
                "provider": {
                    "type": "python",
                    "module": CONTROL,
                    "arguments": {"spec": _dump(experiment), "target": target, "out_dir": out_dir},
                },
            }
        ],
        "method": method,
        "rollbacks": [
            {
                "type": "action",
                "name": f"revert-{fault.kind}-{i}",
                "provider": _python(ACTIONS, "revert_fault", experiment=name, index=i, target=target),
            }
            for i, fault in enumerate(spec.faults)
        ],
    }
    if spec.steady_state:
        compiled["steady-state-hypothesis"] = {
            "title": "the payment platform is healthy",
            "probes": [
                {**_check_probe(c, "steadyState", n, func="steady_state"), "tolerance": True}
                for n, c in enumerate(spec.steady_state)
            ],
        }
    return compiled
