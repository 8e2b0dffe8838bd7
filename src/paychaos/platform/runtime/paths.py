"""Where paychaos keeps state: the run directory (per stack) and the download cache (per user)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

RUN_DIR_ENV = "PAYCHAOS_RUN_DIR"


@dataclass(frozen=True)
class RunDir:
    """The run directory: how `stack status`, `stack down`, fault drivers and `halt` find a stack."""

    root: Path

    @classmethod
    def default(cls) -> RunDir:
        return cls(Path(os.environ.get(RUN_DIR_ENV, ".paychaos/run")).expanduser().resolve())

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def topology_file(self) -> Path:
        return self.root / "topology.json"

    @property
    def supervisor_pid_file(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def zones_down(self) -> Path:
        """One empty file per zone held down; the supervisor does not restart replicas there."""
        return self.root / "zones-down"

    @property
    def held(self) -> Path:
        """One empty file per process held down (a Kafka node during a broker failure)."""
        return self.root / "held"

    def log_file(self, process: str) -> Path:
        return self.logs / f"{process}.log"

    def ensure(self) -> None:
        for d in (self.root, self.logs, self.data, self.config, self.zones_down, self.held):
            d.mkdir(parents=True, exist_ok=True)
