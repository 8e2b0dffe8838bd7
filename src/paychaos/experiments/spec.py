"""The ChaosExperiment spec: one YAML document shaped like a Kubernetes custom resource.

The same file is read by the CLI, by CI gates and (later) by the operator. Keys are camelCase
as in Kubernetes; snake_case spellings are accepted too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag, model_validator
from pydantic.alias_generators import to_camel

from paychaos.durations import Duration, format_duration

API_VERSION = "paychaos.io/v1alpha1"
KIND = "ChaosExperiment"

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=63)]


class _Spec(BaseModel):
    # A validator message that starts with a key of the model ("percent: give count or percent")
    # is reported by the loader at that key's line rather than at the line of the whole mapping.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# -- target and load --------------------------------------------------------------------------


class Target(_Spec):
    platform: Literal["local", "kubernetes"] = "local"
    namespace: str | None = None  # kubernetes only

    @model_validator(mode="after")
    def _namespace_only_on_kubernetes(self) -> Target:
        if self.platform == "local" and self.namespace:
            raise ValueError("namespace: applies to platform: kubernetes only")
        return self


class Load(_Spec):
    profile: Literal["steady", "noon-spike", "step", "replay"] = "steady"
    baseline_rps: int = Field(default=10, ge=1, le=100_000)
    peak_multiplier: int = Field(default=1, ge=1, le=1000)
    duration: Duration
    trace: str | None = None  # replay only: CSV of second,multiplier
    users: int | None = Field(default=None, ge=1)
    # Share of the app's requests that are payments (default 1/12: ten status checks a payment).
    # Raise it so a fault window holds enough payments for its checks to judge.
    payment_share: float | None = Field(default=None, gt=0, le=1)
    # Share of payments the user double-taps: the same request, same key, sent twice at once.
    # What idempotency under concurrency is for; counted by the `double-taps` exercise.
    double_tap_share: float = Field(default=0.0, ge=0, le=1)
    # How many times the app sends a payment (same key) before it shows "try again later": its
    # patience. Three tries give up before the payment service's 15 s lease runs out, so a
    # payment cut in half is finished by the platform alone, not by the app's next retry.
    app_attempts: int = Field(default=6, ge=1, le=20)
    # Locust worker processes (and a master) instead of one process: for a spike beyond what one
    # process sends on the machine (benchmarks/load_generator.py measures it; the catalogue's
    # 100 requests/s peaks are a small share of it, so it runs one process).
    workers: int = Field(default=0, ge=0, le=64)

    @model_validator(mode="after")
    def _trace_for_replay(self) -> Load:
        if self.profile == "replay" and not self.trace:
            raise ValueError("profile replay needs a trace (a CSV of second,multiplier)")
        if self.profile != "replay" and self.trace:
            raise ValueError("trace: applies to profile replay only")
        return self


# -- faults -----------------------------------------------------------------------------------


class PodKill(_Spec):
    """SIGKILL (local) or delete with grace 0 (Kubernetes) replicas of a service."""

    service: Name
    count: int | None = Field(default=None, ge=1)
    percent: int | None = Field(default=None, ge=1, le=100)
    zone: str | None = None
    # Kill at a moment the replica is serving a request (waiting up to 10 s for one), so the
    # run always cuts a request in half: what retries, leases and takeovers exist for.
    in_flight: bool = False
    # Wait for this kind of work in flight, not just any request (implies inFlight): a kind the
    # replica reports in its `work_in_flight` gauge, e.g. a ledger's `reserve` transfers. A kill
    # that waits for any request mostly cuts the step that takes longest, never the short one.
    in_flight_kind: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")

    @model_validator(mode="after")
    def _count_or_percent(self) -> PodKill:
        if self.count is not None and self.percent is not None:
            raise ValueError("percent: give count or percent, not both")
        return self


class InFlightWork(_Spec):
    """Work a fault waits to see in flight on one replica before it strikes."""

    service: Name
    kind: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")  # its work_in_flight kind


class ZoneLoss(_Spec):
    """Every replica and the Kafka node in a zone go down and stay down for the window."""

    zone: str
    # Go down at a moment the zone's (first) replica of ``service`` is doing work of ``kind``
    # (waiting up to 10 s, as podKill's inFlightKind), so the loss always cuts that work in half:
    # a zone lost between two payments proves nothing about the ones it would have cut.
    in_flight: InFlightWork | None = None
    # Kubernetes: the zone's pods are evicted, which PodDisruptionBudgets may refuse (the finding:
    # the zone cannot be drained); true deletes them instead, as an outage would.
    override_disruption_budgets: bool = False


class LeaderOf(_Spec):
    topic: str
    partition: int = Field(ge=0)


class KafkaBrokerFailure(_Spec):
    """Kafka nodes down for the window: by id, or whichever node leads a topic-partition, and with
    ``count`` that many (the named one first, then the others by id): two of three is a majority."""

    broker: int | None = Field(default=None, ge=0)  # Strimzi numbers its nodes from 0
    leader_of: LeaderOf | None = None
    count: int = Field(default=1, ge=1)
    # Every other node stalls (SIGSTOP: a long GC pause, a frozen disk) for this long just before
    # the node dies, so its last acknowledged writes live on it alone: what acks=all exists for.
    followers_stalled: Duration | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> KafkaBrokerFailure:
        if self.broker is not None and self.leader_of is not None:
            raise ValueError("leaderOf: give broker or leaderOf, not both")
        if self.broker is None and self.leader_of is None:
            raise ValueError("give a broker id, or leaderOf: {topic, partition}")
        if self.followers_stalled is not None:
            if self.count != 1:
                raise ValueError("followersStalled: stalls every other node while one dies; give count 1")
            if self.followers_stalled.total_seconds() <= 0:
                raise ValueError("followersStalled: give a duration above zero, e.g. 4s")
        return self


class SlowDownstream(_Spec):
    """Toxiproxy toxics on a named proxy: added latency (with jitter), or a timeout."""

    proxy: Name
    latency: Duration | None = None
    jitter: Duration = timedelta(0)
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _something_to_do(self) -> SlowDownstream:
        if self.latency is None and self.timeout is None:
            raise ValueError("give latency, timeout or both")
        return self


class EventRedelivery(_Spec):
    """The last ``last`` events of every partition of ``topic`` delivered again, as a producer
    that retried after a lost acknowledgement leaves them: consumers must recognise each one."""

    topic: str = "payments"
    last: int = Field(default=20, ge=1, le=10_000)


class PoisonEvents(_Spec):
    """``count`` records no consumer can decode produced to every partition of ``topic``, as a
    producer with a bug or a schema change leaves them: consumers must skip them and go on."""

    topic: str = "payments"
    count: int = Field(default=5, ge=1, le=1_000)


class AdmissionRestriction(_Spec):
    """The gateway admits only ``allowedPercent`` of device groups, rotating every ``rotation``,
    with flow passes lasting ``flowTtl``: what operators switch on for a campaign's noon rush.
    Not a failure but a condition to rehearse: admitted users must still finish their flows."""

    service: Name = "gateway"
    allowed_percent: int = Field(ge=1, le=99)
    rotation: Duration
    flow_ttl: Duration

    @model_validator(mode="after")
    def _positive(self) -> AdmissionRestriction:
        if self.rotation <= timedelta(0) or self.flow_ttl <= timedelta(0):
            raise ValueError("rotation and flowTtl: expected durations longer than 0s")
        return self


FaultKind = Literal["podKill", "zoneLoss", "kafkaBrokerFailure", "slowDownstream", "eventRedelivery", "poisonEvents",
                    "admissionRestriction"]
FAULT_KINDS: tuple[FaultKind, ...] = ("podKill", "zoneLoss", "kafkaBrokerFailure", "slowDownstream", "eventRedelivery",
                                      "poisonEvents", "admissionRestriction")
_FAULT_KEYS = ("pod_kill", "zone_loss", "kafka_broker_failure", "slow_downstream", "event_redelivery", "poison_events",
               "admission_restriction")
FaultAction = (PodKill | ZoneLoss | KafkaBrokerFailure | SlowDownstream | EventRedelivery | PoisonEvents
               | AdmissionRestriction)


class Fault(_Spec):
    """One fault on the timeline: injected ``at`` after the start, reverted ``for`` later."""

    at: Duration
    for_: Duration = Field(alias="for")
    pod_kill: PodKill | None = None
    zone_loss: ZoneLoss | None = None
    kafka_broker_failure: KafkaBrokerFailure | None = None
    slow_downstream: SlowDownstream | None = None
    event_redelivery: EventRedelivery | None = None
    poison_events: PoisonEvents | None = None
    admission_restriction: AdmissionRestriction | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Fault:
        given = [kind for kind, key in zip(FAULT_KINDS, _FAULT_KEYS) if getattr(self, key) is not None]
        if not given:
            raise ValueError(f"a fault needs one of {', '.join(FAULT_KINDS)}")
        if len(given) > 1:
            raise ValueError(f"{given[1]}: a fault has exactly one kind and this one also has {given[0]}: split it in two")
        if self.for_ <= timedelta(0):
            raise ValueError("for: expected a duration longer than 0s")
        try:
            self.at + self.for_
        except OverflowError:
            raise ValueError("for: the fault would end too far in the future") from None
        return self

    @property
    def kind(self) -> FaultKind:
        for kind, key in zip(FAULT_KINDS, _FAULT_KEYS):
            if getattr(self, key) is not None:
                return kind
        raise AssertionError("validated to have one kind")

    @property
    def action(self) -> FaultAction:
        value = next((v for key in _FAULT_KEYS if (v := getattr(self, key)) is not None), None)
        assert value is not None
        return value  # type: ignore[no-any-return]

    @property
    def ends_at(self) -> timedelta:
        return self.at + self.for_


# -- checks -----------------------------------------------------------------------------------


def _by_shape(scalar: str | None = None, mapping: str | None = None, sequence: str | None = None) -> Callable[[object], str | None]:
    """Pick a union branch by the shape of the input, so an error names what was expected."""

    def pick(value: object) -> str | None:
        if isinstance(value, str):
            return scalar
        if isinstance(value, dict | BaseModel):
            return mapping
        if isinstance(value, list | tuple):
            return sequence
        return None

    return pick


def _number_or_duration(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str | timedelta):
        return "duration"
    return None


# A number (a ratio such as 0.99, a rate) or a duration (a latency such as 300ms).
Bound = Annotated[
    Union[Annotated[float, Tag("number")], Annotated[Duration, Tag("duration")]],
    Discriminator(
        _number_or_duration,
        custom_error_type="bound_type",
        custom_error_message="expected a number such as 0.99 or a duration such as '300ms'",
    ),
]


class SloBound(_Spec):
    """An SLO from the catalogue compared to a bound: a number (ratio, rate) or a duration (latency)."""

    name: Name
    below: Bound | None = None
    above: Bound | None = None
    for_: Duration | None = Field(default=None, alias="for")

    @model_validator(mode="after")
    def _one_bound(self) -> SloBound:
        if (self.below is None) == (self.above is None):
            raise ValueError("give exactly one of below or above")
        return self


class Breaker(_Spec):
    name: Name
    opens_within: Duration | None = None
    closes_within: Duration | None = None
    fails_fast_below: Duration | None = None
    # How many calls a replica's breaker must see under the fault before staying closed counts
    # against it: for a count-based Resilience4j breaker, max(minimumNumberOfCalls, the threshold
    # share of the sliding window), which trips it whatever its window held. With fewer on every
    # replica the traffic never tested it: inconclusive, not failed. Default: what the reference
    # platform's breaker settings give.
    calls_to_open: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _something_to_check(self) -> Breaker:
        if self.opens_within is None and self.closes_within is None and self.fails_fast_below is None:
            raise ValueError("give opensWithin, closesWithin or failsFastBelow")
        return self


class Recovery(_Spec):
    slo: Name
    within: Duration


class KafkaLag(_Spec):
    group: str = "campaign"
    lag_below: int = Field(ge=0)
    within: Duration


class Traffic(_Spec):
    """The built-in client-side checks: the share of requests that succeeded; how many phones
    admission refused while they held an unexpired flow pass (a flow cut halfway); how long the
    slowest payment waited, from its first attempt and through every retry, for its answer."""

    success_ratio_above: float | None = Field(default=None, gt=0, le=1)
    flows_cut_at_most: int | None = Field(default=None, ge=0)
    payments_answered_within: Duration | None = None

    @model_validator(mode="after")
    def _something_to_check(self) -> Traffic:
        if self.success_ratio_above is None and self.flows_cut_at_most is None and self.payments_answered_within is None:
            raise ValueError("give successRatioAbove, flowsCutAtMost, paymentsAnsweredWithin, or several")
        return self

    @property
    def reads_whole_record(self) -> bool:
        """Judged from the load's record of every payment, complete only once the load stopped."""
        return self.payments_answered_within is not None


