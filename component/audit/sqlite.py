"""AFT_LOG in SQLite (the embedded default), in a thread of its own (stdlib ``sqlite3``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from component.audit.base import COLUMNS, AuditQuery, AuditRecord, naive_utc
from component.audit.holds import SqlHolds
from component.audit.sql import (
    SELECT_SQL,
    GroupCommit,
    batches,
    count_by_chat_type_sql,
    first_share_sql,
    insert_sql,
    record_values,
    row_to_record,
    upload_sql,
    uploaded_among_sql,
    where_clause,
)
from component.config import Config
from component.errors import AuditUnavailable
from component.metrics import Metrics

log = logging.getLogger(__name__)

# Created before anything else: which migrations have run.
VERSION_TABLE = """CREATE TABLE IF NOT EXISTS AFT_SCHEMA_VERSION (
    VERSION    INTEGER NOT NULL PRIMARY KEY,
    APPLIED_AT TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)"""

# version -> statements, as component/audit/mysql_schema.py: append a version for every
# change, never edit one that has shipped. Version 1 is the table as it was before
# versioning (IF NOT EXISTS adopts such a database); version 2 adds the compliance
# columns (existing rows keep them empty) and the hold and purge tables.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE IF NOT EXISTS AFT_LOG (
    AFT_INDEX     INTEGER PRIMARY KEY AUTOINCREMENT,
    JID           VARCHAR(3071) NOT NULL DEFAULT '',
    TO_JID        VARCHAR(3071) NOT NULL DEFAULT '',
    METHOD        VARCHAR(63)   NOT NULL,
    FILENAME      VARCHAR(511)  NOT NULL,
    REAL_FILENAME VARCHAR(511)  NOT NULL DEFAULT '',
    FILE_TYPE     VARCHAR(10)   NOT NULL DEFAULT '',
    CHAT_TYPE     VARCHAR(10)   NOT NULL DEFAULT '',
    FILE_SERVER   VARCHAR(511)  NOT NULL DEFAULT '',
    FILE_SIZE     BIGINT        NOT NULL DEFAULT 0,
    DATE_TIME     TIMESTAMP     NOT NULL,
    NODE_ID       VARCHAR(128)  NOT NULL DEFAULT '',
    CLIENT_IP     VARCHAR(64)   NOT NULL DEFAULT ''
)""",
        "CREATE INDEX IF NOT EXISTS AFT_LOG_JID ON AFT_LOG (JID, DATE_TIME)",
        "CREATE INDEX IF NOT EXISTS AFT_LOG_TO_JID ON AFT_LOG (TO_JID, DATE_TIME)",
        "CREATE INDEX IF NOT EXISTS AFT_LOG_DATE ON AFT_LOG (DATE_TIME)",
        "CREATE INDEX IF NOT EXISTS AFT_LOG_FILENAME ON AFT_LOG (FILENAME)",
    ),
    2: (
        "ALTER TABLE AFT_LOG ADD COLUMN FILE_SHA256 VARCHAR(64) NOT NULL DEFAULT ''",
        "ALTER TABLE AFT_LOG ADD COLUMN SCAN_RESULT VARCHAR(255) NOT NULL DEFAULT ''",
        """CREATE TABLE IF NOT EXISTS AFT_HOLD (
    HOLD_ID        INTEGER PRIMARY KEY AUTOINCREMENT,
    HOLD_COLUMN    VARCHAR(10)   NOT NULL,
    HOLD_JID       VARCHAR(3071) NOT NULL,
    REASON         VARCHAR(1024) NOT NULL DEFAULT '',
    CREATED_AT     TIMESTAMP     NOT NULL,
    CREATED_BY     VARCHAR(255)  NOT NULL DEFAULT '',
    RELEASED_AT    TIMESTAMP     NULL DEFAULT NULL,
    RELEASED_BY    VARCHAR(255)  NOT NULL DEFAULT '',
    RELEASE_REASON VARCHAR(1024) NOT NULL DEFAULT ''
)""",
        """CREATE TABLE IF NOT EXISTS AFT_PURGED (
    FILENAME  VARCHAR(511) NOT NULL PRIMARY KEY,
    NODE_ID   VARCHAR(128) NOT NULL DEFAULT '',
    PURGED_AT TIMESTAMP    NOT NULL,
    PURGED_BY VARCHAR(255) NOT NULL DEFAULT ''
)""",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)
_INSERT = insert_sql("?")
# Seconds a statement waits for another process's write lock (the HTTP workers share
# the file); sqlite3's and aiosqlite's default.
SQLITE_TIMEOUT = 5.0
_T = TypeVar("_T")


def sqlite_path(url: str) -> Path:
    """``sqlite:///abs/path`` -> ``/abs/path``; ``sqlite://rel/path`` -> ``rel/path``."""
    parts = urlsplit(url)
    return Path(unquote(parts.netloc + parts.path))


