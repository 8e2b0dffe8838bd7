"""Judging one check of a spec in one phase, from live queries and the run's samples."""

from __future__ import annotations

import json
import time
from datetime import timedelta

from paychaos.experiments.context import RunContext
from paychaos.experiments.sampling import SAMPLE_WINDOW, series_query
from paychaos.experiments.spec import Breaker, Check, EventualInvariant, KafkaLag, Recovery, SloBound
from paychaos.experiments.verdicts import (
    OPEN_SETTLE,
    CheckResult,
    Sample,
    bound_holds,
    bounds,
    first_time,
    judge_bound,
    judge_within,
    refused_while_open,
    settled_after,
    weighted_ratio,
)
from paychaos.probes.catalogue import CatalogueError, Slo
from paychaos.probes.invariants import LedgerUnavailable, check_invariants, engine_for, ledger_dsn
from paychaos.probes.prometheus import Prometheus, PrometheusUnavailable

STEADY_WINDOW = "30s"
GRACE = 2.0  # seconds of samples allowed past a deadline: Prometheus scrapes once a second


def faults_window(ctx: RunContext) -> tuple[float, float]:
    faults = ctx.experiment.spec.faults
    return min(f.at.total_seconds() for f in faults), max(f.ends_at.total_seconds() for f in faults)


def _wait_until(ctx: RunContext, t: float) -> None:
    while ctx.now() < t and ctx.stop_reason is None:
        time.sleep(0.2)


def judge(ctx: RunContext, check: Check, phase: str) -> list[CheckResult]:
    try:
        return _judge(ctx, check, phase)
    except (CatalogueError, PrometheusUnavailable, LedgerUnavailable) as exc:
        return [CheckResult(phase, check.kind, _name(check), "error", None, "", str(exc))]


def _name(check: Check) -> str:
    value = getattr(check, check.kind)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(value)
    return str(getattr(value, "name", None) or getattr(value, "slo", None) or check.kind)


def _judge(ctx: RunContext, check: Check, phase: str) -> list[CheckResult]:
    if isinstance(check.invariant, EventualInvariant):
        return judge_eventual_invariant(ctx, check.invariant, phase)
    if check.invariant is not None:
        names = [check.invariant] if isinstance(check.invariant, str) else check.invariant
        return judge_invariants(ctx, names, phase)
    start, end = faults_window(ctx)
    steady = phase.startswith("steadyState")
    window = (0.0, ctx.now()) if steady else ((start, end) if phase == "expect" else (end, ctx.now()))
    samples = ctx.samples()

    if check.slo is not None:
        name = check.slo if isinstance(check.slo, str) else check.slo.name
        slo = ctx.catalogue.slo(name)
        below, above, threshold = bounds(slo.objective if isinstance(check.slo, str) else check.slo)
        if steady:
            return [judge_slo_over(ctx.topology.prometheus_url, name, slo, (below, above, threshold), STEADY_WINDOW, phase)]
        hold = check.slo.for_.total_seconds() if isinstance(check.slo, SloBound) and check.slo.for_ else 0.0
        verdict, observed, detail = judge_bound(samples, f"slo:{name}", window[0], window[1], below, above, hold)
        if hold:
            threshold = f"{threshold} (breaches under {hold:g}s allowed)"
        return [CheckResult(phase, "slo", name, verdict, observed if observed is None else round(observed, 4), threshold,
                            detail, {"window": [window[0], window[1]], "query": slo.promql(SAMPLE_WINDOW)})]

    if check.breaker is not None:
        b = check.breaker
        results = []
        if b.opens_within is not None:
            within = b.opens_within.total_seconds()
            if phase == "expect":
                _wait_until(ctx, start + within + GRACE)
            delay = first_time(ctx.samples(), "breaker_open", start, lambda v: v >= 1, end)
            verdict, observed, detail = judge_within(delay, within, "breaker open")
            results.append(CheckResult(phase, "breaker", f"{b.name}.opens", verdict, observed, f"<= {within:g}s", detail,
                                       {"fault_start": start, "query": series_query("breaker_open"), "window": [start, end]}))
        if b.closes_within is not None:
            _wait_until(ctx, end + b.closes_within.total_seconds() + GRACE)
            results.append(judge_breaker_closes(ctx.samples(), end, b, phase))
        if b.fails_fast_below is not None:
            if phase == "expect":
                _wait_until(ctx, end)
            results.append(judge_fails_fast(ctx.samples(), start, end, b, phase))
        return results

    if check.recovery is not None:
        _wait_until(ctx, end + check.recovery.within.total_seconds() + GRACE)
        return [judge_recovery(ctx.samples(), end, check.recovery, ctx.catalogue.slo(check.recovery.slo), phase)]

    if check.kafka is not None:
        _wait_until(ctx, end + check.kafka.within.total_seconds() + GRACE)
        return [judge_lag(ctx.samples(), end, check.kafka, phase)]

    assert check.traffic is not None
    bound = check.traffic.success_ratio_above
    # Over every request of the window, not the worst second: at 20 requests a second one failed
    # request is a 95 % second. A burst that matters moves the whole window's ratio too.
    share = weighted_ratio(samples, "client_rps", "client_fail_ratio", window[0], window[1])
    evidence: dict[str, object] = {"source": "the load generator's per-second stats", "window": [window[0], window[1]]}
    if share is None:
        return [CheckResult(phase, "traffic", "success-ratio", "failed", None, f"> {bound:g}", "no client-side data", evidence)]
    failed_share, seconds = share
    ratio = 1 - failed_share
    return [CheckResult(phase, "traffic", "success-ratio", "passed" if ratio > bound else "failed", round(ratio, 4),
                        f"> {bound:g}", f"over every request of {seconds} seconds", evidence)]


