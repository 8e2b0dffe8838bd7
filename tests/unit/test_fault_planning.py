"""Planning a fault is pure: which targets, how many, and what the blast-radius limits refuse."""

from __future__ import annotations

from typing import Any

import pytest

from paychaos.experiments.spec import Fault, Limits
from paychaos.faults.planning import (
    BlastRadiusExceeded,
    FaultPlan,
    Observed,
    ObservedBroker,
    ObservedProxy,
    ObservedReplica,
    PlanError,
    partitions_needed,
    plan_fault,
    replicas_to_hit,
)

ZONES = ("az-a", "az-b", "az-c")


def observed(per_zone: int = 1, not_ready: tuple[str, ...] = (), zones: tuple[str, ...] = ZONES) -> Observed:
    replicas = []
    pid = 1000
    for service in ("gateway", "payment", "ledger", "campaign", "acquirer"):
        # Listed out of name order on purpose: the choice must not depend on the driver's order.
        for zone in reversed(zones):
            for i in range(1, per_zone + 1):
                name = f"{service}-{zone}-{i}"
                pid += 1
                replicas.append(ObservedReplica(name, service, zone, name not in not_ready, pid, 1.0))
    brokers = tuple(ObservedBroker(n, f"kafka-{n}", zones[(n - 1) % len(zones)], True, 2000 + n, 1.0) for n in (1, 2, 3))
    return Observed(
        zones=zones,
        replicas=tuple(replicas),
        brokers=brokers,
        proxies=(ObservedProxy("acquirer", "acquirer"),),
        leaders={("payments", 0): 2},
        leader_errors={("nope", 0): "Kafka topic 'nope' does not exist"},
    )


def fault(**kind: Any) -> Fault:
    return Fault.model_validate({"at": "10s", "for": "30s", **kind})


def plan(f: Fault, obs: Observed | None = None, limits: Limits | None = None) -> FaultPlan:
    return plan_fault(f, obs or observed(), limits or Limits(), experiment="exp", index=2)


# -- podKill ----------------------------------------------------------------------------------


def test_pod_kill_takes_one_replica_by_default_first_by_name() -> None:
    p = plan(fault(podKill={"service": "payment"}))
    assert [r.name for r in p.replicas] == ["payment-az-a-1"]
    assert p.kind == "podKill" and p.at == 10 and p.duration == 30 and p.id == "exp-2"


def test_pod_kill_filters_by_zone() -> None:
    p = plan(fault(podKill={"service": "payment", "zone": "az-c"}))
    assert [r.name for r in p.replicas] == ["payment-az-c-1"]


def test_pod_kill_count_takes_the_first_names() -> None:
    p = plan(fault(podKill={"service": "ledger", "count": 2}), observed(per_zone=2), Limits(max_percent=50))
    assert [r.name for r in p.replicas] == ["ledger-az-a-1", "ledger-az-a-2"]


def test_pod_kill_skips_replicas_that_are_not_ready() -> None:
    p = plan(fault(podKill={"service": "payment"}), observed(not_ready=("payment-az-a-1",)))
    assert [r.name for r in p.replicas] == ["payment-az-b-1"]


def test_pod_kill_refuses_when_too_few_are_ready() -> None:
    with pytest.raises(PlanError, match="only 0 of 1 are ready; not ready now: payment-az-a-1"):
        plan(fault(podKill={"service": "payment", "zone": "az-a"}), observed(not_ready=("payment-az-a-1",)))


@pytest.mark.parametrize(
    ("total", "percent", "hit"),
    [(3, 33, 1), (3, 34, 2), (3, 100, 3), (6, 50, 3), (6, 51, 4), (10, 1, 1), (1, 1, 1), (7, 10, 1), (7, 15, 2)],
)
def test_percent_rounds_up_and_hits_at_least_one(total: int, percent: int, hit: int) -> None:
    assert replicas_to_hit(total, None, percent) == hit


def test_percent_is_of_the_replicas_in_the_zone_filter() -> None:
    obs = observed(per_zone=4)
    p = plan(fault(podKill={"service": "campaign", "zone": "az-b", "percent": 50}), obs, Limits(max_replicas=12, max_percent=100))
    assert [r.name for r in p.replicas] == ["campaign-az-b-1", "campaign-az-b-2"]


# -- blast radius -----------------------------------------------------------------------------


def test_more_than_max_percent_of_a_service_is_refused() -> None:
    with pytest.raises(BlastRadiusExceeded) as refused:
        plan(fault(podKill={"service": "payment", "count": 2}))
    message = str(refused.value)
    assert "would hit 2 of 3 replicas (67%)" in message and "maxPercent 34%" in message
    assert "\n" not in message


def test_percent_that_rounds_up_past_the_limit_is_refused() -> None:
    with pytest.raises(BlastRadiusExceeded, match="2 of 3"):
        plan(fault(podKill={"service": "payment", "percent": 34}))


def test_more_than_max_replicas_is_refused() -> None:
    with pytest.raises(BlastRadiusExceeded, match="would hit 4 of 12 replicas, over limits.maxReplicas 3"):
        plan(fault(podKill={"service": "payment", "count": 4}), observed(per_zone=4), Limits(max_percent=100))


