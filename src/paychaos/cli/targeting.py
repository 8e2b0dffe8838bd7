"""Which target a command acts on: the reference platform's stack (``--run-dir``) or a stack
described by a target file (``--target``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from paychaos.cli.console import fail
from paychaos.experiments.loading import SpecError, parse_document, read_document
from paychaos.targets import Target, UnsupportedTarget, from_arguments, resolve
from paychaos.targets.external import KIND, ExternalTarget, TargetFile, TargetFileError
from paychaos.targets.local import LocalTarget

RunDirOption = Annotated[
    Path | None,
    typer.Option("--run-dir", help="The reference platform's run directory [env: PAYCHAOS_RUN_DIR; default .paychaos/run]"),
]
TargetOption = Annotated[
    Path | None,
    typer.Option("--target", metavar="FILE",
                 help="A target file (kind: Target) describing a stack paychaos did not start: its Prometheus, "
                      "edge, ledger DSN file and Toxiproxy (see targets/java-payments.yaml) [env: PAYCHAOS_TARGET, "
                      "unless --run-dir is given]"),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option("--namespace", "-n",
                 help="A namespace of the Kubernetes cluster KUBECONFIG points at (it must carry the label "
                      "paychaos.io/chaos=enabled; annotations say where its Prometheus and edge are)"),
]
# How the gate hands a `paychaos run` child its target, whatever the platform: Target.arguments() as JSON.
TargetArgumentsOption = Annotated[str | None, typer.Option("--target-arguments", hidden=True)]
TARGET_ENV = "PAYCHAOS_TARGET"


def target_from_environment() -> Path | None:
    configured = os.environ.get(TARGET_ENV)
    return Path(configured) if configured else None


def load_target_file(path: Path) -> ExternalTarget:
    """The target a file describes, every problem with its file:line (a ``SpecError``)."""
    document, _ = parse_document(read_document(path, "a target"), str(path), TargetFile, KIND, "a target file")
    return ExternalTarget(document, path)


def chosen_target(run_dir: Path | None, target_file: Path | None, arguments: str | None = None,
                  namespace: str | None = None) -> Target:
    """The target of ``--target FILE`` or ``--run-dir DIR``, the flags before the environment
    (``PAYCHAOS_TARGET``, then ``PAYCHAOS_RUN_DIR``); the local stack by default. ``arguments``:
    a target's own ``arguments()`` as JSON (the gate's children)."""
    if arguments is not None:
        try:
            return from_arguments(json.loads(arguments))
        except (ValueError, UnsupportedTarget, TargetFileError) as exc:
            raise fail(f"--target-arguments: {exc}", code=2) from None
    if sum(x is not None for x in (run_dir, target_file, namespace)) > 1:
        raise fail("give one of --run-dir (a stack `paychaos stack up` started), --target (a target file) or "
                   "--namespace (a Kubernetes namespace)", code=2)
    if namespace is not None:
        return resolve("kubernetes", namespace)
    if run_dir is None:
        target_file = target_file or target_from_environment()
    if target_file is not None:
        try:
            return load_target_file(target_file)
        except SpecError as exc:
            raise fail(str(exc)) from None
    return LocalTarget.at(str(run_dir) if run_dir else None)
