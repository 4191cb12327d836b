"""What the SQL back-ends share: the WHERE clause of a query, INSERT and SELECT texts, and
the group-commit writer (:class:`GroupCommit`)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from component.audit.base import (
    COLUMNS,
    TEXT_LIMITS,
    AuditQuery,
    AuditRecord,
    AuditWriteFailed,
    bare_jid,
    field_of,
    naive_utc,
)
from component.errors import AuditUnavailable

# Rows per multi-row INSERT of the group-committing writer.
BATCH_ROWS = 200


class GroupCommit:
    """Rows recorded concurrently are written together, in call order, by up to
    ``writers`` tasks: one batch of at most :data:`BATCH_ROWS` per INSERT and COMMIT, so
    many small transfers do not each wait for a COMMIT (and its fsync) of their own.

    :param write: stores one batch, or raises :class:`AuditUnavailable` (an
        :class:`AuditWriteFailed` with ``maybe_index`` when the COMMIT's answer was lost),
        which every row of that batch then gets.
    """

    def __init__(
        self, write: Callable[[list[AuditRecord]], Awaitable[None]], *, writers: int = 1
    ) -> None:
        self._write = write
        self._max_writers = max(1, writers)
        self._queue: list[tuple[AuditRecord, asyncio.Future[None]]] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def record(self, rec: AuditRecord) -> None:
        """Queue ``rec``; return once its batch is committed.

        :raises AuditUnavailable: the batch was not (or may not have been) committed.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((rec, done))
        # Only running writers count: a finished one may not have left the set yet (its
        # done-callback runs later) and would leave this row waiting for nobody.
        if sum(not t.done() for t in self._writers) < self._max_writers:
            task = asyncio.create_task(self._drain(), name="AFT_LOG writer")
            self._writers.add(task)
            task.add_done_callback(self._writers.discard)
        await done

    async def finish(self, grace: float | None = None) -> None:
        """Let the writers finish what was recorded; cancel those still busy after
        ``grace`` seconds (their rows fail)."""
        writers = set(self._writers)
        if not writers:
            return
        _done, late = await asyncio.wait(writers, timeout=grace)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:BATCH_ROWS], self._queue[BATCH_ROWS:]
            try:
                await self._write([rec for rec, _ in batch])
            except AuditUnavailable as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(copy.copy(exc))  # one each: tracebacks stay apart
                continue
            except BaseException:
                for _, fut in batch + self._queue:
                    if not fut.done():
                        fut.set_exception(AuditWriteFailed("the AFT_LOG writer stopped"))
                self._queue = []
                raise
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)


def _like_escape(text: str) -> str:
    # '!' as the LIKE escape: both SQLite (no default escape) and MySQL accept ESCAPE '!'.
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def where_clause(q: AuditQuery, placeholder: str) -> tuple[str, list[object]]:
    """SQL ``WHERE ...`` (or ``''``) and its parameters for ``q``; both back-ends use it.

    JIDs are matched as bare JIDs: ``alice@example.com`` finds rows stored with that bare
    JID and with any of its full JIDs (``alice@example.com/phone``).
    """
    conds: list[str] = []
    params: list[object] = []
    for column, jid in (("JID", q.jid), ("TO_JID", q.to_jid)):
        if jid is not None:
            bare = bare_jid(jid)
            conds.append(f"({column} = {placeholder} OR {column} LIKE {placeholder} ESCAPE '!')")
            params += [bare, _like_escape(bare) + "/%"]
    for column, value in (
        ("METHOD", q.method),
        ("CHAT_TYPE", q.chat_type),
        ("FILENAME", q.filename),
    ):
        if value is not None:
            conds.append(f"{column} = {placeholder}")
            params.append(value)
    if q.since is not None:
        conds.append(f"DATE_TIME >= {placeholder}")
        params.append(naive_utc(q.since))
    if q.until is not None:
        conds.append(f"DATE_TIME < {placeholder}")
        params.append(naive_utc(q.until))
    if q.after_index is not None:
        conds.append(f"AFT_INDEX > {placeholder}")
        params.append(int(q.after_index))
    return (" WHERE " + " AND ".join(conds)) if conds else "", params


def insert_sql(placeholder: str) -> str:
    """``INSERT INTO AFT_LOG`` of every column but AFT_INDEX, in :data:`COLUMNS` order."""
    names = COLUMNS[1:]
    return (
        f"INSERT INTO AFT_LOG ({', '.join(names)}) VALUES ({', '.join([placeholder] * len(names))})"
    )


SELECT_SQL = f"SELECT {', '.join(COLUMNS)} FROM AFT_LOG"


