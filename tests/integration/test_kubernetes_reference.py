"""The reference platform's manifests (platform/k8s/reference) on the test cluster: kustomize
renders them, the API server takes every object (the Prometheus Operator's with its real CRDs),
KWOK's nodes run the services spread over the three zones with the zone on each pod, and a zone
loss through the Kubernetes target moves every service's replicas to the zones left without
breaking a disruption budget.

Strimzi publishes its CRDs nowhere this machine can fetch (not in a Go module, and its Maven
artifacts generate them in code): its objects are checked to be refused for that reason alone,
and their content by the unit tests of the generator.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from paychaos.cluster import building
from paychaos.cluster.running import ZONE_LABEL, ClusterDir
from paychaos.experiments.spec import Fault, Limits
from paychaos.faults import records
from paychaos.faults.planning import plan_fault
from paychaos.platform.topology import SERVICES
from paychaos.targets.kubernetes import KubernetesTarget

from .conftest import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "platform" / "k8s" / "reference"
NAMESPACE = "payments"


def kubectl(cluster: ClusterDir, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(building.locate()["kubectl"]), "--kubeconfig", str(cluster.kubeconfig), *args],
                          capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    return done


@pytest.fixture(scope="module")
def applied(cluster: ClusterDir, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """The rendered manifests, every object but Strimzi's applied (server-side); the objects."""
    folder = tmp_path_factory.mktemp("reference")
    rendered = list(yaml.safe_load_all(kubectl(cluster, "kustomize", str(REFERENCE)).stdout))
    crds = building.locate()["crds"]
    kubectl(cluster, "apply", "--server-side", "-f", str(crds))
    kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s",
            *(f"crd/{name}.monitoring.coreos.com" for name in building.PROMETHEUS_OPERATOR_CRDS))
    namespace = [d for d in rendered if d["kind"] == "Namespace"]
    rest = [d for d in rendered if d["kind"] != "Namespace" and not d["apiVersion"].startswith("kafka.strimzi.io/")]
    (folder / "namespace.yaml").write_text(yaml.safe_dump_all(namespace))
    (folder / "rest.yaml").write_text(yaml.safe_dump_all(rest))
    kubectl(cluster, "apply", "--server-side", "-f", str(folder / "namespace.yaml"))
    # A dry run first: the API server validates every object (schemas, CRDs) and stores nothing.
    dry = kubectl(cluster, "apply", "--server-side", "--dry-run=server", "-f", str(folder / "rest.yaml"))
    assert "serverside-applied (server dry run)" in dry.stdout
    kubectl(cluster, "apply", "--server-side", "-f", str(folder / "rest.yaml"))
    yield rendered
    kubectl(cluster, "delete", "namespace", NAMESPACE, "--wait=false", check=False)


def test_kustomize_renders_every_part_of_the_reference_platform(applied: list[dict[str, Any]]) -> None:
    kinds = Counter(d["kind"] for d in applied)
    assert kinds["Deployment"] == len(SERVICES) + 3  # the services, Toxiproxy, Locust's master and workers
    assert kinds["PodDisruptionBudget"] == len(SERVICES) and kinds["StatefulSet"] == 1 and kinds["Job"] == 1
    assert {"Kafka", "KafkaNodePool", "KafkaTopic", "Prometheus", "PodMonitor", "PrometheusRule"} <= set(kinds)
    assert all(d["metadata"].get("namespace") == NAMESPACE for d in applied if d["kind"] != "Namespace")
    # The topology ConfigMap gets a content hash in its name, and every pod that mounts it follows.
    (topology,) = [d["metadata"]["name"] for d in applied if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("topology-")]
    mounted = {v["configMap"]["name"] for d in applied if d["kind"] == "Deployment"
               for v in d["spec"]["template"]["spec"].get("volumes", []) if v["configMap"]["name"].startswith("topology")}
    assert mounted == {topology}


def test_the_api_server_refuses_strimzis_objects_only_for_want_of_their_crds(cluster: ClusterDir, applied: list[dict[str, Any]],
                                                                              tmp_path: Path) -> None:
    strimzi = [d for d in applied if d["apiVersion"].startswith("kafka.strimzi.io/")]
    (tmp_path / "strimzi.yaml").write_text(yaml.safe_dump_all(strimzi))
    dry = kubectl(cluster, "apply", "--server-side", "--dry-run=server", "-f", str(tmp_path / "strimzi.yaml"), check=False)
    assert dry.returncode != 0
    refusals = [line for line in dry.stderr.splitlines() if line.strip()]
    assert refusals and all('no matches for kind "Kafka' in line and "kafka.strimzi.io/v1beta2" in line
                            or "ensure CRDs are installed first" in line for line in refusals), dry.stderr


