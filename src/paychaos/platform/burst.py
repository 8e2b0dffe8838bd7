"""A short burst of real payments through the edge, summarised: what `paychaos demo` shows."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from statistics import quantiles

import httpx
import psycopg

from paychaos.platform.topology import Topology


@dataclass
class BurstSummary:
    payments: int
    seconds: float
    outcomes: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.payments / self.seconds if self.seconds else 0.0

    def percentile(self, p: int) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else 0.0
        return quantiles(self.latencies_ms, n=100, method="inclusive")[p - 1]


async def _burst(topology: Topology, count: int, concurrency: int) -> BurstSummary:
    summary = BurstSummary(payments=count, seconds=0.0)
    semaphore = asyncio.Semaphore(concurrency)
    users, merchants = topology.seed.users, topology.seed.merchants
    async with httpx.AsyncClient(base_url=topology.edge_url, timeout=30) as client:

        async def one(i: int) -> None:
            user = f"u{1 + i % users:05d}"
            body = {
                "user_id": user,
                "merchant_id": f"m{1 + i % merchants:03d}",
                "amount": 100 + (i * 53) % 2900,
                "method": "card" if i % 3 == 0 else "balance",
            }
            headers = {"Idempotency-Key": uuid.uuid4().hex, "X-Device-Id": f"device-{user}"}
            async with semaphore:
                started = time.perf_counter()
                try:
                    r = await client.post("/v1/payments", json=body, headers=headers)
                    outcome = str(r.status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                summary.latencies_ms.append((time.perf_counter() - started) * 1000)
                summary.outcomes[outcome] += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        summary.seconds = time.perf_counter() - started
    return summary


def run_burst(topology: Topology, count: int = 500, concurrency: int = 32) -> BurstSummary:
    return asyncio.run(_burst(topology, count, concurrency))


def ledger_totals(topology: Topology) -> dict[str, int]:
    """The money checks a person wants after a burst: does the ledger still balance?"""
    with psycopg.connect(topology.postgres_dsn, autocommit=True) as conn:
        total = conn.execute("SELECT coalesce(sum(amount), 0) FROM ledger.entries").fetchone()
        negative = conn.execute(
            "SELECT count(*) FROM ledger.accounts WHERE id LIKE 'wallet:%%' AND balance < 0"
        ).fetchone()
        entries = conn.execute("SELECT count(*) FROM ledger.entries").fetchone()
    assert total is not None and negative is not None and entries is not None
    return {"sum_of_entries": int(total[0]), "negative_wallets": int(negative[0]), "entries": int(entries[0])}
