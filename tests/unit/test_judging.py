"""The judgements of breaker and recovery probes on hand-made samples: no stack, no clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from paychaos.experiments.spec import Breaker, Recovery
from paychaos.probes.catalogue import load_catalogue
from paychaos.probes.invariants import LEDGER_DSN_ENV, LEDGER_DSN_FILE_ENV, LedgerUnavailable, ledger_dsn, shown
from paychaos.probes.judging import judge_breaker_closes, judge_fails_fast, judge_flows_cut, judge_recovery
from paychaos.probes.verdicts import Sample

VOCABULARY = load_catalogue().vocabulary
FAILS_FAST = Breaker(name="acquirer", fails_fast_below=timedelta(milliseconds=100), closes_within=timedelta(seconds=5))


def opened(t: float, replicas_open: int, refused_p50: float | None) -> Sample:
    return Sample(t, {"breaker_open:acquirer": replicas_open, "breaker_replicas:acquirer": 3, "breaker_fails_fast:acquirer": refused_p50})


def test_fails_fast_passes_on_quick_refusals_and_fails_on_slow_ones() -> None:
    quick = [opened(t, 3, 0.004) for t in range(12)]
    result = judge_fails_fast(quick, 0, 12, FAILS_FAST, "expect", VOCABULARY)
    assert (result.verdict, result.observed, result.threshold) == ("passed", 0.004, "median < 0.1s")
    assert result.evidence["seconds"] == list(range(5, 12))
    # The evidence says what was queried over which window, as every check's does.
    assert result.evidence["window"] == [0, 12] and 'status="503"' in result.evidence["query"]

    slow = [*quick[:8], opened(8, 3, 1.49), *quick[9:]]
    result = judge_fails_fast(slow, 0, 12, FAILS_FAST, "expect", VOCABULARY)
    assert (result.verdict, result.observed) == ("failed", 1.49)


def test_fails_fast_without_a_breaker_open_everywhere_is_inconclusive_not_a_pass() -> None:
    # Nothing was refused while open everywhere: there is no fail-fast to judge (opensWithin says
    # whether the breaker should have opened).
    result = judge_fails_fast([opened(t, 2, 0.004) for t in range(12)], 0, 12, FAILS_FAST, "expect", VOCABULARY)
    assert result.verdict == "inconclusive" and result.observed is None and "never open on every replica" in result.detail


def test_closes_counts_from_the_revert() -> None:
    samples = [opened(t, 3 if t < 14 else 0, None) for t in range(20)]
    assert judge_breaker_closes(samples, 10, FAILS_FAST, "after", VOCABULARY).observed == 4
    assert judge_breaker_closes(samples, 10, FAILS_FAST, "after", VOCABULARY).verdict == "passed"
    assert judge_breaker_closes(samples, 8, FAILS_FAST, "after", VOCABULARY).verdict == "failed"  # 6 s > 5 s


def test_recovery_is_the_first_second_the_slo_meets_its_objective_after_the_revert() -> None:
    slo = load_catalogue().slo("payments-availability")  # objective: above 0.99
    availability = [0.2, 0.3, 1.0, 0.1, 0.4, 0.95, 0.999, 1.0]
    samples = [Sample(t, {"slo:payments-availability": v}) for t, v in enumerate(availability)]
    recovery = Recovery(slo="payments-availability", within=timedelta(seconds=4))
    result = judge_recovery(samples, 3, recovery, slo, "after")
    assert (result.verdict, result.observed, result.threshold) == ("passed", 3, "<= 4s")
    assert result.evidence == {"revert": 3, "query": slo.promql("5s"), "window": [3, 7]}
    assert judge_recovery(samples, 1, recovery, slo, "after").observed == 1  # the 1.0 at t=2, not before the revert
    late = Recovery(slo="payments-availability", within=timedelta(seconds=2))
    assert judge_recovery(samples, 3, late, slo, "after").verdict == "failed"
    assert judge_recovery(samples[:6], 3, recovery, slo, "after").verdict == "failed"  # never back


def test_the_ledger_dsn_is_the_secret_file_then_the_variable_then_the_platform_s(tmp_path) -> None:
    default = "postgresql://postgres@127.0.0.1:18432/paychaos"
    assert ledger_dsn(default, {}) == default
    assert ledger_dsn(default, {LEDGER_DSN_ENV: "mysql+pymysql://app:pw@tidb:4000/ledger"}) == "mysql+pymysql://app:pw@tidb:4000/ledger"
    (tmp_path / "dsn").write_text("postgresql://app:pw@db/ledger\n", encoding="utf-8")
    assert ledger_dsn(default, {LEDGER_DSN_FILE_ENV: str(tmp_path / "dsn"), LEDGER_DSN_ENV: "x"}) == "postgresql://app:pw@db/ledger"
    with pytest.raises(LedgerUnavailable, match=r"cannot read the ledger DSN \(No such file or directory\)$"):
        ledger_dsn(default, {LEDGER_DSN_FILE_ENV: str(tmp_path / "missing")})  # an error, not the default ledger
    assert shown("mysql+pymysql://app:pw@tidb:4000/ledger") == "mysql+pymysql://app:***@tidb:4000/ledger"
    assert "pw" not in shown("not a url pw")


def test_an_exercise_seen_fewer_times_than_asked_is_inconclusive_with_a_negative_margin() -> None:
    from paychaos.probes.judging import judge_exercised

    short = judge_exercised("after", "takeovers", 2, 1, "payments taken over", {"query": "q"})
    assert (short.verdict, short.observed, short.margin) == ("inconclusive", 1, -1.0)
    assert "only 1 of the 2" in short.detail
    met = judge_exercised("after", "takeovers", 2, 5, "payments taken over", {})
    assert (met.verdict, met.margin) == ("passed", 3.0)


def test_an_exercise_the_catalogue_says_how_to_read_says_so_when_short() -> None:
    from paychaos.probes.judging import judge_exercised

    booked = load_catalogue().exercise("cashback-booked")
    short = judge_exercised("after", "cashback-booked", 1, 0, booked.description, {}, booked.when_short)
    assert short.verdict == "inconclusive"
    assert "budget spent" in short.detail and "drive more traffic" not in short.detail


class _Prometheus:
    """Our own PromQL client's seam: answers the volume query with a fixed count."""

    def __init__(self, requests: float | None) -> None:
        self.requests = requests
        self.asked: list[tuple[str, float | None]] = []

    def scalar(self, promql: str, at: float | None = None) -> float | None:
        self.asked.append((promql, at))
        return self.requests


