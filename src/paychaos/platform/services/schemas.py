"""Database plumbing shared by the services that own a schema: creation at startup, retried transactions.

Schema SQL ships beside the service module (``<service>_schema.sql``) and is idempotent; replicas
starting together serialize on an advisory lock, because concurrent ``CREATE ... IF NOT EXISTS``
can still collide in the catalog.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool, PoolTimeout

T = TypeVar("T")

# Conflicts the database resolves by aborting one side: running the transaction again is correct.
RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected, errors.LockNotAvailable)


async def ensure_schema(pool: AsyncConnectionPool, resource: str) -> None:
    """Run the packaged SQL file ``resource`` once per start, serialized across replicas."""
    sql = (resources.files("paychaos.platform.services") / resource).read_text(encoding="utf-8")
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"paychaos:schema:{resource}"])
        await conn.execute(sql)  # type: ignore[arg-type]  # trusted, packaged DDL


async def transaction(
    pool: AsyncConnectionPool,
    work: Callable[[AsyncConnection[Any]], Awaitable[T]],
    *,
    attempts: int = 8,
    one_statement: bool = False,
) -> T:
    """Run ``work`` in a transaction, again from scratch when the database aborts it for a conflict.

    ``one_statement``: ``work`` runs a single statement, which on the pools' autocommit
    connections is a transaction of its own; no BEGIN and COMMIT round trips around it."""
    for attempt in range(attempts):
        try:
            async with pool.connection() as conn:
                if one_statement:
                    return await work(conn)
                async with conn.transaction():
                    return await work(conn)
        except RETRYABLE:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
    raise AssertionError("unreachable")


#: How long a readiness check waits for the database's answer. The balancer gives a check 2 s
#: (its `inter`); a database that has not answered by then is slow, not gone.
READY_WAIT_SECONDS = 0.5


def database_readiness(pool: AsyncConnectionPool) -> Callable[[], Awaitable[bool]]:
    """A readiness check that fails only when this replica cannot reach its database.

    A database that is merely slow (every connection busy, or each answer late) is no reason to
    leave the balancer: every replica shares it, so all of them would leave at once and a
    brownout would become an outage. ledger-db-brownout found exactly that: with the ledger's
    database 1.5 s late, ``SELECT 1`` under a 1 s pool wait failed every ledger replica's check,
    the balancer took them all out twice in 30 s, and answered 933 ledger requests with its own 503.
    So the probe's ``SELECT 1`` is awaited for READY_WAIT_SECONDS and then left to finish in the
    background (cancelling a statement in flight would cost the pool its connection); the next
    check awaits the same probe. Only a connection that fails says "not ready". A probe that
    found no free connection says what the pool's own connection attempts since the last probe
    say: all failed, not ready; one succeeded, busy but reachable; none made, as the last probe
    said. A database that never answers at all looks slow here; the callers' timeouts judge it.
    """
    probe: asyncio.Task[bool] | None = None
    reachable = True
    attempts = failures = 0

    def attempts_since() -> tuple[int, int]:
        nonlocal attempts, failures
        stats = pool.get_stats()
        made, failed = stats.get("connections_num", 0), stats.get("connections_errors", 0)
        since = made - attempts, failed - failures
        attempts, failures = made, failed
        return since

    async def select_one() -> bool:
        nonlocal reachable
        answered: bool | None  # None: no free connection to ask with
        try:
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
            answered = True
        except PoolTimeout:
            answered = None
        except Exception:
            answered = False
        made, failed = attempts_since()
        if answered is None:
            answered = failed < made if made else reachable
        reachable = answered
        return reachable

    async def ready() -> bool:
        nonlocal probe
        if probe is None or probe.done():
            probe = asyncio.create_task(select_one())
        mine = probe  # a check arriving while this one waits may start the next probe
        done, _ = await asyncio.wait({mine}, timeout=READY_WAIT_SECONDS)
        return mine.result() if done else reachable

    return ready
