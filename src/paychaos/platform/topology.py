"""The shape of the reference platform: zones, replicas, ports and resilience switches.

The topology is data (``runtime/topology.yaml``) validated here; everything that starts,
routes to or scrapes a replica derives its addresses from it, so nothing else hard-codes a port.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from paychaos.durations import Duration

SERVICES = ("gateway", "payment", "ledger", "campaign", "acquirer")
ServiceName = Literal["gateway", "payment", "ledger", "campaign", "acquirer"]
# What a topology can place on a host of its own (`hosts:`): the services, and what they reach.
HostedPart = Literal["gateway", "payment", "ledger", "campaign", "acquirer", "postgres", "kafka", "toxiproxy",
                     "prometheus", "edge"]

#: Shift every port by this much, so that two stacks (a developer's and a test session's) can
#: run side by side on one machine.
PORT_OFFSET_ENV = "PAYCHAOS_PORT_OFFSET"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class InternalPorts(_Model):
    gateway: int
    payment: int
    ledger: int
    campaign: int
    acquirer: int


class Ports(_Model):
    edge: int
    haproxy_stats: int
    internal: InternalPorts
    postgres: int
    kafka: int
    kafka_controller: int
    toxiproxy_api: int
    prometheus: int
    replicas: int

    def shifted(self, offset: int) -> Ports:
        if not offset:
            return self
        data = self.model_dump()
        shifted = {k: v + offset for k, v in data.items() if isinstance(v, int)}
        shifted["internal"] = {k: v + offset for k, v in data["internal"].items()}
        return Ports.model_validate(shifted)


class ServiceSpec(_Model):
    replicas_per_zone: int = Field(ge=0)
    # Like a servlet container's thread pool and accept queue: a replica serves this many
    # requests at once, queues this many more, and refuses the rest with 503.
    workers: int = Field(default=64, ge=1)
    accept_queue: int = Field(default=64, ge=0)


class TopicSpec(_Model):
    partitions: int = Field(ge=1)
    replication_factor: int = Field(ge=1)
    min_insync_replicas: int = Field(ge=1)


class KafkaSpec(_Model):
    heap: str
    topics: dict[str, TopicSpec]


class ProxySpec(_Model):
    """A Toxiproxy listener in front of a service's internal load balancer, or of PostgreSQL.
    A proxy named ``<service>-db`` in front of ``postgres`` carries that service's database
    connections (so a fault can slow the ledger's database and nothing else's)."""

    listen: int
    upstream: ServiceName | Literal["postgres"]


class SupervisorSpec(_Model):
    restart_backoff: Duration
    max_backoff: Duration
    ready_timeout: Duration


class Timeouts(_Model):
    enabled: bool
    acquirer: Duration
    ledger: Duration
    payment: Duration
    campaign: Duration


class BreakerSpec(_Model):
    """Resilience4j circuit-breaker settings, with the same meaning as its configuration keys."""

    enabled: bool
    sliding_window_size: int = Field(ge=1)
    minimum_number_of_calls: int = Field(ge=1)
    failure_rate_threshold: float = Field(gt=0, le=100)
    slow_call_rate_threshold: float = Field(gt=0, le=100)
    slow_call_duration: Duration
    wait_duration_in_open_state: Duration
    permitted_calls_in_half_open_state: int = Field(ge=1)

    @property
    def calls_to_open(self) -> int:
        """How many failing calls trip a closed breaker whatever its window held before: enough to
        reach the threshold over a window full of successes, and the minimum over an empty one."""
        share = min(self.failure_rate_threshold, self.slow_call_rate_threshold) / 100
        return max(min(self.minimum_number_of_calls, self.sliding_window_size), math.ceil(share * self.sliding_window_size))


class AdmissionSpec(_Model):
    enabled: bool
    tokens_per_second: int = Field(ge=1)
    burst: int = Field(ge=1)
    allowed_percent: int = Field(ge=0, le=100)
    rotation: Duration
    flow_ttl: Duration
    max_in_flight: int = Field(ge=1)


class ResilienceSpec(_Model):
    timeouts: Timeouts
    breaker: BreakerSpec
    idempotency: bool
    outbox: bool
    producer_acks: Literal["all", "1"]
    consumer_dedupe: bool
    skip_poison: bool = True  # newer than the other switches: a topology copied before it still loads
    # A card call the open breaker refuses is answered CARD_NETWORK_UNAVAILABLE at once (on), or
    # retried until the acquirer timeout has passed (off), as a Retry decorated outside the
    # breaker does: each refused payment then holds a worker as long as a slow call would.
    fallback: bool = True  # defaulted like skip_poison, for topologies copied before it
    admission: AdmissionSpec


class AcquirerSpec(_Model):
    latency: Duration
    jitter: Duration
    decline_per_mille: int = Field(ge=0, le=1000)


class StepTier(_Model):
    payments: int = Field(ge=0)
    value: int = Field(ge=0)
    bps: int = Field(ge=0)


class StepSpec(_Model):
    min_amount: int = Field(ge=1)
    tiers: list[StepTier] = Field(min_length=1)


class FlashSpec(_Model):
    name: str
    percent: int = Field(ge=0, le=100)
    per_payment_cap: int = Field(ge=0)
    per_user_cap: int = Field(ge=0)
    budget: int = Field(ge=0)


class CampaignSpec(_Model):
    step: StepSpec
    flash: FlashSpec


class SeedSpec(_Model):
    users: int = Field(ge=1)
    user_balance: int = Field(ge=0)
    merchants: int = Field(ge=1)


@dataclass(frozen=True)
class Replica:
    """One process of a service: what the supervisor starts and HAProxy routes to."""

    service: str
    zone: str
    index: int
    port: int

    @property
    def name(self) -> str:
        return f"{self.service}-{self.zone}-{self.index}"


class Topology(_Model):
    host: str  # where everything is reached and replicas listen, unless `hosts` says otherwise
    # Parts reached at a host of their own: in a cluster, each Service's DNS name, with `host`
    # 0.0.0.0 for the replicas to listen on (platform/k8s/reference/topology.yaml). `kafka` names
    # a bootstrap address (its port is ports.kafka) rather than one host per node.
    hosts: dict[HostedPart, str] = Field(default_factory=dict)
    zones: list[str] = Field(min_length=1)
    ports: Ports
    services: dict[ServiceName, ServiceSpec]
    kafka: KafkaSpec
    proxies: dict[str, ProxySpec]
    supervisor: SupervisorSpec
    resilience: ResilienceSpec
    acquirer: AcquirerSpec
    campaign: CampaignSpec
    seed: SeedSpec

    @model_validator(mode="after")
    def _every_service_declared(self) -> Topology:
        missing = [s for s in SERVICES if s not in self.services]
        if missing:
            raise ValueError(f"services: missing {', '.join(missing)}")
        return self

    @cached_property
    def replicas(self) -> tuple[Replica, ...]:
        out: list[Replica] = []
        port = self.ports.replicas
        for service in SERVICES:
            for zone in self.zones:
                for index in range(1, self.services[service].replicas_per_zone + 1):
                    out.append(Replica(service, zone, index, port))
                    port += 1
        return tuple(out)

    def replicas_of(self, service: str, zone: str | None = None) -> list[Replica]:
        return [r for r in self.replicas if r.service == service and (zone is None or r.zone == zone)]

    # Kafka node n (1-based) lives in zone n, wrapping when there are more nodes than zones.
    @property
    def kafka_nodes(self) -> list[int]:
        return [1, 2, 3]

    def kafka_zone(self, node: int) -> str:
        return self.zones[(node - 1) % len(self.zones)]

    def kafka_port(self, node: int) -> int:
        return self.ports.kafka + node - 1

    def kafka_controller_port(self, node: int) -> int:
        return self.ports.kafka_controller + node - 1

    def host_of(self, part: HostedPart) -> str:
        return self.hosts.get(part, self.host)

    @property
    def bootstrap_servers(self) -> str:
        if "kafka" in self.hosts:
            return f"{self.hosts['kafka']}:{self.ports.kafka}"
        return ",".join(f"{self.host}:{self.kafka_port(n)}" for n in self.kafka_nodes)

    @property
    def postgres_dsn(self) -> str:
        return f"postgresql://postgres@{self.host_of('postgres')}:{self.ports.postgres}/paychaos"

    def database_dsn(self, service: str) -> str:
        """Where ``service`` connects to PostgreSQL: through its ``<service>-db`` proxy if the
        topology has one, else directly."""
        proxy = self.proxies.get(f"{service}-db")
        if proxy is not None and proxy.upstream == "postgres":
            return f"postgresql://postgres@{self.host_of('toxiproxy')}:{proxy.listen}/paychaos"
        return self.postgres_dsn

    def without_database_proxies(self) -> Topology:
        """This topology with every service connecting to PostgreSQL directly: for services run
        without Toxiproxy in front of the database."""
        return self.model_copy(update={"proxies": {n: p for n, p in self.proxies.items() if p.upstream != "postgres"}})

    def upstream_port(self, upstream: str) -> int:
        """The port a proxy forwards to: PostgreSQL's, or a service's internal load balancer."""
        return self.ports.postgres if upstream == "postgres" else int(getattr(self.ports.internal, upstream))

    @property
    def edge_url(self) -> str:
        return f"http://{self.host_of('edge')}:{self.ports.edge}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{self.host_of('prometheus')}:{self.ports.prometheus}"

    @property
    def toxiproxy_url(self) -> str:
        return f"http://{self.host_of('toxiproxy')}:{self.ports.toxiproxy_api}"

    def internal_url(self, service: ServiceName) -> str:
        """Where a service calls another: the internal load balancer, or a Toxiproxy in front of it."""
        proxy = self.proxies.get(service)
        if proxy is not None:
            return f"http://{self.host_of('toxiproxy')}:{proxy.listen}"
        return self.direct_internal_url(service)

    def direct_internal_url(self, service: ServiceName) -> str:
        return f"http://{self.host_of(service)}:{getattr(self.ports.internal, service)}"

    def with_port_offset(self, offset: int) -> Topology:
        if not offset:
            return self
        proxies = {n: p.model_copy(update={"listen": p.listen + offset}) for n, p in self.proxies.items()}
        return self.model_copy(update={"ports": self.ports.shifted(offset), "proxies": proxies})


def timeout_seconds(value: timedelta) -> float:
    return value.total_seconds()


def default_topology_path() -> Path:
    return Path(str(resources.files("paychaos.platform.runtime") / "topology.yaml"))


def load_topology(path: Path | None = None, *, port_offset: bool = True) -> Topology:
    """Load a topology file (the packaged default when ``path`` is None), applying this machine's
    port offset (``PAYCHAOS_PORT_OFFSET``) unless ``port_offset`` is False: a cluster topology's
    ports are its Services', whatever the machine that reads it."""
    source = path or default_topology_path()
    with open(source, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    topology = Topology.model_validate(data)
    return topology.with_port_offset(int(os.environ.get(PORT_OFFSET_ENV, "0") or 0) if port_offset else 0)