def test_within_the_limits_is_allowed() -> None:
    p = plan(fault(podKill={"service": "payment", "count": 3}), observed(), Limits(max_replicas=3, max_percent=100))
    assert len(p.replicas) == 3


def test_zone_loss_is_refused_when_not_allowed() -> None:
    with pytest.raises(BlastRadiusExceeded, match="allowZoneLoss is false"):
        plan(fault(zoneLoss={"zone": "az-b"}), limits=Limits(allow_zone_loss=False))


def test_zone_loss_of_one_of_two_zones_exceeds_the_percent_limit() -> None:
    with pytest.raises(BlastRadiusExceeded, match=r"1 of 2 \w+ replicas \(50%\)"):
        plan(fault(zoneLoss={"zone": "az-a"}), observed(zones=("az-a", "az-b")))


def test_zone_loss_that_would_take_a_whole_service_says_it_has_no_zone_redundancy() -> None:
    # Only one zone left: every replica of every service lives in it. The refusal is the finding.
    with pytest.raises(BlastRadiusExceeded, match=r"take acquirer down entirely: its only replica runs in az-a\. "
                                                  r"acquirer has no zone redundancy"):
        plan(fault(zoneLoss={"zone": "az-a"}), observed(zones=("az-a",)))
    # Rehearsing the outage on purpose is allowed.
    assert plan(fault(zoneLoss={"zone": "az-a"}), observed(zones=("az-a",)), Limits(max_percent=100)).zone == "az-a"


# -- zoneLoss, kafkaBrokerFailure, slowDownstream, eventRedelivery, poisonEvents ---------------


def test_broker_failure_with_a_count_takes_the_named_broker_then_the_others_by_id() -> None:
    p = plan(fault(kafkaBrokerFailure={"broker": 2, "count": 2}))
    assert [b.id for b in p.brokers] == [2, 1]
    assert "hold Kafka node 2 in az-b and 1 in az-a down" in p.headline()
    with pytest.raises(PlanError, match="count 4, but the cluster has 3 brokers"):
        plan(fault(kafkaBrokerFailure={"broker": 1, "count": 4}))


def test_event_redelivery_names_the_topic_and_how_far_back() -> None:
    p = plan(fault(eventRedelivery={"topic": "payments", "last": 30}))
    assert (p.topic, p.last) == ("payments", 30)
    assert FaultPlan.from_dict(p.to_dict()) == p
    assert "the last 30 events of every payments partition delivered again" in p.headline()


def test_poison_events_name_the_topic_and_how_many_per_partition() -> None:
    p = plan(fault(poisonEvents={"topic": "payments", "count": 5}))
    assert (p.kind, p.topic, p.poison, p.last) == ("poisonEvents", "payments", 5, 0)
    assert FaultPlan.from_dict(p.to_dict()) == p
    assert "5 undecodable records produced to every payments partition" in p.headline()
    assert "5 undecodable records to each partition" in p.describe()


def test_zone_loss_hits_every_replica_and_the_kafka_node_of_the_zone() -> None:
    p = plan(fault(zoneLoss={"zone": "az-b"}))
    assert p.zone == "az-b"
    assert [r.name for r in p.replicas] == [f"{s}-az-b-1" for s in sorted(["gateway", "payment", "ledger", "campaign", "acquirer"])]
    assert [b.id for b in p.brokers] == [2]


def test_zone_loss_in_flight_waits_on_the_zones_replica_of_the_service_and_says_so() -> None:
    p = plan(fault(zoneLoss={"zone": "az-b", "inFlight": {"service": "payment", "kind": "authorization"}}))
    assert (p.in_flight, p.in_flight_on, p.in_flight_kind) == (True, "payment-az-b-1", "authorization")
    assert p.headline().endswith("while payment-az-b-1 is applying a authorization")
    assert FaultPlan.from_dict(p.to_dict()) == p
    assert not plan(fault(zoneLoss={"zone": "az-b"})).in_flight
    with pytest.raises(PlanError, match="inFlight.service wallet has no replica in az-b"):
        plan(fault(zoneLoss={"zone": "az-b", "inFlight": {"service": "wallet", "kind": "authorization"}}))


def test_broker_failure_by_id() -> None:
    p = plan(fault(kafkaBrokerFailure={"broker": 3}))
    assert [(b.id, b.zone) for b in p.brokers] == [(3, "az-c")] and p.leader_of is None


def test_broker_failure_of_a_partition_leader_resolves_the_observed_leader() -> None:
    f = fault(kafkaBrokerFailure={"leaderOf": {"topic": "payments", "partition": 0}})
    assert partitions_needed([f, f, fault(podKill={"service": "payment"})]) == [("payments", 0)]
    p = plan(f)
    assert [b.name for b in p.brokers] == ["kafka-2"] and p.leader_of == ("payments", 0)
    assert "leader of payments-0" in p.describe()


