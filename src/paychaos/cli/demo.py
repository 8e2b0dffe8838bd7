"""``paychaos demo``: the main job in one command."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from paychaos.cli.console import err, fail, say
from paychaos.cli.gate import DEFAULT_SUITE, run_gate
from paychaos.installing import MissingTool
from paychaos.platform.runtime.installing import install
from paychaos.platform.runtime.paths import RunDir


def demo(
    suite: Annotated[Path, typer.Option(help="The suite to run as the gate")] = DEFAULT_SUITE,
    out: Annotated[Path, typer.Option(help="Where the report, JUnit, summary and journals go")] = Path("out"),
    runbooks: Annotated[Path, typer.Option(help="Where the runbooks go")] = Path("runbooks"),
    keep: Annotated[bool, typer.Option("--keep", help="Leave the stack running afterwards")] = False,
) -> None:
    """Install what is missing, start the stack, run the pre-campaign gate, stop the stack.

    Leaves OUT/report.html (open it in a browser), OUT/junit.xml, OUT/summary.md and a runbook
    per experiment under RUNBOOKS/. Exits non-zero when the gate fails. About 8 minutes on a
    2-core machine.
    """
    started = time.monotonic()
    try:
        install(progress=say)
    except MissingTool as exc:
        raise fail(str(exc)) from None
    passed = run_gate(suite, RunDir.default(), out=out, junit=out / "junit.xml", report=out / "report.html",
                      runbooks=runbooks, keep=keep)
    minutes, seconds = divmod(int(time.monotonic() - started), 60)
    verdict = "[bold green]the stack is ready for the campaign[/]" if passed else "[bold red]the stack is NOT ready[/]"
    err.print(f"{verdict} ({minutes}m{seconds:02d}s). Open {out / 'report.html'} to see what happened; runbooks in {runbooks}/")
    raise typer.Exit(0 if passed else 1)
