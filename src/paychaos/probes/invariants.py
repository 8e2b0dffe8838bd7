"""Money invariants: SQL that returns the violating rows, run through SQLAlchemy so the same
catalogue works on PostgreSQL and on MySQL-compatible ledgers (TiDB, Aurora)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

#: Where the invariants find the ledger when it is not the reference platform's: a DSN
#: (``postgresql://…``, ``mysql+pymysql://…``), or the path of a file holding one (a mounted
#: Kubernetes secret). Never printed: errors name the ledger with the password hidden.
LEDGER_DSN_ENV = "PAYCHAOS_LEDGER_DSN"
LEDGER_DSN_FILE_ENV = "PAYCHAOS_LEDGER_DSN_FILE"


class LedgerUnavailable(Exception):
    """The ledger database cannot be reached or refuses us: one line, password hidden."""


def ledger_dsn(default: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The configured ledger DSN: the secret file, else the variable, else ``default`` (the
    target's own, such as the reference platform's from its topology)."""
    if path := environ.get(LEDGER_DSN_FILE_ENV):
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise LedgerUnavailable(f"{LEDGER_DSN_FILE_ENV}={path}: cannot read the ledger DSN ({exc.strerror})") from None
    dsn = environ.get(LEDGER_DSN_ENV) or default
    if not dsn:
        raise LedgerUnavailable(f"no ledger to check the money invariants against: set {LEDGER_DSN_FILE_ENV} or {LEDGER_DSN_ENV}")
    return dsn


def shown(dsn: str) -> str:
    """The DSN as it may be printed: the password replaced by ***."""
    try:
        return make_url(dsn).render_as_string(hide_password=True)
    except ArgumentError:
        return "(a DSN that is not a database URL)"


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
    try:
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ImportError) as exc:
        raise LedgerUnavailable(f"ledger DSN {shown(dsn)}: {exc}") from None


# What the app was told is final, from the load's record: (client's idempotency key, payment id,
# and optionally the user and the amount in yen it asked for).
Acknowledged = tuple[str, str] | tuple[str, str, str, int]


def check_invariants(
    engine: Engine,
    queries: dict[str, str],
    acknowledged: Iterable[Acknowledged] = (),
) -> list[InvariantResult]:
    """Run each invariant in one read transaction; ``acknowledged`` fills the temp table some need."""
    try:
        with engine.begin() as conn:
            return run_invariants(conn, queries, acknowledged)
    except DBAPIError as exc:
        operational = getattr(engine.dialect.loaded_dbapi, "OperationalError", None)
        if operational is None or not isinstance(exc.orig, operational):
            raise  # a broken query in the catalogue: its traceback names it
        first = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        raise LedgerUnavailable(f"ledger {engine.url.render_as_string(hide_password=True)} unreachable: {first}") from None


def run_invariants(
    conn: Connection,
    queries: dict[str, str],
    acknowledged: Iterable[Acknowledged] = (),
) -> list[InvariantResult]:
    """The same, inside the caller's transaction (which also sees what it has written)."""
    conn.execute(text("CREATE TEMPORARY TABLE IF NOT EXISTS acknowledged"
                      " (idempotency_key text, payment_id text, user_id text, amount bigint)"))
    conn.execute(text("DELETE FROM acknowledged"))
    rows = [{"k": a[0], "p": a[1], "u": a[2] if len(a) > 2 else None, "a": a[3] if len(a) > 3 else None}
            for a in acknowledged]
    if rows:
        conn.execute(text("INSERT INTO acknowledged VALUES (:k, :p, :u, :a)"), rows)
    results = []
    for name, sql in queries.items():
        found = [dict(r._mapping) for r in conn.execute(text(sql))]
        results.append(InvariantResult(name, len(found), [_plain(r) for r in found[:5]]))
    return results


def _plain(row: dict[str, object]) -> dict[str, object]:
    return {k: (v if isinstance(v, (int, str, float, type(None))) else str(v)) for k, v in row.items()}
