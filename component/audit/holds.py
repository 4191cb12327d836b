"""SQL of legal holds and purge marks: the two tables next to AFT_LOG (schema version 2).

``AFT_HOLD``: one row per hold. A hold names a bare JID and the AFT_LOG column it
matches: ``JID`` (files that JID uploaded, ``mft hold add --jid``) or ``TO_JID`` (files
sent to that user or room, ``--to``). Adding and releasing are recorded with time, OS
user and reason; a released hold stays in the table (``mft hold list --all``).

``AFT_PURGED``: one row per file ``mft purge`` deleted (its resource name, node, time
and OS user), written before the file is deleted, so ``mft verify`` tells a purged file
from a missing one. AFT_LOG itself is never changed.

Holds and purge marks are written straight to the database, never spooled: every node
and every ``mft purge`` must see a hold the moment it is added, and a purge that cannot
reach the database does not delete anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

from component.audit.base import HOLD_COLUMNS, Hold, bare_jid, naive_utc
from component.audit.sql import batches

REASON_LIMIT = 1024
USER_LIMIT = 255

# SQL shared by the SQL back-ends (``placeholder`` is ``?`` or ``%s``).
HOLD_SELECT = (
    "SELECT HOLD_ID, HOLD_COLUMN, HOLD_JID, REASON, CREATED_AT, CREATED_BY,"
    " RELEASED_AT, RELEASED_BY, RELEASE_REASON FROM AFT_HOLD"
)


def hold_insert_sql(placeholder: str) -> str:
    """``INSERT INTO AFT_HOLD`` of a new hold; parameters from :func:`hold_values`."""
    marks = ", ".join([placeholder] * 5)
    return (
        "INSERT INTO AFT_HOLD (HOLD_COLUMN, HOLD_JID, REASON, CREATED_AT, CREATED_BY)"
        f" VALUES ({marks})"
    )


def hold_values(hold: Hold) -> tuple[object, ...]:
    """:func:`hold_insert_sql` parameters (JID bare, texts clipped, time naive UTC)."""
    if hold.column not in HOLD_COLUMNS:
        raise ValueError(f"a hold is on JID or TO_JID, not {hold.column!r}")
    return (
        hold.column,
        bare_jid(hold.jid)[:3071],
        hold.reason[:REASON_LIMIT],
        naive_utc(hold.created_at),
        hold.created_by[:USER_LIMIT],
    )


def hold_release_sql(placeholder: str) -> str:
    """``UPDATE AFT_HOLD`` releasing one active hold: time, user, reason, then the id."""
    p = placeholder
    return (
        f"UPDATE AFT_HOLD SET RELEASED_AT = {p}, RELEASED_BY = {p}, RELEASE_REASON = {p}"
        f" WHERE HOLD_ID = {p} AND RELEASED_AT IS NULL"
    )


def release_values(hold_id: int, by: str, reason: str, at: datetime) -> tuple[object, ...]:
    """:func:`hold_release_sql` parameters."""
    return (naive_utc(at), by[:USER_LIMIT], reason[:REASON_LIMIT], int(hold_id))


def _utc(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"a hold time is {type(value).__name__}, not a timestamp")
    return value.replace(tzinfo=UTC)


def row_to_hold(row: Sequence[object]) -> Hold:
    """A row in :data:`HOLD_SELECT` order -> :class:`Hold`."""
    created = _utc(row[4])
    column = str(row[1])
    if column not in HOLD_COLUMNS:
        raise ValueError(f"AFT_HOLD row {row[0]} holds column {column!r}")
    return Hold(
        hold_id=int(row[0]),  # type: ignore[call-overload]
        column=column,
        jid=str(row[2]),
        reason=str(row[3]),
        created_at=created if created else datetime.now(UTC),
        created_by=str(row[5]),
        released_at=_utc(row[6]),
        released_by=str(row[7]),
        release_reason=str(row[8]),
    )


def purged_insert_sql(placeholder: str, *, keep_first: str) -> str:
    """``INSERT`` of one purge mark (FILENAME, NODE_ID, PURGED_AT, PURGED_BY).

    :param keep_first: the back-end's clause that skips a duplicate without a warning
        (``ON CONFLICT DO NOTHING``, ``ON DUPLICATE KEY UPDATE FILENAME = FILENAME``):
        a file purged twice keeps its first mark.
    """
    marks = ", ".join([placeholder] * 4)
    return (
        "INSERT INTO AFT_PURGED (FILENAME, NODE_ID, PURGED_AT, PURGED_BY)"
        f" VALUES ({marks}) {keep_first}"
    )


def purged_select_sql(placeholder: str, n: int) -> str:
    """``SELECT FILENAME FROM AFT_PURGED WHERE FILENAME IN (...)`` for ``n`` names."""
    return f"SELECT FILENAME FROM AFT_PURGED WHERE FILENAME IN ({', '.join([placeholder] * n)})"


class SqlHolds:
    """The hold and purge-mark methods of :class:`~component.audit.base.AuditLog` for a
    SQL back-end that provides :meth:`_write` and :meth:`_fetch` (its own connection
    handling and error translation) and says how it spells parameters and duplicates."""

    PLACEHOLDER: ClassVar[str] = "?"
    KEEP_FIRST: ClassVar[str] = "ON CONFLICT DO NOTHING"  # SQLite and PostgreSQL

    def _sql(self, text: str) -> str:
        """``text`` in the back-end's parameter style (PostgreSQL numbers them)."""
        return text

    async def _write(self, sql: str, rows: Sequence[Sequence[object]]) -> int:
        """Run ``sql`` for every parameter row in one transaction; the last row id.

        :raises AuditUnavailable: nothing was committed.
        """
        raise NotImplementedError

    async def _fetch(self, sql: str, params: Sequence[object]) -> Sequence[Sequence[Any]]:
        """The rows of a query.

        :raises AuditUnavailable: the database did not answer.
        """
        raise NotImplementedError

    async def add_hold(self, hold: Hold) -> int:
        """Insert a hold; its id.

        :raises AuditUnavailable: the database did not take it.
        """
        return await self._write(self._sql(hold_insert_sql(self.PLACEHOLDER)), [hold_values(hold)])

    async def list_holds(self, *, include_released: bool = False) -> Sequence[Hold]:
        """Active (or all) holds, oldest first.

        :raises AuditUnavailable: the database did not answer.
        """
        where = "" if include_released else " WHERE RELEASED_AT IS NULL"
        return [
            row_to_hold(r) for r in await self._fetch(HOLD_SELECT + where + " ORDER BY HOLD_ID", [])
        ]

    async def release_hold(
        self, hold_id: int, *, by: str, reason: str = "", at: datetime | None = None
    ) -> Hold | None:
        """Release hold ``hold_id`` if active; the hold as stored, ``None`` if unknown.

        :raises AuditUnavailable: the database did not answer.
        """
        when = at or datetime.now(UTC)
        sql = self._sql(hold_release_sql(self.PLACEHOLDER))
        await self._write(sql, [release_values(hold_id, by, reason, when)])
        select = self._sql(f"{HOLD_SELECT} WHERE HOLD_ID = {self.PLACEHOLDER}")
        rows = await self._fetch(select, [int(hold_id)])
        return row_to_hold(rows[0]) if rows else None

    async def mark_purged(
        self, resources: Sequence[str], *, node_id: str, by: str, at: datetime | None = None
    ) -> None:
        """Record purge marks for ``resources`` in one transaction (a first mark stays).

        :raises AuditUnavailable: nothing was recorded.
        """
        if not resources:
            return
        when = naive_utc(at or datetime.now(UTC))
        sql = self._sql(purged_insert_sql(self.PLACEHOLDER, keep_first=self.KEEP_FIRST))
        await self._write(sql, [(r, node_id, when, by[:USER_LIMIT]) for r in resources])

    async def purged(self, resources: Sequence[str]) -> set[str]:
        """Which of ``resources`` have a purge mark.

        :raises AuditUnavailable: the database did not answer.
        """
        found: set[str] = set()
        for chunk in batches(resources):  # names per IN (...) query: sql.IN_BATCH
            sql = self._sql(purged_select_sql(self.PLACEHOLDER, len(chunk)))
            found.update(str(r[0]) for r in await self._fetch(sql, chunk))
        return found
