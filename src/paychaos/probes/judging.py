"""Judging one check of a spec in one phase, from live queries and the run's samples.

A judge reads the run through ``Run`` (what has been sampled, the clock, the endpoints, the
catalogue): the engine's run context is one, a unit test's fake another. The verdict rules
themselves (``probes.verdicts``) are pure. ``JUDGES`` holds one judge per check kind.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from paychaos.experiments.spec import Breaker, ChaosExperiment, Check, EventualInvariant, KafkaLag, Recovery, SloBound
from paychaos.load.answers import STOPPED
from paychaos.probes.catalogue import Catalogue, CatalogueError, Slo, requests_needed
from paychaos.probes.invariants import (
    Acknowledged, InvariantResult, LedgerUnavailable, check_invariants, engine_for, ledger_dsn,
)
from paychaos.probes.prometheus import Prometheus, PrometheusUnavailable
from paychaos.probes.series import SAMPLE_WINDOW, Vocabulary, breaker_key, fill, lag_key
from paychaos.probes.verdicts import (
    OPEN_SETTLE,
    CheckResult,
    Sample,
    Verdict,
    bound_holds,
    bounds,
    first_time,
    judge_bound,
    judge_within,
    margin,
    refused_while_open,
    settled_after,
    surely_breached,
    weighted_ratio,
)


class Endpoints(Protocol):
    @property
    def prometheus_url(self) -> str: ...
    @property
    def ledger_dsn(self) -> str | None: ...


class BreakerSettings(Protocol):
    def calls_to_open(self, breaker: str) -> int | None: ...


class Run(Protocol):
    """What a judge reads of the run it judges (read only)."""

    @property
    def experiment(self) -> ChaosExperiment: ...
    @property
    def catalogue(self) -> Catalogue: ...
    @property
    def endpoints(self) -> Endpoints: ...
    @property
    def target(self) -> BreakerSettings: ...
    @property
    def method_started(self) -> float | None: ...
    @property
    def stop_reason(self) -> str | None: ...
    @property
    def timeline(self) -> list[Any]:
        """Events, each with .event (its name) and .wall (``time.time()``)."""
        ...
    @property
    def load(self) -> Any:
        """The load runner, where its client records are (None without load)."""
        ...

    def now(self) -> float:
        """Seconds since the method started."""
        ...

    def started_at(self) -> float:
        """The wall-clock time the method started (``time.time()``)."""
        ...

    def samples(self) -> list[Sample]:
        """The samples so far, ``t`` in seconds since the method started."""
        ...


STEADY_WINDOW = "30s"
GRACE = 2.0  # seconds of samples allowed past a deadline: Prometheus scrapes once a second
CLOCK_SLACK = 1.0  # seconds a pass must still have had when refused to count as a cut flow


def faults_window(ctx: Run) -> tuple[float, float]:
    faults = ctx.experiment.spec.faults
    return min(f.at.total_seconds() for f in faults), max(f.ends_at.total_seconds() for f in faults)


def _wait_until(ctx: Run, t: float) -> None:
    while ctx.now() < t and ctx.stop_reason is None:
        time.sleep(0.2)


def judge(ctx: Run, check: Check, phase: str) -> list[CheckResult]:
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


def _judge(ctx: Run, check: Check, phase: str) -> list[CheckResult]:
    return JUDGES[check.kind](ctx, check, phase)


def _window(ctx: Run, phase: str) -> tuple[float, float]:
    """The seconds a check of ``phase`` judges: the whole run so far for the steady state, the
    faults' window for expect, from the last revert on for after."""
    start, end = faults_window(ctx)
    if phase.startswith("steadyState"):
        return 0.0, ctx.now()
    return (start, end) if phase == "expect" else (end, ctx.now())


def _judge_invariant(ctx: Run, check: Check, phase: str) -> list[CheckResult]:
    if isinstance(check.invariant, EventualInvariant):
        return judge_eventual_invariant(ctx, check.invariant, phase)
    assert check.invariant is not None
    names = [check.invariant] if isinstance(check.invariant, str) else check.invariant
    return judge_invariants(ctx, names, phase)


def _judge_slo(ctx: Run, check: Check, phase: str) -> list[CheckResult]:
    assert check.slo is not None
    name = check.slo if isinstance(check.slo, str) else check.slo.name
    slo = ctx.catalogue.slo(name)
    bound = bounds(slo.objective if isinstance(check.slo, str) else check.slo)
    if phase.startswith("steadyState"):
        return [judge_steady_slo(ctx, name, slo, bound, phase)]
    hold = check.slo.for_.total_seconds() if isinstance(check.slo, SloBound) and check.slo.for_ else 0.0
    return [judge_slo_window(ctx, name, slo, bound, _window(ctx, phase), hold, phase)]


