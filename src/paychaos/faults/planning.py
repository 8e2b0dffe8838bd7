"""Deciding what a fault will hit: ``plan_fault(fault, observed, limits) -> FaultPlan``, with no I/O.

A driver observes the target into an ``Observed`` snapshot; the plan names exactly which
replicas, zone, broker or proxy toxics are hit, and refuses plans beyond the blast-radius limits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import paychaos.experiments.spec as spec
from paychaos.durations import format_duration

PartitionRef = tuple[str, int]


class PlanError(Exception):
    """The fault names something the target does not have: fix the spec (the message says what exists)."""


class BlastRadiusExceeded(PlanError):
    """The fault would hit more than the experiment's limits allow: shrink the fault or raise the limits."""


# -- what the target looks like ---------------------------------------------------------------


@dataclass(frozen=True)
class ObservedReplica:
    """One replica (a process locally, a pod on Kubernetes); pid and started identify one instance."""

    name: str
    service: str
    zone: str
    ready: bool
    pid: int | None = None
    started: float | None = None


@dataclass(frozen=True)
class ObservedBroker:
    id: int
    name: str
    zone: str
    ready: bool
    pid: int | None = None
    started: float | None = None


@dataclass(frozen=True)
class ObservedNode:
    """A machine replicas run on (a Kubernetes node); the local platform has none."""

    name: str
    zone: str
    schedulable: bool = True


@dataclass(frozen=True)
class ObservedProxy:
    name: str
    upstream: str
    toxics: tuple[str, ...] = ()


@dataclass(frozen=True)
class Observed:
    """A snapshot of the target, taken by a driver; planning reads nothing else."""

    zones: tuple[str, ...]
    replicas: tuple[ObservedReplica, ...]
    brokers: tuple[ObservedBroker, ...] = ()
    proxies: tuple[ObservedProxy, ...] = ()
    leaders: Mapping[PartitionRef, int] = field(default_factory=dict)
    # Why a leader asked for could not be read (no such topic, no leader right now, ...).
    leader_errors: Mapping[PartitionRef, str] = field(default_factory=dict)
    nodes: tuple[ObservedNode, ...] = ()

    def replicas_of(self, service: str) -> list[ObservedReplica]:
        return sorted((r for r in self.replicas if r.service == service), key=lambda r: r.name)

    @property
    def services(self) -> list[str]:
        return sorted({r.service for r in self.replicas})


def partitions_needed(faults: Iterable[spec.Fault]) -> list[PartitionRef]:
    """The topic-partitions whose leaders a driver must observe before these faults can be planned."""
    out: list[PartitionRef] = []
    for fault in faults:
        failure = fault.kafka_broker_failure
        if failure is not None and failure.leader_of is not None:
            ref = (failure.leader_of.topic, failure.leader_of.partition)
            if ref not in out:
                out.append(ref)
    return out


# -- the plan ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Toxic:
    name: str
    type: str
    attributes: Mapping[str, int]
    stream: str = "downstream"


