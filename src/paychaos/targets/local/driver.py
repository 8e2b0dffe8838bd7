"""The local driver: faults on the stack that `paychaos stack up` runs on this machine.

Processes are killed with SIGKILL and the supervisor restarts them, unless a marker in the run
directory holds them down (``zones-down/<zone>``, ``held/<process>``); slow downstreams are
Toxiproxy toxics. Everything is reverted from the ledger record alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from paychaos.faults import toxiproxy
from paychaos.faults.driving import InjectionFailed, RevertFailed, TargetUnreachable
from paychaos.faults.kafka import partition_leaders
from paychaos.faults.planning import (
    FaultPlan,
    Observed,
    ObservedBroker,
    ObservedReplica,
    PartitionRef,
)
from paychaos.faults.records import FaultRecord
from paychaos.platform.runtime import kafka
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.stacking import current_topology
from paychaos.platform.runtime.state import ProcessState, StackState, read_state, supervisor_alive
from paychaos.platform.topology import Topology
from paychaos.processes import alive

IN_FLIGHT_WAIT = 10.0  # seconds, at most, for a victim to be serving a request (podKill inFlight)
# How long a victim's workers must have been busy without a break before the kill. A request
# seen busy once may be a 5 ms balance payment already answered when SIGKILL lands (two in ten
# pod-kill-payment runs cut nothing in half that way); one busy for 50 ms is a long saga (a card
# authorization) with time left to cut. Back-to-back short requests rarely fill 50 ms at a few
# requests a second per replica, and if they do the kill still lands on a busy worker.
IN_FLIGHT_HOLD = 0.05
# A reading of the victim's work is acted on only when its poll came back within this: on a
# starved machine a poll can take 100 ms and more, and the work it saw may be answered by the
# time the kill lands (a ledger kill "while applying a reserve" once cut no reserve at all). An
# idle machine answers a poll in 2-7 ms.
IN_FLIGHT_FRESH = 0.05
ISR_WAIT = 10.0  # seconds, at most, for the cluster to drop a lost broker from the in-sync replicas
RESTRICTION_SLACK = 30.0  # seconds an admission restriction outlives its window unless reverted


@dataclass(frozen=True)
class LocalFaultKind:
    inject: Callable[[LocalDriver, FaultPlan], dict[str, Any]]
    revert: Callable[[LocalDriver, FaultPlan], None]
    reverted: Callable[[LocalDriver, FaultPlan, bool], bool]  # the plan, whether the stack runs


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
        proxies = toxiproxy.observed_proxies(topology.toxiproxy_url, {n: p.upstream for n, p in topology.proxies.items()})
        leaders, errors = partition_leaders(topology.bootstrap_servers, partitions)
        return Observed(zones=tuple(state.zones), replicas=replicas, brokers=brokers, proxies=proxies,
                        leaders=leaders, leader_errors=errors)

    # -- the fault kinds --------------------------------------------------------------------
    # Each kind is three methods: inject (do it, then return the effect seen), revert (undo it
    # from the plan alone) and reverted (is the stack whole again as far as it is concerned?).
    # FAULT_KINDS below is the registry; a kind without an entry is refused, never guessed.

    def inject(self, plan: FaultPlan) -> dict[str, Any]:
        return self._kind(plan.kind).inject(self, plan)

    def revert(self, record: FaultRecord) -> None:
        self._check_driver(record)
        self._kind(record.kind).revert(self, record.fault_plan)

    def verify_reverted(self, record: FaultRecord) -> bool:
        self._check_driver(record)
        return self._kind(record.kind).reverted(self, record.fault_plan, self._running())

    @staticmethod
    def _kind(kind: str) -> LocalFaultKind:
        try:
            return FAULT_KINDS[kind]
        except KeyError:
            raise InjectionFailed(f"the local driver has no {kind} fault (it has {', '.join(sorted(FAULT_KINDS))})") from None

    # podKill: SIGKILL; the supervisor restarts them.
    def _kill(self, plan: FaultPlan) -> dict[str, Any]:
        state = self._state()
        victims = [p for r in plan.replicas if (p := state.process(r.name)) is not None]
        serving: dict[str, dict[str, Any]] = {}
        for victim in victims:
            if not plan.in_flight:
                _kill(victim)
                continue
            in_flight, seen = self._await_in_flight(victim.name, plan.in_flight_kind)
            _kill(victim)
            # From the poll that saw the work to the SIGKILL: an upper bound.
            serving[victim.name] = {**in_flight, "seenMsBeforeKill": _ms_since(seen)}
        # SIGKILL is asynchronous: return once they are dead, so that a revert right after
        # cannot mistake a dying replica for one that is back.
        self._wait(lambda: not any(alive(v.pid, v.create_time) for v in victims),
                   lambda: f"{', '.join(v.name for v in victims)} still alive after SIGKILL",
                   timeout=self.kill_timeout, error=InjectionFailed)
        if not victims:
            raise InjectionFailed(f"none of {', '.join(r.name for r in plan.replicas)} is known to the supervisor")
        killed = [{"name": v.name, "pid": v.pid, **serving.get(v.name, {})} for v in victims]
        return {"killed": killed, "dead": True}

    def _await_restart(self, plan: FaultPlan) -> None:
        # Nothing to undo: the supervisor restarts them. Reverted means they are back.
        if self._running():
            self._wait(lambda: self._replicas_back(plan),
                       lambda: f"{', '.join(r.name for r in plan.replicas)} not ready again within "
                               f"{self.ready_timeout:.0f}s after the kill: {self._why_not_back(plan)}")

    def _restarted(self, plan: FaultPlan, running: bool) -> bool:
        return not running or self._replicas_back(plan)

    # zoneLoss: a marker holds the zone down; every process in it is killed.
    def _lose_zone(self, plan: FaultPlan) -> dict[str, Any]:
        assert plan.zone is not None
        watched = self._await_in_flight(plan.in_flight_on, plan.in_flight_kind) if plan.in_flight_on else None
        down = self._hold_and_kill([self._zone_marker(plan.zone)], lambda p: p.zone == plan.zone)
        effect: dict[str, Any] = {"zone": plan.zone, "zoneHeld": self._zone_marker(plan.zone).exists(), "down": down}
        if watched is not None:
            in_flight, seen = watched
            # From the poll that saw the work to the whole zone down: an upper bound.
            effect["cut"] = {"replica": plan.in_flight_on, **in_flight, "seenMsBeforeDown": _ms_since(seen)}
        return effect

    def _release_zone(self, plan: FaultPlan) -> None:
        assert plan.zone is not None
        self._zone_marker(plan.zone).unlink(missing_ok=True)

    def _zone_back(self, plan: FaultPlan, running: bool) -> bool:
        assert plan.zone is not None
        if self._zone_marker(plan.zone).exists():
            return False
        return not running or all(p.ready for p in self._state().processes if p.zone == plan.zone)

    # eventRedelivery and poisonEvents: records written to the log (nothing to take back).
    def _redeliver(self, plan: FaultPlan) -> dict[str, Any]:
        assert plan.topic is not None
        try:
            again = kafka.redeliver(self._topology(), plan.topic, plan.last)
        except kafka.ClusterError as exc:
            raise InjectionFailed(str(exc)) from None
        if not any(again.values()):
            raise InjectionFailed(f"{plan.topic} holds no record to deliver again: is there traffic?")
        return {"topic": plan.topic, "redelivered": again, "total": sum(again.values())}

    def _poison(self, plan: FaultPlan) -> dict[str, Any]:
        assert plan.topic is not None
        try:
            produced = kafka.produce_poison(self._topology(), plan.topic, plan.poison)
        except kafka.ClusterError as exc:
            raise InjectionFailed(str(exc)) from None
        return {"topic": plan.topic, "poisonProduced": produced, "total": sum(produced.values())}

    def _records_stay(self, plan: FaultPlan) -> None:
        pass  # a record in the log stays there: what must hold is how consumers treat it

    def _nothing_held(self, plan: FaultPlan, running: bool) -> bool:
        return True

    # kafkaBrokerFailure: markers hold the nodes down (their followers stalled first, if asked).
    def _fail_brokers(self, plan: FaultPlan) -> dict[str, Any]:
        names = {b.name for b in plan.brokers}
        stalled: dict[str, Any] = {}
        since = time.monotonic()
        try:
            if plan.stalled:
                stalled["stalled"] = self._stall(plan)
            down = self._hold_and_kill([self._held_marker(n) for n in sorted(names)], lambda p: p.name in names)
        finally:
            if plan.stalled:
                stalled["stalledSeconds"] = round(time.monotonic() - since, 2)
                self._resume(plan)
        return {"down": down, "held": sorted(names), **stalled,
                **self._isr_without({b.id for b in plan.brokers}, plan.duration)}

    def _release_brokers(self, plan: FaultPlan) -> None:
        self._resume(plan)  # a run killed mid-stall leaves its followers stopped
        for broker in plan.brokers:
            self._held_marker(broker.name).unlink(missing_ok=True)

    def _brokers_back(self, plan: FaultPlan, running: bool) -> bool:
        if any(self._held_marker(b.name).exists() for b in plan.brokers):
            return False
        if any(b.pid is not None and _stopped(b.pid) for b in plan.stalled):
            return False
        if not running:
            return True
        state = self._state()
        return all((p := state.process(b.name)) is not None and p.ready for b in plan.brokers)

    # admissionRestriction: each gateway replica's admin endpoint.
    def _lift_restriction(self, plan: FaultPlan) -> None:
        failed = []
        with httpx.Client(timeout=5.0) as http:
            for name, url in self._admission_urls(plan).items():
                try:
                    http.delete(url).raise_for_status()
                except httpx.HTTPError as exc:
                    # A replica that is not there holds no restriction: it dies with the process.
                    if self._replica_running(name):
                        failed.append(f"{name}: {exc}")
        if failed:
            raise RevertFailed(f"could not lift the admission restriction on {'; '.join(failed)}")

    def _lifted(self, plan: FaultPlan, running: bool) -> bool:
        return not running or self._unrestricted(plan)

    # slowDownstream: Toxiproxy toxics on the proxy (the operations any Toxiproxy target shares).
    def _add_toxics(self, plan: FaultPlan) -> dict[str, Any]:
        return toxiproxy.add_toxics(self._topology().toxiproxy_url, plan)

    def _remove_toxics(self, plan: FaultPlan) -> None:
        try:
            toxiproxy.remove_toxics(self._topology().toxiproxy_url, plan)
        except (RevertFailed, TargetUnreachable):
            if self._running():
                raise
            # No stack: Toxiproxy keeps toxics in memory only, so they died with it.

    def _toxics_gone(self, plan: FaultPlan, running: bool) -> bool:
        return not running or toxiproxy.toxics_gone(self._topology().toxiproxy_url, plan)

    def _admission_urls(self, plan: FaultPlan) -> dict[str, str]:
        topology = self._topology()
        ports = {r.name: r.port for r in topology.replicas}
        return {r.name: f"http://{topology.host}:{ports[r.name]}/admin/admission" for r in plan.replicas if r.name in ports}

    def _restrict(self, plan: FaultPlan) -> dict[str, Any]:
        """Set the restriction on every replica, lapsing by itself shortly after the window (so a
        run that dies cannot leave it for ever), and read back what each now enforces."""
        assert plan.restriction is not None
        allowed, rotation, flow_ttl = plan.restriction
        body = {"allowedPercent": allowed, "rotation": rotation, "flowTtl": flow_ttl,
                "until": time.time() + plan.duration + RESTRICTION_SLACK}
        answers: dict[str, Any] = {}
        with httpx.Client(timeout=5.0) as http:
            for name, url in self._admission_urls(plan).items():
                try:
                    response = http.put(url, json=body)
                    response.raise_for_status()
                    answers[name] = response.json()
                except (httpx.HTTPError, ValueError) as exc:
                    raise InjectionFailed(f"{name} did not take the admission restriction: {exc}") from None
        if not answers:
            raise InjectionFailed("no replica of the plan is in the topology")
        off = [n for n, a in answers.items() if not a.get("enabled")]
        if off:
            raise InjectionFailed(f"admission is switched off on {', '.join(off)}: the restriction has no effect there")
        lax = [n for n, a in answers.items() if not a.get("restricted") or a.get("allowedPercent") != allowed]
        if lax:
            raise InjectionFailed(f"{', '.join(lax)} took the restriction but does not enforce it: {answers}")
        return {"replicas": answers}

    def _await_in_flight(self, name: str, kind: str | None = None) -> tuple[dict[str, Any], float]:
        """Poll the replica's own metrics until it has been serving requests (or, given ``kind``,
        applying work of that kind: its ``work_in_flight`` gauge) for ``IN_FLIGHT_HOLD`` without
        a break, seen by a poll answered within ``IN_FLIGHT_FRESH``; the kill's evidence of it
        (how many, for how long), and when that poll was sent. The metrics endpoint
        bypasses the worker pool, so polling it is not itself a request."""
        replica = next((r for r in self._topology().replicas if r.name == name), None)
        if replica is None:
            raise InjectionFailed(f"{name} is not in the topology")
        series = "work_in_flight" if kind else "http_server_workers_busy"
        url = f"http://{self._topology().host}:{replica.port}/metrics?name[]={series}"
        deadline = time.monotonic() + IN_FLIGHT_WAIT
        busy_since: float | None = None
        slow_polls = polls = 0
        what = f"{kind} work" if kind else "request"
        with httpx.Client(timeout=1.0) as http:
            while time.monotonic() < deadline:
                asked = time.monotonic()
                try:
                    exposition = http.get(url).text
                except httpx.HTTPError:
                    busy = 0
                else:
                    if kind is None:
                        busy = _gauge(exposition, "http_server_workers_busy")
                    else:
                        kinds = _label_values(exposition, "work_in_flight", "kind")
                        if kind not in kinds:
                            raise InjectionFailed(
                                f"{name} reports no {kind} work in flight (its work_in_flight kinds: "
                                f"{', '.join(sorted(kinds)) or 'none'}): fix inFlightKind")
                        busy = _gauge(exposition, "work_in_flight", kind=kind)
                now = time.monotonic()
                polls, slow_polls = polls + 1, slow_polls + (now - asked > IN_FLIGHT_FRESH)
                if busy <= 0:
                    busy_since = None
                elif busy_since is None:
                    busy_since = now
                elif now - busy_since >= IN_FLIGHT_HOLD and now - asked <= IN_FLIGHT_FRESH:
                    return {"inFlight": int(busy), "busyForMs": round((now - busy_since) * 1000),
                            **({"inFlightKind": kind} if kind else {})}, asked
                time.sleep(0.01)
        raise InjectionFailed(f"{name} had no {what} in flight for {IN_FLIGHT_HOLD * 1000:.0f} ms in {IN_FLIGHT_WAIT:g}s, "
                              "so killing it would cut nothing in half: is there traffic? (or drop inFlight)"
                              + (f"; {slow_polls} of {polls} polls of its metrics took over {IN_FLIGHT_FRESH * 1000:.0f} ms "
                                 "and were too late to act on: is the machine starved?" if slow_polls else ""))

    def _hold_and_kill(self, markers: list[Path], targeted: Callable[[ProcessState], bool]) -> list[str]:
        """Hold first, then kill until the supervisor reports every target down (and so will not
        restart it); the names of the processes now down."""
        self._state()
        for marker in markers:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        deadline = time.monotonic() + self.kill_timeout
        while True:
            targets = [p for p in self._state().processes if targeted(p)]
            if not targets:
                raise InjectionFailed("the supervisor runs none of the processes this fault targets")
            if all(p.pid is None for p in targets):
                return sorted(p.name for p in targets)
            for p in targets:
                _kill(p)
            if time.monotonic() > deadline:
                up = ", ".join(p.name for p in targets if p.pid)
                raise InjectionFailed(f"still running {self.kill_timeout:.0f}s after the kill: {up}")
            time.sleep(self.poll)

    def _stall(self, plan: FaultPlan) -> list[dict[str, Any]]:
        """Stop every node of ``plan.stalled`` (SIGSTOP), check the kernel reports each stopped,
        then hold them so for ``plan.stall`` seconds; the nodes stopped. Stopped nodes still accept
        TCP connections but answer nothing: to the cluster they are a long pause, not a crash."""
        state = self._state()
        stopped = []
        since = time.monotonic()
        for broker in plan.stalled:
            process = state.process(broker.name)
            if process is None or process.pid is None or not alive(process.pid, process.create_time):
                raise InjectionFailed(f"{broker.name} is not running, so it cannot be stalled")
            os.kill(process.pid, signal.SIGSTOP)
            stopped.append({"name": broker.name, "pid": process.pid})
        self._wait(lambda: all(_stopped(s["pid"]) for s in stopped),
                   lambda: f"the kernel does not report {', '.join(s['name'] for s in stopped)} stopped after SIGSTOP",
                   timeout=5.0, error=InjectionFailed)
        time.sleep(max(0.0, plan.stall - (time.monotonic() - since)))
        return stopped

    def _resume(self, plan: FaultPlan) -> None:
        """SIGCONT every node the plan stalls: harmless to a running one, so revert and halt call it too."""
        state = read_state(self.run_dir) if self._running() else None
        for broker in plan.stalled:
            process = state.process(broker.name) if state is not None else None
            for pid in {p for p in (broker.pid, process.pid if process else None) if p is not None}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def _isr_without(self, brokers: set[int], duration: float) -> dict[str, Any]:
        """Evidence that the cluster noticed: wait (a while, within the fault window) until no
        in-sync replica set names the lost brokers. The controller drops them once their session
        times out; a broker still listed after that is a finding to record, not a failed kill."""
        topology = self._topology()
        topics = list(topology.kafka.topics)
        waited_until = time.monotonic() + min(ISR_WAIT, duration / 2)
        started = time.monotonic()
        while True:
            try:
                isr = kafka.isr_members(topology, topics)
            except kafka.ClusterError as exc:
                return {"isr": None, "isrError": str(exc)}
            still = sorted(p for p, members in isr.items() if brokers & set(members))
            if not still or time.monotonic() >= waited_until:
                return {"outOfIsrAfter": round(time.monotonic() - started, 2) if not still else None,
                        "stillInIsr": still, "isr": isr}
            time.sleep(0.5)

    def _why_not_back(self, plan: FaultPlan) -> str:
        """What the supervisor says of each replica still down, and the last lines it logged."""
        state = read_state(self.run_dir)
        out = []
        for replica in plan.replicas:
            now = state.process(replica.name) if state is not None else None
            if now is None:
                out.append(f"{replica.name} unknown to the supervisor")
                continue
            if now.ready and alive(now.pid, now.create_time):
                continue
            try:
                tail = self.run_dir.log_file(replica.name).read_text(encoding="utf-8", errors="replace").splitlines()[-3:]
            except OSError:
                tail = []
            out.append(f"{replica.name} pid {now.pid} ready {now.ready} restarts {now.restarts} last exit {now.last_exit}"
                       + (f"; its log ends: {' | '.join(line.strip() for line in tail)}" if tail else ""))
        return "; ".join(out) + " (more in `paychaos stack logs`)"

    def _replica_running(self, name: str) -> bool:
        state = read_state(self.run_dir) if self._running() else None
        process = state.process(name) if state is not None else None
        return process is not None and alive(process.pid, process.create_time)

    def _unrestricted(self, plan: FaultPlan) -> bool:
        with httpx.Client(timeout=5.0) as http:
            for name, url in self._admission_urls(plan).items():
                try:
                    if http.get(url).json().get("restricted"):
                        return False
                except (httpx.HTTPError, ValueError):
                    if self._replica_running(name):
                        return False
        return True

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


def _samples(exposition: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of metric ``name`` in a Prometheus text exposition, with their labels."""
    found = []
    for family in text_string_to_metric_families(exposition):
        found += [(sample.labels, sample.value) for sample in family.samples if sample.name == name]
    return found


