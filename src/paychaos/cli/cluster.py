"""``paychaos cluster``: the Kubernetes test cluster (a real API server, KWOK nodes) on this machine."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from paychaos.cli.console import err, fail, say
from paychaos.installing import InstallError, MissingTool

if TYPE_CHECKING:
    from paychaos.cluster.running import ClusterDir

app = typer.Typer(
    help="The Kubernetes test cluster: kube-apiserver, controller manager, scheduler and etcd built "
         "from the Go module proxy, with KWOK's fake nodes. Binaries are cached in ~/.cache/paychaos.",
    no_args_is_help=True,
)


@app.command()
def install() -> None:
    """Build the cluster's binaries from the Go module proxy and cache them.

    Kubernetes v1.37.2 (kube-apiserver, kube-controller-manager, kube-scheduler), etcd v3.7.3 and
    KWOK v0.8.0. Cold: 13–20 minutes and ~3 GB of memory on two cores (the Go caches grow by ~5 GB);
    warm: nothing is rebuilt. Needs Go 1.26+.
    """
    from paychaos.cluster.building import install as build

    started = time.monotonic()
    try:
        found = build(progress=say)
    except (MissingTool, InstallError) as exc:
        raise fail(str(exc)) from None
    binaries = len(found) - 2  # besides the binaries: KWOK's stages and the Prometheus Operator's CRDs
    err.print(f"[green]ready[/] in {time.monotonic() - started:.1f}s: {binaries} binaries and KWOK's stages "
              f"in {found['stages'].parent}, the Prometheus Operator's CRDs in {found['crds']}")


ClusterDirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Where the cluster keeps its state, keys, kubeconfig and logs "
                               "[env: PAYCHAOS_CLUSTER_DIR; default .paychaos/cluster]"),
]


def _cluster_dir(path: Path | None) -> ClusterDir:
    from paychaos.cluster.running import ClusterDir  # lazy: `--help` loads no cryptography

    return ClusterDir(path.resolve()) if path else ClusterDir.default()


@app.command()
def up(
    per_zone: Annotated[int, typer.Option("--nodes-per-zone", min=1, max=20, help="KWOK nodes in each of az-a, az-b, az-c")] = 2,
    cluster_dir: ClusterDirOption = None,
) -> None:
    """Start etcd, the API server, controller manager, scheduler and KWOK on 127.0.0.1.

    Returns once every node is Ready and untainted (4–8 s with the binaries built). Prints the
    kubeconfig's path on stdout, so `export KUBECONFIG=$(paychaos cluster up)` works. Running it
    again while the cluster is up only prints that path.
    """
    from paychaos.cluster.running import ClusterError, up as start

    started = time.monotonic()
    try:
        state = start(_cluster_dir(cluster_dir), say, per_zone=per_zone)
    except (MissingTool, ClusterError) as exc:
        raise fail(str(exc)) from None
    err.print(f"[green]cluster ready[/] in {time.monotonic() - started:.1f}s: {state.server}, "
              f"{len(state.nodes)} nodes; stop it with `paychaos cluster down`")
    print(state.kubeconfig)


@app.command()
def down(cluster_dir: ClusterDirOption = None) -> None:
    """Stop every part of the cluster and remove its data and keys (its logs stay)."""
    from paychaos.cluster.running import ClusterError, down as stop

    try:
        stopped = stop(_cluster_dir(cluster_dir), say)
    except ClusterError as exc:
        raise fail(str(exc)) from None
    err.print(f"stopped {len(stopped)} processes" if stopped else "nothing was running")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout")] = False,
    cluster_dir: ClusterDirOption = None,
) -> None:
    """Which parts run, the API server's address and the kubeconfig. Exits 1 when it is not up."""
    from paychaos.cluster.running import ClusterState

    state = ClusterState.read(_cluster_dir(cluster_dir))
    if as_json:
        print(state.to_json() if state else json.dumps(None))
    elif state is None:
        err.print("no cluster here (start one with `paychaos cluster up`)")
    else:
        for part in state.parts:
            err.print(f"  {part.name:<24} pid {part.pid:<8} {'[green]running[/]' if part.alive else '[red]down[/]'}")
        err.print(f"  server      {state.server}\n  kubeconfig  {state.kubeconfig}\n  nodes       {', '.join(state.nodes)}")
    if state is None or not state.running:
        raise typer.Exit(1)


def controller(
    namespace: Annotated[list[str] | None, typer.Option("--namespace", "-n", help="Watch this namespace (repeatable); every namespace when none is given")] = None,
    journals: Annotated[Path | None, typer.Option(help="Where run journals and logs are kept [env: PAYCHAOS_CONTROLLER_JOURNALS; default .paychaos/controller]")] = None,
    liveness: Annotated[str | None, typer.Option(help="Serve a liveness probe here, e.g. http://0.0.0.0:8080/healthz")] = None,
) -> None:
    """Run the operator: every ChaosExperiment and GameDay applied to the cluster is run.

    An experiment runs once per generation, as a `paychaos run` process of its own against the
    namespace its spec names (its own namespace by default), which must carry the label
    paychaos.io/chaos=enabled. A GameDay runs the ChaosExperiments it names, in its namespace, as
    `paychaos gate` does: once per generation, or at each time of its `schedule` (cron, UTC). Label
    the experiments a game day runs paychaos.io/template=true so they do not also run alone.
    Progress and the verdict go to the object's status (`kubectl get chaosexperiments,gamedays`)
    and to Events; deleting
    an object mid-run stops the run and reverts its faults. A controller restarted mid-run waits
    for the run it left, or reverts its faults when that run is gone. Reaches the cluster as
    kubectl does (KUBECONFIG, or the service account in a pod). Stop it with Ctrl-C or SIGTERM.
    """
    import os

    from paychaos import controller as operator

    if journals is not None:
        os.environ[operator.JOURNALS_ENV] = str(journals.resolve())
    say(f"watching {'namespaces ' + ', '.join(namespace) if namespace else 'every namespace'}; "
        f"journals in {operator.journals_dir()}")
    operator.run(list(namespace or []), liveness=liveness)