def test_broker_failure_with_followers_stalled_stops_every_other_node_before_the_kill() -> None:
    p = plan(fault(kafkaBrokerFailure={"leaderOf": {"topic": "payments", "partition": 0}, "followersStalled": "4s"}))
    assert [b.name for b in p.brokers] == ["kafka-2"]
    assert ([b.name for b in p.stalled], p.stall) == (["kafka-1", "kafka-3"], 4.0)
    assert "killed after nodes 1, 3 stalled for 4s" in p.headline()
    assert "stalled   3 (kafka-3)  zone az-c  pid 2003  for 4s before the kill" in p.describe()
    assert FaultPlan.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    ("broker_failure", "obs", "message"),
    [
        ({"broker": 1, "followersStalled": "30s"}, None, "followersStalled 30s must end inside the fault's window of 30s"),
        ({"broker": 1, "followersStalled": "4s"}, "kafka-3", "needs every other node running; down: kafka-3"),
    ],
)
def test_followers_stalled_is_refused_when_it_cannot_happen(broker_failure: dict[str, Any], obs: str | None, message: str) -> None:
    seen = observed()
    if obs is not None:
        brokers = tuple(b if b.name != obs else ObservedBroker(b.id, b.name, b.zone, False, None, None) for b in seen.brokers)
        seen = Observed(zones=seen.zones, replicas=seen.replicas, brokers=brokers, proxies=seen.proxies,
                        leaders=seen.leaders, leader_errors=seen.leader_errors)
    with pytest.raises(PlanError, match=message):
        plan(fault(kafkaBrokerFailure=broker_failure), seen)


def test_slow_downstream_names_its_toxics_after_the_experiment_and_index() -> None:
    p = plan(fault(slowDownstream={"proxy": "acquirer", "latency": "3000ms", "jitter": "200ms", "timeout": "5s"}))
    assert p.proxy == "acquirer" and p.upstream == "acquirer"
    assert [(t.name, t.type, dict(t.attributes)) for t in p.toxics] == [
        ("paychaos-exp-2-latency", "latency", {"latency": 3000, "jitter": 200}),
        ("paychaos-exp-2-timeout", "timeout", {"timeout": 5000}),
    ]


# -- unknown names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ({"podKill": {"service": "wallet"}}, "no service 'wallet'; services: acquirer, campaign, gateway, ledger, payment"),
        ({"podKill": {"service": "payment", "zone": "az-z"}}, "no zone 'az-z'; zones: az-a, az-b, az-c"),
        ({"zoneLoss": {"zone": "us-east-1a"}}, "no zone 'us-east-1a'; zones: az-a, az-b, az-c"),
        ({"kafkaBrokerFailure": {"broker": 7}}, "no Kafka broker 7; brokers: 1, 2, 3"),
        ({"kafkaBrokerFailure": {"leaderOf": {"topic": "nope", "partition": 0}}}, "topic 'nope' does not exist"),
        ({"kafkaBrokerFailure": {"leaderOf": {"topic": "payments", "partition": 9}}}, "leader of payments-9 was not observed"),
        ({"slowDownstream": {"proxy": "ledger", "latency": "1s"}}, "no proxy 'ledger'; proxies: acquirer"),
    ],
)
def test_unknown_names_are_refused_naming_what_exists(kind: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError) as refused:
        plan(fault(**kind))
    assert not isinstance(refused.value, BlastRadiusExceeded)
    assert message in str(refused.value)


# -- the plan as data and text ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [
        {"podKill": {"service": "payment"}},
        {"podKill": {"service": "payment", "inFlight": True}},
        {"podKill": {"service": "ledger", "inFlightKind": "reserve"}},
        {"zoneLoss": {"zone": "az-c"}},
        {"kafkaBrokerFailure": {"leaderOf": {"topic": "payments", "partition": 0}}},
        {"slowDownstream": {"proxy": "acquirer", "latency": "300ms"}},
    ],
)
def test_a_plan_round_trips_through_its_dict_and_describes_its_targets(kind: dict[str, Any]) -> None:
    p = plan(fault(**kind))
    assert FaultPlan.from_dict(p.to_dict()) == p
    text = p.describe()
    assert text.startswith(f"faults[2] at 10s for 30s — {p.kind}")
    for r in p.replicas:
        assert f"{r.name}  zone {r.zone}  pid {r.pid}" in text
    for b in p.brokers:
        assert f"broker    {b.id} (kafka-{b.id})  zone {b.zone}" in text
    for t in p.toxics:
        assert t.name in text
    assert "\n" not in p.headline()


def test_planning_is_deterministic() -> None:
    f = fault(podKill={"service": "gateway", "percent": 34})
    limits = Limits(max_percent=100)
    assert plan(f, limits=limits) == plan(f, limits=limits)


def test_a_kill_waiting_for_a_kind_of_work_waits_for_work_in_flight_and_says_which() -> None:
    p = plan(fault(podKill={"service": "ledger", "inFlightKind": "reserve"}))
    assert p.in_flight and p.in_flight_kind == "reserve"
    assert p.headline().endswith("while applying a reserve")
    assert plan(fault(podKill={"service": "ledger", "inFlight": True})).headline().endswith("while serving a request")
