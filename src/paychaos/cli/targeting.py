"""Which target a command acts on: the reference platform's stack (``--run-dir``) or a stack
described by a target file (``--target``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paychaos.cli.console import fail
from paychaos.experiments.loading import SpecError, parse_document, read_document
from paychaos.targets import Target
from paychaos.targets.external import KIND, ExternalTarget, TargetFile
from paychaos.targets.local import LocalTarget

RunDirOption = Annotated[
    Path | None,
    typer.Option("--run-dir", help="The reference platform's run directory [env: PAYCHAOS_RUN_DIR; default .paychaos/run]"),
]
TargetOption = Annotated[
    Path | None,
    typer.Option("--target", envvar="PAYCHAOS_TARGET", metavar="FILE",
                 help="A target file (kind: Target) describing a stack paychaos did not start: its Prometheus, "
                      "edge, ledger DSN file and Toxiproxy (see examples/targets/) [env: PAYCHAOS_TARGET]"),
]


def load_target_file(path: Path) -> ExternalTarget:
    """The target a file describes, every problem with its file:line (a ``SpecError``)."""
    document, _ = parse_document(read_document(path, "a target"), str(path), TargetFile, KIND, "a target file")
    return ExternalTarget(document, path)


def chosen_target(run_dir: Path | None, target_file: Path | None) -> Target:
    """The target of ``--target FILE`` or ``--run-dir DIR`` (the local stack by default)."""
    if target_file is not None:
        if run_dir is not None:
            raise fail("give --run-dir (a stack `paychaos stack up` started) or --target (a target file), not both", code=2)
        try:
            return load_target_file(target_file)
        except SpecError as exc:
            raise fail(str(exc)) from None
    return LocalTarget.at(str(run_dir) if run_dir else None)
