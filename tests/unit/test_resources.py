"""The CRDs: generated from the models, structural as an API server demands, and dropping nothing a
valid experiment says (an API server prunes every field its schema does not know)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from paychaos.cli.app import app
from paychaos.experiments.resources import crds, structural

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "platform" / "k8s" / "crds"
runner = CliRunner()


def schema_of(kind: str) -> dict[str, Any]:
    crd = next(c for c in crds() if c["spec"]["names"]["kind"] == kind)
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_the_committed_crds_are_the_generated_ones(tmp_path: Path) -> None:
    result = runner.invoke(app, ["crds", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for path in sorted(tmp_path.glob("*.yaml")):
        assert (COMMITTED / path.name).read_text() == path.read_text(), f"run `paychaos crds`: {path.name} is stale"
    assert sorted(p.name for p in COMMITTED.glob("*.yaml")) == ["chaosexperiments.yaml", "gamedays.yaml"]


def not_structural(node: dict[str, Any], path: str = "") -> list[str]:
    """What an API server would refuse in ``node``: the rules of a structural schema."""
    problems = []
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path or '/'}: no type")
    for keyword in ("$ref", "anyOf", "oneOf", "allOf", "not", "patternProperties", "$defs", "default", "const"):
        if keyword in node:
            problems.append(f"{path}: {keyword}")
    if "properties" in node and node.get("type") != "object":
        problems.append(f"{path}: properties on a {node.get('type')}")
    if "items" in node and node.get("type") != "array":
        problems.append(f"{path}: items on a {node.get('type')}")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: both properties and additionalProperties")
    if node.get("nullable") and "enum" in node and None not in node["enum"]:
        problems.append(f"{path}: nullable enum without null")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            problems.append(f"{path}: {key} must be a boolean in OpenAPI 3.0")
    for name, child in node.get("properties", {}).items():
        problems += not_structural(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += not_structural(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += not_structural(node["additionalProperties"], f"{path}{{}}")
    return problems


@pytest.mark.parametrize("kind", ["ChaosExperiment", "GameDay"])
def test_every_schema_is_structural(kind: str) -> None:
    assert not_structural(schema_of(kind)) == []


def pruned(data: Any, node: dict[str, Any], path: str = "") -> list[str]:
    """The fields of ``data`` an API server would drop: those its schema does not know."""
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(data, dict):
        if "properties" in node:
            out = [f"{path}.{k}" for k in data if k not in node["properties"]]
            return out + [p for k, v in data.items() if k in node["properties"] for p in pruned(v, node["properties"][k], f"{path}.{k}")]
        if isinstance(node.get("additionalProperties"), dict):
            return [p for k, v in data.items() for p in pruned(v, node["additionalProperties"], f"{path}.{k}")]
        return [f"{path}.{k}" for k in data]
    if isinstance(data, list) and isinstance(node.get("items"), dict):
        return [p for i, v in enumerate(data) for p in pruned(v, node["items"], f"{path}[{i}]")]
    return []


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_no_field_of_a_catalogue_experiment_would_be_pruned(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    assert pruned(data["spec"], schema_of("ChaosExperiment")["properties"]["spec"], "spec") == []


def test_no_field_of_a_suite_would_be_pruned() -> None:
    for path in sorted((ROOT / "experiments" / "suites").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert pruned(data["spec"], schema_of("GameDay")["properties"]["spec"], "spec") == [], path


def test_unions_are_kept_as_written_optionals_are_nullable_and_bounds_are_openapi_3() -> None:
    defs = {"Bound": {"type": "object", "properties": {"below": {"type": "number", "exclusiveMinimum": 0}}}}
    node = {"type": "object", "properties": {
        "slo": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/Bound"}], "description": "a name or a bound"},
        "bound": {"anyOf": [{"$ref": "#/$defs/Bound"}, {"type": "null"}], "default": None},
        "mode": {"anyOf": [{"enum": ["a", "b"], "type": "string"}, {"type": "null"}]},
    }}
    out = structural(node, defs)["properties"]
    assert out["slo"] == {"x-kubernetes-preserve-unknown-fields": True, "description": "a name or a bound"}
    assert out["bound"] == {"type": "object", "nullable": True,
                            "properties": {"below": {"type": "number", "minimum": 0, "exclusiveMinimum": True}}}
    assert out["mode"] == {"enum": ["a", "b"], "type": "string"}
    with pytest.raises(ValueError, match="no structural form for the JSON Schema keyword 'if'"):
        structural({"type": "object", "if": {}}, {})
