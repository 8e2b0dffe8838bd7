"""benchmarks/_database.py reads the stack's PostgreSQL: the statement times are there (the stack
preloads pg_stat_statements) and a row two backends queue on is named by its primary key."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def load_profiler():
    spec = importlib.util.spec_from_file_location("_database", ROOT / "benchmarks" / "_database.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_row_two_backends_queue_on_is_named_and_statements_are_timed(stack) -> None:
    db = load_profiler()
    dsn = stack.topology.postgres_dsn
    table = f"public.profile_probe_{uuid.uuid4().hex[:8]}"  # a table of its own: the ledger stays untouched
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, n int NOT NULL)")
        admin.execute(f"INSERT INTO {table} VALUES ('hot-row', 0), ('cold-row', 0)")
    profile = db.DatabaseProfile(dsn, interval=0.05)
    waiters: list[threading.Thread] = []
    try:
        with psycopg.connect(dsn) as holder:
            holder.execute(f"SELECT 1 FROM {table} WHERE id = 'hot-row' FOR UPDATE")
            profile.start()

            def wait_for_the_row() -> None:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 'hot-row'")

            # The first waiter waits on the holder's transaction; the second queues on the row itself.
            for _ in range(2):
                waiters.append(threading.Thread(target=wait_for_the_row))
                waiters[-1].start()
                time.sleep(0.3)
            time.sleep(0.5)
            holder.commit()
        for w in waiters:
            w.join(10)
        report = profile.stop(top=50)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP TABLE {table}")
    assert report.unavailable is None, report.unavailable
    assert report.samples >= 5
    assert report.rows and set(report.rows) == {f"{table.removeprefix('public.')} hot-row"}, report.rows
    assert report.waits["row lock"] >= 2, report.waits
    updates = [s for s in report.statements if s.query.startswith(f"UPDATE {table}")]
    assert updates and updates[0].calls == 2 and updates[0].toplevel, report.statements
    assert updates[0].milliseconds >= 300  # the waits are in its execution time
