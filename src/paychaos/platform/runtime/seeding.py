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


def main() -> None:
    """``python -m paychaos.platform.runtime.seeding --topology FILE``: seed a platform that runs
    elsewhere (the reference platform's seed Job in a cluster)."""
    import argparse
    import json
    from pathlib import Path

    from paychaos.platform.topology import load_topology

    parser = argparse.ArgumentParser(prog="python -m paychaos.platform.runtime.seeding")
    parser.add_argument("--topology", type=Path, required=True, help="the topology YAML of the platform to seed")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the ledger")
    args = parser.parse_args()
    try:
        print(json.dumps(seed(load_topology(args.topology, port_offset=False), timeout=args.timeout)))
    except SeedingFailed as exc:
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    main()
