"""``paychaos validate`` and ``paychaos schema``: check experiment files, and give editors the schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.markup import escape
from rich.text import Text

from paychaos.cli.console import err, fail, say
from paychaos.cli.targeting import load_target_file, target_from_environment
from paychaos.experiments.loading import Problem, SpecError, load_experiment
from paychaos.experiments.spec import ChaosExperiment
from paychaos.probes.catalogue import Catalogue, CatalogueError, load_catalogue
from paychaos.targets import Inventory, catalogue_of
from paychaos.targets.local import inventory_of_file


def validate(
    files: Annotated[list[Path] | None, typer.Argument(help="Experiment files, or folders of *.yaml", metavar="FILE", show_default=False)] = None,
    topology: Annotated[
        Path | None, typer.Option(help="Check services, zones, proxies and brokers against this topology; default: the packaged one")
    ] = None,
    target_file: Annotated[Path | None, typer.Option(
        "--target", metavar="FILE",
        help="Check this target file (kind: Target), then the experiments against the stack it describes [env: PAYCHAOS_TARGET]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable results on stdout")] = False,
) -> None:
    """Check experiment files without running anything: every problem of every file, one line each.

    Each problem reads `file:line: field.path: what was expected`. Names of services, zones,
    proxies and Kafka brokers are checked against the topology, SLO and invariant names against
    the probe catalogue (`probes/`). With `--target FILE`, the target file itself is checked, and
    the experiments against what that stack exposes (its proxies, the faults its driver can
    inject, its series). Exits 1 if any file is invalid.
    """
    target_file = target_file or target_from_environment()
    if not files and target_file is None:
        raise fail("give experiment files (or folders of them) to check, or --target FILE", code=2)
    results = []
    probes = _probes()
    if target_file is not None:
        if topology is not None:
            raise fail("give --topology (the reference platform's) or --target (a target file), not both", code=2)
        try:
            target = load_target_file(target_file)
        except SpecError as exc:
            results.append({"file": str(target_file), "valid": False, "name": None, "problems": [_as_dict(p) for p in exc.problems]})
            if not as_json:
                for problem in exc.problems:
                    err.print(Text(str(problem)), soft_wrap=True)
            topo = None  # the experiments are still checked, without the target's names
        else:
            results.append({"file": str(target_file), "valid": True, "name": target.document.metadata.name, "problems": []})
            topo = target.inventory()
            if not as_json:
                err.print(Text.assemble(("✓ ", "green"), f"target {target.document.metadata.name}", (f"  {target_file}", "dim")))
                if topo.proxies is None:
                    say(escape(f"its Toxiproxy ({target.spec.toxiproxy}) does not answer: proxy names not checked"))
            if probes is not None:
                probes = catalogue_of(target, probes)
    else:
        topo = _inventory(topology)
    for path in _expand(files or []):
        try:
            experiment = load_experiment(path, topo, probes=probes)
        except SpecError as exc:
            results.append({"file": str(path), "valid": False, "name": None, "problems": [_as_dict(p) for p in exc.problems]})
            if not as_json:
                for problem in exc.problems:
                    err.print(Text(str(problem)), soft_wrap=True)
        else:
            results.append({"file": str(path), "valid": True, "name": experiment.name, "problems": []})
            if not as_json:
                err.print(Text.assemble(("✓ ", "green"), experiment.name, (f"  {path}", "dim")))
    invalid = sum(not r["valid"] for r in results)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        raise typer.Exit(1 if invalid else 0)
    if invalid:
        raise fail(f"{invalid} of {len(results)} file{'s' if len(results) != 1 else ''} invalid")


def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the schema here instead of stdout")] = None,
) -> None:
    """Print the JSON Schema of an experiment (camelCase keys, as written in YAML).

    Editors use it for completion and inline errors: with the YAML language server, put
    `# yaml-language-server: $schema=<path to the schema>` at the top of an experiment.
    """
    text = json.dumps(experiment_schema(), indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(escape(f"cannot write {output}: {exc.strerror or exc}")) from None
    say(escape(f"wrote {output}"))


def crds(
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder the CRDs are written to")] = Path("platform/k8s/crds"),
) -> None:
    """Write the CustomResourceDefinitions of ChaosExperiment and GameDay, generated from the
    same models `paychaos validate` reads (one file each, ready for `kubectl apply -f`).

    Fields that take several shapes (`slo: name` or `slo: {name, below}`) are kept as written by
    the API server; the models check them, as `paychaos validate` does.
    """
    from paychaos.experiments.resources import crds as definitions

    try:
        output.mkdir(parents=True, exist_ok=True)
        for crd in definitions():
            path = output / f"{crd['spec']['names']['plural']}.yaml"
            path.write_text(CRD_HEADER + yaml.safe_dump(crd, sort_keys=False, width=120), encoding="utf-8")
            say(escape(f"wrote {path}"))
    except OSError as exc:
        raise fail(escape(f"cannot write to {output}: {exc.strerror or exc}")) from None


CRD_HEADER = "# Generated by `paychaos crds` from the models the CLI reads: edit those, not this file.\n"


def experiment_schema() -> dict[str, object]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **ChaosExperiment.model_json_schema(by_alias=True, mode="validation"),
    }


def _expand(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                raise fail(escape(f"{path}: no *.yaml files in this folder"))
            out.extend(found)
        else:
            out.append(path)
    return out


def _inventory(path: Path | None) -> Inventory:
    try:
        return inventory_of_file(path)
    except FileNotFoundError:
        raise fail(escape(f"{path}: no such topology file")) from None
    except (yaml.YAMLError, ValueError) as exc:  # a malformed topology
        raise fail(escape(f"{path}: not a valid topology: {str(exc).splitlines()[0]}")) from None


def _probes() -> Catalogue | None:
    try:
        return load_catalogue()
    except CatalogueError as exc:
        say(escape(f"SLO and invariant names not checked: {exc}"))
        return None


def _as_dict(problem: Problem) -> dict[str, object]:
    return {"line": problem.line, "path": problem.path, "message": problem.message}
