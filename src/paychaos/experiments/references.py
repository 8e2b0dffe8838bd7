"""What an experiment names must exist: services, zones, proxies, brokers, SLOs, invariants,
breakers and consumer groups.

Pure checks of a validated experiment against a target's inventory and a probe catalogue; each problem is
the data path it concerns (as the spec's aliases spell it) and what was expected.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, get_args

from pydantic.alias_generators import to_snake

from paychaos import targets
from paychaos.experiments.locating import Segment
from paychaos.experiments.spec import ChaosExperiment, Target
from paychaos.probes.series import SERIES_FILE, Vocabulary
from paychaos.targets import Inventory

Reference = tuple[tuple[Segment, ...], str]


class ProbeNames(Protocol):
    """What the loader needs of a probe catalogue: the names it defines."""

    @property
    def slos(self) -> Mapping[str, object]: ...

    @property
    def invariants(self) -> Mapping[str, object]: ...

    @property
    def exercises(self) -> Mapping[str, object]: ...

    @property
    def series(self) -> Vocabulary | None: ...


def normalize(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def suggest(word: str, candidates: Iterable[str]) -> str | None:
    """The one candidate clearly closest to ``word`` (az-d is as close to az-a as to az-c: none)."""
    scored = sorted(((difflib.SequenceMatcher(None, normalize(word), normalize(c)).ratio(), c) for c in candidates), reverse=True)
    if not scored or scored[0][0] < 0.6 or (len(scored) > 1 and scored[1][0] == scored[0][0]):
        return None
    return scored[0][1]


def _one_of(what: str, value: object, known: Iterable[object]) -> str:
    names = [str(k) for k in known]
    close = suggest(str(value), names)
    hint = f" (did you mean {close!r}?)" if close else ""
    return f"unknown {what} {value!r}{hint}: expected one of {', '.join(names) or 'none'}"


def check_references(exp: ChaosExperiment, inventory: Inventory | None, probes: ProbeNames | None) -> list[Reference]:
    out: list[Reference] = []
    if exp.spec.target.platform not in targets.supported():
        # The platforms a spec may name that have a driver (a stack of one's own is `--target FILE`).
        named = [p for p in get_args(Target.model_fields["platform"].annotation) if p in targets.supported()]
        out.append((("spec", "target", "platform"), f"no driver for platform {exp.spec.target.platform!r} yet: "
                    f"supported are {', '.join(named)}"))
    limits = exp.spec.limits
    on_target = inventory is not None and exp.spec.target.platform == "local"
    for i, fault in enumerate(exp.spec.faults):
        at: tuple[Segment, ...] = ("spec", "faults", i, fault.kind)
        if fault.pod_kill is not None:
            kill = fault.pod_kill
            if kill.count is not None and kill.count > limits.max_replicas:
                out.append(((*at, "count"), f"{kill.count} replicas is over limits.maxReplicas ({limits.max_replicas}): raise the limit if you mean it"))
            if kill.percent is not None and kill.percent > limits.max_percent:
                out.append(((*at, "percent"), f"{kill.percent}% is over limits.maxPercent ({limits.max_percent}): raise the limit if you mean it"))
        if fault.zone_loss is not None and not limits.allow_zone_loss:
            out.append((at, "zone loss is refused by limits.allowZoneLoss: false"))
        if on_target:
            assert inventory is not None
            out += [((*at, *key), message) for key, message in _target_problems(fault, inventory)]
    if probes is not None:
        out += _probe_problems(exp, probes)
    return out


def _target_problems(fault: Any, inventory: Inventory) -> list[Reference]:
    if inventory.fault_kinds is not None and fault.kind not in inventory.fault_kinds:
        can = ", ".join(inventory.fault_kinds) or "no fault at all"
        return [((), f"the target's driver cannot inject {fault.kind}: it has {can}")]
    out: list[Reference] = []
    if fault.pod_kill is not None:
        kill = fault.pod_kill
        if kill.service not in inventory.services:
            out.append((("service",), _one_of("service", kill.service, inventory.services)))
        elif kill.zone is not None and kill.zone not in inventory.zones:
            out.append((("zone",), _one_of("zone", kill.zone, inventory.zones)))
        else:
            replicas = inventory.replicas_of(kill.service, kill.zone)
            where = f" in {kill.zone}" if kill.zone else ""
            if replicas == 0:
                out.append((("service",), f"the target runs no replica of {kill.service}{where}"))
            elif kill.count is not None and kill.count > replicas:
                out.append((("count",), f"{kill.count} is more than the {replicas} replicas of {kill.service}{where}"))
    if fault.zone_loss is not None and fault.zone_loss.zone not in inventory.zones:
        out.append((("zone",), _one_of("zone", fault.zone_loss.zone, inventory.zones)))
    if fault.slow_downstream is not None and inventory.proxies is not None and fault.slow_downstream.proxy not in inventory.proxies:
        out.append((("proxy",), _one_of("proxy", fault.slow_downstream.proxy, inventory.proxies)))
    if fault.admission_restriction is not None and fault.admission_restriction.service not in inventory.services:
        out.append((("service",), _one_of("service", fault.admission_restriction.service, inventory.services)))
    for on_topic in (fault.event_redelivery, fault.poison_events):
        if on_topic is not None and on_topic.topic not in inventory.topics:
            out.append((("topic",), _one_of("topic", on_topic.topic, inventory.topics)))
    if fault.kafka_broker_failure is not None:
        kafka = fault.kafka_broker_failure
        if kafka.count > len(inventory.brokers):
            out.append((("count",), f"the cluster has {len(inventory.brokers)} brokers, got count {kafka.count}"))
        if kafka.broker is not None and kafka.broker not in inventory.brokers:
            out.append((("broker",), _one_of("Kafka broker", kafka.broker, inventory.brokers)))
        if kafka.leader_of is not None:
            topic, partition = kafka.leader_of.topic, kafka.leader_of.partition
            if topic not in inventory.topics:
                out.append((("leaderOf", "topic"), _one_of("topic", topic, inventory.topics)))
            elif partition >= (count := inventory.topics[topic]):
                out.append((("leaderOf", "partition"), f"{topic} has partitions 0 to {count - 1}, got {partition}"))
    return out


def _probe_problems(exp: ChaosExperiment, probes: ProbeNames) -> list[Reference]:
    out: list[Reference] = []
    series = probes.series

    def slo(path: tuple[Segment, ...], name: str) -> None:
        if name not in probes.slos:
            out.append((path, _one_of("SLO", name, probes.slos)))

    # An invariant some exercise guards holds vacuously on a run that did not provoke it.
    guarded_by: dict[str, list[str]] = {}
    for exercise_name, exercise in probes.exercises.items():
        for guarded in getattr(exercise, "guards", ()):
            guarded_by.setdefault(guarded, []).append(exercise_name)

    def invariant(path: tuple[Segment, ...], name: str) -> None:
        if name not in probes.invariants:
            out.append((path, _one_of("invariant", name, probes.invariants)))
        elif (missing := [e for e in guarded_by.get(name, []) if e not in exp.spec.exercise]):
            wanted = ", ".join(f"{e}: N" for e in missing)
            out.append((path, f"invariant {name!r} holds whether or not a run does what it guards: declare how "
                              f"often it must happen, `exercise: {{{wanted}}}` (probes/exercises.yaml)"))

    for section in ("steadyState", "expect", "after"):
        for i, check in enumerate(getattr(exp.spec, to_snake(section))):
            at: tuple[Segment, ...] = ("spec", section, i)
            if isinstance(check.slo, str):
                slo((*at, "slo"), check.slo)
            elif check.slo is not None:
                slo((*at, "slo", "name"), check.slo.name)
            if isinstance(check.invariant, str):
                invariant((*at, "invariant"), check.invariant)
            elif isinstance(check.invariant, list):
                for j, name in enumerate(check.invariant):
                    invariant((*at, "invariant", j), name)
            elif check.invariant is not None:
                invariant((*at, "invariant", "name"), check.invariant.name)
            if check.recovery is not None:
                slo((*at, "recovery", "slo"), check.recovery.slo)
            if check.breaker is not None and series is not None and check.breaker.name not in series.breakers.names:
                out.append(((*at, "breaker", "name"),
                            _one_of("breaker", check.breaker.name, series.breakers.names) + f" (the breakers in {SERIES_FILE})"))
            if check.kafka is not None and series is not None and check.kafka.group not in series.consumer_groups.names:
                out.append(((*at, "kafka", "group"), _one_of("consumer group", check.kafka.group, series.consumer_groups.names)
                            + f" (the consumer groups in {SERIES_FILE})"))
    for i, stop in enumerate(exp.spec.stop_when):
        if stop.slo is not None:
            slo(("spec", "stopWhen", i, "slo", "name"), stop.slo.name)
    for key in ("detect", "recover"):
        for i, name in enumerate(getattr(exp.spec.times, key) or []):
            slo(("spec", "times", key, i), name)
    for name in exp.spec.exercise:
        if name not in probes.exercises:
            out.append((("spec", "exercise", name), _one_of("exercise", name, probes.exercises)))
    return out