def test_an_slo_window_withtoo_few_requests_for_its_bound_says_why_and_how_many() -> None:
    from paychaos.probes.catalogue import Slo
    from paychaos.probes.judging import too_few_requests

    p99 = Slo.model_validate({"description": "d", "query": "q[$window]", "objective": {"below": "1s"}, "unit": "seconds",
                              "volume": "sum(increase(c[$window]))", "quantile": 0.99})
    evidence: dict[str, object] = {}
    why = too_few_requests(_Prometheus(34), p99, "20s", 123.0, 2.0, None, evidence)  # type: ignore[arg-type]
    assert why is not None and "only 34 requests in the 20s window" in why and "a p99 needs at least 100" in why
    assert evidence == {"requests": 34, "requestsNeeded": 100, "volumeQuery": "sum(increase(c[20s]))"}
    assert too_few_requests(_Prometheus(150), p99, "20s", None, 2.0, None, {}) is None  # type: ignore[arg-type]
    assert too_few_requests(_Prometheus(None), p99, "20s", None, 2.0, None, {}) is not None  # type: ignore[arg-type]
    unknown = Slo.model_validate({"description": "d", "query": "q", "objective": {"above": 0.99}, "unit": "ratio"})
    evidence = {}
    assert too_few_requests(_Prometheus(0), unknown, "20s", None, None, 0.99, evidence) is None  # type: ignore[arg-type]
    assert "no volume query" in str(evidence["requests"])


