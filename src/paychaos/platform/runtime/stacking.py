"""Bringing the local stack up and down from any shell, and reading what it looks like now."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from paychaos.platform.runtime.installing import locate
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.state import (
    StackState,
    kill_leftovers,
    read_state,
    supervisor_alive,
)
from paychaos.platform.topology import Topology, load_topology

Progress = Callable[[str], None]


class StackError(Exception):
    """Something the user can act on: the message says what went wrong and where to look."""


def up(
    run_dir: RunDir,
    topology_path: Path | None = None,
    *,
    wait: bool = True,
    progress: Progress = lambda _: None,
) -> StackState:
    locate()  # a missing tool fails here, in one line, before anything starts
    if supervisor_alive(run_dir):
        state = read_state(run_dir)
        assert state is not None
        progress(f"the stack in {run_dir.root} is already running (phase {state.phase})")
        return _wait_ready(run_dir, progress) if wait else state
    leftovers = kill_leftovers(run_dir)
    if leftovers:
        progress(f"cleaned up {len(leftovers)} processes left by a run that died: {', '.join(leftovers)}")
    run_dir.ensure()
    # Holds belong to the faults of a run that died; a fresh stack starts whole.
    for folder in (run_dir.zones_down, run_dir.held):
        for marker in folder.iterdir():
            marker.unlink()
    topology = load_topology(topology_path)
    run_dir.topology_file.write_text(topology.model_dump_json(by_alias=True, indent=2), encoding="utf-8")
    run_dir.state_file.unlink(missing_ok=True)
    with open(run_dir.log_file("supervisor"), "ab") as logfile:
        subprocess.Popen(
            [sys.executable, "-m", "paychaos.platform.runtime.supervisor", "--run-dir", str(run_dir.root)],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=os.environ.copy(),
        )
    progress(f"supervisor started; logs in {run_dir.logs}")
    if not wait:
        deadline = time.monotonic() + 10
        while (state := read_state(run_dir)) is None:
            if time.monotonic() > deadline:
                raise StackError(f"the supervisor did not start: see {run_dir.log_file('supervisor')}")
            time.sleep(0.1)
        return state
    return _wait_ready(run_dir, progress)


def _wait_ready(run_dir: RunDir, progress: Progress, timeout: float = 600.0) -> StackState:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        state = read_state(run_dir)
        if state is not None:
            if state.phase == "ready":
                return state
            if state.phase in ("failed", "stopped"):
                raise StackError(f"stack failed to start: {state.message or 'see logs'} (logs: {run_dir.logs})")
            ready = sum(p.ready for p in state.processes)
            line = f"{state.message} — {ready}/{len(state.processes)} processes ready"
            if line != last:
                progress(line)
                last = line
        elif not _supervisor_process_exists(run_dir):
            raise StackError(f"the supervisor exited at once: see {run_dir.log_file('supervisor')}")
        time.sleep(0.5)
    raise StackError(f"stack not ready after {timeout:.0f}s (logs: {run_dir.logs})")


def _supervisor_process_exists(run_dir: RunDir) -> bool:
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if "paychaos.platform.runtime.supervisor" in cmd and str(run_dir.root) in cmd:
            return True
    return False


def down(run_dir: RunDir, timeout: float = 90.0, progress: Progress = lambda _: None) -> list[str]:
    """Stop the supervisor (which stops its processes in order), then kill anything left."""
    pid = supervisor_alive(run_dir)
    if pid:
        progress("stopping the stack (services, then load balancers and monitoring, then Kafka and PostgreSQL)")
        try:
            os.kill(pid, signal.SIGTERM)
            psutil.Process(pid).wait(timeout=timeout)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
        except psutil.TimeoutExpired:
            progress("the supervisor did not stop in time; killing what is left")
            os.kill(pid, signal.SIGKILL)
    return kill_leftovers(run_dir)


def wipe(run_dir: RunDir) -> None:
    """Forget a stopped stack's data (database, Kafka logs, metrics)."""
    if supervisor_alive(run_dir):
        raise StackError("the stack is running: run `paychaos stack down` first")
    shutil.rmtree(run_dir.data, ignore_errors=True)


