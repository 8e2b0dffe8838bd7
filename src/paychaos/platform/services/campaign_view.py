"""The campaign status read model: every user's aggregates in the replica's memory, kept current
by PostgreSQL notifications.

A status read is the platform's most frequent request (about ten per payment). Read from the
database, each cost the campaign replica a pooled connection and a round trip, and PostgreSQL
a query: a third of the replica's CPU per read. Here the consumer's writes announce themselves
(triggers in ``campaign_schema.sql``, on ``campaign_status``, at commit), and each replica
applies them to its copy, so a status read is a dictionary lookup.

The copy is served only while it is known to be current: loaded after ``LISTEN`` took effect,
with each row's version (stamped under the row's lock, so rising in commit order) deciding
between the snapshot and a notification of the same change, and the listening connection
checked every ``HEARTBEAT_SECONDS``. A transaction's changes are applied together (each names
its transaction), so a read never sees half of one, such as a re-aggregation's repair between
its deletes and its inserts. When the connection fails, or no check has succeeded for
``STALE_AFTER_SECONDS``, the database answers until a new copy is loaded: a status read is never
older than that, plus the time a notification takes to arrive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from paychaos.platform.services.campaign_store import StatusRow

log = logging.getLogger(__name__)

CHANNEL = "campaign_status"
HEARTBEAT_SECONDS = 1.0
CHECK_TIMEOUT_SECONDS = 2.0
#: A copy whose last good check is older than this is not served (a hung connection's cancelled
#: check can take far longer than its timeout to give up).
STALE_AFTER_SECONDS = HEARTBEAT_SECONDS + CHECK_TIMEOUT_SECONDS
#: A transaction's announcements arrive in one burst: this long without one, the burst is whole.
QUIET_SECONDS = 0.05
RECONNECT_SECONDS = 1.0


@dataclass
class Aggregates:
    """The copy itself, without I/O: rows by key, each with the version it was written at."""

    campaign: str
    step: dict[tuple[str, str], tuple[int, int, int]] = field(default_factory=dict)  # (user, month) → payments, value, version
    flash: dict[str, tuple[int, int]] = field(default_factory=dict)  # user → granted, version
    budget: dict[str, tuple[int, bool, int]] = field(default_factory=dict)  # this campaign → remaining, exhausted, version

    def apply(self, table: str, row: Mapping[str, Any], *, deleted: bool = False) -> None:
        """One row as a snapshot read it or a notification announced it; an older version of a
        row than the one held changes nothing (a change both in the snapshot and announced)."""
        version = int(row["version"])
        if table == "step_progress":
            key = (str(row["user_id"]), str(row["month"]))
            self._put(self.step, key, (int(row["payments"]), int(row["value"]), version), version, deleted)
        elif table == "flash_users" and row["campaign"] == self.campaign:
            self._put(self.flash, str(row["user_id"]), (int(row["granted"]), version), version, deleted)
        elif table == "budgets" and row["campaign"] == self.campaign:
            self._put(self.budget, self.campaign, (int(row["remaining"]), bool(row["exhausted"]), version), version, deleted)

    @staticmethod
    def _put(rows: dict[Any, Any], key: Any, value: tuple[Any, ...], version: int, deleted: bool) -> None:
        held = rows.get(key)
        if held is not None and version < held[-1]:
            return
        if deleted:
            rows.pop(key, None)
        else:
            rows[key] = value

    def apply_all(self, changes: list[dict[str, Any]]) -> None:
        """One transaction's announcements (as the trigger writes them), applied together."""
        for change in changes:
            self.apply(change["table"], change["row"], deleted=change["deleted"])

    def status(self, user_id: str, month: str) -> StatusRow | None:
        """The user's status row, as ``campaign_store.read_status`` would read it; None without a budget row."""
        if self.campaign not in self.budget:
            return None
        payments, value, _ = self.step.get((user_id, month), (0, 0, 0))
        granted, _ = self.flash.get(user_id, (0, 0))
        remaining, exhausted, _ = self.budget[self.campaign]
        return StatusRow(payments, value, granted, remaining, exhausted)


class Transactions:
    """Gathers the announcements of one transaction, so the copy takes them whole: those of a
    transaction arrive together and in order, so the first of another ends the one before."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []

    def add(self, change: dict[str, Any]) -> list[dict[str, Any]]:
        """Take one announcement; the transaction it ends (all of its changes), or []."""
        done: list[dict[str, Any]] = []
        if self.pending and self.pending[-1].get("tx") != change.get("tx"):
            done, self.pending = self.pending, []
        self.pending.append(change)
        return done

    def flush(self) -> list[dict[str, Any]]:
        """The transaction still gathering, once nothing more has come for a while."""
        done, self.pending = self.pending, []
        return done


class StatusView:
    """Keeps an :class:`Aggregates` current from its own connection; ``status`` answers from it
    while it is current, else None (the caller reads the database)."""

    def __init__(self, dsn: str, campaign: str) -> None:
        self.dsn = dsn
        self.campaign = campaign
        self._copy: Aggregates | None = None
        self._checked = 0.0  # monotonic time of the last check the connection answered

    def status(self, user_id: str, month: str) -> StatusRow | None:
        """The copy's answer while it is current (its last check under STALE_AFTER_SECONDS old), else None."""
        if self._copy is None or time.monotonic() - self._checked >= STALE_AFTER_SECONDS:
            return None
        return self._copy.status(user_id, month)

    async def run(self) -> None:
        """The background loop: connect, listen, load, follow; on any failure drop the copy and start over."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                what = "dropped" if self._copy is not None else "not loaded"
                log.warning("campaign status copy %s (%r); status reads go to the database", what, exc)
            finally:
                self._copy = None
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _follow(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, connect_timeout=5,
                                                     application_name="campaign-status-view")
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            copy = Aggregates(self.campaign)
            # After LISTEN: a change committed from here on is in the snapshot, announced, or both.
            for table, query in (
                ("step_progress", "SELECT user_id, month, payments, value, version FROM campaign.step_progress"),
                ("flash_users", "SELECT campaign, user_id, granted, version FROM campaign.flash_users"
                                " WHERE campaign = %(c)s"),
                ("budgets", "SELECT campaign, remaining, exhausted, version FROM campaign.budgets WHERE campaign = %(c)s"),
            ):
                cur = conn.cursor(row_factory=psycopg.rows.dict_row)
                await cur.execute(query, {"c": self.campaign})  # type: ignore[arg-type]
                for row in await cur.fetchall():
                    copy.apply(table, row)
            transactions = Transactions()
            checked = time.monotonic()
            while True:
                heard = False
                async for note in conn.notifies(timeout=QUIET_SECONDS):
                    heard = True
                    copy.apply_all(transactions.add(json.loads(note.payload)))
                if not heard:
                    copy.apply_all(transactions.flush())
                if time.monotonic() - checked < HEARTBEAT_SECONDS:
                    continue
                # Is the connection still there? (What is announced meanwhile waits in the
                # connection's backlog for the next notifies().)
                await asyncio.wait_for(conn.execute("SELECT 1"), CHECK_TIMEOUT_SECONDS)
                checked = self._checked = time.monotonic()
                if self._copy is None:
                    # Served from here: what was announced while the snapshot loaded (a change
                    # it may also hold, or one older than it) has been applied by now.
                    self._copy = copy
                    log.info("campaign status copy current: %d step rows, %d flash users", len(copy.step), len(copy.flash))
