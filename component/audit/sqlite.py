"""AFT_LOG in SQLite (the embedded default), through aiosqlite's worker thread."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiosqlite

from component.audit.base import AuditQuery, AuditRecord, naive_utc
from component.audit.sql import (
    SELECT_SQL,
    count_by_chat_type_sql,
    first_share_sql,
    insert_sql,
    record_values,
    row_to_record,
    where_clause,
)
from component.config import Config
from component.errors import AuditUnavailable

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS AFT_LOG (
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
);
CREATE INDEX IF NOT EXISTS AFT_LOG_JID ON AFT_LOG (JID, DATE_TIME);
CREATE INDEX IF NOT EXISTS AFT_LOG_TO_JID ON AFT_LOG (TO_JID, DATE_TIME);
CREATE INDEX IF NOT EXISTS AFT_LOG_DATE ON AFT_LOG (DATE_TIME);
CREATE INDEX IF NOT EXISTS AFT_LOG_FILENAME ON AFT_LOG (FILENAME);
"""
_INSERT = insert_sql("?")


def sqlite_path(url: str) -> Path:
    """``sqlite:///abs/path`` -> ``/abs/path``; ``sqlite://rel/path`` -> ``rel/path``."""
    parts = urlsplit(url)
    return Path(unquote(parts.netloc + parts.path))


def schema_script() -> str:
    """The DDL as ``deploy/sql/aft_log_sqlite.sql`` holds it (a test keeps the two equal)."""
    return (
        "-- AFT_LOG for SQLite, as component/audit_sqlite.py creates it when missing.\n"
        "-- sqlite3 /var/lib/mft/aft_log.sqlite3 < aft_log_sqlite.sql\n" + SCHEMA.lstrip("\n")
    )


def _sql_value(value: object) -> object:
    # Stored as ISO text ourselves: sqlite3's implicit datetime adapters are deprecated.
    return value.isoformat(sep=" ") if isinstance(value, datetime) else value


def record_params(rec: AuditRecord) -> tuple[object, ...]:
    """INSERT parameters for ``rec`` in column order (texts clipped to column sizes)."""
    return tuple(_sql_value(v) for v in record_values(rec))


class SqliteAuditLog:
    """AFT_LOG in a local SQLite file; a local file needs no spool."""

    def __init__(self, cfg: Config) -> None:
        self._path = sqlite_path(cfg.database.url)
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        """Open (creating the file and table if missing)."""
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self._path)
            await self._db.executescript("PRAGMA journal_mode=WAL;" + SCHEMA)
            await self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise AuditUnavailable(f"cannot open SQLite database {self._path}: {exc}") from exc

    async def close(self) -> None:
        """Close the database file."""
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> None:
        """Run a trivial query."""
        try:
            async with self._conn().execute("SELECT 1") as cur:
                await cur.fetchone()
        except sqlite3.Error as exc:
            raise AuditUnavailable() from exc

    async def server_version(self) -> str:
        """``SQLite 3.40.1``: the library this process links."""
        return f"SQLite {sqlite3.sqlite_version}"

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise AuditUnavailable("audit log is not open")
        return self._db

    async def record(self, rec: AuditRecord) -> None:
        """Insert and commit one row."""
        try:
            db = self._conn()
            await db.execute(_INSERT, record_params(rec))
            await db.commit()
        except sqlite3.Error as exc:
            log.error("AFT_LOG insert failed: %s", exc, exc_info=True)
            raise AuditUnavailable() from exc

    async def find_upload(self, resource: str) -> AuditRecord | None:
        """The newest POST row for ``resource``."""
        rows = await self._select(
            SELECT_SQL + " WHERE FILENAME = ? AND METHOD = 'POST' ORDER BY AFT_INDEX DESC LIMIT 1",
            [resource],
        )
        return rows[0] if rows else None

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
        db = self._conn()
        try:
            async with db.execute(
                "SELECT COUNT(*), COALESCE(SUM(FILE_SIZE), 0) FROM AFT_LOG" + where,
                tuple(_sql_value(p) for p in params),
            ) as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise AuditUnavailable() from exc
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def count_by_chat_type(self, since: datetime, node_id: str) -> dict[str, int]:
        """POST rows of ``node_id`` since ``since``, counted per CHAT_TYPE."""
        db = self._conn()
        params = (node_id, _sql_value(naive_utc(since)))
        try:
            async with db.execute(count_by_chat_type_sql("?"), params) as cur:
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise AuditUnavailable() from exc
        return {str(chat_type): int(n) for chat_type, n in rows}

    async def _select(self, sql: str, params: Sequence[object]) -> list[AuditRecord]:
        db = self._conn()
        try:
            async with db.execute(sql, tuple(_sql_value(p) for p in params)) as cur:
                return [row_to_record(r) for r in await cur.fetchall()]
        except sqlite3.Error as exc:
            raise AuditUnavailable() from exc
