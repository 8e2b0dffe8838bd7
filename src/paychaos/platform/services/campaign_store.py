"""The campaign's own tables (schema ``campaign``): precomputed aggregates, grants, processed events.

Each batch of consumed events is applied in one transaction: dedupe records, Step progress,
per-user flash totals, the budget reservation and a *pending* grant row per cashback, each sent
to the ledger after commit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection, AsyncCursor
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from paychaos.platform.services import schemas
from paychaos.platform.services.campaign_rules import (
    PaymentEvent,
    cashback_transfer_id,
    grants_in_order,
    month_of,
    step_deltas,
)
from paychaos.platform.topology import CampaignSpec

Conn = AsyncConnection[TupleRow]

#: The aggregate tables in the order every writer locks them: a batch of events writes them in
#: this order, the repair locks all four in it, and anything else that writes several of them
#: locks them in it first, so no two of them can each hold a table the other waits for.
WRITE_ORDER = ("campaign.step_progress", "campaign.flash_users", "campaign.budgets", "campaign.grants")


def in_write_order(*tables: str) -> list[str]:
    """``tables`` sorted as WRITE_ORDER has them, to lock in that order; a table not in it is a bug."""
    unknown = sorted(set(tables) - set(WRITE_ORDER))
    if unknown:
        raise ValueError(f"not aggregate tables with a write order: {', '.join(unknown)}")
    return sorted(set(tables), key=WRITE_ORDER.index)


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
    applied: int  # events applied to the aggregates
    duplicates: int  # events recognised as delivered before (or twice in the batch) and skipped
    grants: list[Grant]  # reserved in the same transaction, to be booked in the ledger


async def record_events(
    conn: Conn, events: Sequence[PaymentEvent], campaign: CampaignSpec, *, dedupe: bool,
    suffix: Callable[[], str | None] = lambda: None,
) -> Recorded:
    """Apply a batch of payment events to the aggregates in one transaction (the effect, not the
    ledger calls): dedupe records, Step progress, per-user flash totals, the budget reservation
    and a *pending* grant per cashback. Seven round trips a batch, not seven an event: the
    consumer's database work was what kept a user's status seconds behind their payment.

    Rows are locked in one order by every replica (table by table, keys sorted, the hot budget
    row last and for the fewest round trips), so concurrent batches cannot deadlock."""
    flash = campaign.flash
    async with conn.transaction():
        if dedupe:
            event_ids: dict[str, str] = {}  # payment → the event id of its first delivery in the batch
            for event in events:
                event_ids.setdefault(event.payment_id, event.event_id)
            ids = sorted(event_ids)
            cur = await conn.execute(
                "INSERT INTO campaign.processed_events (payment_id, event_id)"
                " SELECT * FROM unnest(%s::text[], %s::text[])"
                " ON CONFLICT (payment_id) DO NOTHING RETURNING payment_id",
                (ids, [event_ids[i] for i in ids]),
            )
            new = {payment_id for (payment_id,) in await cur.fetchall()}
            fresh = []
            for event in events:  # each new payment once, at its first delivery in the batch
                if event.payment_id in new:
                    fresh.append(event)
                    new.discard(event.payment_id)
        else:
            fresh = list(events)
        if not fresh:
            return Recorded(applied=0, duplicates=len(events), grants=[])
        steps = step_deltas(fresh, campaign.step)
        keys = sorted(steps)
        await conn.execute(
            "INSERT INTO campaign.step_progress AS s (user_id, month, payments, value)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::int[], %s::bigint[])"
            " ON CONFLICT (user_id, month) DO UPDATE"
            " SET payments = s.payments + EXCLUDED.payments, value = s.value + EXCLUDED.value",
            ([u for u, _ in keys], [m for _, m in keys], [steps[k][0] for k in keys], [steps[k][1] for k in keys]),
        )
        cur = await conn.execute(
            "INSERT INTO campaign.flash_users AS f (campaign, user_id) SELECT %s, u FROM unnest(%s::text[]) AS u"
            " ON CONFLICT (campaign, user_id) DO UPDATE SET granted = f.granted RETURNING user_id, granted",
            (flash.name, sorted({e.user_id for e in fresh})),
        )
        user_granted = {user: int(granted) for user, granted in await cur.fetchall()}
        cur = await conn.execute(
            "SELECT remaining, exhausted FROM campaign.budgets WHERE campaign = %s FOR UPDATE", (flash.name,)
        )
        remaining, exhausted = await _one(cur)
        amounts = grants_in_order(fresh, flash, user_granted=user_granted, budget_remaining=remaining,
                                  exhausted=exhausted)
        grants = [Grant(cashback_transfer_id(e.payment_id, suffix=suffix()), flash.name, e.payment_id, e.user_id, amount)
                  for e, amount in zip(fresh, amounts, strict=True) if amount > 0]
        if grants:
            per_user = Counter[str]()
            for g in grants:
                per_user[g.user_id] += g.amount
            users = sorted(per_user)
            await conn.execute(
                "WITH users AS (UPDATE campaign.flash_users f SET granted = f.granted + d.amount"
                "   FROM unnest(%(users)s::text[], %(amounts)s::bigint[]) AS d(user_id, amount)"
                "   WHERE f.campaign = %(campaign)s AND f.user_id = d.user_id),"
                " budget AS (UPDATE campaign.budgets SET remaining = remaining - %(total)s"
                "   WHERE campaign = %(campaign)s)"
                " INSERT INTO campaign.grants (transfer_id, campaign, payment_id, user_id, amount, status)"
                " SELECT t, %(campaign)s, p, u, a, 'pending'"
                " FROM unnest(%(ids)s::text[], %(payments)s::text[], %(grantees)s::text[], %(granted)s::bigint[])"
                "   AS g(t, p, u, a)",
                {"users": users, "amounts": [per_user[u] for u in users], "campaign": flash.name,
                 "total": sum(per_user.values()), "ids": [g.transfer_id for g in grants],
                 "payments": [g.payment_id for g in grants], "grantees": [g.user_id for g in grants],
                 "granted": [g.amount for g in grants]},
            )
    return Recorded(applied=len(fresh), duplicates=len(events) - len(fresh), grants=grants)


async def mark_applied(conn: Conn, transfer_ids: Sequence[str]) -> None:
    await conn.execute(
        "UPDATE campaign.grants SET status = 'applied', updated_at = now()"
        " WHERE transfer_id = ANY(%s) AND status = 'pending'",
        (list(transfer_ids),),
    )


async def mark_refused(conn: Conn, transfer_id: str) -> None:
    """The ledger refused for lack of budget: give the reservation back and stop granting."""
    async with conn.transaction():
        # The tables in the order the consumer's batch and the repair (reaggregating.py) take
        # them. Updating the grant first would hold grants while waiting for flash_users, and a
        # repair holding flash_users while it waits for grants would deadlock with it.
        tables = in_write_order("campaign.grants", "campaign.flash_users", "campaign.budgets")
        await conn.execute(f"LOCK TABLE {', '.join(tables)} IN ROW EXCLUSIVE MODE")
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
