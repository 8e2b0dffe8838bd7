"""A run that died leaves processes behind; the next `stack up` (or `stack down`) kills exactly those."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.state import ProcessState, StackState, kill_leftovers, write_state

pytestmark = pytest.mark.integration


def test_leftovers_of_a_dead_run_are_killed_and_strangers_are_not(tmp_path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.ensure()
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        recorded = ProcessState(
            name="payment-az-a-1", kind="service", pid=ours.pid, create_time=psutil.Process(ours.pid).create_time()
        )
        # A pid that was ours once but now belongs to another process (pid reuse) must be spared.
        reused = ProcessState(name="ledger-az-a-1", kind="service", pid=stranger.pid, create_time=1.0)
        write_state(run_dir, StackState(
            supervisor_pid=999999, phase="ready", started_at=0.0, edge_url="", prometheus_url="",
            toxiproxy_url="", zones=["az-a"], processes=[recorded, reused],
        ))
        killed = kill_leftovers(run_dir, timeout=5)
        assert killed == ["payment-az-a-1"]
        assert ours.wait(5) is not None
        assert stranger.poll() is None
    finally:
        for proc in (ours, stranger):
            proc.kill()
            proc.wait()
