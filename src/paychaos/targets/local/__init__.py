"""The reference platform as a target: the stack `paychaos stack up` runs from a run directory.

With the stack CLI, the only place that imports ``paychaos.platform``.
"""

from __future__ import annotations

from pathlib import Path

from paychaos.faults.records import FileLedger
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.stacking import current_topology
from paychaos.platform.runtime.state import read_state, supervisor_alive
from paychaos.platform.topology import Topology, load_topology
from paychaos.probes.series import Vocabulary
from paychaos.targets import Endpoints, Inventory, unsettled_at
from paychaos.targets.local.driver import LocalDriver


class LocalTarget:
    platform = "local"

    def __init__(self, run_dir: RunDir) -> None:
        self.run_dir = run_dir
        self.where = f"the stack in {run_dir.root}"

    @classmethod
    def at(cls, location: str | None) -> LocalTarget:
        """The stack of the run directory ``location``; PAYCHAOS_RUN_DIR or .paychaos/run when None."""
        return cls(RunDir(Path(location).resolve()) if location else RunDir.default())

    def topology(self) -> Topology:
        return current_topology(self.run_dir)

    def inventory(self) -> Inventory | None:
        """The running stack's names; None before it was first started (no topology written)."""
        return inventory_of(self.topology()) if self.run_dir.topology_file.exists() else None

    def endpoints(self) -> Endpoints:
        topology = self.topology()
        return Endpoints(prometheus_url=topology.prometheus_url, edge_url=topology.edge_url, ledger_dsn=topology.postgres_dsn)

    def driver(self) -> LocalDriver:
        return LocalDriver(self.run_dir)

    def ledger(self) -> FileLedger:
        return FileLedger(self.run_dir.root)

    def not_ready(self) -> str | None:
        if not supervisor_alive(self.run_dir):
            return f"no stack is running in {self.run_dir.root}: start one with `paychaos stack up --wait`"
        state = read_state(self.run_dir)
        if state is None or state.phase != "ready":
            return f"the stack in {self.run_dir.root} is not ready: see `paychaos stack status`"
        return None

    def unsettled(self, vocabulary: Vocabulary) -> list[str]:
        if not supervisor_alive(self.run_dir):
            return ["the stack is not running"]
        state = read_state(self.run_dir)
        if state is None:
            return ["the stack has no state yet"]
        problems = [f"{p.name} not ready" for p in state.processes if not p.ready]
        problems += [f"zone {z} marked down" for z in state.zones_down]
        problems += [f"{p.name} held down" for p in state.processes if p.held]
        topology = self.topology()
        return problems + unsettled_at(topology.prometheus_url, topology.toxiproxy_url, vocabulary)

    def calls_to_open(self, breaker: str) -> int | None:
        return self.topology().resilience.breaker.calls_to_open  # the one setting every breaker of the platform has

    def vocabulary(self, catalogue: Vocabulary) -> Vocabulary:
        return catalogue  # the catalogue's series.yaml describes this platform

    def arguments(self) -> dict[str, str]:
        return {"platform": self.platform, "location": str(self.run_dir.root)}


def inventory_of(topology: Topology) -> Inventory:
    """What a topology runs, as the names a spec may use."""
    replicas: dict[str, dict[str, int]] = {service: {} for service in topology.services}
    for replica in topology.replicas:
        zones = replicas.setdefault(replica.service, {})
        zones[replica.zone] = zones.get(replica.zone, 0) + 1
    return Inventory(replicas=replicas, zones=tuple(topology.zones), proxies=tuple(topology.proxies),
                     topics={name: topic.partitions for name, topic in topology.kafka.topics.items()},
                     brokers=tuple(topology.kafka_nodes))


def inventory_of_file(path: Path | None) -> Inventory:
    """The names of a topology file (the packaged one when None), for `paychaos validate --topology`."""
    return inventory_of(load_topology(path))
