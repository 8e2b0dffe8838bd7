"""The Kubernetes target on the test cluster: each fault injects and reverts, shown by the API
server's own answers; the fault ledger and lock live in the namespace; a namespace that has not
opted in is never touched; a run killed mid-fault leaves nothing `paychaos halt` cannot revert.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paychaos.cluster.running import ZONE_LABEL, ClusterDir
from paychaos.experiments.spec import Fault, Limits
from paychaos.faults import records
from paychaos.faults.driving import InjectionFailed
from paychaos.faults.planning import FaultPlan, plan_fault
from paychaos.faults.records import ExperimentLocked, acquire_lock
from paychaos.targets.kubernetes import OPT_IN_LABEL, OPT_IN_VALUE, KubernetesTarget
from paychaos.targets.kubernetes.driver import CORDONED_BY, PAUSE_IMAGE
from paychaos.targets.kubernetes.ledger import FAULTS_CONFIGMAP

from .conftest import cli, wait_for

pytestmark = pytest.mark.integration

SPREAD = {"maxSkew": 1, "topologyKey": ZONE_LABEL, "whenUnsatisfiable": "DoNotSchedule", "nodeTaintsPolicy": "Honor"}


@pytest.fixture()
def namespace(api: Any) -> Iterator[str]:
    """A fresh namespace that opted in to chaos; deleted afterwards, with every node uncordoned."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    name = f"pay-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name, "labels": {OPT_IN_LABEL: OPT_IN_VALUE},
                                        "annotations": {"paychaos.io/prometheus": "http://127.0.0.1:1",
                                                        "paychaos.io/edge": "http://127.0.0.1:1"}}})
    yield name
    core.delete_namespace(name)
    for node in core.list_node().items:
        if node.spec.unschedulable:
            core.patch_node(node.metadata.name, {"metadata": {"annotations": {CORDONED_BY: None}},
                                                 "spec": {"unschedulable": False}})


def deploy(api: Any, namespace: str, service: str, replicas: int = 3, *, min_available: int | None = None,
           zone: str | None = None) -> list[Any]:
    """A Deployment spread over the zones (or pinned to one), optionally with a PodDisruptionBudget;
    its pods once Running."""
    from kubernetes import client

    labels = {"app": service}
    spec: dict[str, Any] = {"containers": [{"name": service, "image": f"paychaos/{service}:test"}],
                            "topologySpreadConstraints": [{**SPREAD, "labelSelector": {"matchLabels": labels}}]}
    if zone is not None:
        spec["nodeSelector"] = {ZONE_LABEL: zone}
    client.AppsV1Api(api).create_namespaced_deployment(namespace, {
        "metadata": {"name": service},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": spec}}})
    if min_available is not None:
        client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(namespace, {
            "metadata": {"name": service}, "spec": {"minAvailable": min_available, "selector": {"matchLabels": labels}}})
    return wait_for(f"{replicas} {service} pods Running", lambda: running(api, namespace, service, replicas))


def running(api: Any, namespace: str, service: str, count: int) -> list[Any]:
    from kubernetes import client

    pods = [p for p in client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={service}").items
            if p.metadata.deletion_timestamp is None]
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]
    return ready if len(ready) == count and len(pods) == count else []


def zone_of(api: Any) -> dict[str, str]:
    from kubernetes import client

    return {n.metadata.name: n.metadata.labels[ZONE_LABEL] for n in client.CoreV1Api(api).list_node().items}


def plan(target: KubernetesTarget, limits: Limits | None = None, **kind: Any) -> FaultPlan:
    fault = Fault.model_validate({"at": "0s", "for": "30s", **kind})
    return plan_fault(fault, target.driver().observe(), limits or Limits(), experiment="k8s-test", index=0)


def test_pod_kill_deletes_the_planned_pod_and_its_replicaset_replaces_it(api: Any, namespace: str) -> None:
    pods = deploy(api, namespace, "payment")
    target = KubernetesTarget(namespace, api)
    p = plan(target, podKill={"service": "payment", "zone": "az-b"})
    (victim,) = p.replicas
    assert victim.zone == "az-b" and victim.name in {x.metadata.name for x in pods}
    assert f"replica   {victim.name}  zone az-b" in p.describe()
    record = records.inject(target.ledger(), target.driver(), p)
    (deleted,) = record.effect["deleted"]
    assert deleted["name"] == victim.name and record.effect["readyBefore"] == 3
    assert target.ledger().read(record.id) is not None, "recorded in the namespace's ConfigMap"
    records.revert(target.ledger(), target.driver(), record.id)
    now = running(api, namespace, "payment", 3)
    assert now and victim.name not in {x.metadata.name for x in now}, "a new pod took its place"
    assert target.driver().verify_reverted(record) and target.ledger().read(record.id) is None


def test_zone_loss_evicts_the_zone_and_revert_uncordons_only_what_it_cordoned(api: Any, namespace: str) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api)
    deploy(api, namespace, "payment", min_available=2)
    core.patch_node("kwok-az-a-2", {"spec": {"unschedulable": True}})  # an operator's cordon, not ours
    target = KubernetesTarget(namespace, api)
    p = plan(target, Limits(allow_zone_loss=True), zoneLoss={"zone": "az-a"})
    assert p.nodes == ("kwok-az-a-1", "kwok-az-a-2") and "node      kwok-az-a-1 (cordoned; its pods evicted)" in p.describe()
    record = records.inject(target.ledger(), target.driver(), p)
    assert record.effect["cordoned"] == ["kwok-az-a-1"] and len(record.effect["evicted"]) == 1, record.effect
    zones = zone_of(api)
    moved = wait_for("three payment pods outside az-a", lambda: (
        pods if (pods := running(api, namespace, "payment", 3)) and all(zones[x.spec.node_name] != "az-a" for x in pods)
        else []))
    assert {zones[x.spec.node_name] for x in moved} == {"az-b", "az-c"}
    records.revert(target.ledger(), target.driver(), record.id)
    assert not core.read_node("kwok-az-a-1").spec.unschedulable
    assert core.read_node("kwok-az-a-2").spec.unschedulable, "the operator's cordon is left alone"
    assert target.driver().verify_reverted(record)


