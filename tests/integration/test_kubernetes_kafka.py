"""kafkaBrokerFailure's `leaderOf` on the Kubernetes target: the partition's leader is read from
Kafka itself (the namespace's `paychaos.io/kafka` bootstrap), and the Strimzi broker pod of that
node id is the one held. The Kafka is the session stack's real 3-node cluster; the broker pods are
KWOK's, named and labelled as Strimzi names them, one per node id.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from paychaos.experiments.spec import Fault, Limits
from paychaos.faults import records
from paychaos.faults.kafka import partition_leader
from paychaos.faults.planning import PlanError, plan_fault
from paychaos.targets.kubernetes import OPT_IN_LABEL, OPT_IN_VALUE, KubernetesTarget
from paychaos.targets.kubernetes.driver import PAUSE_IMAGE

from .conftest import Stack
from .test_kubernetes_target import strimzi_brokers

pytestmark = pytest.mark.integration


@pytest.fixture()
def brokers(api: Any, stack: Stack) -> Iterator[str]:
    """An opted-in namespace whose Strimzi broker pods have the stack's Kafka node ids."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    namespace = f"kafka-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace, "labels": {OPT_IN_LABEL: OPT_IN_VALUE}}})
    strimzi_brokers(api, namespace, "payments-nodes", stack.topology.kafka_nodes)
    yield namespace
    core.delete_namespace(namespace)


def plan(target: KubernetesTarget, topic: str, partition: int) -> Any:
    fault = Fault.model_validate({"at": "0s", "for": "30s", "kafkaBrokerFailure": {"leaderOf": {"topic": topic, "partition": partition}}})
    return plan_fault(fault, target.driver().observe([(topic, partition)]), Limits(), experiment="k8s-leader", index=0)


def test_the_leader_kafka_reports_is_the_broker_pod_held(api: Any, stack: Stack, brokers: str) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api)
    target = KubernetesTarget(brokers, api)
    # Without the bootstrap the namespace is asked for it, and nothing is planned.
    with pytest.raises(PlanError, match="paychaos.io/kafka=BOOTSTRAP"):
        plan(target, "payments", 0)
    core.patch_namespace(brokers, {"metadata": {"annotations": {"paychaos.io/kafka": stack.topology.bootstrap_servers}}})
    with pytest.raises(PlanError, match="has no partition 99"):
        plan(target, "payments", 99)
    for partition in range(6):  # each partition's own leader (they are spread over the three nodes)
        leader = partition_leader(stack.topology.bootstrap_servers, "payments", partition)
        (held,) = plan(target, "payments", partition).brokers
        assert (held.id, held.name) == (leader, f"payments-nodes-{leader}"), partition
    p = plan(target, "payments", 0)
    (held,) = p.brokers
    assert "leader of payments-0" in p.describe()
    record = records.inject(target.ledger(), target.driver(), p)
    try:
        pod = core.read_namespaced_pod(held.name, brokers)
        assert [c.image for c in pod.spec.containers] == [PAUSE_IMAGE]
    finally:
        records.revert(target.ledger(), target.driver(), record.id)
    assert target.driver().verify_reverted(record)
