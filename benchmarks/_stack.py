"""What every benchmark needs first: wrk on the PATH and a running stack (started here if none is)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from paychaos.installing import MissingTool
from paychaos.platform.runtime import stacking
from paychaos.platform.runtime.paths import RUN_DIR_ENV, RunDir
from paychaos.platform.runtime.state import supervisor_alive
from paychaos.platform.topology import Topology


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("error: wrk is not installed: run `sudo apt-get install wrk`")


@contextmanager
def running_stack(topology_path: Path | None = None) -> Iterator[Topology]:
    """The stack of the default run dir if one is running there; otherwise a fresh one, started
    here in a run dir of its own and stopped and removed afterwards. Fresh, because a run dir
    remembers: after enough payments its campaign budget is spent and its users are at their cap,
    and a payment there costs no cashback (and an experiment that checks cashback judges nothing).
    ``topology_path`` asks for a stack of that topology, which must be started here. Inside, the
    run dir is the default one for this process and the commands it starts (PAYCHAOS_RUN_DIR)."""
    run_dir = RunDir.default()
    if supervisor_alive(run_dir):
        if topology_path is not None:
            raise SystemExit(f"error: a stack is running in {run_dir.root}; stop it (paychaos stack down) to measure another topology")
        yield stacking.current_topology(run_dir)
        return
    fresh = RunDir(Path(tempfile.mkdtemp(prefix="paychaos-bench-run-")))
    print(f"no stack running in {run_dir.root}; starting a fresh one in {fresh.root} "
          f"(should this process die, stop it with `paychaos stack down --run-dir {fresh.root}`)", file=sys.stderr)
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(fresh.root)
    try:
        t0 = time.monotonic()
        try:
            stacking.up(fresh, topology_path, wait=True, progress=lambda m: print(f"  {m}", file=sys.stderr))
        except (MissingTool, stacking.StackError) as exc:
            raise SystemExit(f"error: {exc}") from None
        print(f"stack ready in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        yield stacking.current_topology(fresh)
    finally:
        try:
            stacking.down(fresh)
            shutil.rmtree(fresh.root, ignore_errors=True)  # kept if the stack would not stop
        finally:
            if previous is None:
                os.environ.pop(RUN_DIR_ENV, None)
            else:
                os.environ[RUN_DIR_ENV] = previous
