"""A namespace of a Kubernetes cluster as a target (``target: {platform: kubernetes, namespace: X}``).

The cluster is reached the way kubectl reaches it (``KUBECONFIG``, ``~/.kube/config``, or the
service account when paychaos runs in a pod). The namespace says where its stack's endpoints are,
in annotations, so that neither a user nor the operator needs a file beside the experiment:

    paychaos.io/prometheus: http://prometheus.monitoring:9090   (required to run an experiment)
    paychaos.io/edge:       http://gateway.payments:8080          (where the load is sent)
    paychaos.io/toxiproxy:  http://toxiproxy.payments:8474        (for slowDownstream)

and opts in to chaos with the label ``paychaos.io/chaos=enabled``; without it nothing is touched.
The fault ledger lives in the namespace (ConfigMap and Lease, see ``ledger``).
"""

from __future__ import annotations

import os
from typing import Any

from paychaos.faults.driving import TargetUnreachable
from paychaos.probes.series import Vocabulary
from paychaos.targets import Endpoints, Inventory, unsettled_at
from paychaos.targets.kubernetes.driver import FAULT_KINDS, OPT_IN_LABEL, OPT_IN_VALUE, KubernetesDriver
from paychaos.targets.kubernetes.ledger import ClusterLedger

NAMESPACE_ENV = "PAYCHAOS_NAMESPACE"
ANNOTATION = "paychaos.io/"


def api_client() -> Any:
    """A client configured as kubectl would be: in a pod, its service account; else the kubeconfig."""
    from kubernetes import config

    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config()
        from kubernetes import client

        return client.ApiClient()
    try:
        return config.new_client_from_config()
    except config.ConfigException as exc:
        raise TargetUnreachable(f"no Kubernetes cluster configured ({exc}): set KUBECONFIG, e.g. "
                                "`export KUBECONFIG=$(paychaos cluster up)` for the test cluster") from None


class KubernetesTarget:
    platform = "kubernetes"

    def __init__(self, namespace: str, api: Any | None = None) -> None:
        self.namespace = namespace
        self.where = f"namespace {namespace}"
        self._api = api

    @classmethod
    def at(cls, location: str | None) -> KubernetesTarget:
        return cls(location or os.environ.get(NAMESPACE_ENV) or "default")

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = api_client()
        return self._api

    def _annotations(self) -> dict[str, str]:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            namespace = client.CoreV1Api(self.api).read_namespace(self.namespace)
        except ApiException as exc:
            raise TargetUnreachable(f"namespace {self.namespace}: the API answered {exc.status} {exc.reason}") from None
        return {k.removeprefix(ANNOTATION): v for k, v in (namespace.metadata.annotations or {}).items()
                if k.startswith(ANNOTATION)}

    def endpoints(self) -> Endpoints:
        found = self._annotations()
        missing = [k for k in ("prometheus", "edge") if k not in found]
        if missing:
            raise TargetUnreachable(f"namespace {self.namespace} does not say where its "
                                    f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'}: annotate it with "
                                    + ", ".join(f"{ANNOTATION}{k}=URL" for k in missing))
        return Endpoints(prometheus_url=found["prometheus"], edge_url=found["edge"])

    def driver(self) -> KubernetesDriver:
        found = self._annotations()
        return KubernetesDriver(self.api, self.namespace, found.get("toxiproxy"), kafka_bootstrap=found.get("kafka"))

    def ledger(self) -> ClusterLedger:
        return ClusterLedger(self.api, self.namespace)

    def not_ready(self) -> str | None:
        refused = self.driver().opted_in()
        if refused is not None:
            return refused
        try:
            self.endpoints()
        except TargetUnreachable as exc:
            return str(exc)
        return None

    def unsettled(self, vocabulary: Vocabulary) -> list[str]:
        driver = self.driver()
        observed = driver.observe()
        problems = [f"pod {r.name} not ready" for r in (*observed.replicas, *observed.brokers) if not r.ready]
        problems += [f"node {n.name} cordoned" for n in observed.nodes if not n.schedulable]
        endpoints = self.endpoints()
        return problems + unsettled_at(endpoints.prometheus_url, driver.toxiproxy_url, vocabulary)

    def calls_to_open(self, breaker: str) -> int | None:
        return None  # a cluster does not tell its services' breaker settings: the spec's callsToOpen does

    def vocabulary(self, catalogue: Vocabulary) -> Vocabulary:
        return catalogue

    def inventory(self) -> Inventory | None:
        try:
            observed = self.driver().observe()
        except TargetUnreachable:
            return None
        replicas: dict[str, dict[str, int]] = {}
        for r in observed.replicas:
            zones = replicas.setdefault(r.service, {})
            zones[r.zone] = zones.get(r.zone, 0) + 1
        return Inventory(replicas=replicas, zones=observed.zones,
                         proxies=tuple(p.name for p in observed.proxies) if observed.proxies else None,
                         topics={}, brokers=tuple(b.id for b in observed.brokers), fault_kinds=FAULT_KINDS)

    def arguments(self) -> dict[str, str]:
        return {"platform": self.platform, "location": self.namespace}


__all__ = ["OPT_IN_LABEL", "OPT_IN_VALUE", "KubernetesTarget", "api_client"]
