"""Readiness checks: the same two kinds Kubernetes probes have, a TCP connect and an HTTP GET."""

from __future__ import annotations

import socket

import httpx

from paychaos.platform.runtime.processes import HttpReady, TcpReady


def is_ready(check: TcpReady | HttpReady, timeout: float = 0.8) -> bool:
    if isinstance(check, TcpReady):
        try:
            with socket.create_connection((check.host, check.port), timeout=timeout):
                return True
        except OSError:
            return False
    try:
        return httpx.get(check.url, timeout=timeout).is_success
    except httpx.HTTPError:
        return False
