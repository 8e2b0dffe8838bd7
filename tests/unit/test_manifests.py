"""The reference platform's Kubernetes manifests: generated from the cluster topology and current
with it, and wired the way the topology says (every address a service calls is a Service of the
manifests, on its port)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from paychaos.platform.manifests import manifests, render
from paychaos.platform.topology import SERVICES, load_topology

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "platform" / "k8s" / "reference"
RULES = ROOT / "platform" / "alerts" / "paychaos-slo.rules.yaml"


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    static = [d for f in ("namespace.yaml", "postgres.yaml", "kafka.yaml", "monitoring.yaml")
              for d in yaml.safe_load_all((REFERENCE / f).read_text())]
    return static + manifests(load_topology(REFERENCE / "topology.yaml", port_offset=False), RULES)


def test_the_committed_manifests_are_the_generated_ones() -> None:
    committed = (REFERENCE / "generated.yaml").read_text()
    assert committed == render(load_topology(REFERENCE / "topology.yaml", port_offset=False), RULES), "run `paychaos stack manifests`"
    kustomization = yaml.safe_load((REFERENCE / "kustomization.yaml").read_text())
    assert {*kustomization["resources"], "kustomization.yaml", "topology.yaml", "Containerfile"} == {
        p.name for p in REFERENCE.iterdir()}, "every file of the folder is applied"


def _of(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in objects if d["kind"] == kind}


def test_every_address_the_topology_gives_is_a_service_of_the_manifests(objects: list[dict[str, Any]]) -> None:
    topology = load_topology(REFERENCE / "topology.yaml", port_offset=False)
    services = {(name, p["port"]) for name, s in _of(objects, "Service").items() for p in s["spec"]["ports"]}
    services.add(("prometheus-operated", 9090))  # the Prometheus Operator's own Service for the Prometheus object
    services.add(("payments-kafka-bootstrap", 9092))  # Strimzi's bootstrap Service for the Kafka `payments`
    addresses = [topology.bootstrap_servers, urlsplit(topology.postgres_dsn).netloc.split("@")[1],
                 *(urlsplit(u).netloc for u in (topology.edge_url, topology.prometheus_url, topology.toxiproxy_url,
                                                *(topology.internal_url(s) for s in SERVICES)))]
    for address in addresses:
        host, port = address.rsplit(":", 1)
        assert (host, int(port)) in services, f"{address} is no Service of the manifests"
    assert urlsplit(topology.database_dsn("ledger")).netloc.split("@")[1] == "toxiproxy:18476"
    kafka = _of(objects, "Kafka")["payments"]
    assert kafka["spec"]["kafka"]["listeners"][0]["port"] == topology.ports.kafka
    # Toxiproxy forwards to the Services the clients would reach without it.
    proxies = {p["name"]: p for p in json.loads(_of(objects, "ConfigMap")["toxiproxy"]["data"]["toxiproxy.json"])}
    assert proxies["acquirer"]["upstream"] == "acquirer:8080" and proxies["ledger-db"]["upstream"] == "postgres:5432"


def test_each_service_spreads_over_the_zones_and_may_lose_one_zones_worth(objects: list[dict[str, Any]]) -> None:
    topology = load_topology(REFERENCE / "topology.yaml", port_offset=False)
    deployments, budgets = _of(objects, "Deployment"), _of(objects, "PodDisruptionBudget")
    for service in SERVICES:
        spec = deployments[service]["spec"]
        per_zone = topology.services[service].replicas_per_zone
        assert spec["replicas"] == per_zone * len(topology.zones)
        (spread,) = spec["template"]["spec"]["topologySpreadConstraints"]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone" and spread["nodeTaintsPolicy"] == "Honor"
        assert spread["whenUnsatisfiable"] == "DoNotSchedule" and spread["maxSkew"] == 1
        assert budgets[service]["spec"]["maxUnavailable"] == per_zone
        assert spec["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == service  # what the target reads


def test_kafka_keeps_three_copies_two_in_sync_one_node_per_zone(objects: list[dict[str, Any]]) -> None:
    kafka = _of(objects, "Kafka")["payments"]["spec"]["kafka"]
    assert kafka["rack"]["topologyKey"] == "topology.kubernetes.io/zone"
    assert kafka["config"]["min.insync.replicas"] == 2 and kafka["config"]["default.replication.factor"] == 3
    assert _of(objects, "KafkaNodePool")["nodes"]["spec"]["replicas"] == 3
    topic = _of(objects, "KafkaTopic")["payments"]
    assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "payments"
    assert topic["spec"]["replicas"] == 3 and topic["spec"]["config"]["min.insync.replicas"] == 2


def test_the_namespace_opted_in_and_says_where_its_endpoints_are(objects: list[dict[str, Any]]) -> None:
    namespace = _of(objects, "Namespace")["payments"]["metadata"]
    assert namespace["labels"]["paychaos.io/chaos"] == "enabled"
    assert {"paychaos.io/prometheus", "paychaos.io/edge", "paychaos.io/toxiproxy", "paychaos.io/kafka"} <= set(namespace["annotations"])
    topology = load_topology(REFERENCE / "topology.yaml", port_offset=False)
    assert namespace["annotations"]["paychaos.io/kafka"].split(".")[0] == topology.bootstrap_servers.split(":")[0]
    rule = _of(objects, "PrometheusRule")["paychaos-slo"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
