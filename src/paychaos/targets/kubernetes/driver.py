"""The Kubernetes fault driver: pods, nodes and Strimzi brokers of one namespace, through the API.

- ``podKill`` deletes the planned pods with grace 0; their controller replaces them. Reverted
  means the service has as many Ready pods as before the kill.
- ``zoneLoss`` cordons the zone's nodes, then evicts the namespace's pods on them (the Eviction API,
  which PodDisruptionBudgets may refuse) or, with ``overrideDisruptionBudgets``, deletes them.
  Each node it cordons is marked with the fault's id, so the revert uncordons exactly those, even
  when the run died before it could record them.
- ``kafkaBrokerFailure`` holds a Strimzi broker pod down by swapping its containers' images for a
  pause image: the pod stays (so no controller recreates it) but Kafka is not running in it. The
  images it had are kept on the pod, and the revert puts them back.
- ``slowDownstream`` adds toxics on the Toxiproxy the target names (its API must be reachable
  from where paychaos runs).

Nothing is touched in a namespace without the opt-in label ``paychaos.io/chaos=enabled``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from paychaos.faults import toxiproxy
from paychaos.faults.driving import InjectionFailed, RevertFailed, TargetUnreachable
from paychaos.faults.kafka import partition_leaders
from paychaos.faults.planning import FaultPlan, Observed, ObservedBroker, ObservedNode, ObservedReplica, PartitionRef
from paychaos.faults.records import FaultRecord

OPT_IN_LABEL, OPT_IN_VALUE = "paychaos.io/chaos", "enabled"
ZONE_LABEL = "topology.kubernetes.io/zone"
SERVICE_LABELS = ("app.kubernetes.io/name", "app")  # a pod's service: the first of these it carries
STRIMZI_CLUSTER, STRIMZI_KIND, STRIMZI_BROKER = "strimzi.io/cluster", "strimzi.io/kind", "strimzi.io/broker-role"
CORDONED_BY = "paychaos.io/cordoned-by"  # on a node: the fault that cordoned it
HELD_BY = "paychaos.io/held-by"  # on a broker pod: the fault holding it down
HELD_IMAGES = "paychaos.io/images"  # on a broker pod: its containers' images before the hold
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
FAULT_KINDS = ("podKill", "zoneLoss", "kafkaBrokerFailure", "slowDownstream")


class KubernetesDriver:
    name = "kubernetes"

    def __init__(self, api_client: Any, namespace: str, toxiproxy_url: str | None = None, *,
                 kafka_bootstrap: str | None = None, pause_image: str = PAUSE_IMAGE, timeout: float = 60.0,
                 poll: float = 0.25) -> None:
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.toxiproxy_url = toxiproxy_url
        self.kafka_bootstrap = kafka_bootstrap  # where partition leaders are read (leaderOf)
        self.pause_image = pause_image
        self.timeout = timeout
        self.poll = poll

    # -- looking ------------------------------------------------------------------------------

    def opted_in(self) -> str | None:
        """Why this namespace may not be touched, or None when it opted in."""
        try:
            namespace = self.core.read_namespace(self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return f"namespace {self.namespace} does not exist"
            raise TargetUnreachable(f"the Kubernetes API refused reading namespace {self.namespace}: {exc.reason}") from None
        if (namespace.metadata.labels or {}).get(OPT_IN_LABEL) != OPT_IN_VALUE:
            return (f"namespace {self.namespace} has not opted in to chaos: nothing is touched until it carries "
                    f"the label {OPT_IN_LABEL}={OPT_IN_VALUE} "
                    f"(kubectl label namespace {self.namespace} {OPT_IN_LABEL}={OPT_IN_VALUE})")
        return None

    def _require_opt_in(self) -> None:
        refused = self.opted_in()
        if refused is not None:
            raise InjectionFailed(refused)

    def observe(self, partitions: Sequence[PartitionRef] = ()) -> Observed:
        try:
            node_list = self.core.list_node().items
            pods = self.core.list_namespaced_pod(self.namespace).items
        except ApiException as exc:
            raise TargetUnreachable(f"the Kubernetes API answered {exc.status} {exc.reason}") from None
        except OSError as exc:  # urllib3 wraps connection errors in OSError subclasses
            raise TargetUnreachable(f"the Kubernetes API does not answer: {exc}") from None
        zone_of = {n.metadata.name: (n.metadata.labels or {}).get(ZONE_LABEL, "") for n in node_list}
        nodes = tuple(ObservedNode(n.metadata.name, zone_of[n.metadata.name], not n.spec.unschedulable)
                      for n in node_list)
        replicas: list[ObservedReplica] = []
        brokers: list[ObservedBroker] = []
        for pod in pods:
            if pod.metadata.deletion_timestamp is not None:
                continue
            labels = pod.metadata.labels or {}
            zone = zone_of.get(pod.spec.node_name or "", "")
            ready = _ready(pod)
            started = pod.metadata.creation_timestamp.timestamp() if pod.metadata.creation_timestamp else None
            broker_id = _broker_id(pod)
            if broker_id is not None:
                brokers.append(ObservedBroker(broker_id, pod.metadata.name, zone, ready, None, started))
                continue
            service = next((labels[k] for k in SERVICE_LABELS if k in labels), None)
            if service is not None:
                replicas.append(ObservedReplica(pod.metadata.name, service, zone, ready, None, started))
        leaders, errors = self._leaders(partitions)
        proxies = toxiproxy.observed_proxies(self.toxiproxy_url) if self.toxiproxy_url else ()
        return Observed(zones=tuple(sorted({z for z in zone_of.values() if z})), replicas=tuple(replicas),
                        brokers=tuple(sorted(brokers, key=lambda b: b.id)), proxies=tuple(proxies),
                        leaders=leaders, leader_errors=errors, nodes=nodes)

    def _leaders(self, partitions: Sequence[PartitionRef]) -> tuple[dict[PartitionRef, int], dict[PartitionRef, str]]:
        """Each partition's leader as Kafka reports it (a node id: the broker pod's name ends in it),
        or why it could not be read."""
        if self.kafka_bootstrap is None:
            why = (f"namespace {self.namespace} does not say where its Kafka is: annotate it with "
                   f"paychaos.io/kafka=BOOTSTRAP (host:port), or name the broker (kafkaBrokerFailure: {{broker: N}})")
            return {}, {p: why for p in partitions}
        return partition_leaders(self.kafka_bootstrap, partitions)

    # -- the fault kinds ----------------------------------------------------------------------

    def inject(self, plan: FaultPlan) -> dict[str, Any]:
        self._require_opt_in()
        if plan.kind == "podKill":
            return self._kill(plan)
        if plan.kind == "zoneLoss":
            return self._lose_zone(plan)
        if plan.kind == "kafkaBrokerFailure":
            return self._hold_brokers(plan)
        if plan.kind == "slowDownstream":
            return toxiproxy.add_toxics(self._toxiproxy(), plan)
        raise InjectionFailed(f"the kubernetes driver has no {plan.kind} fault (it has {', '.join(FAULT_KINDS)})")

    def revert(self, record: FaultRecord) -> None:
        self._check_driver(record)
        plan = record.fault_plan
        if plan.kind == "podKill":
            self._wait(lambda: self._back(plan, record.effect), lambda: f"{self._short(plan, record.effect)} within "
                       f"{self.timeout:.0f}s of the kill", error=RevertFailed)
        elif plan.kind == "zoneLoss":
            self._uncordon(record.id)
        elif plan.kind == "kafkaBrokerFailure":
            self._release_brokers(record.id)
        elif plan.kind == "slowDownstream":
            toxiproxy.remove_toxics(self._toxiproxy(), plan)

    def verify_reverted(self, record: FaultRecord) -> bool:
        self._check_driver(record)
        plan = record.fault_plan
        if plan.kind == "podKill":
            return self._back(plan, record.effect)
        if plan.kind == "zoneLoss":
            return not self._nodes_marked(record.id)
        if plan.kind == "kafkaBrokerFailure":
            return not self._pods_held(record.id)
        if plan.kind == "slowDownstream":
            return toxiproxy.toxics_gone(self._toxiproxy(), plan)
        return False

    # podKill: delete with grace 0; the pod's controller replaces it.
    def _kill(self, plan: FaultPlan) -> dict[str, Any]:
        if plan.in_flight:
            raise InjectionFailed("inFlight needs each pod's own metrics, which the kubernetes driver does not read "
                                  "yet: drop inFlight (or inFlightKind) for this target")
        service = plan.replicas[0].service
        ready_before = self._ready_count(service)
        deleted = []
        for victim in plan.replicas:
            pod = self._pod(victim.name)
            if pod is None:
                raise InjectionFailed(f"pod {victim.name} is gone already: plan again")
            self.core.delete_namespaced_pod(victim.name, self.namespace, grace_period_seconds=0,
                                            body=client.V1DeleteOptions(grace_period_seconds=0,
                                                                        preconditions={"uid": pod.metadata.uid}))
            deleted.append({"name": victim.name, "uid": pod.metadata.uid, "node": pod.spec.node_name, "zone": victim.zone})
        # The proof: none of the pods killed exists any more (the same name may return with a new uid).
        self._wait(lambda: all(self._uid(d["name"]) != d["uid"] for d in deleted),
                   lambda: f"{', '.join(d['name'] for d in deleted)} still there after deletion with grace 0",
                   error=InjectionFailed)
        return {"deleted": deleted, "service": service, "readyBefore": ready_before}

    def _back(self, plan: FaultPlan, effect: dict[str, Any]) -> bool:
        if not effect:  # the kill never happened (a failed injection): nothing to wait for
            return True
        return self._ready_count(effect["service"]) >= int(effect["readyBefore"])

    def _short(self, plan: FaultPlan, effect: dict[str, Any]) -> str:
        service = effect.get("service", "?")
        return f"{service} has {self._ready_count(service)} Ready pods, not the {effect.get('readyBefore')} it had,"

    # zoneLoss: cordon, then evict (or delete) what runs there.
    def _lose_zone(self, plan: FaultPlan) -> dict[str, Any]:
        if plan.in_flight:
            raise InjectionFailed("inFlight needs each pod's own metrics, which the kubernetes driver does not read "
                                  "yet: drop the zoneLoss's inFlight for this target")
        if not plan.nodes:
            raise InjectionFailed(f"zone {plan.zone} has no nodes")
        cordoned = []
        for name in plan.nodes:
            node = self.core.read_node(name)
            if node.spec.unschedulable:
                continue  # cordoned by someone else: theirs to uncordon, not ours
            # The mark first, in the same patch: a run that dies here still leaves a node `halt` finds.
            self.core.patch_node(name, {"metadata": {"annotations": {CORDONED_BY: plan.id}},
                                        "spec": {"unschedulable": True}})
            cordoned.append(name)
        on_zone = set(plan.nodes)
        evicted, deleted, refused = [], [], {}
        deadline = time.monotonic() + self.timeout
        while True:
            left = [p for p in self.core.list_namespaced_pod(self.namespace).items
                    if p.spec.node_name in on_zone and p.metadata.deletion_timestamp is None]
            if not left:
                break
            for pod in left:
                name = pod.metadata.name
                if plan.override_budgets:
                    self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
                    deleted.append(name)
                    continue
                try:
                    self.core.create_namespaced_pod_eviction(name, self.namespace, {
                        "apiVersion": "policy/v1", "kind": "Eviction",
                        "metadata": {"name": name, "namespace": self.namespace},
                        "deleteOptions": {"gracePeriodSeconds": 0}})
                    evicted.append(name)
                    refused.pop(name, None)
                except ApiException as exc:
                    if exc.status == 429:  # a PodDisruptionBudget says not now: retried, as `kubectl drain` does
                        refused[name] = _message(exc)
                    elif exc.status != 404:
                        raise
            if time.monotonic() > deadline:
                detail = "; ".join(f"{n}: {m}" for n, m in refused.items()) or ", ".join(p.metadata.name for p in left)
                raise InjectionFailed(
                    f"zoneLoss {plan.zone}: pods still on its nodes after {self.timeout:.0f}s ({detail}). A "
                    "PodDisruptionBudget that never lets the zone drain is the finding; set "
                    "overrideDisruptionBudgets: true to delete them as an outage would")
            time.sleep(self.poll)
        return {"zone": plan.zone, "cordoned": cordoned, "evicted": sorted(set(evicted)), "deleted": sorted(set(deleted)),
                "podsLeftOnZone": 0}

    def _nodes_marked(self, fault_id: str) -> list[str]:
        return [n.metadata.name for n in self.core.list_node().items
                if (n.metadata.annotations or {}).get(CORDONED_BY) == fault_id]

    def _uncordon(self, fault_id: str) -> None:
        for name in self._nodes_marked(fault_id):
            try:
                self.core.patch_node(name, {"metadata": {"annotations": {CORDONED_BY: None}},
                                            "spec": {"unschedulable": False}})
            except ApiException as exc:
                raise RevertFailed(f"uncordoning {name}: {exc.status} {exc.reason}") from None

    # kafkaBrokerFailure: a pause image in place of Kafka, for the window.
    def _hold_brokers(self, plan: FaultPlan) -> dict[str, Any]:
        held = []
        for broker in plan.brokers:
            pod = self._pod(broker.name)
            if pod is None:
                raise InjectionFailed(f"broker pod {broker.name} is gone: plan again")
            images = {c.name: c.image for c in pod.spec.containers}
            self.core.patch_namespaced_pod(broker.name, self.namespace, {
                "metadata": {"annotations": {HELD_BY: plan.id, HELD_IMAGES: json.dumps(images)}},
                "spec": {"containers": [{"name": name, "image": self.pause_image} for name in images]},
            })
            held.append({"name": broker.name, "id": broker.id, "images": images})
        swapped = [h["name"] for h in held
                   if (pod := self._pod(h["name"])) is None or {c.image for c in pod.spec.containers} != {self.pause_image}]
        if swapped:
            raise InjectionFailed(f"{', '.join(swapped)} still run their own images after the swap")
        return {"held": held, "image": self.pause_image}

    def _pods_held(self, fault_id: str) -> list[Any]:
        return [p for p in self.core.list_namespaced_pod(self.namespace).items
                if (p.metadata.annotations or {}).get(HELD_BY) == fault_id]

    def _release_brokers(self, fault_id: str) -> None:
        for pod in self._pods_held(fault_id):
            images = json.loads(pod.metadata.annotations[HELD_IMAGES])
            try:
                self.core.patch_namespaced_pod(pod.metadata.name, self.namespace, {
                    "metadata": {"annotations": {HELD_BY: None, HELD_IMAGES: None}},
                    "spec": {"containers": [{"name": n, "image": i} for n, i in images.items()]},
                })
            except ApiException as exc:
                if exc.status != 404:  # a pod deleted meanwhile comes back with its own images
                    raise RevertFailed(f"restoring {pod.metadata.name}'s images: {exc.status} {exc.reason}") from None

    # -- helpers ------------------------------------------------------------------------------

    def _toxiproxy(self) -> str:
        if self.toxiproxy_url is None:
            raise TargetUnreachable(f"namespace {self.namespace} names no Toxiproxy (annotation paychaos.io/toxiproxy): "
                                    "slowDownstream has nothing to go through")
        return self.toxiproxy_url

    def _pod(self, name: str) -> Any | None:
        try:
            return self.core.read_namespaced_pod(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _uid(self, name: str) -> str | None:
        pod = self._pod(name)
        return pod.metadata.uid if pod is not None else None

    def _ready_count(self, service: str) -> int:
        return sum(1 for r in self.observe().replicas if r.service == service and r.ready)

    def _wait(self, done: Callable[[], bool], failure: Callable[[], str], *, error: type[Exception]) -> None:
        deadline = time.monotonic() + self.timeout
        while not done():
            if time.monotonic() > deadline:
                raise error(failure())
            time.sleep(self.poll)

    def _check_driver(self, record: FaultRecord) -> None:
        if record.driver != self.name:
            raise RevertFailed(f"fault {record.id} was injected by the {record.driver} driver, not the kubernetes one")


def _ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def _broker_id(pod: Any) -> int | None:
    """A Strimzi Kafka broker's node id (the pod name's last part), or None for any other pod."""
    labels = pod.metadata.labels or {}
    if STRIMZI_CLUSTER not in labels or labels.get(STRIMZI_KIND) != "Kafka" or labels.get(STRIMZI_BROKER) != "true":
        return None
    suffix = pod.metadata.name.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else None


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message", exc.reason))
    except (TypeError, ValueError):
        return str(exc.reason)
