"""The reference platform as Kubernetes objects, generated from a cluster topology
(``platform/k8s/reference/topology.yaml``), so replicas, pools, proxies and topics stay one setting.

What is generated (``paychaos stack manifests``): per service a Deployment spread over the zones, its
Service and a PodDisruptionBudget; Toxiproxy with its proxies; the Strimzi ``KafkaTopic`` objects;
Locust's master and workers with the load they send; and the SLO alerts as a ``PrometheusRule``.
What does not depend on the topology is plain YAML beside it (namespace, PostgreSQL, the Strimzi
``Kafka``, Prometheus), and ``kustomization.yaml`` puts it all together.

Written with our own code: kustomize has no loops, and a Helm chart would be a second source of
truth beside the topology.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from paychaos.platform.topology import SERVICES, Topology

PART_OF = "paychaos-reference"
IMAGE = "paychaos"  # the package's image (platform/k8s/reference/Containerfile); kustomize `images:` sets where it is
TOXIPROXY_IMAGE = "ghcr.io/shopify/toxiproxy:2.12.0"
TOPOLOGY_CONFIG = "topology"  # the ConfigMap kustomize generates from topology.yaml
TOPOLOGY_MOUNT = "/etc/paychaos"
ZONE_LABEL = "topology.kubernetes.io/zone"
KAFKA_CLUSTER = "payments"
LOCUST_METRICS_PORT = 9646
# The steady load Locust's master sends once started (the app's mix; `paychaos run` brings its own).
STEADY_LOAD = {"profile": "steady", "baselineRps": 20, "peakMultiplier": 1, "duration": "24h"}


def _labels(name: str, component: str = "service") -> dict[str, str]:
    # app.kubernetes.io/name is what the Kubernetes target reads a pod's service from.
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": component}


def _meta(name: str, component: str = "service") -> dict[str, Any]:
    return {"name": name, "labels": _labels(name, component)}


def _deployment(name: str, component: str, replicas: int, pod: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, component),
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                     "template": {"metadata": {"labels": _labels(name, component)}, "spec": pod}}}


def _service(name: str, component: str, ports: dict[str, int]) -> dict[str, Any]:
    """A Service in front of the pods of ``name``: each port (by its name) to the container port of that name."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, component),
            "spec": {"selector": {"app.kubernetes.io/name": name},
                     "ports": [{"name": port, "port": number, "targetPort": port} for port, number in ports.items()]}}


def _topology_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    return ({"name": "topology", "configMap": {"name": TOPOLOGY_CONFIG}},
            {"name": "topology", "mountPath": TOPOLOGY_MOUNT, "readOnly": True})


def service_objects(topology: Topology, service: str) -> list[dict[str, Any]]:
    """A service's Deployment (its replicas spread evenly over the zones, the replacements of a lost
    zone's pods in the others), its Service, and a disruption budget that lets one zone's worth go."""
    spec = topology.services[service]  # type: ignore[index]
    replicas = spec.replicas_per_zone * len(topology.zones)
    port = topology.ports.replicas
    selector = {"app.kubernetes.io/name": service}
    volume, mount = _topology_volume()
    container = {
        "name": service,
        "image": IMAGE,
        "args": ["python", "-m", "paychaos.platform.services", service, "--port", str(port),
                 "--topology", f"{TOPOLOGY_MOUNT}/topology.yaml"],
        # The zone label is copied from the node when the pod is bound (PodTopologyLabelsAdmission, beta and on since 1.35).
        "env": [{"name": "PAYCHAOS_ZONE", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{ZONE_LABEL}']"}}}],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": "/health/ready", "port": "http"}, "periodSeconds": 2, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/health/live", "port": "http"}, "periodSeconds": 5, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": [mount],
    }
    # Evenly over the zones; a cordoned zone's nodes do not count (Honor), so a lost zone's
    # replicas are replaced in the zones left.
    spread = {"maxSkew": 1, "topologyKey": ZONE_LABEL, "whenUnsatisfiable": "DoNotSchedule",
              "nodeTaintsPolicy": "Honor", "labelSelector": {"matchLabels": selector}}
    deployment = _deployment(service, "service", replicas, {
        "topologySpreadConstraints": [spread], "terminationGracePeriodSeconds": 10,
        "containers": [container], "volumes": [volume]})
    svc = _service(service, "service", {"http": getattr(topology.ports.internal, service)})
    budget = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _meta(service),
              "spec": {"maxUnavailable": max(1, spec.replicas_per_zone), "selector": {"matchLabels": selector}}}
    return [deployment, svc, budget]


def toxiproxy_objects(topology: Topology) -> list[dict[str, Any]]:
    """Toxiproxy in front of what the topology proxies (the acquirer, the ledger's database): the
    clients reach those through its Service, and slowDownstream adds toxics through its API."""
    proxies = [{"name": name, "listen": f"0.0.0.0:{p.listen}", "enabled": True,
                "upstream": f"{topology.host_of(p.upstream)}:{topology.upstream_port(p.upstream)}"}  # type: ignore[arg-type]
               for name, p in sorted(topology.proxies.items())]
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("toxiproxy", "fault-injection"),
              "data": {"toxiproxy.json": json.dumps(proxies, indent=2) + "\n"}}
    ports = {"api": topology.ports.toxiproxy_api, **{name[:15]: p.listen for name, p in sorted(topology.proxies.items())}}
    deployment = _deployment("toxiproxy", "fault-injection", 1, {"containers": [{
        "name": "toxiproxy", "image": TOXIPROXY_IMAGE,
        "args": ["-host", "0.0.0.0", "-port", str(topology.ports.toxiproxy_api), "-config", "/etc/toxiproxy/toxiproxy.json"],
        "ports": [{"name": name, "containerPort": number} for name, number in ports.items()],
        "readinessProbe": {"httpGet": {"path": "/version", "port": "api"}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/toxiproxy", "readOnly": True}],
    }], "volumes": [{"name": "config", "configMap": {"name": "toxiproxy"}}]})
    service = _service("toxiproxy", "fault-injection", ports)
    return [config, deployment, service]


def seed_job() -> dict[str, Any]:
    """Users, merchants and the campaign budget, through the ledger's own API (idempotent: a Job
    run again leaves the money as it was)."""
    volume, mount = _topology_volume()
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta("seed", "setup"),
            "spec": {"backoffLimit": 20, "template": {"metadata": {"labels": _labels("seed", "setup")}, "spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "seed", "image": IMAGE,
                                "args": ["python", "-m", "paychaos.platform.runtime.seeding", "--topology",
                                         f"{TOPOLOGY_MOUNT}/topology.yaml"],
                                "volumeMounts": [mount]}],
                "volumes": [volume]}}}}