def schema_script() -> str:
    """Every migration as one script: ``deploy/sql/aft_log_sqlite.sql`` (a test keeps
    the two equal). For a new, empty database; the service adopts it."""
    parts = [
        "-- AFT_LOG for SQLite, as component/audit/sqlite.py creates it when missing.",
        "-- sqlite3 /var/lib/mft/aft_log.sqlite3 < aft_log_sqlite.sql",
        "",
        VERSION_TABLE + ";",
    ]
    for version, statements in sorted(MIGRATIONS.items()):
        parts += ["", f"-- schema version {version}"]
        parts += [s + ";" for s in statements]
        parts.append(f"INSERT OR IGNORE INTO AFT_SCHEMA_VERSION (VERSION) VALUES ({version});")
    return "\n".join(parts) + "\n"


def migrate(db: sqlite3.Connection) -> None:
    """Create or migrate the tables to :data:`SCHEMA_VERSION`, one transaction each.

    ``BEGIN IMMEDIATE`` takes the write lock before the version is read, so two
    processes opening one file at once migrate it once. Runs in the database's thread.

    :raises sqlite3.Error: a migration failed (rolled back).
    """
    db.execute(VERSION_TABLE)
    db.commit()
    # An explicit transaction holds the DDL and the version row together (sqlite3 opens
    # none of its own before DDL, and commits nothing on its own while one is open).
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT COALESCE(MAX(VERSION), 0) FROM AFT_SCHEMA_VERSION").fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            log.warning(
                "AFT_LOG schema version %d is newer than this release's %d",
                current,
                SCHEMA_VERSION,
            )
        for version in sorted(v for v in MIGRATIONS if v > current):
            for statement in MIGRATIONS[version]:
                db.execute(statement)
            db.execute("INSERT INTO AFT_SCHEMA_VERSION (VERSION) VALUES (?)", (version,))
            log.info("AFT_LOG schema migrated to version %d", version)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _sql_value(value: object) -> object:
    # Stored as ISO text ourselves: sqlite3's implicit datetime adapters are deprecated.
    return value.isoformat(sep=" ") if isinstance(value, datetime) else value


def record_params(rec: AuditRecord) -> tuple[object, ...]:
    """INSERT parameters for ``rec`` in column order (texts clipped to column sizes)."""
    return tuple(_sql_value(v) for v in record_values(rec))


def _open(path: Path) -> sqlite3.Connection:
    """Connect, WAL with synchronous=FULL, migrate (in the database's thread)."""
    db = sqlite3.connect(path, timeout=SQLITE_TIMEOUT)
    try:
        # WAL with synchronous=FULL: every COMMIT fsyncs the WAL before it returns, so
        # a recorded row survives a crash or power loss (the README says so).
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def _write_rows(db: sqlite3.Connection, batch: list[AuditRecord]) -> None:
    """One ``executemany`` and one COMMIT for ``batch``, or nothing (rolled back)."""
    try:
        db.executemany(_INSERT, [record_params(r) for r in batch])
        db.commit()
    except sqlite3.Error:
        with contextlib.suppress(sqlite3.Error):
            db.rollback()
        raise


def _write_each(db: sqlite3.Connection, sql: str, rows: list[tuple[object, ...]]) -> int:
    """Run ``sql`` once per parameter row and commit; the last row id (or roll back)."""
    try:
        last = 0
        for params in rows:
            last = db.execute(sql, params).lastrowid or 0
        db.commit()
    except sqlite3.Error:
        with contextlib.suppress(sqlite3.Error):
            db.rollback()
        raise
    return last


