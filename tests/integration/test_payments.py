"""Payments end to end through the edge: one key, one charge; money is conserved under concurrency."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = pytest.mark.integration


def wallet(stack, client: httpx.Client, user: str) -> int:
    r = client.get(f"{stack.edge}/v1/wallets/{user}", headers={"X-Device-Id": f"device-{user}"})
    assert r.status_code == 200, r.text
    return int(r.json()["balance"])


def test_balance_payment_end_to_end(stack) -> None:
    with httpx.Client(timeout=15) as client:
        before = wallet(stack, client, "u00001")
        r = stack.pay(client, "u00001", 1200, "balance")
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["status"] == "completed" and body["amount"] == 1200
        assert wallet(stack, client, "u00001") <= before - 1200 + 240  # cashback may land meanwhile
        settle = stack.scalar(
            "SELECT count(*) FROM ledger.transfers WHERE payment_id = %s AND id LIKE 'pay:%%:settle' AND kind <> 'void'",
            body["payment_id"]
        )
        assert settle == 1


def test_card_payment_end_to_end(stack) -> None:
    with httpx.Client(timeout=15) as client:
        # ~2 % of authorizations are declined by the simulated card network; a declined one is
        # a valid, final answer, so try a few fresh payments until one is approved.
        for _ in range(10):
            r = stack.pay(client, "u00002", 800, "card")
            if r.status_code != 402:
                break
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["status"] == "completed" and body["method"] == "card"
        # The payment's own transfers: its cashback (a transfer of kind 'cashback' naming the same
        # payment) is granted asynchronously through Kafka and may already have landed.
        postings = stack.sql(
            "SELECT e.account_id, e.amount FROM ledger.entries e JOIN ledger.transfers t ON t.id = e.transfer_id "
            "WHERE t.payment_id = %s AND t.kind = 'payment' ORDER BY e.amount",
            body["payment_id"],
        )
        assert postings == [("acquirer:clearing", -800), ("merchant:m001", 800)]


def test_same_key_concurrently_and_repeatedly_charges_once(stack) -> None:
    key = f"dup-{uuid.uuid4().hex}"
    user = "u00003"
    with httpx.Client(timeout=30) as client:
        before = wallet(stack, client, user)
        with ThreadPoolExecutor(max_workers=20) as pool:
            responses = list(pool.map(lambda _: stack.pay(client, user, 700, "balance", key=key), range(20)))
        responses += [stack.pay(client, user, 700, "balance", key=key) for _ in range(5)]
        statuses = {r.status_code for r in responses}
        assert statuses == {201}, [(r.status_code, r.text) for r in responses if r.status_code != 201]
        assert len({r.json()["payment_id"] for r in responses}) == 1
        assert len({r.content for r in responses}) == 1  # the very same response, byte for byte
        payment_id = responses[0].json()["payment_id"]
        assert stack.scalar("SELECT count(*) FROM payment.payments WHERE idempotency_key = %s", key) == 1
        reserve = stack.scalar("SELECT count(*) FROM ledger.transfers WHERE id = %s", f"pay:{payment_id}:reserve")
        assert reserve == 1
        debits = stack.scalar(
            "SELECT -sum(amount) FROM ledger.entries WHERE account_id = %s AND transfer_id LIKE %s",
            f"wallet:{user}", f"pay:{payment_id}:%",
        )
        assert debits == 700
        # The same key with another amount is a client bug, refused rather than charged.
        other = stack.pay(client, user, 701, "balance", key=key)
        assert other.status_code == 409 and other.json()["error"]["code"] == "IDEMPOTENCY_KEY_REUSED"
        assert before - wallet(stack, client, user) in (700, 700 - 140)  # minus cashback, once


async def _pay_many(stack, count: int, concurrency: int) -> list[int]:
    limits = httpx.Limits(max_connections=concurrency)
    statuses: list[int] = []
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> None:
            user = f"u{100 + i % 800:05d}"
            method = "card" if i % 4 == 0 else "balance"
            key = uuid.uuid4().hex
            body = {"user_id": user, "merchant_id": f"m{1 + i % 50:03d}", "amount": 100 + (i * 37) % 4900, "method": method}
            headers = {"Idempotency-Key": key, "X-Device-Id": f"device-{user}", "X-User-Id": user}
            async with semaphore:
                for attempt in range(5):  # like the app: retry the same key on 5xx
                    try:
                        r = await client.post(f"{stack.edge}/v1/payments", json=body, headers=headers)
                    except httpx.TransportError:
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    if r.status_code < 500:
                        break
                    await asyncio.sleep(0.2 * (attempt + 1))
                statuses.append(r.status_code)

        await asyncio.gather(*(one(i) for i in range(count)))
    return statuses


def test_thousands_of_concurrent_payments_keep_the_ledger_balanced(stack) -> None:
    statuses = asyncio.run(_pay_many(stack, 2000, 48))
    assert statuses.count(201) > 1900, {s: statuses.count(s) for s in set(statuses)}
    assert stack.scalar("SELECT coalesce(sum(amount), 0) FROM ledger.entries") == 0
    mismatched = stack.sql(
        "SELECT a.id, a.balance, coalesce(sum(e.amount), 0) FROM ledger.accounts a "
        "LEFT JOIN ledger.entries e ON e.account_id = a.id GROUP BY a.id, a.balance "
        "HAVING a.balance <> coalesce(sum(e.amount), 0)"
    )
    assert mismatched == []
    assert stack.scalar("SELECT count(*) FROM ledger.accounts WHERE id LIKE 'wallet:%%' AND balance < 0") == 0
    # A payment whose settle went unanswered is compensated and may still be resolving (released,
    # resumed a second later) when the load ends: its settle is counted once it has ended.
    stack.wait_for("every payment to end",
                   lambda: stack.scalar("SELECT count(*) FROM payment.payments WHERE status = 'pending'") == 0, timeout=30)
    completed = stack.scalar("SELECT count(*) FROM payment.payments WHERE status = 'completed'")
    # A card payment's settle id that its compensation voided holds a void (no entries), not a settle.
    settled = stack.scalar("SELECT count(*) FROM ledger.transfers WHERE id LIKE 'pay:%%:settle' AND kind <> 'void'")
    assert completed == settled
