"""What the supervisor needs to know to start, watch and stop one process of the stack."""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["service", "kafka", "postgres", "toxiproxy", "haproxy", "prometheus"]


@dataclass(frozen=True)
class TcpReady:
    """Ready once something accepts connections on host:port."""

    host: str
    port: int


@dataclass(frozen=True)
class HttpReady:
    """Ready once GET url answers 2xx."""

    url: str


@dataclass(frozen=True)
class ProcessSpec:
    name: str  # unique in the stack: "postgres", "kafka-2", "payment-az-a-1"
    kind: Kind
    argv: list[str]
    ready: TcpReady | HttpReady
    zone: str | None = None  # None for regional parts
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None  # run as this system user (PostgreSQL refuses root)
    stop_signal: int = signal.SIGTERM
    restart: bool = True  # the supervisor brings it back after a crash or a kill
