"""What PostgreSQL did during a benchmark run: time by statement and what its backends waited on.

Two sources, both PostgreSQL's own:
- ``pg_stat_statements`` (reset when the run starts): execution time and calls by normalised
  statement, nested ones included (``track = all``: the statements inside ``ledger.apply_transfer``
  show beside the call that ran them, marked as nested).
- ``pg_stat_activity``, sampled every ``interval`` seconds while the run lasts: for each busy
  client backend, the wait it was in (none is on CPU or runnable; ``Lock`` is a row or table lock;
  ``LWLock:WALWrite`` and ``IO:WalSync`` wait for a commit's flush; ``Client`` waits for the
  service's next message). A backend queued behind another on one row waits on a tuple lock, which
  names the row: those rows are counted by table and primary key. The first waiter on a row waits
  on the holder's transaction id and names no row.

The sampler's own query runs on one connection ten times a second; its cost is in the figures.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

import psycopg

#: The primary key of the row at ``t`` in ``rel``, looked up in the same statement that found the
#: lock: the holder commits within milliseconds and the row version it locked is then gone.
ROW_KEY_FUNCTION = """
CREATE FUNCTION pg_temp.row_key(rel regclass, t tid) RETURNS text LANGUAGE plpgsql AS $$
DECLARE cols text; k text;
BEGIN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY array_position(i.indkey::int2[], a.attnum)) INTO cols
    FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
    WHERE i.indrelid = rel AND i.indisprimary;
    IF cols IS NULL THEN RETURN 'ctid ' || t; END IF;
    EXECUTE format('SELECT concat_ws('','', %s) FROM %s WHERE ctid = $1', cols, rel) INTO k USING t;
    RETURN coalesce(k, 'a row since updated');
END $$
"""

ACTIVITY_SQL = """
SELECT coalesce(a.wait_event_type || ':' || a.wait_event, 'on CPU') AS wait,
       l.relation::regclass::text || ' ' || pg_temp.row_key(l.relation, format('(%s,%s)', l.page, l.tuple)::tid) AS row
FROM pg_stat_activity a
LEFT JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted AND l.locktype = 'tuple'
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
WHERE a.state = 'active' AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
"""

STATEMENTS_SQL = """
SELECT query, calls, total_exec_time, toplevel
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = current_database() AND query NOT ILIKE '%%pg_stat_%%'
ORDER BY total_exec_time DESC LIMIT %s
"""

#: Wait events grouped as a reader asks about them.
WAIT_CLASSES = {
    "on CPU": "on CPU or runnable",
    "LWLock:WALWrite": "commit flush (WAL)",
    "IO:WalSync": "commit flush (WAL)",
    "IO:WalWrite": "commit flush (WAL)",
    "Lock:transactionid": "row lock",
    "Lock:tuple": "row lock",
}


@dataclass
class Statement:
    query: str
    calls: int
    milliseconds: float
    toplevel: bool


@dataclass
class DatabaseReport:
    samples: int = 0  # pg_stat_activity samples taken
    waits: Counter[str] = field(default_factory=Counter)  # busy backends seen, by wait class
    rows: Counter[str] = field(default_factory=Counter)  # queued-on rows, "table key"
    statements: list[Statement] = field(default_factory=list)
    unavailable: str | None = None  # why there is no statement breakdown
    sampling_failed: str | None = None  # why the wait samples stopped early


def wait_class(event: str) -> str:
    if event in WAIT_CLASSES:
        return WAIT_CLASSES[event]
    kind = event.split(":", 1)[0]
    return {"Lock": "table or other lock", "Client": "waiting for the service", "LWLock": "internal lock",
            "IO": "disk"}.get(kind, event)


class DatabaseProfile:
    """Start before a run, stop after it: ``stop()`` returns what PostgreSQL did in between."""

    def __init__(self, dsn: str, interval: float = 0.1) -> None:
        self.dsn, self.interval = dsn, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._report = DatabaseReport()

    def start(self) -> None:
        self._report, self._stop = DatabaseReport(), threading.Event()
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                conn.execute("SELECT pg_stat_statements_reset()")
        except psycopg.Error as exc:
            # A stack whose PostgreSQL does not preload the library: the waits are still sampled.
            self._report.unavailable = str(exc).strip().splitlines()[0]
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self, top: int = 8) -> DatabaseReport:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)  # a sample stuck behind a lock must not hang the benchmark
            self._thread = None
        if self._report.unavailable is None:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                self._report.statements = [
                    Statement(" ".join(q.split()), int(calls), float(ms), bool(toplevel))
                    for q, calls, ms, toplevel in conn.execute(STATEMENTS_SQL, (top,)).fetchall()
                ]
        return self._report

    def _sample(self) -> None:
        stop, report = self._stop, self._report  # this run's: a later start() gets its own
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(ROW_KEY_FUNCTION)
                while not stop.wait(self.interval):
                    rows = conn.execute(ACTIVITY_SQL).fetchall()
                    report.samples += 1
                    for wait, row in rows:
                        report.waits[wait_class(wait)] += 1
                        if row is not None:
                            report.rows[row] += 1
        except psycopg.Error as exc:  # the samples so far stand; the report says why they stopped
            report.sampling_failed = str(exc).strip().splitlines()[0]


def print_database(name: str, report: DatabaseReport, requests: int) -> None:
    """The run's database profile: busy backends by wait, the rows they queued on, and the
    statements that took the most time, per request of the run."""
    busy = sum(report.waits.values())
    print(f"PostgreSQL during {name}: {busy / max(report.samples, 1):.1f} busy backends on average "
          f"({report.samples} samples)")
    if busy:
        print("  " + ", ".join(f"{kind} {100 * n / busy:.0f} %" for kind, n in report.waits.most_common()))
    if report.sampling_failed:
        print(f"  the wait samples stopped early: {report.sampling_failed}")
    if report.rows:
        print("  queued on rows: " + ", ".join(f"{row} ({n})" for row, n in report.rows.most_common(4)))
    if report.unavailable:
        print(f"  no statement breakdown: {report.unavailable}")
        return
    if not requests:
        return
    print(f"  {'ms/request':>10} {'calls/req':>9} {'mean ms':>8}  statement (nested: run inside another)")
    for s in report.statements:
        mean = s.milliseconds / s.calls if s.calls else 0.0
        nested = "" if s.toplevel else "nested: "
        print(f"  {s.milliseconds / requests:>10.3f} {s.calls / requests:>9.2f} {mean:>8.3f}  {nested}{s.query[:90]}")
