"""``paychaos cluster``: the Kubernetes test cluster (a real API server, KWOK nodes) on this machine."""

from __future__ import annotations

import time

import typer

from paychaos.cli.console import err, fail, say
from paychaos.installing import InstallError, MissingTool

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
    err.print(f"[green]ready[/] in {time.monotonic() - started:.1f}s: {len(found)} binaries in {next(iter(found.values())).parent}")