class TrafficStop(_Spec):
    """Abort when the client-side success ratio falls below a floor (for the given time)."""

    success_ratio_below: float = Field(gt=0, le=1)
    for_: Duration | None = Field(default=None, alias="for")


SloRef = Annotated[
    Union[Annotated[Name, Tag("name")], Annotated[SloBound, Tag("bound")]],
    Discriminator(
        _by_shape("name", mapping="bound"),
        custom_error_type="slo_ref_type",
        custom_error_message="expected an SLO name, or a mapping {name, below or above, for}",
    ),
]
class EventualInvariant(_Spec):
    """An invariant that holds once the system has caught up: events delivered, read models
    converged. It is judged again until it holds, for at most ``within``."""

    name: Name
    within: Duration


InvariantRef = Annotated[
    Union[Annotated[Name, Tag("name")], Annotated[list[Name], Tag("names")], Annotated[EventualInvariant, Tag("eventual")]],
    Discriminator(
        _by_shape("name", mapping="eventual", sequence="names"),
        custom_error_type="invariant_ref_type",
        custom_error_message="expected an invariant name, a list of them, or a mapping {name, within}",
    ),
]

CHECK_KINDS = ("slo", "invariant", "breaker", "recovery", "kafka", "traffic")


class Check(_Spec):
    """One judged condition. Exactly one key: slo, invariant, breaker, recovery, kafka, traffic."""

    slo: SloRef | None = None
    invariant: InvariantRef | None = None
    breaker: Breaker | None = None
    recovery: Recovery | None = None
    kafka: KafkaLag | None = None
    traffic: Traffic | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Check:
        given = [k for k in CHECK_KINDS if getattr(self, k) is not None]
        if not given:
            raise ValueError(f"a check needs one of {', '.join(CHECK_KINDS)}")
        if len(given) > 1:
            raise ValueError(f"{given[1]}: a check has exactly one kind and this one also has {given[0]}: split it in two")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in CHECK_KINDS if getattr(self, k) is not None)