def topic_objects(topology: Topology) -> list[dict[str, Any]]:
    """The topology's topics, for Strimzi's topic operator: partitions, replicas and min ISR as on one machine."""
    return [{
        "apiVersion": "kafka.strimzi.io/v1beta2", "kind": "KafkaTopic",
        "metadata": {"name": name, "labels": {"strimzi.io/cluster": KAFKA_CLUSTER, "app.kubernetes.io/part-of": PART_OF}},
        "spec": {"partitions": t.partitions, "replicas": t.replication_factor,
                 "config": {"min.insync.replicas": t.min_insync_replicas}},
    } for name, t in sorted(topology.kafka.topics.items())]


def locust_objects(topology: Topology, workers: int = 2) -> list[dict[str, Any]]:
    """Locust's master and workers, sending the app's traffic to the edge; the master serves its
    metrics for Prometheus. The load they send is the config the locustfile reads."""
    config = {"load": STEADY_LOAD, "out_dir": "/tmp/load", "metrics_port": LOCUST_METRICS_PORT,
              "app_users": topology.seed.users, "merchants": topology.seed.merchants, "held": False}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("locust", "load"),
                  "data": {"load.json": json.dumps(config, indent=2) + "\n"}}
    locustfile = ["-f", "/app/src/paychaos/load/locustfile.py"]  # where the Containerfile puts the project

    def deployment(part: str, replicas: int, args: list[str], ports: dict[str, int]) -> dict[str, Any]:
        return _deployment(f"locust-{part}", "load", replicas, {"containers": [{
            "name": "locust", "image": IMAGE, "args": ["locust", *locustfile, *args],
            "env": [{"name": "PAYCHAOS_LOAD_CONFIG", "value": "/etc/locust/load.json"},
                    {"name": "PAYCHAOS_LOAD_PART", "value": part if part == "master" else "worker-1"}],
            "ports": [{"name": name, "containerPort": number} for name, number in ports.items()],
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
            "volumeMounts": [{"name": "load", "mountPath": "/etc/locust", "readOnly": True}],
        }], "volumes": [{"name": "load", "configMap": {"name": "locust"}}]})

    master_ports = {"workers": 5557, "metrics": LOCUST_METRICS_PORT}
    master = deployment("master", 1, ["--master", "--headless", "--host", topology.edge_url, "--expect-workers", str(workers)],
                        master_ports)
    worker = deployment("worker", workers, ["--worker", "--master-host", "locust-master"], {})
    service = _service("locust-master", "load", master_ports)
    return [config_map, master, service, worker]


def alert_rule(rules: Path) -> dict[str, Any]:
    """The SLO alerts (`paychaos alerts`) for the Prometheus Operator."""
    groups = yaml.safe_load(rules.read_text(encoding="utf-8"))["groups"]
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "paychaos-slo", "labels": {"app.kubernetes.io/part-of": PART_OF}},
            "spec": {"groups": groups}}


def manifests(topology: Topology, rules: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for service in SERVICES:
        out += service_objects(topology, service)
    return [*out, seed_job(), *toxiproxy_objects(topology), *topic_objects(topology), *locust_objects(topology),
            alert_rule(rules)]


HEADER = """\
# Generated by `paychaos stack manifests` from platform/k8s/reference/topology.yaml and the SLO alerts
# (platform/alerts). Do not edit: change the topology and generate again.
"""


class _PlainDumper(yaml.SafeDumper):
    """No anchors and aliases: a selector shared by objects is written out in each."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    """A multi-line string (a config file, a query) as a literal block, as it would be written by hand."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_PlainDumper.add_representer(str, _text)


def render(topology: Topology, rules: Path) -> str:
    return HEADER + yaml.dump_all(manifests(topology, rules), Dumper=_PlainDumper, sort_keys=False, width=120)
