"""Readiness checks: the same two kinds Kubernetes probes have, a TCP connect and an HTTP GET."""

from __future__ import annotations

import socket

import httpx

from paychaos.platform.runtime.processes import HttpReady, TcpReady


class ReadinessChecker:
    """Checks with one pooled HTTP client: a new client per check costs more CPU than the check."""

    def __init__(self, timeout: float = 0.8) -> None:
        self.timeout = timeout
        self._http = httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=64))

    def close(self) -> None:
        self._http.close()

    def __call__(self, check: TcpReady | HttpReady) -> bool:
        if isinstance(check, TcpReady):
            try:
                with socket.create_connection((check.host, check.port), timeout=self.timeout):
                    return True
            except OSError:
                return False
        try:
            return self._http.get(check.url).is_success
        except httpx.HTTPError:
            return False
