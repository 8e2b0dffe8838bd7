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
from psycopg_pool import AsyncConnectionPool

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


async def database_ready(pool: AsyncConnectionPool) -> bool:
    try:
        async with pool.connection(timeout=1.0) as conn:
            await conn.execute("SELECT 1")
        return True
    except Exception:
        return False