def first_share_sql(placeholder: str) -> str:
    """The oldest SHARE row of one FILENAME (parameter: the resource name)."""
    return (
        SELECT_SQL + f" WHERE FILENAME = {placeholder} AND METHOD = 'SHARE'"
        " ORDER BY AFT_INDEX LIMIT 1"
    )


def upload_sql(placeholder: str) -> str:
    """The newest POST row of one FILENAME (parameter: the resource name)."""
    return (
        SELECT_SQL + f" WHERE FILENAME = {placeholder} AND METHOD = 'POST'"
        " ORDER BY AFT_INDEX DESC LIMIT 1"
    )


def upload_and_share_sql(placeholder: str) -> str:
    """The newest POST row and the oldest SHARE row of one FILENAME in one statement: a
    GET's two lookups in one round trip (parameters: the resource name, twice; MariaDB,
    not SQLite, which takes no parenthesised members in a compound SELECT)."""
    return f"({upload_sql(placeholder)}) UNION ALL ({first_share_sql(placeholder)})"


def upload_and_share_of(
    records: Sequence[AuditRecord],
) -> tuple[AuditRecord | None, AuditRecord | None]:
    """The rows of :func:`upload_and_share_sql` as
    :meth:`~component.audit.base.FindsUploadAndShare.find_upload_and_share` returns them:
    the POST row, and the SHARE row only when that POST row names no recipient."""
    up = next((r for r in records if r.method == "POST"), None)
    share = next((r for r in records if r.method == "SHARE"), None)
    return up, (share if up is not None and not up.to_jid else None)


def count_by_chat_type_sql(placeholder: str) -> str:
    """``SELECT CHAT_TYPE, COUNT(*)`` of POST rows by NODE_ID since DATE_TIME, grouped.

    Parameters: node id, then the start time (naive UTC). A range on the DATE_TIME
    index: one hour of rows is read, not the table.
    """
    return (
        "SELECT CHAT_TYPE, COUNT(*) FROM AFT_LOG WHERE METHOD = 'POST'"
        f" AND NODE_ID = {placeholder} AND DATE_TIME >= {placeholder} GROUP BY CHAT_TYPE"
    )


# Resource names per ``IN (...)`` list: far below SQLite's and MySQL's parameter limits.
IN_BATCH = 500


def uploaded_among_sql(placeholder: str, n: int) -> str:
    """``SELECT DISTINCT FILENAME`` of the POST rows among ``n`` resource names (``n``
    placeholders, at most :data:`IN_BATCH`)."""
    marks = ", ".join([placeholder] * n)
    return f"SELECT DISTINCT FILENAME FROM AFT_LOG WHERE METHOD = 'POST' AND FILENAME IN ({marks})"


def batches(items: Sequence[str]) -> list[Sequence[str]]:
    """``items`` in slices of :data:`IN_BATCH` (one query each; one for a quota check)."""
    return [items[i : i + IN_BATCH] for i in range(0, len(items), IN_BATCH)]


# (attribute, text limit or None) per :func:`insert_sql` column, worked out once.
_INSERT_FIELDS = tuple((field_of(c), TEXT_LIMITS.get(c)) for c in COLUMNS[1:])


def record_values(rec: AuditRecord) -> tuple[object, ...]:
    """:func:`insert_sql` parameters for ``rec`` (texts clipped to their column sizes,
    DATE_TIME naive UTC): ``rec.clipped().as_row()`` in column order, without building
    the two intermediate records and dict for every row."""
    values: list[object] = []
    for name, limit in _INSERT_FIELDS:
        value = getattr(rec, name)
        values.append(value[:limit] if limit is not None else value)
    return tuple(naive_utc(v) if isinstance(v, datetime) else v for v in values)


def row_to_record(row: Sequence[object]) -> AuditRecord:
    """A row in :data:`SELECT_SQL` column order -> :class:`AuditRecord` (DATE_TIME is UTC).

    Texts are strings (NULL, in columns added later, is empty); the numbers are ints.
    """
    by_column = dict(zip(COLUMNS, row, strict=True))
    dt = by_column["DATE_TIME"]
    if isinstance(dt, str):
        dt = datetime.fromisoformat(dt)
    if not isinstance(dt, datetime):
        raise TypeError(f"DATE_TIME is {type(dt).__name__}, not a timestamp")
    values: dict[str, Any] = {field_of(c): str(v or "") for c, v in by_column.items()}
    values["index"] = int(str(by_column["AFT_INDEX"]))
    values["file_size"] = int(str(by_column["FILE_SIZE"]))
    values["date_time"] = dt.replace(tzinfo=UTC)
    return AuditRecord(**values)