def _ms_since(t: float) -> float:
    """Milliseconds from the monotonic time ``t`` until now."""
    return round((time.monotonic() - t) * 1000, 1)


def _gauge(exposition: str, name: str, **labels: str) -> int:
    """The summed value of a gauge's series that carry ``labels``."""
    return int(sum(value for have, value in _samples(exposition, name) if labels.items() <= have.items()))


def _label_values(exposition: str, name: str, label: str) -> set[str]:
    return {have[label] for have, _ in _samples(exposition, name) if label in have}


def _kill(process: ProcessState | None) -> None:
    """SIGKILL a process of the stack, only if its pid still names the process the supervisor started."""
    if process is None or not alive(process.pid, process.create_time):
        return
    assert process.pid is not None
    try:
        os.kill(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stopped(pid: int) -> bool:
    """Whether the kernel reports ``pid`` stopped by a signal (state T in /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


FAULT_KINDS: dict[str, LocalFaultKind] = {
    "podKill": LocalFaultKind(LocalDriver._kill, LocalDriver._await_restart, LocalDriver._restarted),
    "zoneLoss": LocalFaultKind(LocalDriver._lose_zone, LocalDriver._release_zone, LocalDriver._zone_back),
    "kafkaBrokerFailure": LocalFaultKind(LocalDriver._fail_brokers, LocalDriver._release_brokers, LocalDriver._brokers_back),
    "slowDownstream": LocalFaultKind(LocalDriver._add_toxics, LocalDriver._remove_toxics, LocalDriver._toxics_gone),
    "eventRedelivery": LocalFaultKind(LocalDriver._redeliver, LocalDriver._records_stay, LocalDriver._nothing_held),
    "poisonEvents": LocalFaultKind(LocalDriver._poison, LocalDriver._records_stay, LocalDriver._nothing_held),
    "admissionRestriction": LocalFaultKind(LocalDriver._restrict, LocalDriver._lift_restriction, LocalDriver._lifted),
}
