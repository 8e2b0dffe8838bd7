"""Batch re-aggregation: recompute the campaign's aggregates from the ledger and report drift.

It plays the nightly job that reads a ledger replica: per-user cashback and per-user monthly
payment counts/values from ``ledger.transfers``/``ledger.entries``, compared to (and optionally
written over) the precomputed aggregates the status API serves.
"""

from __future__ import annotations

from typing import Literal

import psycopg
from pydantic import BaseModel

from paychaos.platform.services.campaign_rules import CAMPAIGN_TZ_SQL
from paychaos.platform.services.campaign_store import WRITE_ORDER, Conn
from paychaos.platform.topology import CampaignSpec

CASHBACK_KIND = "cashback"

# A payment's value is the net credit to its merchant over all of its transfers (whatever the
# payment service calls its reserve/settle/refund steps), which holds for balance and card alike;
# it is dated by its first merchant credit. The payer is whichever of its transfers names a user.
LEDGER_STEP_SQL = f"""
WITH credited AS (
    SELECT t.payment_id, sum(e.amount) AS amount, min(t.created_at) AS paid_at
    FROM ledger.transfers t JOIN ledger.entries e ON e.transfer_id = t.id
    WHERE t.payment_id IS NOT NULL AND t.kind <> %(cashback)s AND e.account_id LIKE 'merchant:%%'
    GROUP BY t.payment_id
), payer AS (
    SELECT payment_id, min(user_id) AS user_id FROM ledger.transfers
    WHERE payment_id IS NOT NULL AND user_id IS NOT NULL
    GROUP BY payment_id
)
SELECT p.user_id, to_char(c.paid_at AT TIME ZONE '{CAMPAIGN_TZ_SQL}', 'YYYY-MM') AS month,
       count(*) FILTER (WHERE c.amount >= %(min_amount)s) AS payments, sum(c.amount) AS value
FROM credited c JOIN payer p USING (payment_id)
WHERE c.amount > 0
GROUP BY 1, 2
"""

# Pending grants whose transfer is not in the ledger yet (a booked one may still be marked pending).
UNCONFIRMED_GRANTS_SQL = """
SELECT g.user_id, sum(g.amount) FROM campaign.grants g
WHERE g.campaign = %(c)s AND g.status = 'pending'
  AND NOT EXISTS (SELECT 1 FROM ledger.transfers t WHERE t.id = g.transfer_id)
GROUP BY g.user_id
"""

LEDGER_CASHBACK_SQL = """
SELECT t.user_id, -sum(e.amount) FROM ledger.transfers t JOIN ledger.entries e ON e.transfer_id = t.id
WHERE t.kind = %(kind)s AND e.account_id = %(budget)s AND t.user_id IS NOT NULL
GROUP BY t.user_id
"""


class Drift(BaseModel):
    user_id: str
    month: str | None  # None for the campaign-wide cashback total
    field: Literal["payments", "value", "cashback"]
    aggregate: int
    ledger: int
    drift: int  # truth − aggregate; for cashback the truth includes grants not yet booked


class BudgetCheck(BaseModel):
    cached_remaining: int  # what the status API shows
    ledger_remaining: int  # the budget account's balance (Σ of its entries)
    unconfirmed: int  # reserved by pending grants the ledger has not booked yet


class DriftReport(BaseModel):
    users_checked: int
    drifted: list[Drift]
    max_drift_yen: int
    budget: BudgetCheck
    repaired: bool


