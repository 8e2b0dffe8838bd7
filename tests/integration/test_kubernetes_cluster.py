"""The Kubernetes test cluster (`paychaos cluster up|down`) and the paychaos resources on it.

A real kube-apiserver, controller manager, scheduler and etcd built from the Go module proxy,
with KWOK's nodes: everything here is the API server's own answer. The binaries are built by
`make test` (`paychaos cluster install`) before the session; a missing one fails, never skips.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from paychaos.cluster.running import ZONE_LABEL, ZONES, ClusterDir, ClusterState
from .conftest import cli, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION = "paychaos.io", "v1alpha1"


def test_up_gives_six_ready_nodes_two_per_zone_and_up_again_changes_nothing(cluster: ClusterDir, api: Any) -> None:
    from kubernetes import client

    nodes = client.CoreV1Api(api).list_node().items
    zones = sorted(n.metadata.labels[ZONE_LABEL] for n in nodes)
    assert zones == sorted(ZONES * 2)
    assert all(any(c.type == "Ready" and c.status == "True" for c in n.status.conditions) for n in nodes)
    assert not any(n.spec.taints for n in nodes)
    before = ClusterState.read(cluster)
    again = cli("cluster", "up", "--dir", str(cluster.root))
    assert again.returncode == 0 and "already up" in again.stderr, again.stderr
    assert ClusterState.read(cluster) == before
    status = cli("cluster", "status", "--json", "--dir", str(cluster.root))
    assert status.returncode == 0 and yaml.safe_load(status.stdout)["server"] == before.server


def test_a_zone_spread_deployment_leaves_a_cordoned_zone_when_its_pods_are_deleted(api: Any) -> None:
    """What zoneLoss on Kubernetes rests on: the scheduler spreads replicas over the zones, and a
    replacement for a pod deleted in a cordoned zone lands in another one (with nodeTaintsPolicy
    Honor, the cordon's taint counts for the spread)."""
    from kubernetes import client

    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace({"metadata": {"name": "spread"}})
    labels = {"app": "payment"}
    apps.create_namespaced_deployment("spread", {
        "metadata": {"name": "payment"},
        "spec": {"replicas": 3, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "payment", "image": "paychaos/payment:test"}],
                     "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": ZONE_LABEL,
                                                    "whenUnsatisfiable": "DoNotSchedule", "nodeTaintsPolicy": "Honor",
                                                    "labelSelector": {"matchLabels": labels}}]}}},
    })
    zone_of = {n.metadata.name: n.metadata.labels[ZONE_LABEL] for n in core.list_node().items}

    def running() -> list[Any]:
        pods = [p for p in core.list_namespaced_pod("spread").items if p.metadata.deletion_timestamp is None]
        return pods if len(pods) == 3 and all(p.status.phase == "Running" for p in pods) else []

    pods = wait_for("three payment pods Running", running)
    assert sorted(zone_of[p.spec.node_name] for p in pods) == list(ZONES)
    lost = [n for n, z in zone_of.items() if z == "az-a"]
    for node in lost:
        core.patch_node(node, {"spec": {"unschedulable": True}})
    for p in pods:
        if zone_of[p.spec.node_name] == "az-a":
            core.delete_namespaced_pod(p.metadata.name, "spread", grace_period_seconds=0)
    moved = wait_for("a replacement outside az-a", lambda: [p for p in running() if zone_of[p.spec.node_name] != "az-a"]
                     if len([p for p in running() if zone_of[p.spec.node_name] != "az-a"]) == 3 else [])
    assert sorted({zone_of[p.spec.node_name] for p in moved}) == ["az-b", "az-c"]
    for node in lost:
        core.patch_node(node, {"spec": {"unschedulable": False}})


def create(api: Any, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create a custom resource; right after its CRD is Established the API server still answers
    404 for ~2 s, so that one answer is waited out."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    objects = client.CustomObjectsApi(api)
    deadline = time.monotonic() + 30
    while True:
        try:
            return objects.create_namespaced_custom_object(GROUP, VERSION, "default", plural, body)
        except ApiException as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_the_api_server_takes_every_catalogue_experiment_and_suite_as_paychaos_validate_does(cluster: ClusterDir, api: Any, tmp_path: Path) -> None:
    from kubernetes import client, utils
    from kubernetes.client.rest import ApiException

    crds = sorted((ROOT / "platform" / "k8s" / "crds").glob("*.yaml"))
    for crd in crds:
        utils.create_from_yaml(api, str(crd))
    extensions = client.ApiextensionsV1Api(api)
    wait_for("the CRDs Established", lambda: all(
        any(c.type == "Established" and c.status == "True" for c in (extensions.read_custom_resource_definition(
            yaml.safe_load(crd.read_text())["metadata"]["name"]).status.conditions or [])) for crd in crds))

    experiments = sorted((ROOT / "experiments").glob("*.yaml"))
    assert len(experiments) >= 10
    for path in experiments:
        created = create(api, "chaosexperiments", yaml.safe_load(path.read_text()))
        # The API server prunes what its schema does not know: what it stored is the whole spec.
        assert created["spec"] == yaml.safe_load(path.read_text())["spec"], path.name
    for path in sorted((ROOT / "experiments" / "suites").glob("*.yaml")):
        create(api, "gamedays", yaml.safe_load(path.read_text()))

    # A file `paychaos validate` refuses, the API server refuses too, naming the field.
    bad = yaml.safe_load((ROOT / "experiments" / "pod-kill-payment.yaml").read_text())
    bad["metadata"]["name"] = "bad-at"
    bad["spec"]["faults"][0]["at"] = 5
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    refused = cli("validate", str(tmp_path / "bad.yaml"))
    assert refused.returncode != 0 and "faults[0].at" in refused.stdout + refused.stderr
    with pytest.raises(ApiException) as rejected:
        create(api, "chaosexperiments", bad)
    assert rejected.value.status == 422 and "spec.faults[0].at" in rejected.value.body

    # The status subresource: what the operator writes back, shown by the printer columns.
    objects = client.CustomObjectsApi(api)
    objects.patch_namespaced_custom_object_status(GROUP, VERSION, "default", "chaosexperiments", "pod-kill-payment",
                                                  {"status": {"phase": "Finished", "verdict": "passed"}})
    got = objects.get_namespaced_custom_object(GROUP, VERSION, "default", "chaosexperiments", "pod-kill-payment")
    assert got["status"]["verdict"] == "passed"
    pki, state = cluster.pki, ClusterState.read(cluster)
    assert state is not None
    tls = ssl.create_default_context(cafile=str(pki.ca_cert))
    tls.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    with httpx.Client(verify=tls) as http:
        table = http.get(f"{state.server}/apis/{GROUP}/{VERSION}/namespaces/default/chaosexperiments",
                         headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}).raise_for_status().json()
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert "Verdict" in columns, columns
    row = next(r for r in table["rows"] if r["object"]["metadata"]["name"] == "pod-kill-payment")
    assert "passed" in row["cells"]