def _judge_breaker(ctx: Run, check: Check, phase: str) -> list[CheckResult]:
    b = check.breaker
    assert b is not None
    start, end = faults_window(ctx)
    results = []
    if b.opens_within is not None:
        if phase == "expect":
            _wait_until(ctx, start + b.opens_within.total_seconds() + GRACE)
        results.append(judge_breaker_opens(ctx, b, start, end, phase))
    if b.closes_within is not None:
        _wait_until(ctx, end + b.closes_within.total_seconds() + GRACE)
        results.append(judge_breaker_closes(ctx.samples(), end, b, phase, ctx.catalogue.vocabulary))
    if b.fails_fast_below is not None:
        if phase == "expect":
            _wait_until(ctx, end)
        results.append(judge_fails_fast(ctx.samples(), start, end, b, phase, ctx.catalogue.vocabulary))
    return results


def _judge_recovery(ctx: Run, check: Check, phase: str) -> list[CheckResult]:
    assert check.recovery is not None
    end = faults_window(ctx)[1]
    _wait_until(ctx, end + check.recovery.within.total_seconds() + GRACE)
    return [judge_recovery(ctx.samples(), end, check.recovery, ctx.catalogue.slo(check.recovery.slo), phase)]


def _judge_kafka(ctx: Run, check: Check, phase: str) -> list[CheckResult]:
    assert check.kafka is not None
    end = faults_window(ctx)[1]
    _wait_until(ctx, end + check.kafka.within.total_seconds() + GRACE)
    return [judge_lag(ctx.samples(), end, check.kafka, phase, ctx.catalogue.vocabulary)]


def _judge_traffic(ctx: Run, check: Check, phase: str) -> list[CheckResult]:
    assert check.traffic is not None
    results = []
    if check.traffic.flows_cut_at_most is not None:
        results.append(judge_flows_cut(_refusals(ctx), check.traffic.flows_cut_at_most, phase))
    if check.traffic.payments_answered_within is not None:
        results.append(judge_payments_answered(_client_records(ctx), _load_record(ctx, "unanswered"),
                                               check.traffic.payments_answered_within.total_seconds(), phase))
    bound = check.traffic.success_ratio_above
    if bound is None:
        return results
    return [*results, judge_success_ratio(ctx.samples(), _window(ctx, phase), bound, phase)]


def judge_success_ratio(samples: list[Sample], window: tuple[float, float], bound: float, phase: str) -> CheckResult:
    """The app's success ratio over every request of the window, not the worst second: at 20
    requests a second one failed request is a 95 % second, and a burst that matters moves the
    whole window's ratio too. Like an SLO's ratio, it says nothing over fewer requests than the
    bound needs (above 0.95 needs 20: one failure in fewer already breaks it): inconclusive then,
    unless the ratio is so low that its 95 % interval breaks the bound too."""
    share = weighted_ratio(samples, "client_rps", "client_fail_ratio", window[0], window[1])
    threshold = f"> {bound:g}"
    evidence: dict[str, object] = {"source": "the load generator's per-second stats", "window": [window[0], window[1]]}
    if share is None:
        return CheckResult(phase, "traffic", "success-ratio", "failed", None, threshold, "no client-side data", evidence)
    failed_share, seconds, requests = share
    ratio = 1 - failed_share
    needed = requests_needed(None, None, bound, "ratio")
    evidence.update(requests=round(requests), requestsNeeded=needed)
    if round(requests) < needed:
        interval = surely_breached(ratio, round(requests), None, bound)
        if interval is None:
            return CheckResult(phase, "traffic", "success-ratio", "inconclusive", round(ratio, 4), threshold,
                               f"only about {requests:.0f} requests in {seconds} seconds, and a success ratio above "
                               f"{bound:g} needs at least {needed} to say anything: send more traffic (load.baselineRps) "
                               "or judge a longer window", evidence)
        evidence["interval95"] = list(interval)
    return CheckResult(phase, "traffic", "success-ratio", "passed" if ratio > bound else "failed", round(ratio, 4),
                       threshold, f"over every request of {seconds} seconds (about {requests:.0f})", evidence,
                       margin(ratio, above=bound))


# The judge of each check kind (spec.CHECK_KINDS; a unit test holds them to it).
JUDGES: dict[str, Callable[[Run, Check, str], list[CheckResult]]] = {
    "slo": _judge_slo,
    "invariant": _judge_invariant,
    "breaker": _judge_breaker,
    "recovery": _judge_recovery,
    "kafka": _judge_kafka,
    "traffic": _judge_traffic,
}


