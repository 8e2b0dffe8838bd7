"""Toxiproxy for the local stack: its process, and the proxies the topology puts in front of
its services (the client itself is ``paychaos.faults.toxiproxy``: any target's)."""

from __future__ import annotations

from paychaos.faults.toxiproxy import Toxiproxy
from paychaos.platform.runtime.installing import Tools
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.processes import HttpReady, ProcessSpec
from paychaos.platform.topology import Topology


def toxiproxy_process(topology: Topology, tools: Tools, run_dir: RunDir) -> ProcessSpec:
    return ProcessSpec(
        name="toxiproxy",
        kind="toxiproxy",
        argv=[str(tools.toxiproxy), "-host", topology.host, "-port", str(topology.ports.toxiproxy_api)],
        ready=HttpReady(f"{topology.toxiproxy_url}/version"),
        cwd=str(run_dir.root),
    )


def ensure_proxies(api: Toxiproxy, topology: Topology) -> None:
    """One proxy per topology entry, in front of its upstream (a service's internal load balancer,
    or PostgreSQL)."""
    for name, spec in topology.proxies.items():
        api.ensure_proxy(name, f"{topology.host}:{spec.listen}", f"{topology.host}:{topology.upstream_port(spec.upstream)}")
