"""A stack paychaos did not start, described by a target file (``kind: Target``).

Everything is read from the endpoints the file names, never from a run directory: Prometheus
for the probes, the edge for the load, the ledger's DSN (from a secret file) for the money
invariants, and a Toxiproxy in front of the dependencies for the faults. Its driver injects what
a Toxiproxy can (``slowDownstream``); a spec asking for another fault is refused when it is
validated, naming the kinds this target has.

The file may also give the stack's own series (``series:``, the sections of the catalogue's
``probes/series.yaml`` it replaces: a Java service's Resilience4j and Micrometer names, say), the
replicas it runs per zone (so that specs naming services are checked), and each breaker's trip
count. The fault ledger lives beside the file (``.paychaos/<name>/``), so that `paychaos halt
--target FILE` finds what a dead run left from any directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from paychaos.experiments.spec import API_VERSION, NAME_PATTERN
from paychaos.faults import toxiproxy
from paychaos.faults.driving import InjectionFailed, RevertFailed, TargetUnreachable
from paychaos.faults.planning import FaultPlan, Observed, PartitionRef
from paychaos.faults.records import FaultRecord, FileLedger
from paychaos.probes.prometheus import Prometheus, PrometheusUnavailable
from paychaos.probes.series import Vocabulary
from paychaos.targets import Endpoints, Inventory, unsettled_at

KIND = "Target"
PLATFORM = "external"
# What a Toxiproxy in front of a dependency can do; every other kind needs access this file does not give.
FAULT_KINDS = ("slowDownstream",)


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class Ledger(_Model):
    # A file holding the DSN (a mounted secret): the DSN itself never sits in the target file.
    dsn_file: str


class BreakerSettings(_Model):
    calls_to_open: int | None = Field(default=None, ge=1)


class TargetSpec(_Model):
    prometheus: str = Field(pattern=r"^https?://")
    edge: str = Field(pattern=r"^https?://")
    toxiproxy: str | None = Field(default=None, pattern=r"^https?://")
    ledger: Ledger | None = None
    zones: list[str] = Field(default_factory=list)
    # service -> zone -> replicas there: what specs may name (podKill and the like are not
    # injected here, but a check of the blast radius or a service name still reads them).
    services: dict[str, dict[str, int]] = Field(default_factory=dict)
    breakers: dict[str, BreakerSettings] = Field(default_factory=dict)
    # Sections of probes/series.yaml (traffic, breakers, consumerGroups, backlogs, settled, times)
    # that replace the catalogue's for this stack; validated against the vocabulary's schema.
    series: dict[str, Any] = Field(default_factory=dict)
    state: str | None = None  # where the fault ledger lives, relative to this file (default .paychaos/<name>)

    @model_validator(mode="after")
    def _series_is_a_vocabulary(self) -> TargetSpec:
        unknown = sorted(set(self.series) - set(_SECTIONS))
        if unknown:
            raise ValueError(f"series: unknown section {unknown[0]!r}: expected some of {', '.join(_SECTIONS)}")
        try:  # laid over a catalogue, as the run does (traffic is required there: stand one in)
            Vocabulary.model_validate(overlay({"traffic": {"rps": "0", "errorRatio": "0", "p99": "0"}}, self.series))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ValueError(f"series: {where}: {first['msg']}") from None
        return self


_SECTIONS = tuple(Vocabulary.model_fields[f].alias or f for f in Vocabulary.model_fields)


class Metadata(_Model):
    name: str = Field(pattern=NAME_PATTERN)


class TargetFile(_Model):
    api_version: Literal["paychaos.io/v1alpha1"] = API_VERSION  # type: ignore[assignment]
    kind: Literal["Target"] = KIND
    metadata: Metadata
    spec: TargetSpec


class TargetFileError(Exception):
    """A target file that cannot be read; `paychaos validate --target FILE` says where."""


def overlay(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: mappings merge key by key, anything else is replaced; an empty
    mapping clears, and a ``names`` mapping (the breakers or consumer groups a stack exposes) is
    the stack's own and replaces the catalogue's whole."""
    out = dict(base)
    for key, value in over.items():
        if key != "names" and value and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = overlay(out[key], value)
        else:
            out[key] = value
    return out