def test_the_services_run_spread_over_the_zones_each_pod_knowing_its_zone(api: Any, applied: list[dict[str, Any]]) -> None:
    from kubernetes import client

    core = client.CoreV1Api(api)
    zones = {n.metadata.name: n.metadata.labels[ZONE_LABEL] for n in core.list_node().items}
    for service in SERVICES:
        pods = wait_for(f"{service}'s pods running", lambda s=service: _ready(api, s, 3), timeout=90)
        assert sorted(zones[p.spec.node_name] for p in pods) == ["az-a", "az-b", "az-c"], service
        # PAYCHAOS_ZONE reads this label (the API server copies it from the node when it binds the pod).
        assert all(p.metadata.labels.get(ZONE_LABEL) == zones[p.spec.node_name] for p in pods), service
    budgets = client.PolicyV1Api(api).list_namespaced_pod_disruption_budget(NAMESPACE).items
    assert {b.metadata.name for b in budgets} == set(SERVICES)
    wait_for("every budget allows one disruption", lambda: all(
        b.status.disruptions_allowed == 1 for b in client.PolicyV1Api(api).list_namespaced_pod_disruption_budget(NAMESPACE).items))


def test_a_zone_loss_moves_every_services_replicas_to_the_zones_left_within_their_budgets(api: Any,
                                                                                         applied: list[dict[str, Any]]) -> None:
    from kubernetes import client

    for service in SERVICES:
        wait_for(f"{service}'s pods running", lambda s=service: _ready(api, s, 3), timeout=90)
    # KWOK's pods carry no traffic: the in-cluster Toxiproxy the namespace names cannot answer here.
    client.CoreV1Api(api).patch_namespace(NAMESPACE, {"metadata": {"annotations": {"paychaos.io/toxiproxy": None}}})
    target = KubernetesTarget(NAMESPACE, api)
    fault = Fault.model_validate({"at": "0s", "for": "60s", "zoneLoss": {"zone": "az-b"}})
    # maxPercent 100: Toxiproxy and Locust's master run one replica each, which may be in the zone.
    plan = plan_fault(fault, target.driver().observe(), Limits(allow_zone_loss=True, max_percent=100),
                      experiment="reference-zone-loss", index=0)
    assert set(SERVICES) <= {r.service for r in plan.replicas}
    record = records.inject(target.ledger(), target.driver(), plan)  # through the Eviction API: budgets honoured
    try:
        assert set(SERVICES) <= {name.rsplit("-", 2)[0] for name in record.effect["evicted"]}, record.effect
        core = client.CoreV1Api(api)
        zones = {n.metadata.name: n.metadata.labels[ZONE_LABEL] for n in core.list_node().items}
        for service in SERVICES:
            pods = wait_for(f"{service}'s three replicas outside az-b", lambda s=service: (
                pods if (pods := _ready(api, s, 3)) and all(zones[p.spec.node_name] != "az-b" for p in pods) else []), timeout=90)
            assert {zones[p.spec.node_name] for p in pods} == {"az-a", "az-c"}, service
    finally:
        records.revert(target.ledger(), target.driver(), record.id)
    assert target.driver().verify_reverted(record)
    assert not any(n.spec.unschedulable for n in client.CoreV1Api(api).list_node().items)


def _ready(api: Any, service: str, count: int) -> list[Any]:
    from kubernetes import client

    pods = [p for p in client.CoreV1Api(api).list_namespaced_pod(NAMESPACE, label_selector=f"app.kubernetes.io/name={service}").items
            if p.metadata.deletion_timestamp is None]
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]
    return ready if len(ready) == count and len(pods) == count else []


def test_the_operators_manifests_apply_as_rendered(cluster: ClusterDir, api: Any, tmp_path: Path) -> None:
    """platform/k8s/operator, rendered by kustomize and applied for real (server-side)."""
    from kubernetes import client

    rendered = kubectl(cluster, "kustomize", str(ROOT / "platform" / "k8s" / "operator")).stdout
    (tmp_path / "operator.yaml").write_text(rendered)
    kubectl(cluster, "apply", "--server-side", "-f", str(tmp_path / "operator.yaml"))
    deployment = client.AppsV1Api(api).read_namespaced_deployment("paychaos-controller", "paychaos-system")
    (container,) = deployment.spec.template.spec.containers
    assert container.image == "paychaos:0.1.0" and container.args[:2] == ["paychaos", "controller"]
    assert deployment.spec.template.spec.service_account_name == "paychaos-controller"
