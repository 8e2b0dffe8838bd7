"""The paychaos Chaos Toolkit control: load, per-second sampling and stop conditions.

Declared by every compiled experiment, so plain ``chaos run`` gets the same behaviour as
``paychaos run``. Faults are reverted when the experiment ends, whatever ended it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from chaoslib.exit import exit_gracefully

from paychaos.experiments import context
from paychaos.experiments.context import RunContext
from paychaos.experiments.sampling import Sampler
from paychaos.experiments.spec import ChaosExperiment
from paychaos.probes.catalogue import load_catalogue
from paychaos.probes.prometheus import Prometheus
from paychaos.probes.verdicts import Sample, bounds, stop_condition_met
from paychaos.targets import catalogue_of, from_arguments

log = logging.getLogger("paychaos.control")

WARMUP_SECONDS = 8.0  # traffic before the steady state is judged: rate() needs a few scrapes


def configure_control(spec: dict[str, Any], out_dir: str, target: dict[str, str] | None = None,
                      run_dir: str | None = None) -> None:
    """``target``: ``Target.arguments()`` of where the experiment runs (``run_dir``: the local stack's,
    as experiments exported before targets were arguments say it)."""
    experiment = ChaosExperiment.model_validate(spec)
    if target is None and run_dir is not None:
        target = {"platform": "local", "location": run_dir}
    on = from_arguments(target)
    ctx = RunContext(
        experiment=experiment,
        target=on,
        endpoints=on.endpoints(),
        catalogue=catalogue_of(on, load_catalogue()),
        out_dir=Path(out_dir),
    )
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    context.set_current(ctx)


def _slos_to_sample(ctx: RunContext) -> list[str]:
    spec = ctx.experiment.spec
    detect, recover = ctx.timing_slos()
    names = {n for n in (*detect, *recover) if n in ctx.catalogue.slos}
    for check in [*spec.expect, *spec.after, *spec.steady_state]:
        if check.slo is not None:
            names.add(check.slo if isinstance(check.slo, str) else check.slo.name)
        if check.recovery is not None:
            names.add(check.recovery.slo)
    names.update(stop.slo.name for stop in spec.stop_when if stop.slo is not None)
    return sorted(names)


def before_experiment_control(context: dict[str, Any], **_: Any) -> None:
    ctx = _ctx()
    if ctx is None:
        return
    load = ctx.experiment.spec.load
    if load is not None:
        from paychaos.load.running import LoadRunner  # the runner starts Locust in a child process

        ctx.load = LoadRunner(ctx.endpoints.edge_url, load, ctx.out_dir / "load", workers=load.workers, held=True)
        ctx.load.start()
        ctx.record("load-started", profile=load.profile, baselineRps=load.baseline_rps, peakMultiplier=load.peak_multiplier,
                   workers=load.workers)
    prometheus = Prometheus(ctx.endpoints.prometheus_url)
    ctx.sampler = Sampler(
        prometheus,
        ctx.catalogue,
        _slos_to_sample(ctx),
        client_stats=(lambda: ctx.load.latest()) if ctx.load is not None else (lambda: None),
    )
    ctx.sampler.listeners.append(lambda: _watch_stop_conditions(ctx))
    ctx.sampler.start()
    if load is not None:
        time.sleep(WARMUP_SECONDS)


def before_method_control(context: dict[str, Any], **_: Any) -> None:
    ctx = _ctx()
    if ctx is None:
        return
    ctx.method_started = time.time()
    from paychaos.ctk import timeline

    timeline.mark_method_started(ctx.method_started)
    if ctx.load is not None:
        ctx.load.release(ctx.method_started)  # the load's profile and end count from here, as the faults do
    ctx.record("method-started")


def after_method_control(context: dict[str, Any], **_: Any) -> None:
    ctx = _ctx()
    if ctx is not None:
        ctx.record("method-ended")


def after_experiment_control(context: dict[str, Any], state: Any = None, **_: Any) -> None:
    ctx = _ctx()
    if ctx is None:
        return
    # An interrupted run (a stop condition, a fault that did not happen, Ctrl-C) stops its load now.
    stop_load(wait=not (isinstance(state, dict) and state.get("status") == "interrupted"))
    if ctx.sampler is not None:
        ctx.sampler.stop()
        ctx.sampler.prometheus.close()
    # A safety net under the rollbacks: whatever this experiment injected and did not revert.
    from paychaos.ctk.actions import revert_fault

    for i in range(len(ctx.experiment.spec.faults)):
        try:
            revert_fault(ctx.experiment.name, i, target=ctx.target.arguments())
        except Exception as exc:  # keep reverting the others; the error goes in the journal
            ctx.errors.append(f"revert of fault {i} failed: {exc}")
    ctx.record("experiment-ended")


def stop_load(wait: bool = True) -> dict[str, Any]:
    """An action: stop the load (idempotent) so its acknowledged record is complete; ``wait``
    first lets it run its whole duration."""
    ctx = _ctx()
    if ctx is None or ctx.load is None or getattr(ctx, "_load_stopped", False):
        return {"stopped": False}
    # The load runs its whole duration, counted from the method start like the faults (it was
    # released then): the final steady state is judged on its tail.
    ends = (ctx.method_started or 0.0) + ctx.experiment.spec.load.duration.total_seconds()  # type: ignore[union-attr]
    while wait and time.time() < ends and ctx.stop_reason is None:
        time.sleep(0.2)
    ctx.load.stop()
    ctx._load_stopped = True  # type: ignore[attr-defined]
    ctx.record("load-stopped")
    return {"stopped": True}


def _watch_stop_conditions(ctx: RunContext) -> None:
    if ctx.method_started is None or ctx.stop_reason is not None:
        return
    samples = [s for s in ctx.samples() if s.t >= 0]
    for stop in ctx.experiment.spec.stop_when:
        reason = _stop_reason(stop, samples)
        if reason:
            ctx.stop_reason = reason
            ctx.record("stop-condition-met", reason=reason)
            log.warning("stop condition met: %s; aborting and reverting every fault", reason)
            exit_gracefully()  # SIGUSR1 to this process: chaostoolkit interrupts the method, runs rollbacks
            return


def _stop_reason(stop: Any, samples: list[Sample]) -> str | None:
    if stop.slo is not None:
        bound = stop.slo
        below, above, _ = bounds(bound)
        hold = bound.for_.total_seconds() if bound.for_ else 0.0
        at = stop_condition_met(samples, f"slo:{bound.name}", below, above, hold)
        if at is not None:
            sign = f"below {below:g}" if below is not None else f"above {above:g}"
            return f"{bound.name} {sign} for {hold:g}s (at t={at:.1f}s)"
        return None
    floor = stop.traffic.success_ratio_below
    hold = stop.traffic.for_.total_seconds() if stop.traffic.for_ else 0.0
    fails = [Sample(s.t, {"fail": s.values.get("client_fail_ratio")}) for s in samples]
    at = stop_condition_met(fails, "fail", None, 1 - floor, hold)
    return f"client success ratio below {floor:g} for {hold:g}s (at t={at:.1f}s)" if at is not None else None


def _ctx() -> RunContext | None:
    try:
        return context.current()
    except RuntimeError:
        return None