class ExternalTarget:
    platform = PLATFORM

    def __init__(self, document: TargetFile, path: Path) -> None:
        self.document = document
        self.path = path.resolve()
        self.spec = document.spec
        self.where = f"the stack {document.metadata.name} described by {path}"

    @classmethod
    def at(cls, location: str | None) -> ExternalTarget:
        """The target of the file ``location`` (what a compiled activity carries)."""
        if location is None:
            raise TargetFileError("an external target needs its target file: give --target FILE")
        path = Path(location)
        try:
            document = TargetFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except OSError as exc:
            raise TargetFileError(f"{path}: cannot read the target file ({exc.strerror or exc})") from None
        except (yaml.YAMLError, ValidationError) as exc:
            raise TargetFileError(f"{path}: not a valid target file ({str(exc).splitlines()[0]}): "
                                  f"`paychaos validate --target {path}` shows every problem with its line") from None
        return cls(document, path)

    def _relative(self, name: str) -> Path:
        return (self.path.parent / name).resolve()

    def endpoints(self) -> Endpoints:
        dsn = None
        if self.spec.ledger is not None:
            secret = self._relative(self.spec.ledger.dsn_file)
            try:
                dsn = secret.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise TargetUnreachable(f"{self.path}: spec.ledger.dsnFile {secret}: cannot read it ({exc.strerror})") from None
        return Endpoints(prometheus_url=self.spec.prometheus, edge_url=self.spec.edge, ledger_dsn=dsn)

    def driver(self) -> ToxiproxyDriver:
        return ToxiproxyDriver(self.spec.toxiproxy)

    def ledger(self) -> FileLedger:
        root = self._relative(self.spec.state) if self.spec.state else self.path.parent / ".paychaos" / self.document.metadata.name
        ledger = FileLedger(root)
        ledger.where = f"{root} (the fault ledger of {self.path.name})"
        return ledger

    def not_ready(self) -> str | None:
        try:
            self.endpoints()  # the ledger's secret is readable
        except TargetUnreachable as exc:
            return str(exc)
        try:
            with Prometheus(self.spec.prometheus, timeout=3) as prometheus:
                prometheus.scalar("vector(1)")
        except PrometheusUnavailable as exc:
            return f"{self.path}: spec.prometheus does not answer: {exc}"
        if self.spec.toxiproxy is not None:
            try:
                with toxiproxy.Toxiproxy(self.spec.toxiproxy, timeout=3) as api:
                    api.version()
            except toxiproxy.ToxiproxyError as exc:
                return f"{self.path}: spec.toxiproxy does not answer: {exc}"
        return None

    def unsettled(self, vocabulary: Vocabulary) -> list[str]:
        return unsettled_at(self.spec.prometheus, self.spec.toxiproxy, vocabulary)

    def calls_to_open(self, breaker: str) -> int | None:
        settings = self.spec.breakers.get(breaker)
        return settings.calls_to_open if settings is not None else None

    def vocabulary(self, catalogue: Vocabulary) -> Vocabulary:
        if not self.spec.series:
            return catalogue
        return Vocabulary.model_validate(overlay(catalogue.model_dump(by_alias=True, exclude_none=True), self.spec.series))

    def inventory(self) -> Inventory:
        proxies: tuple[str, ...] | None = ()
        if self.spec.toxiproxy is not None:
            try:
                proxies = tuple(p.name for p in toxiproxy.observed_proxies(self.spec.toxiproxy))
            except TargetUnreachable:
                proxies = None  # cannot say which exist: proxy names are checked when the run starts
        zones = self.spec.zones or sorted({z for per_zone in self.spec.services.values() for z in per_zone})
        return Inventory(replicas=self.spec.services, zones=tuple(zones), proxies=proxies, topics={}, brokers=(),
                         fault_kinds=FAULT_KINDS if self.spec.toxiproxy is not None else ())

    def arguments(self) -> dict[str, str]:
        return {"platform": self.platform, "location": str(self.path)}


class ToxiproxyDriver:
    """Faults through a Toxiproxy the target's traffic to its dependencies already passes."""

    name = "toxiproxy"

    def __init__(self, url: str | None) -> None:
        self.url = url

    def _url(self) -> str:
        if self.url is None:
            raise TargetUnreachable("the target file names no spec.toxiproxy: this target has no faults to inject")
        return self.url

    def observe(self, partitions: Sequence[PartitionRef] = ()) -> Observed:
        return Observed(zones=(), replicas=(), brokers=(), proxies=toxiproxy.observed_proxies(self._url()))

    def inject(self, plan: FaultPlan) -> dict[str, Any]:
        if plan.kind not in FAULT_KINDS:
            raise InjectionFailed(f"an external target injects {', '.join(FAULT_KINDS)} only, not {plan.kind}")
        return toxiproxy.add_toxics(self._url(), plan)

    def revert(self, record: FaultRecord) -> None:
        self._check_driver(record)
        if record.kind not in FAULT_KINDS:
            return  # refused before anything was done: its record is all there is to forget
        try:
            url = self._url()
        except TargetUnreachable as exc:
            raise RevertFailed(str(exc)) from None
        toxiproxy.remove_toxics(url, record.fault_plan)

    def verify_reverted(self, record: FaultRecord) -> bool:
        self._check_driver(record)
        if record.kind not in FAULT_KINDS:
            return True  # refused: it never touched the target
        return self.url is not None and toxiproxy.toxics_gone(self.url, record.fault_plan)

    def _check_driver(self, record: FaultRecord) -> None:
        if record.driver != self.name:
            raise RevertFailed(f"fault {record.id} was injected by the {record.driver} driver, not the {self.name} one")
