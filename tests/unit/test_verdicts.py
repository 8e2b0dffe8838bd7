"""Verdict rules on hand-made series: no stack, no clock."""

from __future__ import annotations

from paychaos.probes.judging import judge_success_ratio
from paychaos.probes.verdicts import (
    CheckResult,
    Sample,
    final_verdict,
    first_time,
    judge_bound,
    judge_within,
    settled_after,
    stop_condition_met,
    weighted_ratio,
)


def series(key: str, values: list[float | None], start: float = 0.0) -> list[Sample]:
    return [Sample(start + i, {key: v}) for i, v in enumerate(values)]


def result(verdict: str, phase: str = "expect") -> CheckResult:
    return CheckResult(phase, "slo", "x", verdict, 1.0, "< 0.5")  # type: ignore[arg-type]


def test_a_bound_is_judged_by_the_worst_sample_in_the_window() -> None:
    samples = series("p99", [0.1, 0.2, 0.9, 0.2, 0.1])
    assert judge_bound(samples, "p99", 0, 4, below=0.5, above=None)[:2] == ("failed", 0.9)
    assert judge_bound(samples, "p99", 3, 4, below=0.5, above=None)[:2] == ("passed", 0.2)
    assert judge_bound(series("a", [0.999, 0.98]), "a", 0, 1, below=None, above=0.99)[:2] == ("failed", 0.98)


def test_no_data_is_a_failure_not_a_pass() -> None:
    verdict, observed, detail = judge_bound(series("p99", [None, None]), "p99", 0, 1, below=0.5, above=None)
    assert verdict == "failed" and observed is None and "no data" in detail


def test_first_time_measures_from_the_fault_start() -> None:
    samples = series("open", [0, 0, 0, 1, 1, 0])
    assert first_time(samples, "open", 1.0, lambda v: v >= 1) == 2.0
    assert first_time(samples, "open", 4.5, lambda v: v == 0) == 0.5
    assert first_time(samples, "open", 0.0, lambda v: v > 5) is None


def test_settled_after_ignores_calm_before_the_trouble_and_needs_the_last_sample() -> None:
    lag = series("lag", [0, 0, 4, 9, 3, 0, 0])
    assert first_time(lag, "lag", 0.0, lambda v: v == 0) == 0.0  # the stale zero fools it
    assert settled_after(lag, "lag", 0.0, lambda v: v == 0) == 5.0
    assert settled_after(lag, "lag", 0.0, lambda v: v == 0, end=4.0) is None  # still 3 at the end
    assert settled_after(series("lag", [0, 2, 5, 8]), "lag", 0.0, lambda v: v == 0) is None


def test_within() -> None:
    assert judge_within(2.0, 5.0, "open")[0] == "passed"
    assert judge_within(6.0, 5.0, "open")[0] == "failed"
    assert judge_within(None, 5.0, "open")[0] == "failed"


def test_stop_condition_needs_the_bad_state_to_hold_for_its_duration() -> None:
    errors = series("err", [0.0, 0.6, 0.7, 0.1, 0.6, 0.6, 0.6, 0.6])
    assert stop_condition_met(errors, "err", None, 0.5, hold=3.0) == 7.0
    assert stop_condition_met(errors, "err", None, 0.5, hold=0.0) == 1.0
    assert stop_condition_met(errors, "err", None, 0.9, hold=0.0) is None
    # a gap in the data breaks the streak: no data is not evidence of harm
    gappy = series("err", [0.6, None, 0.6, 0.6])
    assert stop_condition_met(gappy, "err", None, 0.5, hold=2.0) is None


def test_a_bound_with_for_fails_only_on_a_breach_that_lasts() -> None:
    # One failed payment among a few a second dents a 5 s rate window for about four samples.
    blip = series("avail", [1.0, 1.0, 0.67, 0.5, 0.83, 0.9, 1.0, 1.0])
    assert judge_bound(blip, "avail", 0, 7, None, 0.98)[:2] == ("failed", 0.5)
    verdict, observed, detail = judge_bound(blip, "avail", 0, 7, None, 0.98, hold=10.0)
    assert (verdict, observed) == ("passed", 0.5) and "broken for 3s at most" in detail
    outage = series("avail", [1.0] + [0.4] * 12 + [1.0])
    verdict, observed, detail = judge_bound(outage, "avail", 0, 13, None, 0.98, hold=10.0)
    assert (verdict, observed) == ("failed", 0.4) and "broken for 10s on end from 1s" in detail
    # a breach broken by a good sample starts over
    flapping = series("avail", ([0.4] * 6 + [1.0]) * 3)
    assert judge_bound(flapping, "avail", 0, 20, None, 0.98, hold=10.0)[0] == "passed"


