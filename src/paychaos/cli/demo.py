"""``paychaos demo``: the main job in one command."""

from __future__ import annotations

from typing import Annotated

import typer

from paychaos.cli.console import err, fail, say
from paychaos.platform.burst import ledger_totals, run_burst
from paychaos.platform.runtime import stacking
from paychaos.platform.runtime.installing import MissingTool, install
from paychaos.platform.runtime.paths import RunDir


def demo(
    payments: Annotated[int, typer.Option(help="How many payments to send through the edge")] = 500,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the stack running afterwards")] = False,
) -> None:
    """Install what is missing, start the stack, send a burst of real payments, check the money, stop.

    The readiness gate (faults, probes, report, runbooks) joins this job as it lands.
    """
    run_dir = RunDir.default()
    try:
        install(progress=say)
        state = stacking.up(run_dir, wait=True, progress=say)
    except (MissingTool, stacking.StackError) as exc:
        raise fail(str(exc)) from None
    try:
        topology = stacking.current_topology(run_dir)
        say(f"sending {payments} payments (card and balance) through {state.edge_url}")
        summary = run_burst(topology, payments)
        totals = ledger_totals(topology)
    finally:
        if not keep:
            stacking.down(run_dir, progress=say)
    ok = summary.outcomes.get("201", 0)
    err.print(
        f"[bold]{ok}/{summary.payments}[/] payments completed in {summary.seconds:.1f}s "
        f"({summary.rate:.0f}/s); latency p50 {summary.percentile(50):.0f} ms, p99 {summary.percentile(99):.0f} ms"
    )
    err.print(f"outcomes: {dict(summary.outcomes)}")
    balanced = totals["sum_of_entries"] == 0 and totals["negative_wallets"] == 0
    err.print(
        f"ledger: {totals['entries']} entries summing to ¥{totals['sum_of_entries']}, "
        f"{totals['negative_wallets']} negative wallets — " + ("[green]balanced[/]" if balanced else "[red]NOT BALANCED[/]")
    )
    if not balanced or ok == 0:
        raise typer.Exit(1)
