"""The series vocabulary: the names a spec gives (a breaker, a consumer group) choose the series
sampled and judged; nothing in the engine names the reference platform's."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from paychaos.experiments.running import recovery_time, time_to_detect
from paychaos.experiments.spec import Breaker, KafkaLag
from paychaos.probes.catalogue import CatalogueError, load_catalogue
from paychaos.probes.judging import judge_breaker_closes, judge_fails_fast, judge_lag
from paychaos.probes.series import SAMPLE_WINDOW, Vocabulary, breakers_open, names_in
from paychaos.probes.verdicts import Sample

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = load_catalogue(ROOT / "probes")

# A stack of a user's: two breakers, one of which only follows the Resilience4j conventions.
USERS = Vocabulary.model_validate({
    "traffic": {"rps": "sum(rate(istio_requests_total[$window]))", "errorRatio": "e", "p99": "p"},
    "breakers": {
        "conventions": {"open": 'count(resilience4j_circuitbreaker_state{name="$name",state="open"} == 1)',
                        "replicas": 'count(resilience4j_circuitbreaker_state{name="$name",state="open"})'},
        "names": {"ledger": None, "card": {"failsFast": 'histogram_quantile(0.5, rate(card_refused_bucket[$window]))'}},
    },
    "consumerGroups": {"conventions": {"lag": 'sum(kafka_consumergroup_lag{consumergroup="$group"})'},
                       "names": {"points": None}},
})


def test_the_shipped_vocabulary_samples_what_the_reference_platform_exposes() -> None:
    sampled = SHIPPED.vocabulary.sampled(SAMPLE_WINDOW)
    assert sampled["breaker_open:acquirer"] == 'count(resilience4j_circuitbreaker_state{name="acquirer",state="open"} == 1) or vector(0)'
    assert sampled["consumer_lag:campaign"] == "sum(campaign_consumer_lag)"  # its own, over the Kafka convention
    assert "[5s]" in sampled["breaker_fails_fast:acquirer"] and sampled["backlog:outbox"] == "sum(outbox_backlog)"
    assert SHIPPED.vocabulary.times.detect == ["payments-availability", "payments-error-ratio"]


def test_a_name_takes_the_conventions_it_does_not_give_itself() -> None:
    sampled = USERS.sampled("5s")
    assert sampled["breaker_open:ledger"] == 'count(resilience4j_circuitbreaker_state{name="ledger",state="open"} == 1)'
    assert sampled["breaker_open:card"] == 'count(resilience4j_circuitbreaker_state{name="card",state="open"} == 1)'
    assert sampled["breaker_fails_fast:card"] == "histogram_quantile(0.5, rate(card_refused_bucket[5s]))"
    assert "breaker_fails_fast:ledger" not in sampled  # no convention for it: not sampled, not guessed
    assert sampled["consumer_lag:points"] == 'sum(kafka_consumergroup_lag{consumergroup="points"})'
    assert sampled["rps"] == "sum(rate(istio_requests_total[5s]))"
    assert USERS.breaker("acquirer") is None and USERS.group("campaign") is None
    assert names_in(sampled, "breaker_open") == ["card", "ledger"]


def test_a_breaker_is_judged_on_its_own_series_not_another_breakers() -> None:
    # The ledger's breaker closed 3 s after the revert; the card breaker stayed open throughout.
    samples = [Sample(t, {"breaker_open:ledger": 3 if t < 13 else 0, "breaker_open:card": 3}) for t in range(30)]
    ledger = Breaker(name="ledger", closes_within=timedelta(seconds=5))
    result = judge_breaker_closes(samples, 10, ledger, "after", USERS)
    assert (result.name, result.verdict, result.observed) == ("ledger.closes", "passed", 3)
    assert 'name="ledger"' in result.evidence["query"]
    card = Breaker(name="card", closes_within=timedelta(seconds=5))
    assert judge_breaker_closes(samples, 10, card, "after", USERS).verdict == "failed"


def test_fails_fast_on_a_breaker_without_its_series_is_an_error_that_says_what_to_add() -> None:
    ledger = Breaker(name="ledger", fails_fast_below=timedelta(milliseconds=100))
    result = judge_fails_fast([], 0, 10, ledger, "expect", USERS)
    assert result.verdict == "error" and "no failsFast series for breaker 'ledger'" in result.detail


def test_consumer_lag_is_read_for_the_group_the_spec_names() -> None:
    samples = [Sample(t, {"consumer_lag:points": 500 if t < 14 else 0, "consumer_lag:other": 9000}) for t in range(30)]
    result = judge_lag(samples, 10, KafkaLag(group="points", lag_below=10, within=timedelta(seconds=10)), "after", USERS)
    assert (result.name, result.verdict, result.observed) == ("lag.points", "passed", 4)


def test_detection_and_recovery_use_the_slos_they_are_given_and_every_breaker() -> None:
    slos = SHIPPED.slos
    samples = [Sample(t, {"slo:payments-availability": 0.5 if 12 <= t < 25 else 1.0,
                          "slo:payments-error-ratio": 0.0, "breaker_open:card": 1 if 11 <= t < 27 else 0,
                          "breaker_open:ledger": 0}) for t in range(40)]
    assert time_to_detect(samples, 10, slos, ["payments-availability"]) == 1  # the card breaker, first
    assert time_to_detect(samples, 10, slos, ["payments-error-ratio"]) == 1
    assert breakers_open(samples[12].values) == 1
    # Availability back at 25, every breaker closed at 27: recovered when both were.
    assert recovery_time(samples, 20, slos, ["payments-availability"]) == 7
    # An SLO that never came back: no recovery time, whatever the breakers did.
    never = [Sample(s.t, {**s.values, "slo:payments-availability": 0.5}) for s in samples]
    assert recovery_time(never, 20, slos, ["payments-availability"]) is None


def test_a_catalogue_without_a_vocabulary_says_which_file_to_add(tmp_path: Path) -> None:
    (tmp_path / "slo.yaml").write_text(yaml.safe_dump({"slos": {}}), encoding="utf-8")
    with pytest.raises(CatalogueError, match=r"no series vocabulary at .*series\.yaml: copy the project's probes/series\.yaml"):
        load_catalogue(tmp_path)