def test_traffic_share_weighs_each_second_by_its_requests() -> None:
    samples = [Sample(float(t), {"rps": r, "fail": f}) for t, (r, f) in enumerate([(20, 0.05), (20, 0.0), (100, 0.0), (0, None)])]
    share, seconds, requests = weighted_ratio(samples, "rps", "fail", 0, 3)
    assert seconds == 3 and requests == 140 and share == 1 / 140  # one failed request in 140, not a 95 % second
    assert weighted_ratio(samples, "rps", "fail", 3, 3) is None


def client(per_second: list[tuple[float, float]]) -> list[Sample]:
    return [Sample(float(t), {"client_rps": r, "client_fail_ratio": f}) for t, (r, f) in enumerate(per_second)]


def test_a_success_ratio_over_too_few_requests_is_inconclusive_unless_surely_broken() -> None:
    # 12 requests, none failed: above 0.95 needs 20 before one failure could even show.
    thin = judge_success_ratio(client([(4, 0.0)] * 3), (0, 2), 0.95, "expect")
    assert (thin.verdict, thin.observed) == ("inconclusive", 1.0)
    assert thin.evidence["requests"] == 12 and thin.evidence["requestsNeeded"] == 20 and "only about 12" in thin.detail
    # 12 requests, half failed: whatever more traffic would have shown, 0.95 is out of reach.
    broken = judge_success_ratio(client([(4, 0.5)] * 3), (0, 2), 0.95, "expect")
    assert broken.verdict == "failed" and broken.evidence["interval95"][1] <= 0.95
    # Enough requests: judged on the ratio.
    enough = judge_success_ratio(client([(20, 0.0)] * 3), (0, 2), 0.95, "expect")
    assert (enough.verdict, enough.evidence["requests"]) == ("passed", 60)
    failing = judge_success_ratio(client([(20, 0.1)] * 3), (0, 2), 0.95, "expect")
    assert (failing.verdict, failing.observed) == ("failed", 0.9)
    assert judge_success_ratio(client([(0, None)] * 3), (0, 2), 0.95, "expect").verdict == "failed"  # no data at all


def test_final_verdict_precedence() -> None:
    ok = [result("passed")]
    assert final_verdict(journal_status="completed", steady_state_before_met=True, results=ok, stop_reason=None, errors=[])[0] == "passed"
    assert final_verdict(journal_status="interrupted", steady_state_before_met=True, results=ok, stop_reason="err > 0.5", errors=[])[0] == "aborted"
    assert final_verdict(journal_status="interrupted", steady_state_before_met=True, results=ok, stop_reason=None, errors=[])[0] == "aborted"
    assert final_verdict(journal_status="completed", steady_state_before_met=True, results=ok, stop_reason=None, errors=["boom"])[0] == "error"
    failed = final_verdict(journal_status="completed", steady_state_before_met=True, results=[result("failed")], stop_reason=None, errors=[])
    assert failed[0] == "failed" and "observed 1.0" in failed[1]


def test_steady_state_failing_before_the_method_fails_the_run_although_chaostoolkit_says_completed() -> None:
    before = [result("failed", phase="steadyState.before")]
    verdict, reason = final_verdict(
        journal_status="completed", steady_state_before_met=False, results=before, stop_reason=None, errors=[]
    )
    assert verdict == "failed" and "before the faults" in reason