def judge_flows_cut(refusals: list[dict[str, Any]], at_most: int, phase: str) -> CheckResult:
    """Flow continuity from the phone's side: a refusal for rotation while the phone held a pass
    the platform said was still valid cut a flow halfway. With no rotation refusal at all,
    admission never restricted anyone and continuity was not tested: inconclusive."""
    rotated = [r for r in refusals if r.get("reason") == "rotated_out"]
    cut = [r for r in rotated if r.get("passExpires") is not None and float(r["passExpires"]) > float(r["at"]) + CLOCK_SLACK]
    by_reason: dict[str, int] = {}
    for r in refusals:
        by_reason[str(r.get("reason"))] = by_reason.get(str(r.get("reason")), 0) + 1
    evidence: dict[str, object] = {"source": "the load's refusal record", "refusals": by_reason,
                                   "devicesRotatedOut": len({r.get("device") for r in rotated}),
                                   "cut": [{k: r.get(k) for k in ("device", "route", "at", "passExpires")} for r in cut[:5]]}
    threshold = f"<= {at_most}"
    if not rotated:
        return CheckResult(phase, "traffic", "flows-cut", "inconclusive", 0, threshold,
                           "admission refused no phone for rotation, so no flow met a restriction: restrict "
                           "admission (admissionRestriction) under enough new arrivals", evidence)
    verdict = "passed" if len(cut) <= at_most else "failed"
    detail = (f"{len(cut)} refusals of phones holding a valid pass, of {len(rotated)} rotation refusals "
              f"({len({r.get('device') for r in cut})} phones cut mid-flow)")
    return CheckResult(phase, "traffic", "flows-cut", verdict, len(cut), threshold, detail, evidence, float(at_most - len(cut)))


def judge_payments_answered(acknowledged: list[dict[str, Any]], unanswered: list[dict[str, Any]], within: float,
                            phase: str) -> CheckResult:
    """Every payment the app made had its answer within ``within`` of its first attempt, however
    many attempts it took: what a user whose payment was cut in half waits. Every payment, not
    only the ones the app retried: a load balancer may resend a cut request itself (HAProxy's
    ``retry-on empty-response``), and the user then waits on one slow attempt. Read from the
    load's complete record (judged once the load has stopped). A payment the app gave up on while
    the platform still said "try again" was never answered: failed, however soon it gave up. One
    still being retried when the load stopped counts only once it had waited longer than the
    bound. Whether a payment was cut at all is the server's to say (the takeovers exercise)."""
    threshold = f"<= {within:g}s"
    by_key: dict[object, dict[str, Any]] = {}
    pending = 0
    for n, record in enumerate([*acknowledged, *unanswered]):
        if record.get("firstSent") is None:
            continue  # recorded by a load that did not time its attempts
        waited = round(float(record["at"]) - float(record["firstSent"]), 3)
        if record.get("code") == STOPPED and waited <= within:
            pending += 1  # neither late nor answered yet when the load stopped
            continue
        answered = not record.get("gaveUp") and record.get("code") != STOPPED
        wait = {"key": record.get("key"), "waited": waited, "answered": answered,
                "attempts": int(record.get("attempts", 1)), "tries": record.get("tries")}
        # Both taps of a double tap are recorded under one key: the payment is the slower of them.
        key = record.get("key") or n
        if key not in by_key or (answered, -waited) < (by_key[key]["answered"], -by_key[key]["waited"]):
            by_key[key] = wait
    waits = list(by_key.values())
    retried = sum(1 for w in waits if w["attempts"] > 1)
    evidence: dict[str, object] = {"source": "the load's client records (acknowledged, unanswered)", "payments": len(waits),
                                   "retried": retried, "pendingWhenStopped": pending}
    if not waits:
        return CheckResult(phase, "traffic", "payments-answered", "inconclusive", None, threshold,
                           "no payment was answered or given up on"
                           + (f" ({pending} still within the bound when the load stopped)" if pending else "")
                           + ": send payments (load.paymentShare) through the fault", evidence)
    waits.sort(key=lambda w: (w["answered"], -w["waited"]))  # never answered first, then the slowest
    late = [w for w in waits if not w["answered"] or w["waited"] > within]
    slowest = max(w["waited"] for w in waits)
    evidence["slowest"] = waits[:5]
    counted = f"{len(waits)} payments ({retried} retried by the app)"
    if late:
        never = sum(1 for w in late if not w["answered"])
        detail = (f"{len(late)} of {counted} waited longer than {within:g}s for an answer"
                  + (f", {never} of them never answered (the app gave up or the load stopped)" if never else "")
                  + f"; the slowest waited {slowest:g}s from its first attempt")
        # A payment never answered has no wait to measure a margin by, however soon the app gave up.
        return CheckResult(phase, "traffic", "payments-answered", "failed", slowest, threshold, detail, evidence,
                           margin(slowest, below=within) if slowest > within else None)
    return CheckResult(phase, "traffic", "payments-answered", "passed", slowest, threshold,
                       f"every one of {counted} answered within {slowest:g}s of its first attempt",
                       evidence, margin(slowest, below=within))


