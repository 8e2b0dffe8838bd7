"""Money invariants: SQL that returns the violating rows, run through SQLAlchemy so the same
catalogue works on PostgreSQL and on MySQL-compatible ledgers (TiDB, Aurora)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine


@dataclass(frozen=True)
class InvariantResult:
    name: str
    violations: int
    sample: list[dict[str, object]]

    @property
    def holds(self) -> bool:
        return self.violations == 0


def engine_for(dsn: str) -> Engine:
    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1) if dsn.startswith("postgresql://") else dsn
    return create_engine(url, pool_pre_ping=True)


def check_invariants(
    engine: Engine,
    queries: dict[str, str],
    acknowledged: Iterable[tuple[str, str]] = (),
) -> list[InvariantResult]:
    """Run each invariant in one read transaction; ``acknowledged`` fills the temp table some need."""
    with engine.begin() as conn:
        return run_invariants(conn, queries, acknowledged)


def run_invariants(
    conn: Connection,
    queries: dict[str, str],
    acknowledged: Iterable[tuple[str, str]] = (),
) -> list[InvariantResult]:
    """The same, inside the caller's transaction (which also sees what it has written)."""
    conn.execute(text("CREATE TEMPORARY TABLE IF NOT EXISTS acknowledged (idempotency_key text, payment_id text)"))
    conn.execute(text("DELETE FROM acknowledged"))
    rows = [{"k": k, "p": p} for k, p in acknowledged]
    if rows:
        conn.execute(text("INSERT INTO acknowledged VALUES (:k, :p)"), rows)
    results = []
    for name, sql in queries.items():
        found = [dict(r._mapping) for r in conn.execute(text(sql))]
        results.append(InvariantResult(name, len(found), [_plain(r) for r in found[:5]]))
    return results


def _plain(row: dict[str, object]) -> dict[str, object]:
    return {k: (v if isinstance(v, (int, str, float, type(None))) else str(v)) for k, v in row.items()}
