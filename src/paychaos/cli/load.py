"""``paychaos load``: campaign-shaped traffic against the running stack, with live numbers."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic import ValidationError
from rich.live import Live
from rich.table import Table

from paychaos.cli.console import err, fail
from paychaos.experiments.spec import Load
from paychaos.load.running import LoadError, LoadRunner
from paychaos.load.shapes import TraceError
from paychaos.platform.runtime import stacking
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.state import read_state, supervisor_alive

Profile = Literal["steady", "noon-spike", "step", "replay"]


def _ms(value: Any) -> str:
    return "—" if value is None else f"{value:.0f}"


def _live_table(line: dict[str, Any] | None, profile: str) -> Table:
    table = Table(title=f"paychaos load · {profile}", title_justify="left", box=None, pad_edge=False)
    for column in ("t", "users", "target/s", "req/s", "fail", "p50 ms", "p95 ms", "p99 ms", "acked"):
        table.add_column(column, justify="right")
    if line:
        target = line.get("target_rps")
        table.add_row(
            f"{line['t']:.0f}s", str(line["users"]), "—" if target is None else f"{target:.0f}", f"{line['rps']:.0f}",
            f"{100 * line['fail_ratio']:.1f}%", _ms(line["p50"]), _ms(line["p95"]), _ms(line["p99"]), str(line["acknowledged"]),
        )
    return table


def _summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title="summary", title_justify="left")
    for column in ("request", "count", "failures", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right" if column != "request" else "left")
    for name, row in summary["by_name"].items():
        table.add_row(name, str(row["count"]), str(row["failures"]), _ms(row["p50"]), _ms(row["p99"]))
    table.add_row(
        "[bold]all[/]", str(summary["requests"]), str(summary["failures"]), _ms(summary["p50"]), _ms(summary["p99"])
    )
    return table


def load(
    profile: Annotated[Profile, typer.Argument(help="steady, noon-spike (×peak within seconds, hold, decay), step or replay")],
    duration: Annotated[str, typer.Option(help="How long to run: 45s, 2m")] = "60s",
    rps: Annotated[int, typer.Option("--rps", help="Baseline request rate (requests/s)")] = 10,
    peak: Annotated[int, typer.Option("--peak", help="Peak multiplier of the baseline (noon-spike, step)")] = 1,
    users: Annotated[int | None, typer.Option(help="A fixed pool of users, sized for the peak (default: one request/s per user)")] = None,
    trace: Annotated[Path | None, typer.Option(help="replay: a CSV of second,multiplier")] = None,
    workers: Annotated[int, typer.Option(help="Run Locust as a master and this many local workers")] = 0,
    out: Annotated[Path | None, typer.Option(help="Where stats.jsonl, acknowledged.jsonl and summary.json go")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Expose client-side metrics to Prometheus on this port")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout")] = False,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="The stack's run dir [env: PAYCHAOS_RUN_DIR]")] = None,
) -> None:
    """Drive campaign-shaped traffic through the running stack's edge.

    Users check the campaign often, pay with an idempotency key (retrying the same key), and check
    their balance. Every payment they were told is final goes to `acknowledged.jsonl`.
    """
    try:
        spec = Load(
            profile=profile, baseline_rps=rps, peak_multiplier=peak, duration=duration,
            trace=str(trace) if trace else None, users=users,
        )
    except ValidationError as exc:
        raise fail("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
    rd = RunDir(run_dir.resolve()) if run_dir else RunDir.default()
    state = read_state(rd)
    if state is None or not supervisor_alive(rd):
        raise fail(f"no stack is running in {rd.root}: start one with `paychaos stack up --wait`")
    seed = stacking.current_topology(rd).seed
    out_dir = out or Path(".paychaos") / "load" / datetime.now().strftime("%Y%m%d-%H%M%S")
    runner = LoadRunner(state.edge_url, spec, out_dir, workers=workers, metrics_port=metrics_port,
                        app_users=seed.users, merchants=seed.merchants)
    try:
        runner.start()
    except TraceError as exc:
        raise fail(str(exc)) from None
    err.print(f"[dim]›[/] {profile} load on {state.edge_url} for {duration}; output in {out_dir}")
    try:
        with Live(_live_table(None, profile), console=err, refresh_per_second=2, transient=False) as live:
            while runner.running():
                time.sleep(0.5)
                live.update(_live_table(runner.latest(), profile))
                early = runner.failed_early()
                if early:
                    raise LoadError(early)
        summary = runner.wait()
    except KeyboardInterrupt:
        err.print("[yellow]stopping[/] (the users finish their requests)")
        summary = runner.stop()
    except LoadError as exc:
        runner.stop()
        raise fail(f"Locust stopped: {exc}") from None
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    err.print()
    err.print(_summary_table(summary))
    by_status = ", ".join(f"{n} {s}" for s, n in summary["acknowledged_by_status"].items()) or "none"
    err.print(
        f"{summary['requests']} requests in {summary['seconds']:.0f}s ({summary['rps']:.0f}/s), "
        f"{100 * summary['fail_ratio']:.2f}% failed; acknowledged payments: {summary['acknowledged']} ({by_status})"
    )
    if summary.get("warning"):
        err.print(f"[yellow]warning:[/] {summary['warning']}")
    err.print(f"[dim]record:[/] {runner.acknowledged_path}")
