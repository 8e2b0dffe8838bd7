"""Cashback through Kafka: granted exactly once, visible in the status API, even when redelivered."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import psycopg
import pytest
from confluent_kafka import Producer

from paychaos.platform.services.campaign_store import mark_refused
from paychaos.platform.services.reaggregating import reaggregate

pytestmark = pytest.mark.integration


def cashback_transfers(stack, payment_id: str) -> int:
    return stack.scalar("SELECT count(*) FROM ledger.transfers WHERE kind = 'cashback' AND payment_id = %s", payment_id)


def test_cashback_arrives_exactly_once_and_status_shows_it(stack) -> None:
    user = stack.fresh_user()
    flash = stack.topology.campaign.flash
    with httpx.Client(timeout=15) as client:
        r = stack.pay(client, user, 1000, "balance")
        assert r.status_code == 201, r.text
        payment_id = r.json()["payment_id"]
        stack.wait_for("the cashback transfer", lambda: cashback_transfers(stack, payment_id) == 1)
        expected = min(1000 * flash.percent // 100, flash.per_payment_cap)
        amount = stack.scalar(
            "SELECT e.amount FROM ledger.entries e JOIN ledger.transfers t ON t.id = e.transfer_id "
            "WHERE t.kind = 'cashback' AND t.payment_id = %s AND e.account_id = %s",
            payment_id, f"wallet:{user}",
        )
        assert amount == expected

        def status() -> dict:
            s = client.get(f"{stack.edge}/v1/campaign/status", params={"user_id": user}, headers={"X-Device-Id": "d1"})
            assert s.status_code == 200, s.text
            return s.json()

        body = stack.wait_for("the status API to show the grant", lambda: (lambda b: b if b["flash"]["granted"] == expected else None)(status()))
        assert body["step"]["payments"] == 1 and body["step"]["value"] == 1000
        assert body["flash"]["user_cap_remaining"] == flash.per_user_cap - expected

        # Kafka delivers at least once: a redelivered event must not pay twice.
        payload = stack.scalar("SELECT payload FROM payment.outbox WHERE payload->>'payment_id' = %s", payment_id)
        event = payload if isinstance(payload, dict) else json.loads(payload)
        producer = Producer({"bootstrap.servers": stack.topology.bootstrap_servers, "acks": "all"})
        for _ in range(3):
            producer.produce("payments", key=user, value=json.dumps(event).encode())
        assert producer.flush(10) == 0
        stack.wait_for(
            "the duplicates to be consumed",
            lambda: sum(float(s["value"][1]) for s in stack.prometheus("campaign_duplicates_skipped_total")) >= 3,
        )
        assert cashback_transfers(stack, payment_id) == 1
        assert status()["flash"]["granted"] == expected


def test_reaggregation_reports_no_drift_on_a_healthy_stack(stack) -> None:
    with httpx.Client(timeout=60) as client:
        paid = stack.pay(client, stack.fresh_user(), 800, "balance")  # at least one user with something to recompute
        assert paid.status_code == 201, paid.text
        payment_id = paid.json()["payment_id"]
        stack.wait_for("the cashback transfer", lambda: cashback_transfers(stack, payment_id) == 1)
        r = client.post(f"{stack.topology.direct_internal_url('campaign')}/admin/reaggregate")
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["users_checked"] > 0
        assert report["drifted"] == []


def test_a_refused_grant_and_a_repair_at_once_do_not_deadlock(stack) -> None:
    """The repair locks the aggregate tables in one order; a refused grant's give-back writes
    three of them. Sequenced so that the give-back starts while the repair holds the first two
    and waits for the budget: had the give-back locked the grant first, each would hold a table
    the other waits for, and PostgreSQL would cancel one of them (deadlock detected)."""
    campaign = f"lock-order-{uuid.uuid4().hex[:8]}"  # rows of a campaign of its own: the real one is untouched
    user, transfer = stack.fresh_user(), f"lock-order-{uuid.uuid4().hex}"
    with psycopg.connect(stack.topology.postgres_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO campaign.budgets (campaign, budget, remaining) VALUES (%s, 1000, 900)", (campaign,))
        conn.execute("INSERT INTO campaign.flash_users (campaign, user_id, granted) VALUES (%s, %s, 100)", (campaign, user))
        conn.execute("INSERT INTO campaign.grants (transfer_id, campaign, payment_id, user_id, amount, status)"
                     " VALUES (%s, %s, %s, %s, 100, 'pending')", (transfer, campaign, transfer, user))

    async def until_waiting(probe: psycopg.AsyncConnection, pid: int, table: str, what: str) -> None:
        """Until ``pid`` waits for a lock on ``table`` (not any lock: the stack's consumer may
        hold one of the tables for a moment)."""
        for _ in range(200):
            cur = await probe.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted"
                                      " AND relation = %s::regclass", (pid, table))
            if (await cur.fetchone())[0] > 0:  # type: ignore[index]
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{what} never waited for {table}")

    async def run() -> None:
        dsn = stack.topology.postgres_dsn
        async with (await psycopg.AsyncConnection.connect(dsn, autocommit=True) as probe,
                    await psycopg.AsyncConnection.connect(dsn) as holder,
                    await psycopg.AsyncConnection.connect(dsn) as repairing,
                    await psycopg.AsyncConnection.connect(dsn) as refusing):
            await holder.execute("LOCK TABLE campaign.budgets IN ROW EXCLUSIVE MODE")  # the repair stops at budgets
            repair = asyncio.create_task(reaggregate(repairing, stack.topology.campaign, repair=True))
            await until_waiting(probe, repairing.info.backend_pid, "campaign.budgets", "the repair")
            refusal = asyncio.create_task(mark_refused(refusing, transfer))
            await until_waiting(probe, refusing.info.backend_pid, "campaign.flash_users", "the give-back")
            await holder.commit()
            await asyncio.wait_for(asyncio.gather(repair, refusal), 30)  # a deadlock raises here

    try:
        asyncio.run(run())
        assert stack.scalar("SELECT status FROM campaign.grants WHERE transfer_id = %s", transfer) == "refused"
        assert stack.scalar("SELECT granted FROM campaign.flash_users WHERE campaign = %s", campaign) == 0
        assert stack.sql("SELECT remaining, exhausted FROM campaign.budgets WHERE campaign = %s", campaign) == [(1000, True)]
    finally:
        with psycopg.connect(stack.topology.postgres_dsn, autocommit=True) as conn:
            for table in ("grants", "flash_users", "budgets"):
                conn.execute(f"DELETE FROM campaign.{table} WHERE campaign = %s", (campaign,))