def test_a_budget_that_never_lets_the_zone_drain_is_the_finding_and_override_deletes(api: Any, namespace: str) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api)
    deploy(api, namespace, "ledger", replicas=1, min_available=1, zone="az-c")
    target = KubernetesTarget(namespace, api)
    driver = target.driver()
    driver.timeout = 4.0
    p = plan(target, Limits(allow_zone_loss=True, max_percent=100), zoneLoss={"zone": "az-c"})
    with pytest.raises(InjectionFailed) as refused:
        records.inject(target.ledger(), driver, p)
    assert "overrideDisruptionBudgets" in str(refused.value) and "disruption budget" in str(refused.value).lower()
    assert not any(core.read_node(n).spec.unschedulable for n in p.nodes), "the failed injection was reverted"
    assert target.ledger().records() == []

    p = plan(target, Limits(allow_zone_loss=True, max_percent=100),
             zoneLoss={"zone": "az-c", "overrideDisruptionBudgets": True})
    record = records.inject(target.ledger(), driver, p)
    assert len(record.effect["deleted"]) == 1 and record.effect["evicted"] == []
    records.revert(target.ledger(), driver, record.id)


def strimzi_brokers(api: Any, namespace: str, prefix: str, node_ids: list[int]) -> KubernetesTarget:
    """Broker pods named and labelled as Strimzi's (``PREFIX-ID``), one a zone, once Ready; the namespace's target."""
    from kubernetes import client

    for node_id, node in zip(node_ids, ("kwok-az-a-1", "kwok-az-b-1", "kwok-az-c-1"), strict=True):
        client.CoreV1Api(api).create_namespaced_pod(namespace, {
            "metadata": {"name": f"{prefix}-{node_id}",
                         "labels": {"strimzi.io/cluster": prefix.split("-")[0], "strimzi.io/kind": "Kafka",
                                    "strimzi.io/broker-role": "true"}},
            "spec": {"nodeName": node, "containers": [{"name": "kafka", "image": "quay.io/strimzi/kafka:test"}]}})
    target = KubernetesTarget(namespace, api)
    wait_for("three brokers ready", lambda: len([b for b in target.driver().observe().brokers if b.ready]) == len(node_ids))
    return target


def test_broker_failure_holds_the_strimzi_broker_on_a_pause_image_until_reverted(api: Any, namespace: str) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api)
    target = strimzi_brokers(api, namespace, "payments-kafka-brokers", [0, 1, 2])
    p = plan(target, kafkaBrokerFailure={"broker": 1})
    assert [(b.id, b.name, b.zone) for b in p.brokers] == [(1, "payments-kafka-brokers-1", "az-b")]
    record = records.inject(target.ledger(), target.driver(), p)
    pod = core.read_namespaced_pod("payments-kafka-brokers-1", namespace)
    assert [c.image for c in pod.spec.containers] == [PAUSE_IMAGE] and record.effect["held"][0]["id"] == 1
    records.revert(target.ledger(), target.driver(), record.id)
    pod = core.read_namespaced_pod("payments-kafka-brokers-1", namespace)
    assert [c.image for c in pod.spec.containers] == ["quay.io/strimzi/kafka:test"]
    assert target.driver().verify_reverted(record)