def status(run_dir: RunDir) -> dict[str, Any]:
    """Everything `stack status` shows, as plain data (the --json output)."""
    state = read_state(run_dir)
    running = supervisor_alive(run_dir) is not None
    if state is None:
        return {"running": False, "runDir": str(run_dir.root)}
    topology = Topology.model_validate_json(run_dir.topology_file.read_text(encoding="utf-8"))
    zones: dict[str, dict[str, Any]] = {
        z: {"down": z in state.zones_down, "replicas": []} for z in state.zones
    }
    for p in state.processes:
        if p.kind == "service" and p.zone in zones:
            zones[p.zone]["replicas"].append(
                {"name": p.name, "ready": p.ready, "pid": p.pid, "port": p.port, "restarts": p.restarts}
            )
    kafka_nodes = [
        {"id": int(p.name.split("-")[1]), "zone": p.zone, "ready": p.ready, "held": p.held, "pid": p.pid, "port": p.port}
        for p in state.processes if p.kind == "kafka"
    ]
    regional = [
        {"name": p.name, "ready": p.ready, "pid": p.pid, "port": p.port}
        for p in state.processes if p.kind not in ("service", "kafka")
    ]
    services = [p for p in state.processes if p.kind == "service"]
    return {
        "running": running,
        "phase": state.phase if running else "stopped",
        "message": state.message,
        "runDir": str(run_dir.root),
        "edgeUrl": state.edge_url,
        "prometheusUrl": state.prometheus_url,
        "toxiproxyUrl": state.toxiproxy_url,
        "startedAt": state.started_at,
        "readyAt": state.ready_at,
        "replicasReady": sum(p.ready for p in services),
        "replicasTotal": len(services),
        "zones": zones,
        "kafka": kafka_nodes,
        "infrastructure": regional,
        "prometheusTargets": _prometheus_targets(state.prometheus_url) if running else None,
        "toxics": _toxics(topology) if running else None,
    }


def _prometheus_targets(url: str) -> dict[str, int] | None:
    try:
        data = httpx.get(f"{url}/api/v1/targets", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    health = [t.get("health") for t in data.get("data", {}).get("activeTargets", [])]
    return {"up": health.count("up"), "down": health.count("down"), "unknown": health.count("unknown")}


def _toxics(topology: Topology) -> dict[str, list[dict[str, Any]]] | None:
    try:
        data = httpx.get(f"{topology.toxiproxy_url}/proxies", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    return {name: proxy.get("toxics", []) for name, proxy in data.items()}


def logs(run_dir: RunDir, name: str) -> list[Path]:
    """The log files of a process or of every replica of a service."""
    if not run_dir.logs.exists():
        return []
    exact = run_dir.log_file(name)
    if exact.exists():
        return [exact]
    return sorted(run_dir.logs.glob(f"{name}-*.log"))


def current_topology(run_dir: RunDir) -> Topology:
    return Topology.model_validate_json(run_dir.topology_file.read_text(encoding="utf-8"))


def reconfigure(run_dir: RunDir, topology: Topology, services: list[str], timeout: float = 60.0) -> None:
    """Roll out a changed topology to the replicas of ``services``, one at a time.

    Like a ConfigMap change followed by `kubectl rollout restart`: each replica is stopped and
    the supervisor starts it again on the new configuration; the next waits until it is ready.
    """
    if not supervisor_alive(run_dir):
        raise StackError("no stack running: start one with `paychaos stack up --wait`")
    run_dir.topology_file.write_text(topology.model_dump_json(by_alias=True, indent=2), encoding="utf-8")
    state = read_state(run_dir)
    assert state is not None
    for p in state.processes:
        if p.kind != "service" or not any(p.name.startswith(f"{s}-") for s in services) or not p.pid:
            continue
        try:
            os.kill(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            now = read_state(run_dir)
            proc = now.process(p.name) if now else None
            if proc and proc.pid and proc.pid != p.pid and proc.ready:
                break
            if time.monotonic() > deadline:
                raise StackError(f"{p.name} did not come back ready within {timeout:.0f}s after the rollout")
            time.sleep(0.2)