def _fetch_all(db: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> list[Any]:
    return db.execute(sql, params).fetchall()


_UPLOAD_SQL = upload_sql("?")
_TO_JID = COLUMNS.index("TO_JID")


def _upload_and_share(db: sqlite3.Connection, resource: str) -> tuple[Any, Any]:
    """The newest POST row of ``resource`` and, if it has no TO_JID, the first SHARE row."""
    up = db.execute(_UPLOAD_SQL, (resource,)).fetchone()
    if up is None or up[_TO_JID]:
        return up, None
    return up, db.execute(first_share_sql("?"), (resource,)).fetchone()


class SqliteAuditLog(SqlHolds):
    """AFT_LOG in a local SQLite file; a local file needs no spool.

    The stdlib ``sqlite3`` connection lives in one thread of its own: every operation
    (a whole query with its rows, a whole batch with its COMMIT) is a single hop there
    and back, not one per cursor call.

    :param metrics: where failed operations are counted (``database_errors``), once each.
    """

    def __init__(self, cfg: Config, metrics: Metrics | None = None) -> None:
        self._path = sqlite_path(cfg.database.url)
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._metrics = metrics
        # One writer: SQLite has one connection, and one COMMIT at a time.
        self._commits = GroupCommit(self._write_batch)

    def _failed(self, text: str | None = None) -> AuditUnavailable:
        """Count one failed operation; the error to raise for it."""
        if self._metrics is not None:
            self._metrics.inc("database_errors")
        return AuditUnavailable(text)

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        """``fn(connection, *args)`` in the database's thread.

        :raises AuditUnavailable: the log is not open (counted).
        """
        db, thread = self._db, self._thread
        if db is None or thread is None:
            raise self._failed("audit log is not open")
        return await asyncio.get_running_loop().run_in_executor(thread, fn, db, *args)

    async def open(self) -> None:
        """Open (creating the file and table if missing)."""
        thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await asyncio.get_running_loop().run_in_executor(thread, _open, self._path)
        except (OSError, sqlite3.Error) as exc:
            thread.shutdown(wait=False)
            raise self._failed(f"cannot open SQLite database {self._path}: {exc}") from exc
        self._thread = thread

    async def close(self) -> None:
        """Let the writer finish what was recorded, then close the database file."""
        await self._commits.finish()
        db, thread = self._db, self._thread
        self._db = self._thread = None
        if db is not None and thread is not None:
            await asyncio.get_running_loop().run_in_executor(thread, db.close)
            thread.shutdown(wait=False)  # idle now: its thread ends on its own

    async def ping(self) -> None:
        """Run a trivial query."""
        await self._fetch("SELECT 1", [])

    async def server_version(self) -> str:
        """``SQLite 3.40.1``: the library this process links."""
        return f"SQLite {sqlite3.sqlite_version}"

    async def record(self, rec: AuditRecord) -> None:
        """Insert and commit one row; return once it is committed.

        Rows recorded concurrently are written together, in call order, by one writer
        task: one ``executemany`` and one COMMIT (one WAL fsync) per batch, in one hop
        to the database's thread — group commit, as on MariaDB — so many small
        transfers do not queue behind one fsync each.

        :raises AuditUnavailable: the row's batch was not committed.
        """
        if self._db is None:
            raise self._failed("audit log is not open")
        await self._commits.record(rec)

    async def _write_batch(self, batch: list[AuditRecord]) -> None:
        """One ``executemany`` and one COMMIT (one WAL fsync) for ``batch``.

        :raises AuditUnavailable: nothing of it was stored (rolled back).
        """
        try:
            await self._run(_write_rows, batch)  # closed: that failure counts itself
        except sqlite3.Error as exc:
            log.error("AFT_LOG insert failed: %s", exc, exc_info=True)
            raise self._failed() from exc  # one failed batch, counted once

    async def find_upload(self, resource: str) -> AuditRecord | None:
        """The newest POST row for ``resource``."""
        rows = await self._select(_UPLOAD_SQL, [resource])
        return rows[0] if rows else None

    async def find_upload_and_share(
        self, resource: str
    ) -> tuple[AuditRecord | None, AuditRecord | None]:
        """:meth:`find_upload`, and :meth:`find_first_share` when that row names no
        recipient, in one hop to the database's thread (a GET's two lookups)."""
        try:
            up, share = await self._run(_upload_and_share, resource)
        except sqlite3.Error as exc:
            raise self._failed() from exc
        return (
            row_to_record(up) if up is not None else None,
            row_to_record(share) if share is not None else None,
        )

    async def find_first_share(self, resource: str) -> AuditRecord | None:
        """The oldest SHARE row for ``resource``."""
        rows = await self._select(first_share_sql("?"), [resource])
        return rows[0] if rows else None

    async def query(self, q: AuditQuery) -> Sequence[AuditRecord]:
        """Rows matching ``q``, oldest first."""
        where, params = where_clause(q, "?")
        sql = SELECT_SQL + where + " ORDER BY AFT_INDEX"
        if q.limit:
            sql += f" LIMIT {int(q.limit)}"
        return await self._select(sql, params)

    async def count_uploads(self, jid: str, since: datetime) -> tuple[int, int]:
        """``(files, bytes)`` of POST rows by bare ``jid`` since ``since``."""
        where, params = where_clause(AuditQuery(jid=jid, method="POST", since=since), "?")
        rows = await self._fetch(
            "SELECT COUNT(*), COALESCE(SUM(FILE_SIZE), 0) FROM AFT_LOG" + where, params
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def uploaded_among(self, resources: Sequence[str]) -> set[str]:
        """Which of ``resources`` have a POST row (one query per :data:`IN_BATCH`)."""
        found: set[str] = set()
        for batch in batches(resources):
            rows = await self._fetch(uploaded_among_sql("?", len(batch)), batch)
            found.update(str(row[0]) for row in rows)
        return found

    async def count_by_chat_type(self, since: datetime, node_id: str) -> dict[str, int]:
        """POST rows of ``node_id`` since ``since``, counted per CHAT_TYPE."""
        rows = await self._fetch(count_by_chat_type_sql("?"), [node_id, naive_utc(since)])
        return {str(chat_type): int(n) for chat_type, n in rows}

    async def _select(self, sql: str, params: Sequence[object]) -> list[AuditRecord]:
        return [row_to_record(r) for r in await self._fetch(sql, params)]

    async def _write(self, sql: str, rows: Sequence[Sequence[object]]) -> int:
        """Run ``sql`` once per parameter row and commit; the last row id."""
        try:
            return await self._run(
                _write_each, sql, [tuple(_sql_value(p) for p in params) for params in rows]
            )
        except sqlite3.Error as exc:
            log.error("AFT_LOG write failed: %s", exc)
            raise self._failed() from exc

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[Any]:
        try:
            return await self._run(_fetch_all, sql, tuple(_sql_value(p) for p in params))
        except sqlite3.Error as exc:
            raise self._failed() from exc