def test_a_namespace_that_did_not_opt_in_is_refused_and_nothing_is_touched(api: Any) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api)
    name = f"no-chaos-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        pods = deploy(api, name, "payment")
        target = KubernetesTarget(name, api)
        assert OPT_IN_LABEL in (target.not_ready() or "")
        p = plan(target, podKill={"service": "payment"})
        with pytest.raises(InjectionFailed, match=f"has not opted in.*{OPT_IN_LABEL}={OPT_IN_VALUE}"):
            records.inject(target.ledger(), target.driver(), p)
        assert {x.metadata.uid for x in running(api, name, "payment", 3)} == {x.metadata.uid for x in pods}
    finally:
        core.delete_namespace(name)


def test_the_lock_is_a_lease_in_the_namespace(api: Any, namespace: str) -> None:
    target = KubernetesTarget(namespace, api)
    ledger, driver = target.ledger(), target.driver()
    with acquire_lock(ledger, "first", driver):
        assert ledger.read_lock().experiment == "first"
        with pytest.raises(ExperimentLocked, match=f"namespace {namespace}"):
            acquire_lock(ledger, "second", driver)
    assert ledger.read_lock() is None
    with acquire_lock(ledger, "second", driver):
        pass


def test_a_run_killed_mid_zone_loss_leaves_nothing_halt_cannot_revert(cluster: ClusterDir, api: Any, namespace: str,
                                                                      tmp_path: Path) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api)
    deploy(api, namespace, "payment")
    script = tmp_path / "inject.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from paychaos.experiments.spec import Fault, Limits
        from paychaos.faults import records
        from paychaos.faults.planning import plan_fault
        from paychaos.targets.kubernetes import KubernetesTarget
        target = KubernetesTarget({namespace!r})
        fault = Fault.model_validate({{"at": "0s", "for": "600s", "zoneLoss": {{"zone": "az-b"}}}})
        plan = plan_fault(fault, target.driver().observe(), Limits(allow_zone_loss=True), experiment="dies", index=0)
        records.inject(target.ledger(), target.driver(), plan)
        print("injected", flush=True)
        time.sleep(600)
    """))
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "injected"
        finally:
            proc.send_signal(signal.SIGKILL)
    assert core.read_node("kwok-az-b-1").spec.unschedulable, "the dead run left the zone cordoned"
    halted = cli("halt", "--namespace", namespace, env={"KUBECONFIG": str(cluster.kubeconfig)})
    assert halted.returncode == 0, halted.stderr
    assert "reverted dies-0" in halted.stderr
    assert not any(core.read_node(n).spec.unschedulable for n in ("kwok-az-b-1", "kwok-az-b-2"))
    assert not (core.read_namespaced_config_map(FAULTS_CONFIGMAP, namespace).data or {}), "the ledger is empty"
    again = cli("halt", "--namespace", namespace, env={"KUBECONFIG": str(cluster.kubeconfig)})
    assert again.returncode == 0 and "nothing to revert" in again.stderr


def test_slow_downstream_goes_through_the_toxiproxy_the_namespace_names(api: Any, namespace: str) -> None:
    from kubernetes import client

    from paychaos.cluster.running import free_ports
    from paychaos.faults.toxiproxy import Toxiproxy
    from paychaos.platform.runtime.installing import locate

    api_port, listen, upstream = free_ports(3)
    url = f"http://127.0.0.1:{api_port}"
    with subprocess.Popen([str(locate().toxiproxy), "-host", "127.0.0.1", "-port", str(api_port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as server:
        try:
            wait_for("Toxiproxy", lambda: _answers(url), timeout=20)
            with Toxiproxy(url) as toxiproxy:
                toxiproxy.ensure_proxy("acquirer", f"127.0.0.1:{listen}", f"127.0.0.1:{upstream}")
            client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"annotations": {"paychaos.io/toxiproxy": url}}})
            target = KubernetesTarget(namespace, api)
            p = plan(target, slowDownstream={"proxy": "acquirer", "latency": "300ms"})
            assert p.proxy == "acquirer" and p.toxics
            record = records.inject(target.ledger(), target.driver(), p)
            with Toxiproxy(url) as toxiproxy:
                assert [t["name"] for t in toxiproxy.toxics("acquirer")] == [t.name for t in p.toxics]
            records.revert(target.ledger(), target.driver(), record.id)
            with Toxiproxy(url) as toxiproxy:
                assert toxiproxy.toxics("acquirer") == []
            assert target.driver().verify_reverted(record)
        finally:
            server.terminate()


def _answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/version", timeout=1).is_success
    except httpx.HTTPError:
        return False
