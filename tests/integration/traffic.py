"""Open-loop payment traffic for the tests that need more than one request at a time.

Arrivals are paced against the clock, as a noon herd arrives whatever the platform's answers,
and every answer is counted by status and error code, as the app would show it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx

from .conftest import Stack

CARD_ARRIVALS_PER_S = 60  # open loop: the noon herd does not wait for earlier payments to finish
BALANCE_CLIENTS = 10
WARMUP, MEASURE = 3.0, 10.0
APP_PATIENCE = 3.0  # the app shows "try again" after this long; a user who waited that long saw a failure
READY_WITHIN = 30.0  # seconds after the warm-up for ``ready`` to say so before the test fails


class Outcomes(dict[str, Counter]):
    """Answers per payment method (``"card"``, ``"balance"``), each counted by status and error
    code; ``measured`` is how long the balance users paid, in seconds."""

    measured: float = 0.0


async def mixed_load(
    stack: Stack,
    card_rate: float = CARD_ARRIVALS_PER_S,
    warmup: float = WARMUP,
    seconds: float = MEASURE,
    balance_clients: int = BALANCE_CLIENTS,
    ready: Callable[[httpx.AsyncClient], Awaitable[bool]] | None = None,
    enough_balance: int | None = None,
) -> Outcomes:
    """Card payments arrive at a fixed rate; after ``warmup`` s (and once ``ready`` says so, if
    given) balance users join for ``seconds``; outcomes per method.

    ``ready`` starts the measurement on what the test is about (e.g. every breaker open) rather
    than on a guess of how long that takes: on a busy machine it takes longer, and balance users
    who joined early would measure the warm-up instead. With ``enough_balance`` the measurement
    ends as soon as that many balance payments were answered (``seconds`` is then the longest it
    lasts): a probe that needs a number of requests gets them on a slow machine too.
    """
    outcomes = Outcomes(card=Counter(), balance=Counter())
    measuring = asyncio.Event()
    end = [float("inf")]
    began = [0.0]
    not_ready: list[str] = []
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

        async def start_measuring() -> None:
            await asyncio.sleep(warmup)
            give_up = time.monotonic() + READY_WITHIN
            while ready is not None and not await ready(client):
                if time.monotonic() > give_up:
                    not_ready.append(f"not ready {warmup + READY_WITHIN:.0f}s into the card traffic")
                    break
                await asyncio.sleep(0.1)
            began[0] = time.monotonic()
            end[0] = began[0] + (seconds if not not_ready else 0.0)
            measuring.set()

        async def card_arrivals() -> None:
            # Paced against the clock, not by sleeping a fixed gap, so a busy event loop still
            # offers the full rate (it catches up instead of drifting).
            tasks, n, start = [], 0, time.monotonic()
            while time.monotonic() < end[0]:
                due = start + n / card_rate
                while due <= time.monotonic():
                    tasks.append(asyncio.create_task(pay(f"u{1300 + n % 200:05d}", "card")))
                    n += 1
                    due = start + n / card_rate
                await asyncio.sleep(max(0.0, min(due, end[0]) - time.monotonic()))
            await asyncio.gather(*tasks)

        async def balance_user(n: int) -> None:
            await measuring.wait()
            while time.monotonic() < end[0]:
                await pay(f"u{1500 + n:05d}", "balance")
                if enough_balance is not None and sum(outcomes["balance"].values()) >= enough_balance:
                    end[0] = min(end[0], time.monotonic())
                await asyncio.sleep(0.2)  # think time

        await asyncio.gather(start_measuring(), card_arrivals(), *(balance_user(i) for i in range(balance_clients)))
    assert not not_ready, (not_ready, outcomes)
    outcomes.measured = end[0] - began[0]
    return outcomes


def breakers_open(stack: Stack) -> Callable[[httpx.AsyncClient], Awaitable[bool]]:
    """Whether every payment replica has reported its acquirer breaker OPEN, read from the
    replicas' own metrics (no scrape interval in between), for longer than the acquirer timeout.

    The wait matters: card calls the breaker let through before it opened still hold their
    workers until the acquirer timeout, and balance payments arriving at that moment would queue
    behind them and be judged as if the open breaker had not spared them."""
    drained = stack.topology.resilience.timeouts.acquirer.total_seconds() + 0.5
    since: float | None = None  # when every breaker was first seen open, this streak

    async def every_breaker_open(client: httpx.AsyncClient) -> bool:
        nonlocal since
        for replica in stack.topology.replicas_of("payment"):
            try:
                text = (await client.get(f"http://{stack.topology.host}:{replica.port}/metrics")).text
            except httpx.TransportError:
                since = None
                return False
            states = [line for line in text.splitlines()
                      if line.startswith("resilience4j_circuitbreaker_state{") and 'state="open"' in line]
            if not states or any(float(line.rsplit(" ", 1)[1]) != 1.0 for line in states):
                since = None
                return False
        since = time.monotonic() if since is None else since
        return time.monotonic() - since >= drained

    return every_breaker_open


def success_ratio(counter: Counter) -> float:
    total = sum(counter.values())
    return counter["201"] / total if total else 0.0


def pay_with_retries(stack: Stack, client: httpx.Client, user: str, amount: int, method: str = "balance") -> httpx.Response:
    """What the app does: the same idempotency key again on a 5xx or a broken connection."""
    key = uuid.uuid4().hex
    for attempt in range(12):
        try:
            r = stack.pay(client, user, amount, method, key=key)
        except httpx.TransportError:
            time.sleep(0.25 * (attempt + 1))
            continue
        # 409 PAYMENT_IN_PROGRESS: a killed replica's payment waits for the recovery loop to resume it.
        if r.status_code < 500 and r.status_code != 409:
            return r
        time.sleep(0.25 * (attempt + 1))
    return r