def judge_breaker_closes(samples: list[Sample], revert: float, breaker: Breaker, phase: str) -> CheckResult:
    """No replica's breaker open within ``breaker.closesWithin`` of the revert."""
    assert breaker.closes_within is not None
    within = breaker.closes_within.total_seconds()
    delay = first_time(samples, "breaker_open", revert, lambda v: v == 0)
    verdict, observed, detail = judge_within(delay, within, "breaker closed on every replica")
    return CheckResult(phase, "breaker", f"{breaker.name}.closes", verdict, observed, f"<= {within:g}s", detail,
                       {"revert": revert, "query": series_query("breaker_open"), "window": [revert, revert + within]})


def judge_fails_fast(samples: list[Sample], start: float, end: float, breaker: Breaker, phase: str) -> CheckResult:
    """Refused card calls answered within ``breaker.failsFastBelow`` (median) at every second of
    the fault window when every replica's breaker had been open for a while."""
    assert breaker.fails_fast_below is not None
    bound = breaker.fails_fast_below.total_seconds()
    name, threshold = f"{breaker.name}.failsFast", f"median < {bound:g}s"
    evidence: dict[str, object] = {"query": series_query("card_fail_fast_p50"), "window": [start, end]}
    refused = refused_while_open(samples, start, end)
    if not refused:
        return CheckResult(phase, "breaker", name, "failed", None, threshold,
                           f"the breaker was never open on every replica for {OPEN_SETTLE:g}s", evidence)
    worst = max(v for _, v in refused)
    return CheckResult(phase, "breaker", name, "passed" if worst < bound else "failed", round(worst, 4), threshold,
                       f"worst of {len(refused)} seconds open everywhere", {**evidence, "seconds": [t for t, _ in refused]})


def judge_recovery(samples: list[Sample], revert: float, recovery: Recovery, slo: Slo, phase: str) -> CheckResult:
    """The SLO back within its objective within ``recovery.within`` of the revert (the sampled
    ``slo:<name>`` series)."""
    below, above, threshold = bounds(slo.objective)
    within = recovery.within.total_seconds()
    delay = first_time(samples, f"slo:{recovery.slo}", revert, lambda v: bound_holds(v, below, above))
    verdict, observed, detail = judge_within(delay, within, f"{recovery.slo} {threshold}")
    return CheckResult(phase, "recovery", recovery.slo, verdict, observed, f"<= {within:g}s", detail,
                       {"revert": revert, "query": slo.promql(SAMPLE_WINDOW), "window": [revert, revert + within]})


