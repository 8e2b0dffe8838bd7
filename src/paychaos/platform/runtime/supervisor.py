"""The local supervisor: starts the stack in dependency order and keeps it running like a
ReplicaSet and kubelet would — a killed replica comes back after a back-off, a zone marked down
stays down until restored. Runs detached; ``stack up`` starts it, ``stack down`` sends SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import psutil

from paychaos.faults.toxiproxy import Toxiproxy
from paychaos.platform.runtime import kafka, postgres, toxiproxy
from paychaos.platform.runtime.balancing import haproxy_process, servers_not_up
from paychaos.platform.runtime.installing import Tools, locate
from paychaos.platform.runtime.monitoring import prometheus_process
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.processes import HttpReady, ProcessSpec, TcpReady
from paychaos.platform.runtime.readiness import ReadinessChecker
from paychaos.platform.runtime.seeding import seed
from paychaos.platform.runtime.state import ProcessState, StackState, marker_names, write_state
from paychaos.processes import last_line
from paychaos.platform.topology import Topology

log = logging.getLogger("paychaos.supervisor")
_Pending = TypeVar("_Pending", bound=Sized)  # what a start-up wait still waits for

# Stop order: what takes traffic first, what holds data last.
STOP_ORDER = ("gateway", "payment", "campaign", "acquirer", "ledger", "prometheus", "haproxy", "toxiproxy", "kafka", "postgres")
STABLE_AFTER = 10.0  # seconds ready before a crash loop's back-off resets
PROBE_PERIOD = 1.0  # readiness probes once a second, like a kubelet; exits are noticed every tick


def restart_delay(failures: int, base: float, cap: float) -> float:
    """Seconds before restarting a process that exited ``failures`` times in a row without
    staying ready: none after a stable run (a kubelet restarts a killed container straight away;
    a rollout does not wait either), then ``base`` doubling up to ``cap``, as CrashLoopBackOff."""
    return 0.0 if failures == 0 else min(base * 2 ** (failures - 1), cap)


class StartupFailed(Exception):
    pass


class Stopping(Exception):
    pass


@dataclass
class Managed:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes] | None = None
    create_time: float | None = None
    ready: bool = False
    ready_since: float | None = None
    restarts: int = 0
    failures: int = 0
    last_exit: int | None = None
    restart_at: float | None = None
    held: bool = False

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


def replica_processes(topology: Topology, run_dir: RunDir) -> list[ProcessSpec]:
    return [
        ProcessSpec(
            name=r.name,
            kind="service",
            zone=r.zone,
            argv=[
                sys.executable, "-m", "paychaos.platform.services", r.service,
                "--zone", r.zone, "--index", str(r.index), "--port", str(r.port),
                "--topology", str(run_dir.topology_file),
            ],
            ready=HttpReady(f"http://{topology.host}:{r.port}/health/ready"),
        )
        for r in topology.replicas
    ]


@dataclass
class Supervisor:
    topology: Topology
    run_dir: RunDir
    tools: Tools
    clock: Callable[[], float] = time.monotonic
    managed: dict[str, Managed] = field(default_factory=dict)
    stopping: bool = False
    phase: str = "starting"
    message: str = ""
    started_at: float = field(default_factory=time.time)
    ready_at: float | None = None

    def __post_init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ready")
        self.is_ready = ReadinessChecker()
        self.probed_at = float("-inf")
        self.published: StackState | None = None

    # -- state --------------------------------------------------------------------------------
    def snapshot(self) -> StackState:
        processes = []
        for m in self.managed.values():
            ready = m.spec.ready
            port = ready.port if isinstance(ready, TcpReady) else urlsplit(ready.url).port
            processes.append(
                ProcessState(
                    name=m.spec.name, kind=m.spec.kind, zone=m.spec.zone, port=port,
                    pid=m.pid if m.running() else None, create_time=m.create_time if m.running() else None,
                    ready=m.ready, held=m.held, restarts=m.restarts, last_exit=m.last_exit,
                )
            )
        return StackState(
            supervisor_pid=psutil.Process().pid,
            phase=self.phase,  # type: ignore[arg-type]
            message=self.message,
            started_at=self.started_at,
            ready_at=self.ready_at,
            edge_url=self.topology.edge_url,
            prometheus_url=self.topology.prometheus_url,
            toxiproxy_url=self.topology.toxiproxy_url,
            zones=list(self.topology.zones),
            zones_down=marker_names(self.run_dir.zones_down),
            processes=processes,
        )

    def publish(self) -> None:
        state = self.snapshot()
        if state != self.published:  # most ticks change nothing: skip the write
            write_state(self.run_dir, state)
            self.published = state

    # -- processes ------------------------------------------------------------------------------
    def spawn(self, m: Managed) -> None:
        spec = m.spec
        logfile = open(self.run_dir.log_file(spec.name), "ab")  # noqa: SIM115 - handed to the child
        kwargs: dict[str, object] = {}
        if spec.user:
            kwargs.update(user=spec.user, group=spec.user)
        m.popen = subprocess.Popen(
            spec.argv,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=spec.cwd,
            env={**os.environ, **spec.env},
            start_new_session=True,
            **kwargs,  # type: ignore[arg-type]
        )
        logfile.close()
        try:
            m.create_time = psutil.Process(m.popen.pid).create_time()
        except psutil.Error:
            m.create_time = None
        m.ready = False
        m.ready_since = None
        m.restart_at = None
        log.info("started %s (pid %s)", spec.name, m.popen.pid)

    def is_held(self, m: Managed) -> bool:
        if (self.run_dir.held / m.spec.name).exists():
            return True
        return m.spec.zone is not None and (self.run_dir.zones_down / m.spec.zone).exists()

    def start_group(self, specs: Iterable[ProcessSpec], what: str) -> None:
        group = []
        for spec in specs:
            m = self.managed.setdefault(spec.name, Managed(spec))
            group.append(m)
            if not self.is_held(m):
                self.spawn(m)
        self.message = f"waiting for {what}"
        self.wait_ready(group, what)

    def wait_ready(self, group: list[Managed], what: str) -> None:
        def timed_out(pending: list[Managed]) -> str:
            names = ", ".join(m.spec.name for m in pending)
            last = last_line(self.run_dir.log_file(pending[0].spec.name))
            return f"{what} not ready in time: {names}; {pending[0].spec.name} said: {last}"

        self._wait(lambda: [m for m in group if not m.held and not m.ready], timed_out)

    def wait_routed(self) -> None:
        """Every replica in HAProxy's rotation before the stack is called ready: the first payment
        through the edge must not find the gateways still marked down from before they started."""
        self.message = "waiting for HAProxy to route to every replica"
        self.publish()

        def pending() -> dict[str, str]:
            held = {name for name, m in self.managed.items() if m.held}
            return {name: status for name, status in servers_not_up(self.topology).items() if name not in held}

        self._wait(pending, lambda left: "HAProxy does not route to " + ", ".join(f"{n} ({s})" for n, s in left.items()))

    def _wait(self, pending: Callable[[], _Pending], timed_out: Callable[[_Pending], str]) -> None:
        """Tick until ``pending()`` is empty; past the ready timeout, fail with ``timed_out(what is left)``."""
        deadline = self.clock() + self.topology.supervisor.ready_timeout.total_seconds()
        while True:
            self.tick()
            left = pending()
            if not left:
                return
            if self.clock() > deadline:
                raise StartupFailed(timed_out(left))
            time.sleep(0.3)

    def check_readiness(self) -> None:
        now = self.clock()
        if now - self.probed_at < PROBE_PERIOD:
            return
        self.probed_at = now
        candidates = [m for m in self.managed.values() if m.running()]
        results = self.pool.map(lambda m: self.is_ready(m.spec.ready), candidates)
        for m, ok in zip(candidates, results, strict=True):
            if ok and not m.ready:
                m.ready_since = now
            if not ok:
                m.ready_since = None
            m.ready = ok

    def tick(self) -> None:
        """One pass of the control loop: notice exits, honour holds, restart after back-off."""
        if self.stopping:
            raise Stopping
        now = self.clock()
        for m in self.managed.values():
            m.held = self.is_held(m)
            if m.popen is not None and m.popen.poll() is not None:
                m.last_exit = m.popen.returncode
                m.popen = None
                m.ready = False
                stable = m.ready_since is not None and now - m.ready_since > STABLE_AFTER
                m.failures = 0 if stable else m.failures + 1
                backoff = restart_delay(
                    m.failures,
                    self.topology.supervisor.restart_backoff.total_seconds(),
                    self.topology.supervisor.max_backoff.total_seconds(),
                )
                m.restart_at = now + backoff
                log.warning("%s exited with %s; restart in %.1fs", m.spec.name, m.last_exit, backoff)
            if m.popen is None and m.spec.restart:
                if m.held:
                    continue
                if m.restart_at is None:  # just released from a hold: come back at once
                    m.restart_at = now
                if now >= m.restart_at:
                    m.restarts += 1
                    self.spawn(m)
        self.check_readiness()
        self.publish()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        topology, run_dir, tools = self.topology, self.run_dir, self.tools
        self.message = "preparing PostgreSQL and Kafka storage"
        self.publish()
        postgres.prepare_postgres(topology, tools, run_dir)
        kafka.prepare_kafka(topology, tools, run_dir)

        self.start_group([postgres.postgres_process(topology, tools, run_dir)], "PostgreSQL")
        postgres.ensure_database(topology)
        self.start_group(
            [
                *kafka.kafka_processes(topology, tools, run_dir),
                toxiproxy.toxiproxy_process(topology, tools, run_dir),
                haproxy_process(topology, str(tools.haproxy), run_dir),
                prometheus_process(topology, str(tools.prometheus), run_dir),
            ],
            "Kafka, Toxiproxy, HAProxy and Prometheus",
        )
        self.message = "creating Kafka topics and Toxiproxy proxies"
        self.publish()
        kafka.ensure_topics(topology, timeout=topology.supervisor.ready_timeout.total_seconds())
        with Toxiproxy(topology.toxiproxy_url) as proxies:
            toxiproxy.ensure_proxies(proxies, topology)

        replicas = replica_processes(topology, run_dir)
        for service in ("ledger", "acquirer", "payment", "campaign", "gateway"):
            self.start_group([s for s in replicas if s.name.startswith(f"{service}-")], f"{service} replicas")
        self.wait_routed()
        self.message = "seeding users, merchants and the campaign budget"
        self.publish()
        seed(topology)
        self.phase, self.message, self.ready_at = "ready", "", time.time()
        self.publish()

    def run_forever(self) -> None:
        while True:
            self.tick()
            time.sleep(0.2)

    def stop(self) -> None:
        failed, reason = self.phase == "failed", self.message
        self.phase, self.message = "stopping", "stopping every process"
        self.publish()
        for kind in STOP_ORDER:
            group = [
                m for m in self.managed.values()
                if m.running() and (m.spec.kind == kind or (m.spec.kind == "service" and m.spec.name.startswith(f"{kind}-")))
            ]
            for m in group:
                assert m.popen is not None
                try:
                    m.popen.send_signal(m.spec.stop_signal)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 15
            for m in group:
                assert m.popen is not None
                try:
                    m.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    m.popen.kill()
                    m.popen.wait()
                m.popen = None
                m.ready = False
        self.pool.shutdown(wait=False)
        self.is_ready.close()
        self.phase, self.message = ("failed", reason) if failed else ("stopped", "")
        self.publish()



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paychaos.platform.runtime.supervisor")
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    run_dir = RunDir(args.run_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    topology = Topology.model_validate_json(run_dir.topology_file.read_text(encoding="utf-8"))
    supervisor = Supervisor(topology, run_dir, locate())

    def on_signal(signum: int, _frame: object) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    supervisor.publish()
    try:
        supervisor.start()
        supervisor.run_forever()
    except Stopping:
        pass
    except StartupFailed as exc:
        supervisor.phase, supervisor.message = "failed", str(exc)
        log.error("%s", exc)
    except Exception as exc:  # the stack must not be left half-started whatever went wrong
        supervisor.phase, supervisor.message = "failed", f"{type(exc).__name__}: {exc}"
        log.exception("supervisor failed")
    finally:
        supervisor.stopping = False
        supervisor.stop()
    return 1 if supervisor.phase == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