async def reaggregate(conn: Conn, campaign: CampaignSpec, *, repair: bool = False) -> DriftReport:
    """Compare the aggregates with the ledger; with ``repair`` overwrite them with the ledger's truth.

    A user's cashback aggregate should equal what the ledger booked plus the grants reserved here
    but not booked yet; Step counts and values should equal the ledger's payment transfers.
    """
    flash = campaign.flash
    budget_account = f"budget:{flash.name}"
    async with conn.transaction():
        # One snapshot for the ledger and our tables, so a grant is either confirmed or pending.
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if repair:
            # Taken before the snapshot: consumers wait until the repair commits instead of racing it.
            await conn.execute(f"LOCK TABLE {', '.join(WRITE_ORDER)} IN SHARE ROW EXCLUSIVE MODE")
        ledger_step = {
            (u, m): (int(p), int(v))
            for u, m, p, v in await _all(
                conn, LEDGER_STEP_SQL, {"min_amount": campaign.step.min_amount, "cashback": CASHBACK_KIND}
            )
        }
        ledger_cashback = {
            u: int(v)
            for u, v in await _all(conn, LEDGER_CASHBACK_SQL, {"kind": CASHBACK_KIND, "budget": budget_account})
        }
        step = {
            (u, m): (int(p), int(v))
            for u, m, p, v in await _all(conn, "SELECT user_id, month, payments, value FROM campaign.step_progress", {})
        }
        granted = {
            u: int(g)
            for u, g in await _all(
                conn, "SELECT user_id, granted FROM campaign.flash_users WHERE campaign = %(c)s", {"c": flash.name}
            )
        }
        unconfirmed = {u: int(a) for u, a in await _all(conn, UNCONFIRMED_GRANTS_SQL, {"c": flash.name})}
        ((ledger_budget,),) = await _all(
            conn, "SELECT coalesce(sum(amount), 0) FROM ledger.entries WHERE account_id = %(a)s", {"a": budget_account}
        )
        ((cached_remaining,),) = await _all(
            conn, "SELECT remaining FROM campaign.budgets WHERE campaign = %(c)s", {"c": flash.name}
        )

        drifted: list[Drift] = []
        for user, month in sorted(set(step) | set(ledger_step)):
            ours, truth = step.get((user, month), (0, 0)), ledger_step.get((user, month), (0, 0))
            for name, a, t in (("payments", ours[0], truth[0]), ("value", ours[1], truth[1])):
                if a != t:
                    drifted.append(Drift(user_id=user, month=month, field=name, aggregate=a, ledger=t, drift=t - a))
        for user in sorted(set(granted) | set(ledger_cashback)):
            expected = ledger_cashback.get(user, 0) + unconfirmed.get(user, 0)
            if granted.get(user, 0) != expected:
                drifted.append(
                    Drift(
                        user_id=user,
                        month=None,
                        field="cashback",
                        aggregate=granted.get(user, 0),
                        ledger=ledger_cashback.get(user, 0),
                        drift=expected - granted.get(user, 0),
                    )
                )
        in_flight = sum(unconfirmed.values())
        budget_off = int(cached_remaining) != int(ledger_budget) - in_flight
        if repair and (drifted or budget_off):
            await _repair(conn, campaign, ledger_step, ledger_cashback, unconfirmed, int(ledger_budget))

    users = {u for u, _ in step} | {u for u, _ in ledger_step} | set(granted) | set(ledger_cashback)
    yen = [abs(d.drift) for d in drifted if d.field != "payments"]
    return DriftReport(
        users_checked=len(users),
        drifted=drifted,
        max_drift_yen=max(yen, default=0),
        budget=BudgetCheck(
            cached_remaining=int(cached_remaining), ledger_remaining=int(ledger_budget), unconfirmed=in_flight
        ),
        repaired=repair and (bool(drifted) or budget_off),
    )


async def reaggregate_at(dsn: str, campaign: CampaignSpec, *, repair: bool = False) -> DriftReport:
    """The same job on its own connection, for the CLI and probes."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        return await reaggregate(conn, campaign, repair=repair)


async def _repair(
    conn: Conn,
    campaign: CampaignSpec,
    ledger_step: dict[tuple[str, str], tuple[int, int]],
    ledger_cashback: dict[str, int],
    unconfirmed: dict[str, int],
    ledger_budget: int,
) -> None:
    name = campaign.flash.name
    await conn.execute("DELETE FROM campaign.step_progress")
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO campaign.step_progress (user_id, month, payments, value) VALUES (%s, %s, %s, %s)",
            [(u, m, p, v) for (u, m), (p, v) in ledger_step.items()],
        )
        await cur.execute("UPDATE campaign.flash_users SET granted = 0 WHERE campaign = %s", (name,))
        await cur.executemany(
            "INSERT INTO campaign.flash_users AS f (campaign, user_id, granted) VALUES (%s, %s, %s)"
            " ON CONFLICT (campaign, user_id) DO UPDATE SET granted = EXCLUDED.granted",
            [(name, u, ledger_cashback.get(u, 0) + unconfirmed.get(u, 0)) for u in {*ledger_cashback, *unconfirmed}],
        )
        await cur.execute(
            "UPDATE campaign.budgets SET remaining = %s WHERE campaign = %s",
            (ledger_budget - sum(unconfirmed.values()), name),
        )


async def _all(conn: Conn, sql: str, params: dict[str, object]) -> list[tuple[object, ...]]:
    cur = await conn.execute(sql, params)  # type: ignore[arg-type]  # module-level constant SQL
    return list(await cur.fetchall())
