"""The Kubernetes custom resources: CRDs for ``ChaosExperiment`` and ``GameDay``, generated from
the same pydantic models the CLI reads, so a file means the same to `paychaos validate` and to
`kubectl apply`.

An API server accepts only *structural* schemas (every node typed, no ``$ref``, no type inside an
``anyOf``, no ``patternProperties``), in OpenAPI 3.0's dialect (``nullable``, a boolean
``exclusiveMinimum``). pydantic writes JSON Schema 2020-12; ``structural`` translates it. Where a
field takes one of several shapes (``slo: name`` or ``slo: {name, below}``), the CRD keeps the
value as given (``x-kubernetes-preserve-unknown-fields``) and the models check it, as `paychaos
validate` does for a file (whatever runs the resource reports their answer). No default is copied: the API server would write it into the stored object, and the models apply
their own.

Written with our own code: the CRD generators that exist (controller-gen, kopf's) read Go types
or nothing; none reads pydantic.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from paychaos.experiments.spec import API_VERSION, ChaosExperiment
from paychaos.experiments.suites import GameDay

GROUP, VERSION = API_VERSION.split("/")

Phase = Literal["Pending", "Running", "Finished", "Refused"]


class Status(BaseModel):
    """What the operator writes back: where the run is, then its verdict and what it measured."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    phase: Phase | None = None
    verdict: Literal["passed", "failed", "aborted", "error", "inconclusive"] | None = None
    reason: str | None = None  # the verdict's one line, or why the resource was refused
    started_at: str | None = None  # RFC 3339
    finished_at: str | None = None
    time_to_detect: float | None = Field(default=None, description="seconds, fault start to first breach")
    recovery_time: float | None = Field(default=None, description="seconds, last revert to SLOs back")
    failed_checks: list[str] = Field(default_factory=list, description="phase/kind/name of each check that did not pass")
    journal: str | None = None  # where the run's journal is kept
    observed_generation: int | None = None


class ExperimentResult(BaseModel):
    """One experiment of a game day's last run."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    name: str
    verdict: str
    reason: str | None = None


class GameDayStatus(Status):
    """A game day's status: its last run's verdict (its worst experiment's), each experiment's, and its schedule."""

    experiments: list[ExperimentResult] = Field(default_factory=list)
    last_schedule_time: str | None = None  # RFC 3339: the scheduled time the last run was for
    next_schedule_time: str | None = None


# kubectl get: what an on-call engineer wants in one line.
EXPERIMENT_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Verdict", "type": "string", "jsonPath": ".status.verdict"},
    {"name": "Detect", "type": "number", "jsonPath": ".status.timeToDetect", "description": "seconds to detect"},
    {"name": "Recovery", "type": "number", "jsonPath": ".status.recoveryTime", "description": "seconds to recover"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
GAMEDAY_COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Verdict", "type": "string", "jsonPath": ".status.verdict"},
    {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
    {"name": "Next", "type": "date", "jsonPath": ".status.nextScheduleTime"},
    {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def crds() -> list[dict[str, Any]]:
    """Both CustomResourceDefinitions, ready to apply."""
    return [
        crd(ChaosExperiment, Status, "ChaosExperiment", "chaosexperiments", ["chaosexp"], EXPERIMENT_COLUMNS),
        crd(GameDay, GameDayStatus, "GameDay", "gamedays", ["gameday"], GAMEDAY_COLUMNS),
    ]


def crd(model: type[BaseModel], status_model: type[Status], kind: str, plural: str, short: list[str],
        columns: list[dict[str, Any]]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    spec = structural(schema["properties"]["spec"], schema.get("$defs", {}))
    status_schema = status_model.model_json_schema(by_alias=True, mode="validation")
    status = structural(status_schema, status_schema.get("$defs", {}))
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "paychaos"}},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                      "shortNames": short, "categories": ["paychaos"]},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": (model.__doc__ or kind).strip().splitlines()[0],
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec,
                        "status": status,
                    },
                }},
            }],
        },
    }


# JSON Schema keywords an API server has no use for, or would act on (``default``).
_DROPPED = {"title", "examples", "default", "$schema", "$defs", "propertyNames"}
_KEPT = {"type", "description", "properties", "required", "items", "enum", "pattern", "minimum", "maximum",
         "minLength", "maxLength", "minItems", "maxItems", "format", "additionalProperties", "nullable"}


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """``node`` (JSON Schema 2020-12 from pydantic) as a structural OpenAPI 3.0 schema."""
    if "$ref" in node:
        return structural({**defs[node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    for union in ("anyOf", "oneOf"):
        if union in node:
            choices = [c for c in node[union] if c.get("type") != "null"]
            rest = {k: v for k, v in node.items() if k != union}
            nullable = len(choices) < len(node[union])
            if len(choices) == 1:
                out = structural({**choices[0], **rest}, defs)
                # An enum would have to list null itself: such a field is left out, never written null.
                return {**out, "nullable": True} if nullable and "enum" not in out else out
            # Several shapes: kept as written, validated by the models (the operator reports where).
            out = {"x-kubernetes-preserve-unknown-fields": True}
            if "description" in rest:
                out["description"] = rest["description"]
            return {**out, "nullable": True} if nullable else out
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "properties":
            out["properties"] = {name: structural(child, defs) for name, child in value.items()}
        elif key == "items":
            out["items"] = structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):  # a map's values; `false` (extra="forbid") is the API server's pruning
                out["additionalProperties"] = structural(value, defs)
        elif key == "patternProperties":
            # A map whose keys follow a pattern: the values' schema stays, the key pattern is the models' to check.
            (values,) = value.values()
            out["additionalProperties"] = structural(values, defs)
        elif key in _KEPT:
            out[key] = value
        else:
            raise ValueError(f"no structural form for the JSON Schema keyword {key!r}")
    if "type" not in out and "x-kubernetes-preserve-unknown-fields" not in out:
        # A node pydantic left untyped (Any): keep what is given.
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out
