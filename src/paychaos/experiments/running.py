"""Running one experiment: compile it, let chaostoolkit-lib execute it in the main thread, then
judge the run from its journal and write the journal with its ``paychaos`` section."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoslib.run import RunEventHandler
from chaoslib.types import Strategy

from paychaos.experiments import context
from paychaos.experiments.compiling import compile_experiment
from paychaos.experiments.context import RunContext
from paychaos.experiments.journal import CheckRecord, FaultRecord, LoadFiles, Section, TimelineEvent, Times, Verdict
from paychaos.experiments.spec import ChaosExperiment
from paychaos.faults import records
from paychaos.probes.catalogue import Slo
from paychaos.probes.series import breakers_open
from paychaos.probes.verdicts import FinalVerdict, Sample, bound_holds, bounds, final_verdict, first_time
from paychaos.targets import Target

Progress = Callable[[str], None]


class NotRunnable(Exception):
    """The run cannot start (no stack, locked target): the message says what to do."""


@dataclass
class Outcome:
    verdict: FinalVerdict
    reason: str
    journal_path: Path
    journal: dict[str, Any]


class _Timeline(RunEventHandler):  # type: ignore[misc]
    """Records fault activities on the paychaos timeline as Chaos Toolkit runs them."""

    def activity_completed(self, activity: dict[str, Any], run: dict[str, Any]) -> None:
        try:
            ctx = context.current()
        except RuntimeError:
            return
        name = activity.get("name", "")
        if not name.startswith(("inject-", "revert-")):
            return
        output = run.get("output") or {}
        if name.startswith("inject-") and run.get("status") != "succeeded":
            return  # refused or failed: the action recorded that itself (fault-refused, fault-failed)
        if name.startswith("revert-") and not output.get("reverted"):
            return  # interrupted before acting, or nothing left to revert: not an event
        event = "fault-injected" if name.startswith("inject-") else "fault-reverted"
        # The event happened when the action started acting (its wait for `at` over), not when
        # it finished: the driver may take a moment to confirm a kill or a hold.
        finished = time.time()
        if output.get("injectedAt") is not None:
            wall = float(output["injectedAt"])
        elif output.get("offset") is not None:
            wall = ctx.started_at() + float(output["offset"])
        else:
            wall = finished
        ctx.record(event, wall=wall, activity=name, status=run.get("status"), summary=output.get("summary"),
                   scheduledAt=(activity.get("provider", {}).get("arguments", {}) or {}).get("at"),
                   completedT=round(finished - ctx.started_at(), 3))


def run(
    experiment: ChaosExperiment,
    *,
    target: Target,
    journal_path: Path,
    progress: Progress = lambda _: None,
) -> Outcome:
    from chaoslib.experiment import run_experiment

    if (why := target.not_ready()) is not None:
        raise NotRunnable(why)
    out_dir = journal_path.parent / f"{experiment.name}-artifacts"
    # The compiled activities carry the target: nothing is found through this process's globals.
    compiled = compile_experiment(experiment, target.arguments(), str(out_dir))
    driver, ledger = target.driver(), target.ledger()
    try:
        lock = records.acquire_lock(ledger, experiment.name, driver)
    except records.ExperimentLocked as exc:
        raise NotRunnable(str(exc)) from None
    _quiet_chaostoolkit(out_dir)
    ticker = _Ticker(progress)
    with lock:
        ticker.start()
        try:
            journal = run_experiment(
                compiled,
                settings={"runtime": {"rollbacks": {"strategy": "always"}}},
                strategy=Strategy.DEFAULT,
                event_handlers=[_Timeline()],
            )
        finally:
            ticker.stop()
            leftovers = records.halt(ledger, driver)  # nothing this run injected outlives it
    ctx = context.current()
    if leftovers:
        ctx.errors.append(f"{len(leftovers)} faults were still active after the run and were reverted by halt")
    journal["paychaos"] = paychaos_section(ctx, journal).to_json()
    context.set_current(None)
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    journal_path.write_text(json.dumps(journal, indent=2, default=str), encoding="utf-8")
    verdict = journal["paychaos"]["verdict"]
    return Outcome(verdict["result"], verdict["reason"], journal_path, journal)


def paychaos_section(ctx: RunContext, journal: dict[str, Any]) -> Section:
    before = (journal.get("steady_states") or {}).get("before") or {}
    verdict, reason = final_verdict(
        journal_status=journal.get("status", "error"),
        steady_state_before_met=before.get("steady_state_met") if before else None,
        results=ctx.results,
        stop_reason=ctx.stop_reason,
        errors=ctx.errors,
    )
    samples = ctx.samples()
    spec = ctx.experiment.spec
    first_fault = min(f.at.total_seconds() for f in spec.faults)
    last_revert = max(f.ends_at.total_seconds() for f in spec.faults)
    detect, recover = ctx.timing_slos()
    return Section(
        experiment=ctx.experiment.name,
        method_started_at=ctx.method_started,
        timeline=[TimelineEvent.model_validate(e.to_dict(ctx.started_at())) for e in sorted(ctx.timeline, key=lambda e: e.wall)],
        faults=[
            FaultRecord(index=i, kind=f.kind, at=f.at.total_seconds(), for_=f.for_.total_seconds(),
                        spec=f.model_dump(by_alias=True, mode="json", exclude_none=True))
            for i, f in enumerate(spec.faults)
        ],
        samples=[{"t": s.t, **s.values} for s in samples],
        checks=[CheckRecord.of(r) for r in ctx.results],
        times=Times(time_to_detect=time_to_detect(samples, first_fault, ctx.catalogue.slos, detect),
                    recovery_time=recovery_time(samples, last_revert, ctx.catalogue.slos, recover)),
        verdict=Verdict(result=verdict, reason=reason),
        load=LoadFiles(stats=str(ctx.load.stats_path) if ctx.load is not None else None,
                       acknowledged=str(ctx.load.acknowledged_path) if ctx.load is not None else None),
    )


def _objective_met(slos: Mapping[str, Slo], name: str) -> Callable[[float], bool] | None:
    slo = slos.get(name)
    if slo is None:
        return None
    below, above, _ = bounds(slo.objective)
    return lambda v: bound_holds(v, below, above)


def _breakers(samples: list[Sample]) -> list[Sample]:
    """Replicas with a breaker open, over every breaker sampled, as one series."""
    return [Sample(s.t, {"open": breakers_open(s.values)}) for s in samples]


def time_to_detect(samples: list[Sample], fault_start: float, slos: Mapping[str, Slo], names: list[str]) -> float | None:
    """Fault start → the first sample where something watching the stack would have noticed: a
    breaker open, or one of the SLOs ``names`` out of its objective."""
    candidates = [first_time(_breakers(samples), "open", fault_start, lambda v: v >= 1)]
    for name in names:
        met = _objective_met(slos, name)
        if met is not None:
            candidates.append(first_time(samples, f"slo:{name}", fault_start, lambda v, m=met: not m(v)))
    seen = [c for c in candidates if c is not None]
    return round(min(seen), 2) if seen else None


def recovery_time(samples: list[Sample], revert: float, slos: Mapping[str, Slo], names: list[str]) -> float | None:
    """Last revert → every one of the SLOs ``names`` back within its objective, and every breaker
    closed. None when one never came back: a run that did not recover has no recovery time."""
    backs = []
    for name in names:
        met = _objective_met(slos, name)
        backs.append(first_time(samples, f"slo:{name}", revert, met) if met else None)
    if any(t is None for t in backs):
        return None
    closed = first_time(_breakers(samples), "open", revert, lambda v: v == 0)
    seen = [t for t in (*backs, closed) if t is not None]
    return round(max(seen), 2) if seen else None


def _quiet_chaostoolkit(out_dir: Path) -> None:
    """chaostoolkit-lib logs every step at INFO: keep that in a file, the terminal gets our ticker."""
    out_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("chaostoolkit")
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.FileHandler(out_dir / "chaostoolkit.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


class _Ticker:
    """Live progress: phase, elapsed time, active faults, request rate and error ratio."""

    def __init__(self, progress: Progress, period: float = 2.0) -> None:
        self.progress = progress
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="paychaos-ticker", daemon=True)
        self.started = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=3)

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                ctx = context.current()
            except RuntimeError:
                continue
            injected = [e.detail.get("activity", "") for e in ctx.timeline if e.event == "fault-injected"]
            reverted = {e.detail.get("activity", "").replace("revert-", "inject-", 1) for e in ctx.timeline if e.event == "fault-reverted"}
            active = [a.removeprefix("inject-") for a in injected if a not in reverted]
            phase = ctx.timeline[-1].event if ctx.timeline else "starting"
            samples = ctx.samples()
            last = samples[-1].values if samples else {}
            rps = last.get("rps")
            err = last.get("slo:payments-error-ratio")
            # Before the method, the time since the run began (load warm-up and the steady-state
            # check); the journal's negative t counts back from a method start not yet known here.
            when = f"t={ctx.now():+6.1f}s" if ctx.method_started else f"warm-up {time.monotonic() - self.started:4.1f}s"
            self.progress(
                f"{when}  {phase:<18} faults: {', '.join(active) or 'none':<28} "
                f"rps {rps if rps is None else round(rps)}  errors {'-' if err is None else f'{err:.1%}'}"
            )