class StopCondition(_Spec):
    """Abort and revert everything when this holds (for the given time)."""

    slo: SloBound | None = None
    traffic: TrafficStop | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StopCondition:
        if self.slo is not None and self.traffic is not None:
            raise ValueError("traffic: a stop condition has exactly one of slo or traffic: split it in two")
        if self.slo is None and self.traffic is None:
            raise ValueError("a stop condition needs slo: {name, above or below, for} or traffic: {successRatioBelow, for}")
        return self


class Runbook(_Spec):
    summary: str
    users_see: str | None = None
    mitigation: list[str] = []
    kubernetes_mitigation: list[str] = []
    rollback: list[str] = []
    escalation: str | None = None


class Limits(_Spec):
    """Blast radius: enforced, not advisory. A plan that exceeds them is refused."""

    max_replicas: int = Field(default=3, ge=1)
    max_percent: int = Field(default=34, ge=1, le=100)
    allow_zone_loss: bool = True


class Times(_Spec):
    """The SLOs that time the run: ``timeToDetect`` ends at the first second any of ``detect`` is
    out of its objective (or a breaker opens), ``recoveryTime`` at the first second every one of
    ``recover`` is back within it (and every breaker closed). Unset: the catalogue's (series.yaml)."""

    detect: list[Name] | None = None
    recover: list[Name] | None = None