class _Histogram:
    """The PromQL seam again: answers which bucket boundaries (``le``) a histogram has."""

    def __init__(self, edges: list[str]) -> None:
        self.edges = edges
        self.asked: list[str] = []

    def vector(self, promql: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        self.asked.append(promql)
        return [({"le": edge}, 3.0) for edge in self.edges]


def test_a_quantile_bound_inside_a_bucket_says_which_bucket_and_what_to_add() -> None:
    from paychaos.probes.catalogue import Slo
    from paychaos.probes.judging import bound_inside_bucket

    p99 = Slo.model_validate({
        "description": "d", "objective": {"below": "1s"}, "unit": "seconds", "quantile": 0.99,
        "query": 'histogram_quantile(0.99, sum by (le) (rate(http_seconds_bucket{route="/pay"}[$window])))'})
    coarse = _Histogram(["0.5", "1.0", "2.5", "5.0", "+Inf"])
    note = bound_inside_bucket(coarse, p99, 3.0, 12.0)  # type: ignore[arg-type]
    assert note is not None and "inside the histogram's bucket (2.5, 5]" in note and "boundary at 3 s" in note
    assert coarse.asked == ['count by (le) (http_seconds_bucket{route="/pay"})']
    assert bound_inside_bucket(coarse, p99, 1.0, None) is None  # type: ignore[arg-type]  # on a boundary
    assert "(5, inf]" in (bound_inside_bucket(coarse, p99, 7.0, None) or "")  # type: ignore[arg-type]
    assert bound_inside_bucket(_Histogram([]), p99, 3.0, None) is None  # type: ignore[arg-type]  # no data
    ratio = Slo.model_validate({"description": "d", "query": "q", "objective": {"above": 0.99}, "unit": "ratio"})
    assert bound_inside_bucket(coarse, ratio, 0.99, None) is None  # type: ignore[arg-type]  # not a quantile


# -- flow continuity, from the phone's side ---------------------------------------------------


def refusal(at: float, reason: str = "rotated_out", pass_expires: float | None = None, device: str = "d1") -> dict[str, object]:
    return {"device": device, "route": "POST /v1/payments", "status": 429, "reason": reason, "passExpires": pass_expires, "at": at}


def test_a_refusal_of_a_phone_holding_a_valid_pass_is_a_cut_flow() -> None:
    result = judge_flows_cut([refusal(100.0, pass_expires=130.0), refusal(101.0, device="d2")], 0, "expect")
    assert (result.verdict, result.observed, result.margin) == ("failed", 1, -1.0)
    assert result.evidence["cut"] == [{"device": "d1", "route": "POST /v1/payments", "at": 100.0, "passExpires": 130.0}]


def test_refusals_after_the_pass_lapsed_or_without_one_are_not_cuts() -> None:
    # A pass that lapses within the clock slack is as good as lapsed: the phone and the platform
    # read different clocks.
    refusals = [refusal(100.0, pass_expires=95.0), refusal(100.0), refusal(100.0, pass_expires=100.5),
                refusal(100.0, reason="rate_limited", pass_expires=200.0)]
    result = judge_flows_cut(refusals, 0, "expect")
    assert (result.verdict, result.observed, result.margin) == ("passed", 0, 0.0)
    assert result.evidence["refusals"] == {"rotated_out": 3, "rate_limited": 1}


def test_no_rotation_refusal_at_all_is_inconclusive() -> None:
    # Rate limiting alone says nothing about flows: admission never restricted a group.
    result = judge_flows_cut([refusal(100.0, reason="rate_limited", pass_expires=200.0)], 0, "expect")
    assert result.verdict == "inconclusive" and "no flow met a restriction" in result.detail
    assert judge_flows_cut([], 0, "expect").verdict == "inconclusive"


# -- how long a payment waited for its answer, through every retry --------------------------------


def paid(key: str, first_sent: float, at: float, attempts: int = 1, **more: object) -> dict[str, object]:
    tries = {"tries": [[0.0, 503]] + [[1.0, 201]] * (attempts - 1)} if attempts > 1 else {}
    return {"key": key, "attempts": attempts, "firstSent": first_sent, "at": at, **tries, **more}


def test_payments_answered_within_the_bound_pass_with_the_slowest_as_margin() -> None:
    from paychaos.probes.judging import judge_payments_answered

    # The slowest need not have been retried: a load balancer may have resent the cut request
    # itself, and the user waited on one slow attempt.
    acks = [paid("a", 100.0, 102.1, attempts=2), paid("edge", 110.0, 112.6), paid("c", 120.0, 120.1),
            paid("c", 120.0, 120.3, doubleTap=True),  # its second tap, answered later: one payment, the slower
            {"key": "old", "attempts": 2, "at": 130.0}]  # a record without firstSent is not judged
    result = judge_payments_answered(acks, [], 4.0, "after")
    assert (result.verdict, result.observed, result.margin) == ("passed", 2.6, 1.4)
    assert (result.evidence["payments"], result.evidence["retried"]) == (3, 1)
    assert [(w["key"], w["waited"]) for w in result.evidence["slowest"]] == [("edge", 2.6), ("a", 2.1), ("c", 0.3)]  # type: ignore[attr-defined]
    assert "3 payments (1 retried by the app)" in result.detail


def test_a_payment_answered_late_or_never_fails() -> None:
    from paychaos.load.answers import STOPPED
    from paychaos.probes.judging import judge_payments_answered

    late = judge_payments_answered([paid("a", 100.0, 102.0, attempts=2), paid("slow", 100.0, 115.5, attempts=5)], [], 4.0, "after")
    assert (late.verdict, late.observed, late.margin) == ("failed", 15.5, -11.5)
    assert "1 of 2 payments (2 retried by the app) waited longer than 4s" in late.detail
    # The app gave up after a second of "try again": never answered, failed however soon.
    gave_up = judge_payments_answered([paid("a", 100.0, 101.0)], [paid("g", 100.0, 101.0, attempts=6, gaveUp=True)], 4.0, "after")
    assert gave_up.verdict == "failed" and "never answered" in gave_up.detail and gave_up.margin is None
    assert gave_up.evidence["slowest"][0]["key"] == "g"  # type: ignore[index]
    # Still being retried when the load stopped: late once it had waited past the bound...
    stopped = judge_payments_answered([paid("a", 100.0, 101.0)], [paid("s", 100.0, 106.0, attempts=3, code=STOPPED)], 4.0, "after")
    assert (stopped.verdict, stopped.observed) == ("failed", 6.0)
    # ...not judged before.
    fresh = judge_payments_answered([paid("a", 100.0, 101.0)], [paid("s", 100.0, 103.0, attempts=2, code=STOPPED)], 4.0, "after")
    assert (fresh.verdict, fresh.evidence["pendingWhenStopped"]) == ("passed", 1)
    # A final answer without money moving (the payment aborted) is an answer.
    final = judge_payments_answered([], [paid("f", 100.0, 101.5, attempts=2, code="PAYMENT_ABORTED")], 4.0, "after")
    assert final.verdict == "passed"


def test_no_payment_at_all_is_inconclusive_not_passed() -> None:
    from paychaos.load.answers import STOPPED
    from paychaos.probes.judging import judge_payments_answered

    assert judge_payments_answered([], [], 4.0, "after").verdict == "inconclusive"
    only_pending = judge_payments_answered([], [paid("s", 100.0, 101.0, code=STOPPED)], 4.0, "after")
    assert only_pending.verdict == "inconclusive" and "1 still within the bound" in only_pending.detail


def test_retried_payments_count_the_ones_the_app_gave_up_on_too(tmp_path) -> None:
    import json
    from types import SimpleNamespace

    from paychaos.probes.judging import _client_count

    acks, unanswered = tmp_path / "acknowledged.jsonl", tmp_path / "unanswered.jsonl"
    acks.write_text("".join(json.dumps(r) + "\n" for r in [{"key": "a", "attempts": 1}, {"key": "b", "attempts": 2}]))
    # The cut payment: three tries, each "in progress", then the app showed "try again later".
    unanswered.write_text(json.dumps({"key": "c", "attempts": 3, "status": 409}) + "\n" + json.dumps({"key": "d", "attempts": 1}) + "\n")
    ctx = SimpleNamespace(load=SimpleNamespace(acknowledged_path=acks, unanswered_path=unanswered))
    assert _client_count(ctx, "retried-payments") == 2  # type: ignore[arg-type]
    unanswered.unlink()
    assert _client_count(ctx, "retried-payments") == 1  # type: ignore[arg-type]


def test_a_breaker_that_stayed_closed_failed_only_if_some_replica_saw_enough_calls() -> None:
    from paychaos.probes.judging import why_still_closed

    closed = {"payment-az-a-1": "closed", "payment-az-b-1": "closed"}
    verdict, why = why_still_closed({"payment-az-a-1": 3, "payment-az-b-1": 4}, closed, 5, "20s")
    assert verdict == "inconclusive" and "most: 4, payment-az-b-1" in why and "paymentShare" in why
    verdict, why = why_still_closed({"payment-az-a-1": 3, "payment-az-b-1": 5}, closed, 5, "20s")
    assert verdict == "failed" and "payment-az-b-1 saw 5 calls" in why
    # No calls at all is no evidence either (a breaker without metrics says nothing)...
    assert why_still_closed({}, {}, 5, "20s")[0] == "inconclusive"
    # ...but a breaker switched off fails whatever the traffic: it could never open.
    verdict, why = why_still_closed({"payment-az-a-1": 0}, {"payment-az-a-1": "disabled"}, 5, "20s")
    assert verdict == "failed" and "payment-az-a-1 disabled" in why


def test_a_breaker_whose_trip_count_nobody_knows_is_inconclusive_not_failed() -> None:
    # A target that cannot say its breaker's settings, and a spec without callsToOpen: 40 calls may
    # or may not have been enough, so a closed breaker is not held against the stack.
    from paychaos.probes.judging import why_still_closed

    verdict, why = why_still_closed({"payment-1": 40}, {"payment-1": "closed"}, None, "20s")
    assert verdict == "inconclusive" and "give callsToOpen" in why and "40 calls" in why
    assert why_still_closed({"payment-1": 40}, {"payment-1": "disabled"}, None, "20s")[0] == "failed"


def test_an_invariant_over_acknowledged_payments_with_none_acknowledged_is_inconclusive() -> None:
    from paychaos.probes.invariants import InvariantResult
    from paychaos.probes.judging import judge_invariant, reads_acknowledged

    catalogue = load_catalogue()
    durable = catalogue.invariant("acknowledged-payments-durable")
    conservation = catalogue.invariant("ledger-conservation")
    assert reads_acknowledged(durable) and not reads_acknowledged(conservation)
    assert not reads_acknowledged("-- the acknowledged table is not read here\nSELECT 1 WHERE false")
    held = InvariantResult("acknowledged-payments-durable", 0, [])
    empty = judge_invariant("after", held, durable, acknowledged=0)
    assert empty.verdict == "inconclusive" and "nothing for it to judge" in empty.detail
    assert judge_invariant("after", held, durable, acknowledged=12).verdict == "passed"
    assert judge_invariant("after", InvariantResult("ledger-conservation", 0, []), conservation, 0).verdict == "passed"
    broken = judge_invariant("after", InvariantResult("acknowledged-payments-durable", 2, [{"payment_id": "p"}]), durable, 0)
    assert (broken.verdict, broken.observed) == ("failed", 2)


def test_an_exercise_counted_from_the_fault_is_asked_over_the_fault_and_after(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path
    from types import SimpleNamespace

    from paychaos.experiments.loading import load_experiment
    from paychaos.probes import judging

    asked: list[str] = []

    class Prometheus:
        def __init__(self, url: str) -> None:
            pass

        def __enter__(self) -> Prometheus:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def scalar(self, promql: str, at: float | None = None) -> float:
            asked.append(promql)
            return 600.0

    monkeypatch.setattr(judging, "Prometheus", Prometheus)
    root = Path(__file__).resolve().parents[2]
    experiment = load_experiment(root / "experiments" / "kafka-broker-failure.yaml")  # its fault at 20 s
    ctx = SimpleNamespace(now=lambda: 95.0, catalogue=load_catalogue(root / "probes"), experiment=experiment,
                          endpoints=SimpleNamespace(prometheus_url="http://prometheus"))
    booked, held = judging.judge_exercises(ctx, {"cashback-booked": 100, "outbox-held-events": 20}, "after")  # type: ignore[arg-type]
    assert "[75s]" in asked[0] and booked.evidence["window"] == [20.0, 95.0]  # from the fault on
    assert "[95s:1s]" in asked[1] and held.evidence["window"] == [0.0, 95.0]  # over the whole method
    assert (booked.verdict, booked.observed) == ("passed", 600)
