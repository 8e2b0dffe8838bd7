"""What paychaos needs of a system under test, behind one seam.

A target is where an experiment runs: its endpoints (Prometheus, the edge the load drives, the
ledger the invariants read), the driver that injects its faults, the ledger that records them
so `paychaos halt` can revert what a dead run left, and how to tell it is ready and settled.
The engine reaches a target only through ``resolve`` (from a spec's ``target``) or
``from_arguments`` (from a compiled Chaos Toolkit activity), never by importing a platform.

``local`` is the reference platform started by `paychaos stack up`. Other platforms register a
factory (``register``); until a platform's driver exists, naming it is a validation error.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from paychaos.faults import toxiproxy
from paychaos.faults.driving import FaultDriver
from paychaos.faults.records import FaultLedger
from paychaos.probes.catalogue import Catalogue
from paychaos.probes.prometheus import Prometheus, PrometheusUnavailable
from paychaos.probes.series import Vocabulary


class UnsupportedTarget(Exception):
    """No driver exists for the platform a spec names."""


@dataclass(frozen=True)
class Endpoints:
    prometheus_url: str
    edge_url: str  # where the load sends the app's requests
    ledger_dsn: str | None = None  # the money invariants' database (a secret's value, never printed)


@dataclass(frozen=True)
class Inventory:
    """The names a target exposes, to check a spec against before anything runs: the services
    and their replicas per zone, the zones, the proxies a slow downstream can go through, the
    Kafka topics (with their partition counts) and brokers."""

    replicas: Mapping[str, Mapping[str, int]]  # service -> zone -> replicas there
    zones: tuple[str, ...]
    proxies: tuple[str, ...] | None  # None: the target cannot say now (its proxy names are not checked)
    topics: Mapping[str, int]
    brokers: tuple[int, ...]
    # The fault kinds its driver can inject (None: every kind the spec language has).
    fault_kinds: tuple[str, ...] | None = None

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(self.replicas)

    def replicas_of(self, service: str, zone: str | None = None) -> int:
        per_zone = self.replicas.get(service, {})
        return sum(per_zone.values()) if zone is None else per_zone.get(zone, 0)


class Target(Protocol):
    #: The spec's ``target.platform`` this target serves.
    platform: str
    #: Says where, in messages: "the stack in .paychaos/run", "namespace payments".
    where: str

    def endpoints(self) -> Endpoints: ...

    def driver(self) -> FaultDriver: ...

    def ledger(self) -> FaultLedger: ...

    def not_ready(self) -> str | None:
        """Why an experiment cannot start on it now (and what to do), or None when it can."""
        ...

    def unsettled(self, vocabulary: Vocabulary) -> list[str]:
        """What keeps it from being the healthy baseline an experiment starts from; [] if nothing."""
        ...

    def calls_to_open(self, breaker: str) -> int | None:
        """Calls under a fault after which the closed breaker ``breaker`` counts against it, from
        the target's own breaker settings when it knows them (a spec's ``callsToOpen`` overrides it)."""
        ...

    def vocabulary(self, catalogue: Vocabulary) -> Vocabulary:
        """The series its probes read: the catalogue's, or the target's own where it gives them."""
        ...

    def inventory(self) -> Inventory | None:
        """Its names as they are now, or None when it cannot be read (a stack not started)."""
        ...

    def arguments(self) -> dict[str, str]:
        """What a compiled activity carries to find this target again in another process."""
        ...


Factory = Callable[[str | None], Target]  # the location (a run dir, a namespace) -> the target

# Import paths, not imports: resolving one platform never loads another's client libraries.
_FACTORIES: dict[str, str | Factory] = {
    "local": "paychaos.targets.local:LocalTarget.at",
    "external": "paychaos.targets.external:ExternalTarget.at",  # a stack described by a target file
    "kubernetes": "paychaos.targets.kubernetes:KubernetesTarget.at",  # a namespace of a cluster
}


def register(platform: str, factory: Factory) -> None:
    """Make ``platform`` resolvable (a test's fake target, a platform shipped elsewhere)."""
    _FACTORIES[platform] = factory


def unregister(platform: str) -> None:
    _FACTORIES.pop(platform, None)


def supported() -> list[str]:
    return sorted(_FACTORIES)


def resolve(platform: str, location: str | None = None) -> Target:
    """The target of a spec's ``target.platform`` at ``location`` (its run dir or namespace;
    the platform's default when None)."""
    factory = _FACTORIES.get(platform)
    if factory is None:
        raise UnsupportedTarget(f"no driver for target platform {platform!r} yet: supported are {', '.join(supported())}")
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        found: object = importlib.import_module(module)
        for part in attribute.split("."):
            found = getattr(found, part)
        factory = found  # type: ignore[assignment]
    return factory(location)  # type: ignore[operator]


def for_spec(platform: str, *, run_dir: str | None = None, namespace: str | None = None) -> Target:
    """The target a spec's ``target`` names: the local stack of ``run_dir``, or a cluster namespace."""
    return resolve(platform, run_dir if platform == "local" else namespace)


def from_arguments(arguments: Mapping[str, str] | None) -> Target:
    """The target a compiled activity names (``Target.arguments``); the local default without one
    (an experiment exported before activities carried their target)."""
    arguments = arguments or {}
    return resolve(arguments.get("platform", "local"), arguments.get("location"))


def unsettled_at(prometheus_url: str, toxiproxy_url: str | None, vocabulary: Vocabulary) -> list[str]:
    """What a target's endpoints say keeps it from being a healthy baseline: a toxic left on a
    proxy, a series of the vocabulary's ``settled`` that is not zero; [] if nothing."""
    problems: list[str] = []
    try:
        if toxiproxy_url is not None:
            problems += toxiproxy.active_toxics(toxiproxy_url)
        with Prometheus(prometheus_url, timeout=2) as prometheus:
            # Each must be zero before an experiment starts (the catalogue's series.yaml `settled`).
            for series in vocabulary.settled:
                value = prometheus.scalar(series.query) or 0.0
                if value > 0:
                    problems.append(f"{series.what}: {value:g}" + (f" ({series.hint})" if series.hint else ""))
    except (toxiproxy.ToxiproxyError, PrometheusUnavailable) as exc:
        problems.append(f"cannot read the target's health: {exc}")
    return problems


def catalogue_of(target: Target, catalogue: Catalogue) -> Catalogue:
    """The probe catalogue as it reads ``target``: its series where the target gives its own."""
    return replace(catalogue, series=target.vocabulary(catalogue.vocabulary))
