"""The series vocabulary: which PromQL stands behind a breaker, a consumer group or the entry
traffic an experiment names (``probes/series.yaml``, edited by users for their stack).

The engine samples these every second under stable keys (``breaker_open:acquirer``); checks,
reports and runbooks read the samples by key and never name a service of any platform.
"""

from __future__ import annotations

from string import Template
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

SERIES_FILE = "series.yaml"
SAMPLE_WINDOW = "5s"  # rate() windows of per-second samples: short enough to see a fault begin


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)


class TrafficSeries(_Model):
    rps: str
    error_ratio: str
    p99: str


class BreakerQueries(_Model):
    open: str | None = None
    replicas: str | None = None
    calls: str | None = None
    states: str | None = None
    fails_fast: str | None = None


class GroupQueries(_Model):
    lag: str | None = None


class Breakers(_Model):
    conventions: BreakerQueries = BreakerQueries()
    names: dict[str, BreakerQueries | None] = Field(default_factory=dict)


class ConsumerGroups(_Model):
    conventions: GroupQueries = GroupQueries()
    names: dict[str, GroupQueries | None] = Field(default_factory=dict)


class Unsettled(_Model):
    what: str
    query: str
    hint: str = ""


class Times(_Model):
    detect: list[str] = Field(default_factory=list)
    recover: list[str] = Field(default_factory=list)


class Vocabulary(_Model):
    traffic: TrafficSeries
    breakers: Breakers = Breakers()
    consumer_groups: ConsumerGroups = ConsumerGroups()
    backlogs: dict[str, str] = Field(default_factory=dict)
    settled: list[Unsettled] = Field(default_factory=list)
    times: Times = Times()

    def breaker(self, name: str) -> BreakerQueries | None:
        """The queries of a breaker the stack exposes (its own over the conventions); None if it does not."""
        if name not in self.breakers.names:
            return None
        return _merged(self.breakers.conventions, self.breakers.names[name])

    def group(self, name: str) -> GroupQueries | None:
        if name not in self.consumer_groups.names:
            return None
        return _merged(self.consumer_groups.conventions, self.consumer_groups.names[name])

    def sampled(self, window: str) -> dict[str, str]:
        """Every key the engine samples, with its query for ``window``: the entry traffic, each
        breaker's and consumer group's series, each backlog."""
        out = {"rps": self.traffic.rps, "error_ratio": self.traffic.error_ratio, "p99": self.traffic.p99}
        for name in self.breakers.names:
            queries = self.breaker(name)
            assert queries is not None
            for what in ("open", "replicas", "fails_fast"):
                if (q := getattr(queries, what)) is not None:
                    out[breaker_key(what, name)] = fill(q, name=name)
        for group in self.consumer_groups.names:
            queries = self.group(group)
            assert queries is not None
            if queries.lag is not None:
                out[lag_key(group)] = fill(queries.lag, group=group)
        out.update({backlog_key(name): q for name, q in self.backlogs.items()})
        return {key: fill(q, window=window) for key, q in out.items()}


Q = TypeVar("Q", BreakerQueries, GroupQueries)


def _merged(conventions: Q, own: Q | None) -> Q:
    """A name's own queries over the conventions: each query it does not give is the convention's."""
    if own is None:
        return conventions
    return conventions.model_copy(update=own.model_dump(exclude_none=True))


def fill(query: str, **values: str) -> str:
    """``query`` with $name, $group or $window replaced; other placeholders left for later."""
    return Template(query).safe_substitute(**values).strip()


# The sample keys: what is measured, then the spec's name. Readers find the names from the keys.
def breaker_key(what: str, name: str) -> str:
    return f"breaker_{what}:{name}"


def lag_key(group: str) -> str:
    return f"consumer_lag:{group}"


def backlog_key(name: str) -> str:
    return f"backlog:{name}"


def names_in(keys: object, prefix: str) -> list[str]:
    """The names a run sampled under ``prefix`` (``breaker_open``): ``["acquirer"]``."""
    return sorted({k.split(":", 1)[1] for k in keys if isinstance(k, str) and k.startswith(prefix + ":")})  # type: ignore[attr-defined]


def breakers_open(values: dict[str, float | None]) -> float | None:
    """Replicas with a breaker open in one sample, over every breaker sampled; None when none was."""
    seen = [v for k, v in values.items() if k.startswith("breaker_open:") and v is not None]
    return sum(seen) if seen else None
