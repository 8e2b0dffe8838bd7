"""The ChaosExperiment spec: one YAML document shaped like a Kubernetes custom resource.

The same file is read by the CLI, by CI gates and (later) by the operator. Keys are camelCase
as in Kubernetes; snake_case spellings are accepted too.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from paychaos.durations import Duration

API_VERSION = "paychaos.io/v1alpha1"
KIND = "ChaosExperiment"

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


# -- target and load --------------------------------------------------------------------------


class Target(_Spec):
    platform: Literal["local", "kubernetes"] = "local"
    namespace: str | None = None  # kubernetes only

    @model_validator(mode="after")
    def _namespace_only_on_kubernetes(self) -> Target:
        if self.platform == "local" and self.namespace:
            raise ValueError("namespace applies to platform: kubernetes only")
        return self


class Load(_Spec):
    profile: Literal["steady", "noon-spike", "step", "replay"] = "steady"
    baseline_rps: int = Field(default=10, ge=1, le=100_000)
    peak_multiplier: int = Field(default=1, ge=1, le=1000)
    duration: Duration
    trace: str | None = None  # replay only: CSV of second,multiplier
    users: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _trace_for_replay(self) -> Load:
        if self.profile == "replay" and not self.trace:
            raise ValueError("profile replay needs a trace (a CSV of second,multiplier)")
        if self.profile != "replay" and self.trace:
            raise ValueError("trace applies to profile replay only")
        return self


# -- faults -----------------------------------------------------------------------------------


class PodKill(_Spec):
    """SIGKILL (local) or delete with grace 0 (Kubernetes) replicas of a service."""

    service: Name
    count: int | None = Field(default=None, ge=1)
    percent: int | None = Field(default=None, ge=1, le=100)
    zone: str | None = None

    @model_validator(mode="after")
    def _count_or_percent(self) -> PodKill:
        if self.count is not None and self.percent is not None:
            raise ValueError("give count or percent, not both")
        return self


class ZoneLoss(_Spec):
    """Every replica and the Kafka node in a zone go down and stay down for the window."""

    zone: str


class LeaderOf(_Spec):
    topic: str
    partition: int = Field(ge=0)


class KafkaBrokerFailure(_Spec):
    """One Kafka node down for the window: by id, or whichever node leads a topic-partition."""

    broker: int | None = Field(default=None, ge=1)
    leader_of: LeaderOf | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> KafkaBrokerFailure:
        if (self.broker is None) == (self.leader_of is None):
            raise ValueError("give exactly one of broker or leaderOf")
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


FaultKind = Literal["podKill", "zoneLoss", "kafkaBrokerFailure", "slowDownstream"]


class Fault(_Spec):
    """One fault on the timeline: injected ``at`` after the start, reverted ``for`` later."""

    at: Duration
    for_: Duration = Field(alias="for")
    pod_kill: PodKill | None = None
    zone_loss: ZoneLoss | None = None
    kafka_broker_failure: KafkaBrokerFailure | None = None
    slow_downstream: SlowDownstream | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Fault:
        given = [k for k in ("pod_kill", "zone_loss", "kafka_broker_failure", "slow_downstream") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("a fault has exactly one of podKill, zoneLoss, kafkaBrokerFailure, slowDownstream")
        return self

    @property
    def kind(self) -> FaultKind:
        for key, kind in (
            ("pod_kill", "podKill"),
            ("zone_loss", "zoneLoss"),
            ("kafka_broker_failure", "kafkaBrokerFailure"),
            ("slow_downstream", "slowDownstream"),
        ):
            if getattr(self, key) is not None:
                return kind  # type: ignore[return-value]
        raise AssertionError("validated to have one kind")

    @property
    def action(self) -> PodKill | ZoneLoss | KafkaBrokerFailure | SlowDownstream:
        value = self.pod_kill or self.zone_loss or self.kafka_broker_failure or self.slow_downstream
        assert value is not None
        return value

    @property
    def ends_at(self) -> timedelta:
        return self.at + self.for_


# -- checks -----------------------------------------------------------------------------------


class SloBound(_Spec):
    """An SLO from the catalogue compared to a bound: a number (ratio, rate) or a duration (latency)."""

    name: Name
    below: float | Duration | None = None
    above: float | Duration | None = None
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
    """The built-in client-side check: the share of requests that succeeded."""

    success_ratio_above: float = Field(gt=0, le=1)


class Check(_Spec):
    """One judged condition. Exactly one key: slo, invariant, breaker, recovery, kafka, traffic."""

    slo: Name | SloBound | None = None
    invariant: Name | list[Name] | None = None
    breaker: Breaker | None = None
    recovery: Recovery | None = None
    kafka: KafkaLag | None = None
    traffic: Traffic | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Check:
        given = [k for k in ("slo", "invariant", "breaker", "recovery", "kafka", "traffic") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a check has exactly one of slo, invariant, breaker, recovery, kafka, traffic")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("slo", "invariant", "breaker", "recovery", "kafka", "traffic") if getattr(self, k) is not None)


class StopCondition(_Spec):
    """Abort and revert everything when this holds (for the given time)."""

    slo: SloBound | None = None
    traffic: Traffic | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StopCondition:
        if (self.slo is None) == (self.traffic is None):
            raise ValueError("a stop condition has exactly one of slo or traffic")
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


class ExperimentSpec(_Spec):
    description: str
    target: Target = Target()
    load: Load | None = None
    steady_state: list[Check] = []
    faults: list[Fault] = Field(min_length=1)
    expect: list[Check] = []
    after: list[Check] = []
    stop_when: list[StopCondition] = []
    runbook: Runbook | None = None
    limits: Limits = Limits()

    @model_validator(mode="after")
    def _faults_fit_in_the_load(self) -> ExperimentSpec:
        if self.load is not None:
            for i, fault in enumerate(self.faults):
                if fault.ends_at > self.load.duration:
                    raise ValueError(
                        f"faults[{i}] ends at {fault.ends_at.total_seconds():g}s, after the load "
                        f"({self.load.duration.total_seconds():g}s): lengthen load.duration"
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


class ChaosExperiment(_Spec):
    api_version: Literal["paychaos.io/v1alpha1"]
    kind: Literal["ChaosExperiment"]
    metadata: Metadata
    spec: ExperimentSpec

    @property
    def name(self) -> str:
        return self.metadata.name