def judge_lag(samples: list[Sample], since: float, check: KafkaLag, phase: str) -> CheckResult:
    """Consumer lag back at or under the bound within ``check.within`` of ``since`` (the revert),
    and still there at the deadline: a backlog the relay flushes after the revert, or a consumer
    stuck behind a message, shows up late. ``samples`` must reach ``since + within``."""
    within = check.within.total_seconds()
    delay = settled_after(samples, "consumer_lag", since, lambda v: v <= check.lag_below, since + within + GRACE)
    verdict, observed, detail = judge_within(delay, within, f"consumer lag settled <= {check.lag_below}")
    return CheckResult(phase, "kafka", f"lag.{check.group}", verdict, observed, f"<= {within:g}s", detail,
                       {"since": since, "query": series_query("consumer_lag"), "window": [since, since + within]})


def judge_slo_over(
    prometheus_url: str, name: str, slo: Slo, bound: tuple[float | None, float | None, str], window: str, phase: str
) -> CheckResult:
    """An SLO over the last ``window`` (one query now), against ``bound`` as ``bounds()`` gives it."""
    below, above, threshold = bound
    with Prometheus(prometheus_url) as prom:
        query = slo.promql(window)
        value = prom.scalar(query)
    if value is None:
        return CheckResult(phase, "slo", name, "failed", None, threshold, "no data (is there traffic?)", {"query": query})
    ok = bound_holds(value, below, above)
    return CheckResult(phase, "slo", name, "passed" if ok else "failed", round(value, 4), threshold,
                       f"over the last {window}", {"query": query})


def judge_invariants(ctx: RunContext, names: list[str], phase: str) -> list[CheckResult]:
    queries = {n: ctx.catalogue.invariant(n) for n in names}
    acknowledged = _acknowledged(ctx)
    engine = engine_for(ledger_dsn(ctx.topology.postgres_dsn))
    try:
        found = check_invariants(engine, queries, acknowledged)
    finally:
        engine.dispose()
    return [
        CheckResult(phase, "invariant", r.name, "passed" if r.holds else "failed", r.violations, "0 violating rows",
                    "holds" if r.holds else f"{r.violations} violating rows",
                    {"sample": r.sample, "acknowledged": len(acknowledged), "query": queries[r.name].strip()})
        for r in found
    ]


EVENTUAL_RETRY = 1.0  # seconds between two judgements of an invariant that is still converging


def judge_eventual_invariant(ctx: RunContext, check: EventualInvariant, phase: str) -> list[CheckResult]:
    """Judge again until the invariant holds or ``within`` has passed since this phase began.

    The phase begins after the revert (``after``) or at the end (``steadyState.after``), so the
    bound reads as "converged within 30 s of the fault being gone"."""
    started = time.monotonic()
    within = check.within.total_seconds()
    while True:
        (result,) = judge_invariants(ctx, [check.name], phase)
        waited = time.monotonic() - started
        if result.verdict == "passed" or waited >= within or ctx.stop_reason is not None:
            break
        time.sleep(min(EVENTUAL_RETRY, within - waited))
    result.threshold = f"0 violating rows within {within:g}s"
    result.detail = f"held after {waited:.1f}s" if result.verdict == "passed" else f"{result.observed} violating rows after {waited:.1f}s"
    result.evidence["waited"] = round(waited, 2)
    return [result]


def _acknowledged(ctx: RunContext) -> list[tuple[str, str]]:
    path = getattr(ctx.load, "acknowledged_path", None)
    if path is None or not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record.get("status") == "completed" and record.get("payment_id"):
            rows.append((str(record.get("key", "")), str(record["payment_id"])))
    return rows
