"""Open-loop payment traffic for the tests that need more than one request at a time.

Arrivals are paced against the clock, as a noon herd arrives whatever the platform's answers,
and every answer is counted by status and error code, as the app would show it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import httpx

from .conftest import Stack

CARD_ARRIVALS_PER_S = 60  # open loop: the noon herd does not wait for earlier payments to finish
BALANCE_CLIENTS = 10
WARMUP, MEASURE = 3.0, 10.0
APP_PATIENCE = 3.0  # the app shows "try again" after this long; a user who waited that long saw a failure


async def mixed_load(
    stack: Stack,
    card_rate: float = CARD_ARRIVALS_PER_S,
    warmup: float = WARMUP,
    seconds: float = MEASURE,
    balance_clients: int = BALANCE_CLIENTS,
) -> dict[str, Counter]:
    """Card payments arrive at a fixed rate; after ``warmup`` s balance users join; outcomes per method."""
    outcomes: dict[str, Counter] = {"card": Counter(), "balance": Counter()}
    deadline = time.monotonic() + warmup + seconds
    limits = httpx.Limits(max_connections=400)
    async with httpx.AsyncClient(timeout=APP_PATIENCE, limits=limits) as client:

        async def pay(user: str, method: str) -> None:
            headers = {"Idempotency-Key": uuid.uuid4().hex, "X-Device-Id": f"device-{user}"}
            body = {"user_id": user, "merchant_id": "m002", "amount": 100, "method": method}
            try:
                r = await client.post(f"{stack.edge}/v1/payments", json=body, headers=headers)
                code = r.json().get("error", {}).get("code", "") if r.status_code >= 400 else ""
                outcomes[method][f"{r.status_code} {code}".strip()] += 1
            except httpx.TransportError as exc:
                outcomes[method][type(exc).__name__] += 1

        async def card_arrivals() -> None:
            # Paced against the clock, not by sleeping a fixed gap, so a busy event loop still
            # offers the full rate (it catches up instead of drifting).
            tasks, n, start = [], 0, time.monotonic()
            while time.monotonic() < deadline:
                due = start + n / card_rate
                while due <= time.monotonic():
                    tasks.append(asyncio.create_task(pay(f"u{1300 + n % 200:05d}", "card")))
                    n += 1
                    due = start + n / card_rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            await asyncio.gather(*tasks)

        async def balance_user(n: int) -> None:
            await asyncio.sleep(warmup)
            while time.monotonic() < deadline:
                await pay(f"u{1500 + n:05d}", "balance")
                await asyncio.sleep(0.2)  # think time

        await asyncio.gather(card_arrivals(), *(balance_user(i) for i in range(balance_clients)))
    return outcomes


def success_ratio(counter: Counter) -> float:
    total = sum(counter.values())
    return counter["201"] / total if total else 0.0
