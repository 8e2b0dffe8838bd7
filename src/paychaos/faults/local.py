"""The local driver: faults on the stack that `paychaos stack up` runs on this machine.

Processes are killed with SIGKILL and the supervisor restarts them, unless a marker in the run
directory holds them down (``zones-down/<zone>``, ``held/<process>``); slow downstreams are
Toxiproxy toxics. Everything is reverted from the ledger record alone.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from paychaos.faults.driving import InjectionFailed, RevertFailed, TargetUnreachable
from paychaos.faults.planning import (
    FaultPlan,
    Observed,
    ObservedBroker,
    ObservedProxy,
    ObservedReplica,
    PartitionRef,
)
from paychaos.faults.records import FaultRecord
from paychaos.platform.runtime import kafka
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.stacking import current_topology
from paychaos.platform.runtime.state import ProcessState, StackState, alive, read_state, supervisor_alive
from paychaos.platform.runtime.toxiproxy import Toxiproxy, ToxiproxyError
from paychaos.platform.topology import Topology


class LocalDriver:
    name = "local"

    def __init__(self, run_dir: RunDir, *, ready_timeout: float = 90.0, kill_timeout: float = 20.0,
                 poll: float = 0.2) -> None:
        self.run_dir = run_dir
        self.ready_timeout = ready_timeout
        self.kill_timeout = kill_timeout
        self.poll = poll

    # -- reading the stack --------------------------------------------------------------------
    def _running(self) -> bool:
        return supervisor_alive(self.run_dir) is not None

    def _state(self) -> StackState:
        state = read_state(self.run_dir) if self._running() else None
        if state is None:
            raise TargetUnreachable(f"no stack running in {self.run_dir.root}: start one with `paychaos stack up --wait`")
        return state

    def _topology(self) -> Topology:
        try:
            return current_topology(self.run_dir)
        except FileNotFoundError:
            raise TargetUnreachable(f"no stack in {self.run_dir.root}: start one with `paychaos stack up --wait`") from None

    def observe(self, partitions: Sequence[PartitionRef] = ()) -> Observed:
        state = self._state()
        topology = self._topology()
        service_of = {r.name: r.service for r in topology.replicas}
        replicas = tuple(
            ObservedReplica(name=p.name, service=service_of.get(p.name, p.name.split("-")[0]), zone=p.zone or "",
                            ready=p.ready, pid=p.pid, started=p.create_time)
            for p in state.processes if p.kind == "service"
        )
        brokers = tuple(
            ObservedBroker(id=int(p.name.rsplit("-", 1)[1]), name=p.name, zone=p.zone or "", ready=p.ready,
                           pid=p.pid, started=p.create_time)
            for p in state.processes if p.kind == "kafka"
        )
        try:
            with Toxiproxy(topology.toxiproxy_url) as api:
                found = api.proxies()
        except ToxiproxyError as exc:
            raise TargetUnreachable(str(exc)) from None
        proxies = tuple(
            ObservedProxy(name=name,
                          upstream=topology.proxies[name].upstream if name in topology.proxies else str(data.get("upstream")),
                          toxics=tuple(t["name"] for t in data.get("toxics", [])))
            for name, data in sorted(found.items())
        )
        leaders: dict[PartitionRef, int] = {}
        errors: dict[PartitionRef, str] = {}
        for topic, partition in partitions:
            try:
                leaders[(topic, partition)] = kafka.partition_leader(topology, topic, partition)
            except kafka.ClusterError as exc:
                errors[(topic, partition)] = str(exc)
        return Observed(zones=tuple(state.zones), replicas=replicas, brokers=brokers, proxies=proxies,
                        leaders=leaders, leader_errors=errors)

    # -- injecting ----------------------------------------------------------------------------
    def inject(self, plan: FaultPlan) -> None:
        if plan.kind == "podKill":
            state = self._state()
            victims = [p for r in plan.replicas if (p := state.process(r.name)) is not None]
            for victim in victims:
                _kill(victim)
            # SIGKILL is asynchronous: return once they are dead, so that a revert right after
            # cannot mistake a dying replica for one that is back.
            self._wait(lambda: not any(alive(v.pid, v.create_time) for v in victims),
                       lambda: f"{', '.join(v.name for v in victims)} still alive after SIGKILL",
                       timeout=self.kill_timeout, error=InjectionFailed)
        elif plan.kind == "zoneLoss":
            assert plan.zone is not None
            self._hold_and_kill([self._zone_marker(plan.zone)], lambda p: p.zone == plan.zone)
        elif plan.kind == "kafkaBrokerFailure":
            names = {b.name for b in plan.brokers}
            self._hold_and_kill([self._held_marker(n) for n in sorted(names)], lambda p: p.name in names)
        else:
            assert plan.proxy is not None
            try:
                with Toxiproxy(self._topology().toxiproxy_url) as api:
                    for toxic in plan.toxics:
                        api.add_toxic(plan.proxy, toxic.name, toxic.type, dict(toxic.attributes), stream=toxic.stream)  # type: ignore[arg-type]
            except ToxiproxyError as exc:
                raise TargetUnreachable(str(exc)) from None

    def _hold_and_kill(self, markers: list[Path], targeted: Callable[[ProcessState], bool]) -> None:
        """Hold first, then kill until the supervisor reports every target down (and so will not restart it)."""
        self._state()
        for marker in markers:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        deadline = time.monotonic() + self.kill_timeout
        while True:
            targets = [p for p in self._state().processes if targeted(p)]
            if all(p.pid is None for p in targets):
                return
            for p in targets:
                _kill(p)
            if time.monotonic() > deadline:
                up = ", ".join(p.name for p in targets if p.pid)
                raise InjectionFailed(f"still running {self.kill_timeout:.0f}s after the kill: {up}")
            time.sleep(self.poll)

    # -- reverting ----------------------------------------------------------------------------
    def revert(self, record: FaultRecord) -> None:
        self._check_driver(record)
        plan = record.fault_plan
        if plan.kind == "podKill":
            # Nothing to undo: the supervisor restarts them. Reverted means they are back.
            if self._running():
                self._wait(lambda: self._replicas_back(plan),
                           lambda: f"{', '.join(r.name for r in plan.replicas)} not ready again within "
                                   f"{self.ready_timeout:.0f}s after the kill (see `paychaos stack logs`)")
        elif plan.kind == "zoneLoss":
            assert plan.zone is not None
            self._zone_marker(plan.zone).unlink(missing_ok=True)
        elif plan.kind == "kafkaBrokerFailure":
            for broker in plan.brokers:
                self._held_marker(broker.name).unlink(missing_ok=True)
        else:
            assert plan.proxy is not None
            try:
                with Toxiproxy(self._topology().toxiproxy_url) as api:
                    for toxic in plan.toxics:
                        api.remove_toxic(plan.proxy, toxic.name)
            except (ToxiproxyError, TargetUnreachable) as exc:
                if self._running():
                    raise RevertFailed(f"could not remove toxics from proxy {plan.proxy}: {exc}") from None
                # No stack: Toxiproxy keeps toxics in memory only, so they died with it.

    def verify_reverted(self, record: FaultRecord) -> bool:
        self._check_driver(record)
        plan = record.fault_plan
        running = self._running()
        if plan.kind == "podKill":
            return not running or self._replicas_back(plan)
        if plan.kind == "zoneLoss":
            assert plan.zone is not None
            if self._zone_marker(plan.zone).exists():
                return False
            return not running or all(p.ready for p in self._state().processes if p.zone == plan.zone)
        if plan.kind == "kafkaBrokerFailure":
            if any(self._held_marker(b.name).exists() for b in plan.brokers):
                return False
            if not running:
                return True
            state = self._state()
            return all((p := state.process(b.name)) is not None and p.ready for b in plan.brokers)
        if not running:
            return True
        assert plan.proxy is not None
        try:
            with Toxiproxy(self._topology().toxiproxy_url) as api:
                present = {t["name"] for t in api.toxics(plan.proxy)}
        except ToxiproxyError:
            return False
        return not present & {t.name for t in plan.toxics}

    def _replicas_back(self, plan: FaultPlan) -> bool:
        state = read_state(self.run_dir)
        if state is None:
            return False
        for replica in plan.replicas:
            now = state.process(replica.name)
            # alive() also rejects the instance we killed while the state still shows it as ready.
            if now is None or not now.ready or not alive(now.pid, now.create_time):
                return False
        return True

    def _wait(self, done: Callable[[], bool], failure: Callable[[], str], *, timeout: float | None = None,
              error: type[Exception] = RevertFailed) -> None:
        deadline = time.monotonic() + (self.ready_timeout if timeout is None else timeout)
        while not done():
            if time.monotonic() > deadline:
                raise error(failure())
            time.sleep(min(self.poll, 0.05))

    def _check_driver(self, record: FaultRecord) -> None:
        if record.driver != self.name:
            raise RevertFailed(f"fault {record.id} was injected by the {record.driver} driver, not the local one")

    def _zone_marker(self, zone: str) -> Path:
        return self.run_dir.zones_down / zone

    def _held_marker(self, process: str) -> Path:
        return self.run_dir.held / process


def _kill(process: ProcessState | None) -> None:
    """SIGKILL a process of the stack, only if its pid still names the process the supervisor started."""
    if process is None or not alive(process.pid, process.create_time):
        return
    assert process.pid is not None
    try:
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