class ExperimentSpec(_Spec):
    description: str
    target: Target = Target()
    load: Load | None = None
    steady_state: list[Check] = []
    faults: list[Fault] = Field(min_length=1)
    expect: list[Check] = []
    after: list[Check] = []
    stop_when: list[StopCondition] = []
    # What the run must provoke for its checks to mean anything, and how often at least
    # (names from probes/exercises.yaml): `{retried-payments: 5, takeovers: 1}`. Fewer is inconclusive.
    exercise: dict[Name, Annotated[int, Field(ge=1)]] = {}
    runbook: Runbook | None = None
    limits: Limits = Limits()
    times: Times = Times()

    @model_validator(mode="after")
    def _whole_record_checks_after(self) -> ExperimentSpec:
        for section in ("steady_state", "expect"):
            for i, check in enumerate(getattr(self, section)):
                if check.traffic is not None and check.traffic.reads_whole_record:
                    raise ValueError(
                        f"{to_camel(section)}[{i}].traffic.paymentsAnsweredWithin: judged from the load's record of "
                        "every payment, which is complete only once the load has stopped: put it under after"
                    )
        return self

    @model_validator(mode="after")
    def _faults_fit_in_the_load(self) -> ExperimentSpec:
        if self.load is not None:
            for i, fault in enumerate(self.faults):
                if fault.ends_at > self.load.duration:
                    raise ValueError(
                        f"faults[{i}]: ends at {format_duration(fault.ends_at)} (at + for), after the load ends "
                        f"at {format_duration(self.load.duration)}: lengthen load.duration or end the fault sooner"
                    )
        return self

    @property
    def duration(self) -> timedelta:
        last_fault = max(f.ends_at for f in self.faults)
        return max(last_fault, self.load.duration) if self.load else last_fault


class Metadata(_Spec):
    name: Name
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class Resource(_Spec):
    """A document shaped like a Kubernetes custom resource; subclasses fix ``kind`` and add ``spec``."""

    api_version: Literal["paychaos.io/v1alpha1"]
    kind: str
    metadata: Metadata

    @property
    def name(self) -> str:
        return self.metadata.name


class ChaosExperiment(Resource):
    kind: Literal["ChaosExperiment"]
    spec: ExperimentSpec
