"""What every benchmark needs first: wrk on the PATH and a running stack (started here if none is)."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from paychaos.installing import MissingTool
from paychaos.platform.runtime import stacking
from paychaos.platform.runtime.paths import RunDir
from paychaos.platform.runtime.state import supervisor_alive
from paychaos.platform.topology import Topology


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("error: wrk is not installed: run `sudo apt-get install wrk`")


@contextmanager
def running_stack(topology_path: Path | None = None) -> Iterator[Topology]:
    """The stack of the default run dir; one started here is stopped again afterwards.
    ``topology_path`` asks for a stack of that topology, which must be started here."""
    run_dir = RunDir.default()
    started_here = not supervisor_alive(run_dir)
    if topology_path is not None and not started_here:
        raise SystemExit(f"error: a stack is running in {run_dir.root}; stop it (paychaos stack down) to measure another topology")
    if started_here:
        print(f"no stack running in {run_dir.root}; starting one", file=sys.stderr)
        t0 = time.monotonic()
        try:
            stacking.up(run_dir, topology_path, wait=True, progress=lambda m: print(f"  {m}", file=sys.stderr))
        except (MissingTool, stacking.StackError) as exc:
            raise SystemExit(f"error: {exc}") from None
        print(f"stack ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    try:
        yield stacking.current_topology(run_dir)
    finally:
        if started_here:
            stacking.down(run_dir)
