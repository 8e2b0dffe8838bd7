"""Seeding: users with balances, merchants and the campaign budget, through the ledger's own API."""

from __future__ import annotations

import time

import httpx

from paychaos.platform.topology import Topology


class SeedingFailed(Exception):
    pass


def seed(topology: Topology, timeout: float = 60.0) -> dict[str, object]:
    """Ask the ledger to seed itself; idempotent, so a restarted stack keeps its money as it was."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = httpx.post(f"{topology.direct_internal_url('ledger')}/admin/seed", timeout=timeout)
            if response.is_success:
                return dict(response.json())
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise SeedingFailed(f"the ledger did not accept seeding within {timeout:.0f}s: {last}")
