"""The campaign's own tables (schema ``campaign``): precomputed aggregates, grants, processed events.

Each consumed event is applied in one transaction: dedupe record, Step progress, per-user flash
total, budget reservation and a *pending* grant row, which is sent to the ledger after commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from paychaos.platform.services import schemas
from paychaos.platform.services.campaign_rules import (
    PaymentEvent,
    cashback_transfer_id,
    counts_for_step,
    flash_grant,
    month_of,
)
from paychaos.platform.topology import CampaignSpec

Conn = AsyncConnection[TupleRow]


async def ensure_schema(pool: AsyncConnectionPool, campaign: CampaignSpec) -> None:
    """Create the schema (serialized across replicas) and the flash budget row if missing."""
    await schemas.ensure_schema(pool, "campaign_schema.sql")
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO campaign.budgets (campaign, budget, remaining) VALUES (%s, %s, %s)"
            " ON CONFLICT (campaign) DO NOTHING",
            (campaign.flash.name, campaign.flash.budget, campaign.flash.budget),
        )


@dataclass(frozen=True)
class Grant:
    transfer_id: str
    campaign: str
    payment_id: str
    user_id: str
    amount: int


@dataclass(frozen=True)
class Recorded:
    duplicate: bool
    grant: Grant | None = None


async def record_event(
    conn: Conn, event: PaymentEvent, campaign: CampaignSpec, *, dedupe: bool, suffix: str | None = None
) -> Recorded:
    """Apply one payment event to the aggregates in one transaction (the effect, not the ledger call)."""
    flash = campaign.flash
    async with conn.transaction():
        if dedupe:
            cur = await conn.execute(
                "INSERT INTO campaign.processed_events (payment_id, event_id) VALUES (%s, %s)"
                " ON CONFLICT (payment_id) DO NOTHING RETURNING payment_id",
                (event.payment_id, event.event_id),
            )
            if await cur.fetchone() is None:
                return Recorded(duplicate=True)
        await conn.execute(
            "INSERT INTO campaign.step_progress AS s (user_id, month, payments, value) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (user_id, month) DO UPDATE"
            " SET payments = s.payments + EXCLUDED.payments, value = s.value + EXCLUDED.value",
            (
                event.user_id,
                month_of(event.completed_at),
                int(counts_for_step(event.amount, campaign.step)),
                event.amount,
            ),
        )
        # Lock order is always user row, then budget row, so concurrent replicas cannot deadlock;
        # the budget row (hot) is locked last to hold it as briefly as possible.
        cur = await conn.execute(
            "INSERT INTO campaign.flash_users AS f (campaign, user_id) VALUES (%s, %s)"
            " ON CONFLICT (campaign, user_id) DO UPDATE SET granted = f.granted RETURNING granted",
            (flash.name, event.user_id),
        )
        (user_granted,) = await _one(cur)
        cur = await conn.execute(
            "SELECT remaining, exhausted FROM campaign.budgets WHERE campaign = %s FOR UPDATE", (flash.name,)
        )
        remaining, exhausted = await _one(cur)
        due = flash_grant(
            event.amount, flash, user_granted=user_granted, budget_remaining=remaining, exhausted=exhausted
        )
        if due.amount <= 0:
            return Recorded(duplicate=False)
        transfer_id = cashback_transfer_id(event.payment_id, suffix=suffix)
        grant = Grant(transfer_id, flash.name, event.payment_id, event.user_id, due.amount)
        await conn.execute(
            "UPDATE campaign.flash_users SET granted = granted + %s WHERE campaign = %s AND user_id = %s",
            (grant.amount, flash.name, event.user_id),
        )
        await conn.execute(
            "UPDATE campaign.budgets SET remaining = remaining - %s WHERE campaign = %s", (grant.amount, flash.name)
        )
        await conn.execute(
            "INSERT INTO campaign.grants (transfer_id, campaign, payment_id, user_id, amount, status)"
            " VALUES (%s, %s, %s, %s, %s, 'pending')",
            (grant.transfer_id, grant.campaign, grant.payment_id, grant.user_id, grant.amount),
        )
        return Recorded(duplicate=False, grant=grant)


async def mark_applied(conn: Conn, transfer_id: str) -> None:
    await conn.execute(
        "UPDATE campaign.grants SET status = 'applied', updated_at = now()"
        " WHERE transfer_id = %s AND status = 'pending'",
        (transfer_id,),
    )


async def mark_refused(conn: Conn, transfer_id: str) -> None:
    """The ledger refused for lack of budget: give the reservation back and stop granting."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE campaign.grants SET status = 'refused', updated_at = now()"
            " WHERE transfer_id = %s AND status = 'pending' RETURNING campaign, user_id, amount",
            (transfer_id,),
        )
        row = await cur.fetchone()
        if row is None:
            return
        campaign, user_id, amount = row
        await conn.execute(
            "UPDATE campaign.flash_users SET granted = granted - %s WHERE campaign = %s AND user_id = %s",
            (amount, campaign, user_id),
        )
        await conn.execute(
            "UPDATE campaign.budgets SET remaining = remaining + %s, exhausted = true,"
            " exhausted_at = coalesce(exhausted_at, now()) WHERE campaign = %s",
            (amount, campaign),
        )


async def mark_parked(conn: Conn, transfer_id: str) -> None:
    """The ledger refused for a reason retrying cannot fix: keep the grant for a human to resolve."""
    await conn.execute(
        "UPDATE campaign.grants SET status = 'parked', updated_at = now()"
        " WHERE transfer_id = %s AND status = 'pending'",
        (transfer_id,),
    )


async def pending_grants(conn: Conn, *, older_than_seconds: float, limit: int = 200) -> list[Grant]:
    """Grants committed but not yet confirmed by the ledger (the replica died, the ledger was down)."""
    cur = await conn.execute(
        "SELECT transfer_id, campaign, payment_id, user_id, amount FROM campaign.grants"
        " WHERE status = 'pending' AND created_at < now() - make_interval(secs => %s)"
        " ORDER BY created_at LIMIT %s",
        (older_than_seconds, limit),
    )
    return [Grant(*row) for row in await cur.fetchall()]


@dataclass(frozen=True)
class StatusRow:
    payments: int
    value: int
    granted: int
    budget_remaining: int
    budget_exhausted: bool


async def read_status(conn: Conn, campaign: CampaignSpec, user_id: str, moment: datetime) -> StatusRow:
    """One round trip over primary keys: the read path must stay cheap at ~10 reads per payment."""
    cur = await conn.execute(
        "SELECT coalesce(s.payments, 0), coalesce(s.value, 0), coalesce(f.granted, 0), b.remaining, b.exhausted"
        " FROM campaign.budgets b"
        " LEFT JOIN campaign.step_progress s ON s.user_id = %(user)s AND s.month = %(month)s"
        " LEFT JOIN campaign.flash_users f ON f.campaign = b.campaign AND f.user_id = %(user)s"
        " WHERE b.campaign = %(campaign)s",
        {"user": user_id, "month": month_of(moment), "campaign": campaign.flash.name},
    )
    return StatusRow(*await _one(cur))


async def _one(cur: AsyncCursor[TupleRow]) -> TupleRow:
    row = await cur.fetchone()
    if row is None:
        raise LookupError("expected a row; is the campaign schema initialised?")
    return row
