"""The ``paychaos`` command: one Typer app per command group, joined here."""

from __future__ import annotations

import typer

from paychaos.cli import cluster, demo, experiments, faults, gate, load, reports, running, stack

app = typer.Typer(
    name="paychaos",
    help=(
        "Resilience and chaos testing for mobile-payment backends.\n\n"
        "Start the reference payment platform with `paychaos stack up --wait`, "
        "then break it on purpose and watch what survives."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
app.add_typer(stack.app, name="stack")
app.add_typer(cluster.app, name="cluster")
app.command()(demo.demo)
app.command(name="load")(load.load)
app.command()(faults.plan)
app.command()(faults.halt)
app.command()(running.run)
app.command()(running.export)
app.command()(gate.gate)
app.command()(reports.runbook)
app.command()(reports.alerts)
app.command()(experiments.validate)
app.command()(experiments.schema)
app.command()(experiments.crds)
app.command()(cluster.controller)


def main() -> None:
    app()
