"""``paychaos stack``: install, start, inspect and stop the reference payment platform."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from paychaos.cli.console import err, fail, say
from paychaos.installing import MissingTool
from paychaos.platform.runtime import stacking
from paychaos.platform.runtime.installing import install as install_tools
from paychaos.platform.runtime.paths import RunDir

app = typer.Typer(
    help="The reference payment platform on this machine: PostgreSQL, 3-node Kafka, HAProxy, "
    "Toxiproxy, Prometheus and the payment services in three zones (and its Kubernetes manifests).",
    no_args_is_help=True,
)

RunDirOption = Annotated[
    Path | None,
    typer.Option("--run-dir", help="Where the stack keeps its state [env: PAYCHAOS_RUN_DIR; default .paychaos/run]"),
]


def _run_dir(path: Path | None) -> RunDir:
    return RunDir(path.resolve()) if path else RunDir.default()


@app.command()
def install() -> None:
    """Fetch and cache what the stack runs on (Kafka jars, Toxiproxy, HAProxy, Prometheus).

    Idempotent: a second run only checks. The cache lives in ~/.cache/paychaos
    (PAYCHAOS_CACHE_DIR overrides it).
    """
    started = time.monotonic()
    try:
        tools = install_tools(progress=say)
    except MissingTool as exc:
        raise fail(str(exc)) from None
    err.print(f"[green]ready[/] in {time.monotonic() - started:.1f}s: Kafka jars in {tools.kafka_libs}")


@app.command()
def up(
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Return only once every replica is ready")] = False,
    topology: Annotated[
        Path | None, typer.Option(help="A topology file (replicas, ports, resilience switches); default: the packaged one")
    ] = None,
    run_dir: RunDirOption = None,
) -> None:
    """Start the stack under a supervisor that restarts killed replicas.

    With `--wait`, returns when all replicas are ready and prints the edge and Prometheus URLs.
    """
    rd = _run_dir(run_dir)
    started = time.monotonic()
    try:
        state = stacking.up(rd, topology, wait=wait, progress=say)
    except (MissingTool, stacking.StackError) as exc:
        raise fail(str(exc)) from None
    if wait:
        err.print(f"[green]stack ready[/] in {time.monotonic() - started:.1f}s")
        err.print(f"  edge        {state.edge_url}")
        err.print(f"  prometheus  {state.prometheus_url}")
    else:
        err.print(f"starting; follow with `paychaos stack status` (run dir {rd.root})")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout")] = False,
    run_dir: RunDirOption = None,
) -> None:
    """Zones, replicas and readiness, Kafka nodes, URLs, Prometheus targets and active toxics.

    Exits 0 when the stack is ready, 3 when it is not running, 1 otherwise.
    """
    data = stacking.status(_run_dir(run_dir))
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        _print_status(data)
    if not data["running"]:
        raise typer.Exit(3)
    if data["phase"] != "ready":
        raise typer.Exit(1)


def _print_status(data: dict) -> None:  # type: ignore[type-arg]
    if not data["running"]:
        err.print(f"no stack running (run dir {data['runDir']}); start one with `paychaos stack up --wait`")
        return
    err.print(f"[bold]phase[/] {data['phase']}  {data.get('message') or ''}")
    err.print(f"edge {data['edgeUrl']}   prometheus {data['prometheusUrl']}")
    table = Table("zone", "replicas ready", "down")
    for zone, info in data["zones"].items():
        ready = sum(r["ready"] for r in info["replicas"])
        table.add_row(zone, f"{ready}/{len(info['replicas'])}", "yes" if info["down"] else "")
    err.print(table)
    kafka = Table("kafka node", "zone", "ready", "held")
    for node in data["kafka"]:
        kafka.add_row(str(node["id"]), node["zone"], str(node["ready"]), "yes" if node["held"] else "")
    err.print(kafka)
    infra = ", ".join(f"{p['name']} {'ready' if p['ready'] else 'NOT READY'}" for p in data["infrastructure"])
    err.print(f"infrastructure: {infra}")
    if data.get("prometheusTargets"):
        t = data["prometheusTargets"]
        err.print(f"prometheus targets: {t['up']} up, {t['down']} down")
    toxics = {k: v for k, v in (data.get("toxics") or {}).items() if v}
    err.print(f"active toxics: {json.dumps(toxics) if toxics else 'none'}")


@app.command()
def down(run_dir: RunDirOption = None) -> None:
    """Stop every process of the stack; nothing is left running."""
    leftovers = stacking.down(_run_dir(run_dir), progress=say)
    if leftovers:
        say(f"killed {len(leftovers)} processes that outlived the supervisor: {', '.join(leftovers)}")
    err.print("[green]stack stopped[/]")


@app.command()
def logs(
    name: Annotated[str, typer.Argument(help="A service (all its replicas), a replica, or kafka-1, postgres, haproxy, …")],
    lines: Annotated[int, typer.Option("-n", "--lines", help="How many lines from the end of each log")] = 50,
    run_dir: RunDirOption = None,
) -> None:
    """Print the end of a process's log (every replica's for a service)."""
    rd = _run_dir(run_dir)
    files = stacking.logs(rd, name)
    if not files:
        raise fail(f"no log for {name!r} in {rd.logs}")
    for path in files:
        err.print(f"[bold]==> {path.stem} <==[/]")
        tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        typer.echo("\n".join(tail))


@app.command()
def wipe(run_dir: RunDirOption = None) -> None:
    """Delete a stopped stack's data: ledger, Kafka logs and metrics start empty next time."""
    try:
        stacking.wipe(_run_dir(run_dir))
    except stacking.StackError as exc:
        raise fail(str(exc)) from None
    err.print("[green]data deleted[/]")


@app.command()
def manifests(
    topology: Annotated[Path, typer.Option("--topology", help="The cluster topology")] = Path("platform/k8s/reference/topology.yaml"),
    rules: Annotated[Path, typer.Option("--rules", help="The SLO alerts (`paychaos alerts`)")] = Path("platform/alerts/paychaos-slo.rules.yaml"),
    output: Annotated[Path, typer.Option("--output", "-o", help="The file written")] = Path("platform/k8s/reference/generated.yaml"),
) -> None:
    """Write the reference platform's Kubernetes objects that follow from its cluster topology.

    Per service a Deployment spread over the zones (replicasPerZone x zones, the replacements of
    a lost zone's pods in the others), its Service and a PodDisruptionBudget that lets one zone's
    worth go; the seed Job; Toxiproxy with the topology's proxies; the Strimzi KafkaTopics; Locust's
    master and workers; the SLO alerts as a PrometheusRule. `kubectl apply -k
    platform/k8s/reference` applies them with the rest of that folder (see its kustomization.yaml).
    """
    from pydantic import ValidationError

    from paychaos.platform.manifests import render
    from paychaos.platform.topology import load_topology

    try:
        text = render(load_topology(topology, port_offset=False), rules)
    except (OSError, ValidationError, KeyError, yaml.YAMLError) as exc:
        raise fail(escape(f"cannot generate from {topology} and {rules}: {exc}")) from None
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(escape(f"cannot write {output}: {exc.strerror or exc}")) from None
    say(escape(f"wrote {output}"))
