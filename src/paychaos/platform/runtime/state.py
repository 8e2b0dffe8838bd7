"""The stack's state as the supervisor records it in the run directory, for every other shell to read."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

import psutil
from pydantic import BaseModel

from paychaos.platform.runtime.paths import RunDir
from paychaos.processes import alive

Phase = Literal["starting", "ready", "stopping", "stopped", "failed"]


class ProcessState(BaseModel):
    name: str
    kind: str
    zone: str | None = None
    port: int | None = None
    pid: int | None = None
    create_time: float | None = None  # with the pid, tells our process from a reused pid
    ready: bool = False
    held: bool = False
    restarts: int = 0
    last_exit: int | None = None


class StackState(BaseModel):
    supervisor_pid: int
    phase: Phase
    message: str = ""
    started_at: float
    ready_at: float | None = None
    edge_url: str
    prometheus_url: str
    toxiproxy_url: str
    zones: list[str]
    zones_down: list[str] = []
    processes: list[ProcessState] = []

    def process(self, name: str) -> ProcessState | None:
        return next((p for p in self.processes if p.name == name), None)


def write_state(run_dir: RunDir, state: StackState) -> None:
    # Write-then-rename so a reader in another shell never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=run_dir.root, prefix=".state-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(state.model_dump_json(indent=2))
    os.replace(tmp, run_dir.state_file)


def read_state(run_dir: RunDir) -> StackState | None:
    try:
        return StackState.model_validate_json(run_dir.state_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, json.JSONDecodeError):
        return None


def supervisor_alive(run_dir: RunDir) -> int | None:
    """The pid of the live supervisor of this run directory, if there is one."""
    state = read_state(run_dir)
    if state is None:
        return None
    try:
        proc = psutil.Process(state.supervisor_pid)
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return None
    if "paychaos.platform.runtime.supervisor" in cmd and str(run_dir.root) in cmd:
        return state.supervisor_pid
    return None


def kill_leftovers(run_dir: RunDir, timeout: float = 10.0) -> list[str]:
    """Kill every process a dead run left behind (as recorded in its state); return their names."""
    state = read_state(run_dir)
    if state is None:
        return []
    victims: list[tuple[str, psutil.Process]] = []
    for p in state.processes:
        if alive(p.pid, p.create_time):
            try:
                victims.append((p.name, psutil.Process(p.pid)))  # type: ignore[arg-type]
            except psutil.Error:
                continue
    for _, proc in victims:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs([p for _, p in victims], timeout=timeout)
    for proc in still:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(still, timeout=5)
    return [name for name, _ in victims]


def marker_names(folder: Path) -> list[str]:
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