@dataclass(frozen=True)
class FaultPlan:
    """Exactly what one fault hits. Serialisable (``to_dict``/``from_dict``) for the fault ledger."""

    experiment: str
    index: int
    kind: spec.FaultKind
    at: float
    duration: float
    replicas: tuple[ObservedReplica, ...] = ()
    brokers: tuple[ObservedBroker, ...] = ()
    zone: str | None = None
    leader_of: PartitionRef | None = None
    proxy: str | None = None
    upstream: str | None = None
    toxics: tuple[Toxic, ...] = ()
    in_flight: bool = False  # podKill: wait for a request in flight on each victim, then kill
    in_flight_kind: str | None = None  # podKill: ... for work of this kind in flight
    in_flight_on: str | None = None  # zoneLoss inFlight: the replica whose in_flight_kind work it waits for
    topic: str | None = None  # eventRedelivery, poisonEvents
    last: int = 0  # eventRedelivery: records of each partition delivered again
    poison: int = 0  # poisonEvents: undecodable records produced to each partition
    # admissionRestriction: (allowed percent, rotation seconds, flow TTL seconds) on the replicas
    restriction: tuple[int, float, float] | None = None
    # kafkaBrokerFailure followersStalled: these nodes are stopped (SIGSTOP) for ``stall`` seconds
    # and the victims killed at its end, before the stalled nodes resume
    stalled: tuple[ObservedBroker, ...] = ()
    stall: float = 0.0
    nodes: tuple[str, ...] = ()  # zoneLoss on Kubernetes: the zone's nodes, cordoned for the window
    override_budgets: bool = False  # zoneLoss on Kubernetes: delete pods a PodDisruptionBudget keeps

    @property
    def id(self) -> str:
        return f"{self.experiment}-{self.index}"

    def headline(self) -> str:
        """One line: what is hit."""
        return HEADLINES[self.kind](self)

    def describe(self) -> str:
        """Several lines for `paychaos plan`: the window, then every target by name."""
        lines = [f"faults[{self.index}] at {_secs(self.at)} for {_secs(self.duration)} — {self.kind}"]
        if self.zone is not None:
            lines.append(f"  zone      {self.zone} (held down for the window)")
        for n in self.nodes:
            lines.append(f"  node      {n} (cordoned; its pods {'deleted' if self.override_budgets else 'evicted'})")
        for r in self.replicas:
            lines.append(f"  replica   {r.name}  zone {r.zone}  pid {_pid(r.pid)}{'' if r.ready else '  (not ready)'}")
        if self.in_flight:
            on = self.in_flight_on or ("each replica" if len(self.replicas) > 1 else "the replica")
            work = f"{self.in_flight_kind} work" if self.in_flight_kind else "a request"
            lines.append(f"  waits     for {work} in flight on {on}, then strikes")
        if self.restriction is not None:
            allowed, rotation, ttl = self.restriction
            lines.append(f"  admission {allowed}% of device groups, rotating every {_secs(rotation)}, passes for {_secs(ttl)}")
        for b in self.brokers:
            lead = f"  leader of {self.leader_of[0]}-{self.leader_of[1]}" if self.leader_of else ""
            lines.append(f"  broker    {b.id} ({b.name})  zone {b.zone}  pid {_pid(b.pid)}{lead}")
        for b in self.stalled:
            lines.append(f"  stalled   {b.id} ({b.name})  zone {b.zone}  pid {_pid(b.pid)}  for {_secs(self.stall)} before the kill")
        if self.proxy is not None:
            lines.append(f"  proxy     {self.proxy} (in front of {self.upstream})")
        if self.topic is not None and self.kind == "poisonEvents":
            lines.append(f"  topic     {self.topic}: {self.poison} undecodable records to each partition")
        elif self.topic is not None:
            lines.append(f"  topic     {self.topic}: the last {self.last} records of each partition, produced again")
        for t in self.toxics:
            lines.append(f"  toxic     {t.name}: {_toxic_text(t)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "index": self.index,
            "kind": self.kind,
            "at": self.at,
            "duration": self.duration,
            "replicas": [vars(r) for r in self.replicas],
            "brokers": [vars(b) for b in self.brokers],
            "zone": self.zone,
            "leaderOf": {"topic": self.leader_of[0], "partition": self.leader_of[1]} if self.leader_of else None,
            "proxy": self.proxy,
            "upstream": self.upstream,
            "toxics": [{"name": t.name, "type": t.type, "attributes": dict(t.attributes), "stream": t.stream}
                       for t in self.toxics],
            "inFlight": self.in_flight,
            "inFlightKind": self.in_flight_kind,
            "inFlightOn": self.in_flight_on,
            "topic": self.topic,
            "last": self.last,
            "poison": self.poison,
            "restriction": list(self.restriction) if self.restriction is not None else None,
            "stalled": [vars(b) for b in self.stalled],
            "stall": self.stall,
            "nodes": list(self.nodes),
            "overrideBudgets": self.override_budgets,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultPlan:
        leader = data.get("leaderOf")
        return cls(
            experiment=data["experiment"],
            index=int(data["index"]),
            kind=data["kind"],
            at=float(data["at"]),
            duration=float(data["duration"]),
            replicas=tuple(ObservedReplica(**r) for r in data.get("replicas", [])),
            brokers=tuple(ObservedBroker(**b) for b in data.get("brokers", [])),
            zone=data.get("zone"),
            leader_of=(leader["topic"], int(leader["partition"])) if leader else None,
            proxy=data.get("proxy"),
            upstream=data.get("upstream"),
            toxics=tuple(Toxic(t["name"], t["type"], t["attributes"], t.get("stream", "downstream"))
                         for t in data.get("toxics", [])),
            in_flight=bool(data.get("inFlight", False)),
            in_flight_kind=data.get("inFlightKind"),
            in_flight_on=data.get("inFlightOn"),
            topic=data.get("topic"),
            last=int(data.get("last", 0)),
            poison=int(data.get("poison", 0)),
            restriction=(int(r[0]), float(r[1]), float(r[2])) if (r := data.get("restriction")) else None,
            stalled=tuple(ObservedBroker(**b) for b in data.get("stalled", [])),
            stall=float(data.get("stall", 0.0)),
            nodes=tuple(data.get("nodes", [])),
            override_budgets=bool(data.get("overrideBudgets", False)),
        )


def toxic_name(experiment: str, index: int, what: str) -> str:
    return f"paychaos-{experiment}-{index}-{what}"


# -- planning ---------------------------------------------------------------------------------


def plan_fault(fault: spec.Fault, observed: Observed, limits: spec.Limits, *, experiment: str, index: int) -> FaultPlan:
    """Choose the targets of ``fault`` deterministically and check them against ``limits``.

    ``experiment`` and ``index`` name the fault in the ledger and in the toxics it adds.
    """
    base = {"experiment": experiment, "index": index, "kind": fault.kind,
            "at": fault.at.total_seconds(), "duration": fault.for_.total_seconds()}
    planner = PLANNERS.get(fault.kind)
    if planner is None:
        raise PlanError(f"no planner for {fault.kind} faults (known: {', '.join(sorted(PLANNERS))})")
    return planner(fault.action, observed, limits, base)


def _pod_kill(action: spec.PodKill, observed: Observed, limits: spec.Limits, base: dict[str, Any]) -> FaultPlan:
    return FaultPlan(**base, replicas=_pod_kill_targets(action, observed, limits),
                    in_flight=action.in_flight or action.in_flight_kind is not None, in_flight_kind=action.in_flight_kind)


def _event_redelivery(action: spec.EventRedelivery, observed: Observed, limits: spec.Limits, base: dict[str, Any]) -> FaultPlan:
    return FaultPlan(**base, topic=action.topic, last=action.last)


def _poison_events(action: spec.PoisonEvents, observed: Observed, limits: spec.Limits, base: dict[str, Any]) -> FaultPlan:
    return FaultPlan(**base, topic=action.topic, poison=action.count)


def _admission_restriction(action: spec.AdmissionRestriction, observed: Observed, limits: spec.Limits,
                           base: dict[str, Any]) -> FaultPlan:
    if not observed.replicas_of(action.service):
        raise PlanError(f"admissionRestriction: no service {action.service!r}; services: {', '.join(observed.services) or 'none'}")
    # The replicas serving now; one restarted during the window comes back unrestricted.
    replicas = [r for r in observed.replicas_of(action.service) if r.ready]
    if not replicas:
        raise PlanError(f"admissionRestriction: no replica of {action.service} is ready")
    restriction = (action.allowed_percent, action.rotation.total_seconds(), action.flow_ttl.total_seconds())
    return FaultPlan(**base, replicas=tuple(replicas), restriction=restriction)


def plan_faults(faults: Sequence[spec.Fault], observed: Observed, limits: spec.Limits, *, experiment: str) -> list[FaultPlan]:
    return [plan_fault(f, observed, limits, experiment=experiment, index=i) for i, f in enumerate(faults)]


def replicas_to_hit(total: int, count: int | None, percent: int | None) -> int:
    """``count`` (default 1), or ``percent`` of ``total`` rounded up: 34 % of 3 replicas is 2."""
    if percent is not None:
        return max(1, -(-percent * total // 100))
    return count if count is not None else 1


def _pod_kill_targets(action: spec.PodKill, observed: Observed, limits: spec.Limits) -> tuple[ObservedReplica, ...]:
    service = observed.replicas_of(action.service)
    if not service:
        raise PlanError(f"podKill: no service {action.service!r}; services: {', '.join(observed.services) or 'none'}")
    if action.zone is not None and action.zone not in observed.zones:
        raise PlanError(f"podKill: no zone {action.zone!r}; zones: {', '.join(observed.zones)}")
    candidates = [r for r in service if action.zone is None or r.zone == action.zone]
    where = f" in {action.zone}" if action.zone else ""
    wanted = replicas_to_hit(len(candidates), action.count, action.percent)
    _check_replica_limits(f"podKill {action.service}", wanted, len(service), limits)
    ready = [r for r in candidates if r.ready]
    if wanted > len(ready):
        down = [r.name for r in candidates if not r.ready]
        detail = f"; not ready now: {', '.join(down)}" if down else ""
        raise PlanError(f"podKill {action.service}: {wanted} replicas wanted{where} but only "
                        f"{len(ready)} of {len(candidates)} are ready{detail}")
    return tuple(ready[:wanted])


def _check_replica_limits(what: str, hit: int, total: int, limits: spec.Limits) -> None:
    share = 100 * hit / total
    if hit > limits.max_replicas:
        raise BlastRadiusExceeded(f"{what} would hit {hit} of {total} replicas, over limits.maxReplicas "
                                  f"{limits.max_replicas}: hit fewer or raise spec.limits.maxReplicas")
    if hit * 100 > limits.max_percent * total:
        raise BlastRadiusExceeded(f"{what} would hit {hit} of {total} replicas ({share:.0f}%), over "
                                  f"limits.maxPercent {limits.max_percent}%: hit fewer or raise spec.limits.maxPercent")


def _zone_loss(action: spec.ZoneLoss, observed: Observed, limits: spec.Limits, base: dict[str, Any]) -> FaultPlan:
    if action.zone not in observed.zones:
        raise PlanError(f"zoneLoss: no zone {action.zone!r}; zones: {', '.join(observed.zones)}")
    if not limits.allow_zone_loss:
        raise BlastRadiusExceeded(f"zoneLoss {action.zone} would take down a whole zone, but "
                                  "limits.allowZoneLoss is false: set spec.limits.allowZoneLoss to true")
    hit = tuple(sorted((r for r in observed.replicas if r.zone == action.zone), key=lambda r: r.name))
    # A zone is a blast radius of its own (allowZoneLoss); the share of each service still counts,
    # so that losing one of two zones is not mistaken for losing one of three.
    for service in observed.services:
        in_zone = sum(1 for r in hit if r.service == service)
        total = len(observed.replicas_of(service))
        if in_zone == total and total > 0 and limits.max_percent < 100:
            where = "its only replica runs" if total == 1 else f"all {total} of its replicas run"
            raise BlastRadiusExceeded(
                f"zoneLoss {action.zone} would take {service} down entirely: {where} in {action.zone}. "
                f"{service} has no zone redundancy, so losing {action.zone} is an outage of {service}, "
                "not a failover to rehearse: spread its replicas across zones (that is the finding), "
                "or set spec.limits.maxPercent to 100 to rehearse the outage")
        if in_zone * 100 > limits.max_percent * total:
            raise BlastRadiusExceeded(
                f"zoneLoss {action.zone} would hit {in_zone} of {total} {service} replicas "
                f"({100 * in_zone / total:.0f}%), over limits.maxPercent {limits.max_percent}%: "
                "raise spec.limits.maxPercent")
    brokers = tuple(sorted((b for b in observed.brokers if b.zone == action.zone), key=lambda b: b.id))
    nodes = tuple(sorted(n.name for n in observed.nodes if n.zone == action.zone))
    watched = None
    if action.in_flight is not None:
        service = action.in_flight.service
        watched = next((r.name for r in hit if r.service == service), None)
        if watched is None:
            raise PlanError(f"zoneLoss {action.zone}: inFlight.service {service} has no replica in {action.zone} "
                            f"(services there: {', '.join(sorted({r.service for r in hit})) or 'none'})")
    return FaultPlan(**base, zone=action.zone, replicas=hit, brokers=brokers, nodes=nodes,
                     override_budgets=action.override_disruption_budgets, in_flight=watched is not None,
                     in_flight_kind=action.in_flight.kind if action.in_flight else None, in_flight_on=watched)


def _broker_failure(action: spec.KafkaBrokerFailure, observed: Observed, limits: spec.Limits, base: dict[str, Any]) -> FaultPlan:
    leader_of: PartitionRef | None = None
    broker_id = action.broker
    if action.leader_of is not None:
        leader_of = (action.leader_of.topic, action.leader_of.partition)
        if leader_of in observed.leader_errors:
            raise PlanError(f"kafkaBrokerFailure: leader of {leader_of[0]}-{leader_of[1]} unknown: "
                            f"{observed.leader_errors[leader_of]}")
        if leader_of not in observed.leaders:
            raise PlanError(f"kafkaBrokerFailure: the leader of {leader_of[0]}-{leader_of[1]} was not observed")
        broker_id = observed.leaders[leader_of]
    by_id = sorted(observed.brokers, key=lambda b: b.id)
    broker = next((b for b in by_id if b.id == broker_id), None)
    if broker is None:
        known = ", ".join(str(b.id) for b in by_id) or "none"
        raise PlanError(f"kafkaBrokerFailure: no Kafka broker {broker_id}; brokers: {known}")
    if action.count > len(by_id):
        raise PlanError(f"kafkaBrokerFailure: count {action.count}, but the cluster has {len(by_id)} brokers")
    others = [b for b in by_id if b.id != broker.id][: action.count - 1]
    stalled: tuple[ObservedBroker, ...] = ()
    stall = 0.0
    if action.followers_stalled is not None:
        stall = action.followers_stalled.total_seconds()
        if stall >= base["duration"]:
            raise PlanError(f"kafkaBrokerFailure: followersStalled {_secs(stall)} must end inside the fault's window "
                            f"of {_secs(base['duration'])}")
        stalled = tuple(b for b in by_id if b.id != broker.id)
        if not stalled:
            raise PlanError("kafkaBrokerFailure: followersStalled, but the cluster has no other node to stall")
        down = [b.name for b in stalled if not b.ready or b.pid is None]
        if down:
            raise PlanError(f"kafkaBrokerFailure: followersStalled needs every other node running; down: {', '.join(down)}")
    return FaultPlan(**base, brokers=(broker, *others), zone=None, leader_of=leader_of, stalled=stalled, stall=stall)


def _slow_downstream(action: spec.SlowDownstream, observed: Observed, limits: spec.Limits, base: dict[str, Any]) -> FaultPlan:
    proxy = next((p for p in observed.proxies if p.name == action.proxy), None)
    if proxy is None:
        known = ", ".join(sorted(p.name for p in observed.proxies)) or "none"
        raise PlanError(f"slowDownstream: no proxy {action.proxy!r}; proxies: {known}")
    toxics: list[Toxic] = []
    if action.latency is not None:
        toxics.append(Toxic(toxic_name(base["experiment"], base["index"], "latency"), "latency",
                            {"latency": _millis(action.latency.total_seconds()),
                             "jitter": _millis(action.jitter.total_seconds())}))
    if action.timeout is not None:
        toxics.append(Toxic(toxic_name(base["experiment"], base["index"], "timeout"), "timeout",
                            {"timeout": _millis(action.timeout.total_seconds())}))
    return FaultPlan(**base, proxy=proxy.name, upstream=proxy.upstream, toxics=tuple(toxics))


# -- text -------------------------------------------------------------------------------------


def _pod_kill_headline(plan: FaultPlan) -> str:
    names = ", ".join(r.name for r in plan.replicas)
    when = (f" while applying a {plan.in_flight_kind}" if plan.in_flight_kind
            else " while serving a request" if plan.in_flight else "")
    return f"podKill {plan.replicas[0].service}: kill {names}{when}"


def _zone_loss_headline(plan: FaultPlan) -> str:
    brokers = "".join(f" and Kafka node {b.id}" for b in plan.brokers)
    when = f" while {plan.in_flight_on} is applying a {plan.in_flight_kind}" if plan.in_flight_on else ""
    return f"zoneLoss {plan.zone}: hold the zone down, kill {len(plan.replicas)} replicas{brokers}{when}"


def _broker_failure_headline(plan: FaultPlan) -> str:
    b = plan.brokers[0]
    why = f" (leader of {plan.leader_of[0]}-{plan.leader_of[1]})" if plan.leader_of else ""
    more = "".join(f" and {o.id} in {o.zone}" for o in plan.brokers[1:])
    stalled = (f", killed after nodes {', '.join(str(o.id) for o in plan.stalled)} stalled for {_secs(plan.stall)}"
               if plan.stalled else "")
    return f"kafkaBrokerFailure: hold Kafka node {b.id} in {b.zone}{why}{more} down{stalled}"


def _admission_restriction_headline(plan: FaultPlan) -> str:
    assert plan.restriction is not None
    allowed, rotation, ttl = plan.restriction
    return (f"admissionRestriction on {len(plan.replicas)} {plan.replicas[0].service} replicas: admit "
            f"{allowed}% of devices, rotating every {_secs(rotation)}, passes for {_secs(ttl)}")


HEADLINES: dict[str, Callable[[FaultPlan], str]] = {
    "podKill": _pod_kill_headline,
    "zoneLoss": _zone_loss_headline,
    "kafkaBrokerFailure": _broker_failure_headline,
    "slowDownstream": lambda p: f"slowDownstream on proxy {p.proxy}: {', '.join(_toxic_text(t) for t in p.toxics)}",
    "eventRedelivery": lambda p: f"eventRedelivery: the last {p.last} events of every {p.topic} partition delivered again",
    "poisonEvents": lambda p: f"poisonEvents: {p.poison} undecodable records produced to every {p.topic} partition",
    "admissionRestriction": _admission_restriction_headline,
}

# The planners by fault kind: one per kind of spec.FAULT_KINDS (a unit test holds them to it).
Planner = Callable[[Any, Observed, spec.Limits, dict[str, Any]], FaultPlan]
PLANNERS: dict[str, Planner] = {
    "podKill": _pod_kill,
    "zoneLoss": _zone_loss,
    "kafkaBrokerFailure": _broker_failure,
    "slowDownstream": _slow_downstream,
    "eventRedelivery": _event_redelivery,
    "poisonEvents": _poison_events,
    "admissionRestriction": _admission_restriction,
}


def _millis(seconds: float) -> int:
    return round(seconds * 1000)


def _secs(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))


def _pid(pid: int | None) -> str:
    return str(pid) if pid is not None else "-"


def _toxic_text(t: Toxic) -> str:
    if t.type == "latency":
        jitter = t.attributes.get("jitter", 0)
        return f"latency +{t.attributes['latency']}ms" + (f" ±{jitter}ms" if jitter else "")
    if t.type == "timeout":
        return f"timeout after {t.attributes['timeout']}ms"
    return f"{t.type} {dict(t.attributes)}"