def _refusals(ctx: Run) -> list[dict[str, Any]]:
    return _load_record(ctx, "refusals")


def _load_record(ctx: Run, kind: str) -> list[dict[str, Any]]:
    """One of the load's records so far (``refusals``, ``unanswered``): the workers' parts while a
    distributed load runs (the merged file appears only when it stops), else the single file."""
    path = getattr(ctx.load, f"{kind}_path", None)
    if path is None:
        return []
    parts = sorted(path.parent.glob(f"{kind}.*.jsonl"))
    return [r for p in (parts or [path]) for r in _read_jsonl(p)]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a file still being written: a line not finished yet is left for the next read."""
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def judge_slo_window(
    ctx: Run, name: str, slo: Slo, bound: tuple[float | None, float | None, str], window: tuple[float, float],
    hold: float, phase: str,
) -> CheckResult:
    """An SLO over a phase's window. Without ``for:`` it is one value over every request of the
    window (the p99 of the fault window, not the worst of its 5-second slices, which for a few
    payments a second is the slowest payment). With ``for:`` the per-second samples must break
    the bound for that long on end, as an alert would. Either way the window must hold enough
    requests for the bound to mean anything, or the check is inconclusive."""
    below, above, threshold = bound
    start, end = window
    span = f"{max(1, round(end - start))}s"
    at = ctx.started_at() + end
    evidence: dict[str, object] = {"window": [start, end]}
    with Prometheus(ctx.endpoints.prometheus_url) as prom:
        # Advice whatever the verdict, per-second (for:) and thin windows too: their quantiles are
        # interpolated inside the same buckets.
        inside = bound_inside_bucket(prom, slo, below if below is not None else above, at)
        if inside is not None:
            evidence["bucket"] = inside
        thin = too_few_requests(prom, slo, span, at, below, above, evidence)
        if thin is not None and not hold:
            return _judge_thin(prom, name, slo, span, at, bound, thin, evidence, phase)
        if thin is not None:
            return CheckResult(phase, "slo", name, "inconclusive", None, threshold, thin, evidence)
        if hold:
            verdict, observed, detail = judge_bound(ctx.samples(), f"slo:{name}", start, end, below, above, hold)
            threshold = f"{threshold} (breaches under {hold:g}s allowed)"
            evidence["query"] = slo.promql(SAMPLE_WINDOW)
        else:
            evidence["query"] = slo.promql(span)
            observed = prom.scalar(slo.promql(span), at=at)
            if observed is None:
                verdict, detail = "failed", f"no data between {start:.0f}s and {end:.0f}s"
            else:
                verdict = "passed" if bound_holds(observed, below, above) else "failed"
                detail = f"over every request of the {span} window"
        if inside is not None:
            detail = f"{detail}; {inside}"
    observed = observed if observed is None else round(observed, 4)
    return CheckResult(phase, "slo", name, verdict, observed, threshold, detail, evidence, margin(observed, below, above))


#: A histogram's bucket series in an SLO's query, with its label selector.
_BUCKETS = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*_bucket(\{[^}]*\})?")


def bound_inside_bucket(prom: Prometheus, slo: Slo, bound: float | None, at: float | None) -> str | None:
    """For a latency quantile: where its bound falls between two bucket boundaries of the histogram
    it reads, which bucket, and what to do. histogram_quantile interpolates inside a bucket, so a
    value near such a bound is a guess (inside (2.5, 5], a p99 of 3.05 s read 2.57 s and passed
    "below 3 s"). None on a boundary, or when the query reads no histogram or it has no data."""
    match = _BUCKETS.search(slo.query)
    if not slo.quantile or bound is None or match is None:
        return None
    try:
        answer = prom.vector(f"count by (le) ({match.group(0)})", at=at)
    except PrometheusUnavailable:
        return None  # advice only: the verdict never depends on it
    edges = sorted({float(labels["le"]) for labels, _ in answer if "le" in labels})
    if not edges or any(math.isclose(edge, bound) for edge in edges):
        return None
    lower = max((edge for edge in edges if edge < bound), default=0.0)
    upper = min((edge for edge in edges if edge > bound), default=math.inf)
    return (f"the bound {bound:g} s lies inside the histogram's bucket ({lower:g}, {upper:g}], where "
            f"histogram_quantile interpolates: a value near the bound is a guess; give the histogram a "
            f"bucket boundary at {bound:g} s")


def too_few_requests(
    prom: Prometheus, slo: Slo, window: str, at: float | None, below: float | None, above: float | None,
    evidence: dict[str, object],
) -> str | None:
    """Why the window is too thin to judge ``slo`` on, or None; the request count goes in ``evidence``."""
    query = slo.volume_promql(window)
    if query is None:
        evidence["requests"] = "unknown: the catalogue gives this SLO no volume query"
        return None
    seen = prom.scalar(query, at=at) or 0.0
    needed = slo.needed(below, above)
    evidence.update(requests=round(seen), requestsNeeded=needed, volumeQuery=query)
    if seen >= needed:
        return None
    what = f"a p{slo.quantile * 100:g}" if slo.quantile else "this bound"
    return (f"only {seen:.0f} requests in the {window} window, and {what} needs at least {needed} to say anything: "
            "send more traffic (load.baselineRps, load.paymentShare) or judge a longer window")


def _judge_thin(prom: Prometheus, name: str, slo: Slo, window: str, at: float | None,
                bound: tuple[float | None, float | None, str], thin: str, evidence: dict[str, object], phase: str) -> CheckResult:
    """An SLO over a window holding fewer requests than its bound needs: inconclusive, unless it
    is a ratio so far off that its 95 % interval breaks the bound too (then failed). What was seen
    goes in the evidence either way."""
    below, above, threshold = bound
    value = prom.scalar(slo.promql(window), at=at)
    evidence["observedOverTooFewRequests"] = None if value is None else round(value, 4)
    seen = evidence.get("requests")
    if value is not None and slo.unit == "ratio" and isinstance(seen, int):
        interval = surely_breached(value, seen, below, above)
        if interval is not None:
            evidence["interval95"] = list(interval)
            return CheckResult(phase, "slo", name, "failed", round(value, 4), threshold,
                               f"{value:.4g} over only {seen} requests, too few to show the bound holds but enough to "
                               f"show it broken: its 95 % interval is {interval[0]:.4g}–{interval[1]:.4g}",
                               evidence, margin(value, below, above))
    return CheckResult(phase, "slo", name, "inconclusive", None, threshold, thin, evidence)


INERT_STATES = {"disabled", "forced_open", "metrics_only"}  # states in which failures never trip it

SERIES_FILE_HINT = "the series vocabulary (probes/series.yaml, or the target file's series)"


def _sampled(vocabulary: Vocabulary, key: str) -> str | None:
    """The query behind a sampled key (the check's evidence); None when the vocabulary has none."""
    return vocabulary.sampled(SAMPLE_WINDOW).get(key)


def judge_breaker_opens(ctx: Run, breaker: Breaker, start: float, end: float, phase: str) -> CheckResult:
    """Some replica's breaker open within ``breaker.opensWithin`` of the fault's start.

    A breaker that stayed closed failed only if it had the chance: if no replica's breaker
    recorded the calls it needs to trip (``callsToOpen``) while the fault was on, the traffic
    never tested it, and the check is inconclusive. A breaker switched off (disabled, forced,
    metrics only) has failed whatever the traffic."""
    assert breaker.opens_within is not None
    within = breaker.opens_within.total_seconds()
    key = breaker_key("open", breaker.name)
    delay = first_time(ctx.samples(), key, start, lambda v: v >= 1, end)
    verdict, observed, detail = judge_within(delay, within, "breaker open")
    vocabulary = ctx.catalogue.vocabulary
    evidence: dict[str, object] = {"fault_start": start, "query": _sampled(vocabulary, key), "window": [start, end]}
    queries = vocabulary.breaker(breaker.name)
    if delay is None and (queries is None or queries.calls is None or queries.states is None):
        verdict, detail = "inconclusive", (f"breaker open not observed, and {SERIES_FILE_HINT} gives no calls or states "
                                          f"series for breaker {breaker.name!r} to tell whether it had the chance")
    elif delay is None:
        needed = breaker.calls_to_open or ctx.target.calls_to_open(breaker.name)
        deadline = min(end, start + within)
        span = f"{max(1, round(deadline - start))}s"
        calls_query = fill(queries.calls, name=breaker.name, window=span)  # type: ignore[union-attr,arg-type]
        with Prometheus(ctx.endpoints.prometheus_url) as prom:
            calls = {_replica(labels): round(v) for labels, v in prom.vector(calls_query, at=ctx.started_at() + deadline)}
            states = {_replica(labels): labels.get("state", "") for labels, _ in
                      prom.vector(fill(queries.states, name=breaker.name), at=ctx.started_at() + deadline)}  # type: ignore[union-attr,arg-type]
        evidence.update(callsPerReplica=calls, callsToOpen=needed, callsQuery=calls_query, states=states)
        verdict, detail = why_still_closed(calls, states, needed, span)
    return CheckResult(phase, "breaker", f"{breaker.name}.opens", verdict, observed, f"<= {within:g}s", detail,
                       evidence, margin(observed, below=within))


def why_still_closed(calls: dict[str, int], states: dict[str, str], needed: int | None, span: str) -> tuple[Verdict, str]:
    """The verdict on a breaker no replica opened: failed if it was switched off or some replica
    saw the ``needed`` calls under the fault; otherwise it never had the chance (inconclusive).
    ``needed`` None: neither the spec nor the target says how many calls trip it, so whether it
    had the chance cannot be told (inconclusive, unless it cannot open at all)."""
    inert = sorted(f"{replica} {state}" for replica, state in states.items() if state in INERT_STATES)
    if inert:
        return "failed", f"breaker open not observed: it cannot open, being {', '.join(inert)}"
    busiest, most = max(calls.items(), key=lambda kv: kv[1], default=("no replica", 0))
    if needed is None:
        return "inconclusive", (f"breaker open not observed ({most} calls at most, {busiest}, in the {span} after the "
                                "fault began), and nothing says how many calls trip it: give callsToOpen")
    if most >= needed:
        return "failed", f"breaker open not observed, though {busiest} saw {most} calls in the {span} after the fault began"
    return "inconclusive", (
        f"no replica's breaker saw the {needed} calls it needs to open in the {span} after the fault began "
        f"(most: {most}, {busiest}): send more traffic through it (load.paymentShare, load.baselineRps), "
        "or give callsToOpen if the breaker's settings differ")


def _replica(labels: dict[str, str]) -> str:
    """A replica's name from its series' labels: its replica or pod label, else the instance scraped."""
    return labels.get("replica") or labels.get("pod") or labels.get("instance") or ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def judge_breaker_closes(samples: list[Sample], revert: float, breaker: Breaker, phase: str,
                         vocabulary: Vocabulary) -> CheckResult:
    """No replica's breaker open within ``breaker.closesWithin`` of the revert."""
    assert breaker.closes_within is not None
    within = breaker.closes_within.total_seconds()
    key = breaker_key("open", breaker.name)
    delay = first_time(samples, key, revert, lambda v: v == 0)
    verdict, observed, detail = judge_within(delay, within, "breaker closed on every replica")
    return CheckResult(phase, "breaker", f"{breaker.name}.closes", verdict, observed, f"<= {within:g}s", detail,
                       {"revert": revert, "query": _sampled(vocabulary, key), "window": [revert, revert + within]},
                       margin(observed, below=within))


def judge_fails_fast(samples: list[Sample], start: float, end: float, breaker: Breaker, phase: str,
                     vocabulary: Vocabulary) -> CheckResult:
    """Calls the breaker refused answered within ``breaker.failsFastBelow`` (median) at every
    second of the fault window when every replica's breaker had been open for a while."""
    assert breaker.fails_fast_below is not None
    bound = breaker.fails_fast_below.total_seconds()
    name, threshold = f"{breaker.name}.failsFast", f"median < {bound:g}s"
    query = _sampled(vocabulary, breaker_key("fails_fast", breaker.name))
    if query is None:
        return CheckResult(phase, "breaker", name, "error", None, threshold,
                           f"{SERIES_FILE_HINT} gives no failsFast series for breaker {breaker.name!r}: "
                           "add the latency of the calls it refuses, as its callers see them")
    evidence: dict[str, object] = {"query": query, "window": [start, end]}
    refused = refused_while_open(samples, start, end, breaker.name)
    if not refused:
        # Nothing to judge fail-fast on: whether the breaker opens at all is opensWithin's to say.
        return CheckResult(phase, "breaker", name, "inconclusive", None, threshold,
                           f"the breaker was never open on every replica for {OPEN_SETTLE:g}s with refused "
                           "calls to time: send more traffic through it, or hold the fault longer", evidence)
    worst = max(v for _, v in refused)
    return CheckResult(phase, "breaker", name, "passed" if worst < bound else "failed", round(worst, 4), threshold,
                       f"worst of {len(refused)} seconds open everywhere", {**evidence, "seconds": [t for t, _ in refused]},
                       margin(worst, below=bound))


def judge_recovery(samples: list[Sample], revert: float, recovery: Recovery, slo: Slo, phase: str) -> CheckResult:
    """The SLO back within its objective within ``recovery.within`` of the revert (the sampled
    ``slo:<name>`` series)."""
    below, above, threshold = bounds(slo.objective)
    within = recovery.within.total_seconds()
    delay = first_time(samples, f"slo:{recovery.slo}", revert, lambda v: bound_holds(v, below, above))
    verdict, observed, detail = judge_within(delay, within, f"{recovery.slo} {threshold}")
    return CheckResult(phase, "recovery", recovery.slo, verdict, observed, f"<= {within:g}s", detail,
                       {"revert": revert, "query": slo.promql(SAMPLE_WINDOW), "window": [revert, revert + within]},
                       margin(observed, below=within))


def judge_lag(samples: list[Sample], since: float, check: KafkaLag, phase: str, vocabulary: Vocabulary) -> CheckResult:
    """Consumer lag back at or under the bound within ``check.within`` of ``since`` (the revert),
    and still there at the deadline: a backlog the relay flushes after the revert, or a consumer
    stuck behind a message, shows up late. ``samples`` must reach ``since + within``."""
    within = check.within.total_seconds()
    key = lag_key(check.group)
    delay = settled_after(samples, key, since, lambda v: v <= check.lag_below, since + within + GRACE)
    verdict, observed, detail = judge_within(delay, within, f"consumer lag settled <= {check.lag_below}")
    return CheckResult(phase, "kafka", f"lag.{check.group}", verdict, observed, f"<= {within:g}s", detail,
                       {"since": since, "query": _sampled(vocabulary, key), "window": [since, since + within]},
                       margin(observed, below=within))


def judge_slo_over(
    prometheus_url: str, name: str, slo: Slo, bound: tuple[float | None, float | None, str], window: str, phase: str,
    at: float | None = None,
) -> CheckResult:
    """An SLO over the last ``window`` (one query, now or at the Unix time ``at``), against
    ``bound`` as ``bounds()`` gives it; inconclusive when the window holds too few requests."""
    below, above, threshold = bound
    query = slo.promql(window)
    evidence: dict[str, object] = {"query": query, **({"at": round(at, 3)} if at is not None else {})}
    with Prometheus(prometheus_url) as prom:
        thin = too_few_requests(prom, slo, window, at, below, above, evidence)
        if thin is not None:
            return _judge_thin(prom, name, slo, window, at, bound, thin, evidence, phase)
        value = prom.scalar(query, at=at)
    if value is None:
        return CheckResult(phase, "slo", name, "failed", None, threshold, "no data (is there traffic?)", evidence)
    ok = bound_holds(value, below, above)
    return CheckResult(phase, "slo", name, "passed" if ok else "failed", round(value, 4), threshold,
                       f"over the last {window}", evidence, margin(value, below, above))


STEADY_EVIDENCE_WAIT = 30.0  # seconds a steady-state SLO waits for enough requests to judge


def judge_steady_slo(
    ctx: Run, name: str, slo: Slo, bound: tuple[float | None, float | None, str], phase: str
) -> CheckResult:
    """The steady state over the last 30 s of traffic: before the faults, while the load is young
    (the window still holds too few requests) it waits for more rather than judge thin evidence,
    for at most 30 s; after them, it is the load's last 30 s (the checks after the revert may
    have outlasted the load)."""
    stopped = next((e.wall for e in ctx.timeline if e.event == "load-stopped"), None)
    load = ctx.experiment.spec.load
    if stopped is not None and load is not None and ctx.method_started is not None:
        # The load's profile ends on its own at its duration (counted from the method start);
        # the stop-load step may come later, after checks that waited for the recovery.
        stopped = min(stopped, ctx.method_started + load.duration.total_seconds())
    waited_until = time.monotonic() + STEADY_EVIDENCE_WAIT
    while True:
        result = judge_slo_over(ctx.endpoints.prometheus_url, name, slo, bound, STEADY_WINDOW, phase, at=stopped)
        if result.verdict != "inconclusive" or time.monotonic() >= waited_until or ctx.stop_reason is not None:
            return result
        time.sleep(1.0)


def judge_invariants(ctx: Run, names: list[str], phase: str) -> list[CheckResult]:
    queries = {n: ctx.catalogue.invariant(n) for n in names}
    acknowledged = _acknowledged(ctx)
    engine = engine_for(ledger_dsn(ctx.endpoints.ledger_dsn))
    try:
        found = check_invariants(engine, queries, acknowledged)
    finally:
        engine.dispose()
    return [judge_invariant(phase, r, queries[r.name], len(acknowledged)) for r in found]


def judge_invariant(phase: str, found: InvariantResult, query: str, acknowledged: int) -> CheckResult:
    """Violating rows fail it. An invariant over the payments the app was told completed (it reads
    the ``acknowledged`` table) holds on an empty record whatever the stack did: inconclusive."""
    if not found.holds:
        verdict, detail = "failed", f"{found.violations} violating rows"
    elif not acknowledged and reads_acknowledged(query):
        verdict, detail = "inconclusive", "no payment the load was told completed, so nothing for it to judge"
    else:
        verdict, detail = "passed", "holds"
    evidence = {"sample": found.sample, "acknowledged": acknowledged, "query": query.strip()}
    return CheckResult(phase, "invariant", found.name, verdict, found.violations, "0 violating rows", detail, evidence)


def reads_acknowledged(query: str) -> bool:
    """Whether an invariant's SQL reads the temporary table of acknowledged payments (comments aside)."""
    return re.search(r"\backnowledged\b", re.sub(r"--[^\n]*", "", query), re.IGNORECASE) is not None


EVENTUAL_RETRY = 1.0  # seconds between two judgements of an invariant that is still converging


def judge_eventual_invariant(ctx: Run, check: EventualInvariant, phase: str) -> list[CheckResult]:
    """Judge again until the invariant holds or ``within`` has passed since this phase began.

    The phase begins after the revert (``after``) or at the end (``steadyState.after``), so the
    bound reads as "converged within 30 s of the fault being gone"."""
    started = time.monotonic()
    within = check.within.total_seconds()
    while True:
        (result,) = judge_invariants(ctx, [check.name], phase)
        waited = time.monotonic() - started
        if result.verdict in ("passed", "inconclusive") or waited >= within or ctx.stop_reason is not None:
            break
        time.sleep(min(EVENTUAL_RETRY, within - waited))
    result.threshold = f"0 violating rows within {within:g}s"
    if result.verdict == "passed":
        result.detail = f"held after {waited:.1f}s"
    elif result.verdict == "failed":
        result.detail = f"{result.observed} violating rows after {waited:.1f}s"
    result.evidence["waited"] = round(waited, 2)
    return [result]


def _client_records(ctx: Run) -> list[dict[str, Any]]:
    """The load's record of what the app was told is final, one dict per answer."""
    return _load_record(ctx, "acknowledged")


def _acknowledged(ctx: Run) -> list[Acknowledged]:
    """Completed payments as the invariants join them; both taps of a double tap answered with
    the same payment are one row (two payments for one key are two rows, and a violation)."""
    rows: dict[tuple[str, str], Acknowledged] = {}
    for record in _client_records(ctx):
        if record.get("status") == "completed" and record.get("payment_id"):
            key, payment = str(record.get("key", "")), str(record["payment_id"])
            rows[(key, payment)] = (key, payment, str(record.get("user", "")), int(record.get("amount", 0)))
    return list(rows.values())


def judge_exercises(ctx: Run, wanted: dict[str, int], phase: str) -> list[CheckResult]:
    """How often the run walked each path the spec says it must (from the method start until now,
    or from the first fault's injection for an exercise counted from the fault); fewer than asked
    is inconclusive: the checks guarding that path saw nothing to judge."""
    out = []
    with Prometheus(ctx.endpoints.prometheus_url) as prom:
        for name, needed in wanted.items():
            try:
                exercise = ctx.catalogue.exercise(name)
                if exercise.client is not None:
                    count: float | None = _client_count(ctx, exercise.client)
                    evidence: dict[str, object] = {"source": f"the load's client record ({exercise.client})"}
                else:
                    from_fault = exercise.counted_from == "fault" and ctx.experiment.spec.faults
                    start = faults_window(ctx)[0] if from_fault else 0.0
                    query = exercise.query(f"{max(1, round(ctx.now() - start))}s")
                    count = prom.scalar(query)
                    evidence = {"query": query, "window": [start, round(ctx.now(), 1)]}
            except (CatalogueError, PrometheusUnavailable) as exc:
                out.append(CheckResult(phase, "exercise", name, "error", None, f">= {needed}", str(exc)))
                continue
            out.append(judge_exercised(phase, name, needed, round(count or 0.0), exercise.description, evidence,
                                       exercise.when_short))
    return out


def judge_exercised(phase: str, name: str, needed: int, seen: int, description: str, evidence: dict[str, object],
                    when_short: str | None = None) -> CheckResult:
    """Seen at least ``needed`` times, or inconclusive: what guards this path saw nothing to judge.
    ``when_short``: what to look at then, when it is not simply too little traffic."""
    if seen >= needed:
        verdict, detail = "passed", f"{seen} seen: {description}"
    else:
        verdict, detail = "inconclusive", (
            f"only {seen} of the {needed} this experiment must provoke ({description}); the checks "
            f"that guard this path had too little to see: {when_short or 'drive more traffic or a longer fault'}")
    return CheckResult(phase, "exercise", name, verdict, seen, f">= {needed}", detail, evidence, float(seen - needed))


def _client_count(ctx: Run, what: str) -> int:
    """Counted from the load's record: payments the app retried with the same key (answered in
    the end or given up on), or double-tapped (sent twice at once with the same key; both taps
    count once)."""
    records = _client_records(ctx)
    if what == "retried-payments":
        return sum(1 for r in [*records, *_load_record(ctx, "unanswered")] if int(r.get("attempts", 1)) > 1)
    return len({r.get("key") for r in records if r.get("doubleTap")})