def test_fail_fast_is_judged_only_once_every_replica_has_been_open_for_a_while() -> None:
    from paychaos.probes.verdicts import refused_while_open

    def s(t: float, opened: int, p50: float) -> Sample:
        return Sample(t, {"breaker_open:acquirer": opened, "breaker_replicas:acquirer": 3, "breaker_fails_fast:acquirer": p50})

    samples = [s(0, 1, 1.5), s(1, 3, 1.5), *[s(t, 3, 0.01) for t in range(2, 9)], s(9, 2, 1.5), s(10, 3, 0.01)]
    assert refused_while_open(samples, 0, 20, "acquirer") == [(6, 0.01), (7, 0.01), (8, 0.01)]
    assert refused_while_open([s(t, 2, 0.01) for t in range(10)], 0, 20, "acquirer") == []


def test_a_fault_that_did_not_happen_makes_the_run_an_error_whatever_the_checks_say() -> None:
    refused = CheckResult("faults", "fault", "zoneLoss-0", "error", None, "injected, and its effect seen",
                          "refused: zoneLoss az-a would take campaign down entirely")
    for others in ([result("passed")], [result("failed")], []):
        verdict, reason = final_verdict(journal_status="interrupted", steady_state_before_met=True,
                                        results=[refused, *others], stop_reason=None, errors=[])
        assert verdict == "error" and "zoneLoss-0 refused" in reason and "nothing was tested" in reason


def test_a_check_with_too_little_evidence_is_inconclusive_and_a_failure_still_fails() -> None:
    thin = CheckResult("expect", "slo", "payments-latency-p99", "inconclusive", None, "< 2", "only 34 requests")
    verdict, reason = final_verdict(journal_status="completed", steady_state_before_met=True,
                                    results=[result("passed"), thin], stop_reason=None, errors=[])
    assert verdict == "inconclusive" and "only 34 requests" in reason
    assert final_verdict(journal_status="completed", steady_state_before_met=True,
                         results=[thin, result("failed")], stop_reason=None, errors=[])[0] == "failed"


def test_a_steady_state_too_thin_to_judge_is_inconclusive_not_failed() -> None:
    thin = CheckResult("steadyState.before", "slo", "payments-availability", "inconclusive", None, "> 0.99", "only 20 requests")
    verdict, _ = final_verdict(journal_status="completed", steady_state_before_met=False, results=[thin],
                               stop_reason=None, errors=[])
    assert verdict == "inconclusive"


def test_margin_is_the_headroom_inside_the_bound_in_its_unit() -> None:
    from paychaos.probes.verdicts import margin

    assert margin(0.4, below=1.0) == 0.6
    assert margin(1.2, below=1.0) == -0.2
    assert margin(0.995, above=0.99) == 0.005
    assert margin(None, below=1.0) is None


def test_requests_needed_before_a_window_says_anything() -> None:
    from paychaos.probes.catalogue import requests_needed

    assert requests_needed(0.99, below=2.0, above=None, unit="seconds") == 100  # fewer: the p99 is the maximum
    assert requests_needed(0.5, below=2.0, above=None, unit="seconds") == 2
    assert requests_needed(None, below=None, above=0.99, unit="ratio") == 100  # one failure in a hundred
    assert requests_needed(None, below=0.01, above=None, unit="ratio") == 100
    assert requests_needed(None, below=None, above=0.9, unit="ratio") == 10
    assert requests_needed(None, below=14.4, above=None, unit="ratio") == 1  # not a share: any data judges
    assert requests_needed(None, below=None, above=5, unit="count") == 1


def test_a_ratio_over_too_few_requests_fails_only_when_its_whole_interval_breaks_the_bound() -> None:
    from paychaos.probes.verdicts import surely_breached

    # Balance payments starved by a cascade: 22 of 74 answered without a server error.
    assert surely_breached(22 / 74, 74, None, 0.99) == (0.2053, 0.4093)
    # One failure in 30 is 0.967, but 0.99 is inside its interval: more traffic could show it holds.
    assert surely_breached(29 / 30, 30, None, 0.99) is None
    assert surely_breached(1.0, 50, None, 0.99) is None
    # An error-ratio bound (below 0.01): half the requests failing is a breach at any volume.
    assert surely_breached(0.5, 74, 0.01, None) == (0.3889, 0.6111)
    assert surely_breached(1 / 30, 30, 0.01, None) is None
    assert surely_breached(0.0, 0, None, 0.99) is None
