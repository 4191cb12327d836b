"""AFT_LOG in MariaDB/MySQL through an aiomysql connection pool.

``[database] url = "mysql://user:pw@host:port/db"`` (credentials percent-encoded) or
``mysql://user:pw@localhost/db?unix_socket=/run/mysqld/mysqld.sock``. Tables are created
and migrated on :meth:`MysqlAuditLog.open` from
:data:`~component.audit.mysql_schema.MIGRATIONS`, the one source of the DDL
(``deploy/sql/aft_log_mysql.sql`` is its ``schema_script()``; a test keeps them equal).
Every pymysql/aiomysql error is translated to :class:`~component.errors.AuditUnavailable`
here, at the boundary. Sessions run in UTC (``time_zone = '+00:00'``), so TIMESTAMP
values are UTC whatever the server's zone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiomysql
import pymysql

from component.audit.base import AuditQuery, AuditRecord, AuditWriteFailed, naive_utc
from component.audit.holds import SqlHolds
from component.audit.mysql_schema import MIGRATIONS, SCHEMA_VERSION, VERSION_TABLE, schema_script
from component.audit.spool import SpoolEntry
from component.audit.sql import (
    SELECT_SQL,
    GroupCommit,
    batches,
    count_by_chat_type_sql,
    first_share_sql,
    insert_sql,
    record_values,
    row_to_record,
    upload_and_share_of,
    upload_and_share_sql,
    upload_sql,
    uploaded_among_sql,
    where_clause,
)
from component.config import Config
from component.dburl import parse_mysql_url
from component.errors import AuditUnavailable
from component.metrics import Metrics

log = logging.getLogger(__name__)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "MysqlAuditLog", "parse_mysql_url", "schema_script"]

# What a lost server, a dropped connection or a bounded wait raise through aiomysql.
DB_ERRORS: tuple[type[BaseException], ...] = (pymysql.err.Error, OSError, EOFError, TimeoutError)

SCHEMA_LOCK = "mft AFT_LOG schema"
# Batches of direct inserts in flight at once (each on its own pooled connection).
MAX_WRITERS = 4

_INSERT = insert_sql("%s")
# Delivered ids are only needed while the spool may still hold their rows.
_PRUNE_DELIVERED = "DELETE FROM AFT_SPOOL_DELIVERED WHERE DELIVERED_AT < NOW(6) - INTERVAL 30 DAY"


class MysqlAuditLog(SqlHolds):
    """AFT_LOG in MariaDB/MySQL. Used alone by read-only tools; the service wraps it in
    :class:`~component.audit.spooled.SpooledAuditLog`, which calls :meth:`deliver`."""

    PLACEHOLDER = "%s"
    KEEP_FIRST = "ON DUPLICATE KEY UPDATE FILENAME = FILENAME"  # INSERT IGNORE would warn

    def __init__(self, cfg: Config, metrics: Metrics | None = None) -> None:
        self._target = parse_mysql_url(cfg.database.url)
        self._safe_url = cfg.database.safe_url
        self._pool_size = cfg.database.pool_size
        self._connect_timeout = cfg.database.connect_timeout
        self._query_timeout = cfg.database.query_timeout
        self._metrics = metrics
        self._pool: aiomysql.Pool | None = None
        # A few batches in flight at once (on separate connections): a row arriving while
        # one COMMIT is being flushed need not wait for it; InnoDB groups the flushes.
        # Batches in flight at once, each on its own pooled connection (one left over).
        self._commits = GroupCommit(
            self._write_batch, writers=min(MAX_WRITERS, self._pool_size - 1)
        )

    async def open(self) -> None:
        """Create the pool, then create or migrate the tables.

        :raises AuditUnavailable: the server cannot be reached or refuses us.
        """
        t = self._target
        try:
            async with asyncio.timeout(self._connect_timeout + 5):
                self._pool = await aiomysql.create_pool(
                    minsize=1,
                    maxsize=self._pool_size,
                    host=t.host,
                    port=t.port,
                    unix_socket=t.unix_socket,
                    user=t.user,
                    password=t.password,
                    db=t.database,
                    charset="utf8mb4",
                    autocommit=False,
                    connect_timeout=self._connect_timeout,
                    init_command="SET time_zone = '+00:00'",
                    pool_recycle=3600,
                )
            await self._migrate()
        except DB_ERRORS as exc:
            await self.close()
            raise AuditUnavailable(
                f"cannot use the AFT_LOG database {self._safe_url}: {_describe(exc)}"
            ) from exc
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Finish the rows being written (bounded by the query timeout), close the pool."""
        await self._commits.finish(self._query_timeout)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
            await pool.wait_closed()

    async def _migrate(self) -> None:
        async with self._connection() as conn, conn.cursor() as cur:
            # Several nodes or processes may start at once: one migrates, the others wait.
            await cur.execute("SELECT GET_LOCK(%s, %s)", (SCHEMA_LOCK, int(self._query_timeout)))
            (got,) = await cur.fetchone()
            if got != 1:
                raise TimeoutError("another process holds the schema lock")
            # "Table already exists" notes would surface as Python warnings via aiomysql.
            await cur.execute("SET SESSION sql_notes = 0")
            try:
                await cur.execute(VERSION_TABLE)
                await cur.execute("SELECT COALESCE(MAX(VERSION), 0) FROM AFT_SCHEMA_VERSION")
                (current,) = await cur.fetchone()
                if current > SCHEMA_VERSION:
                    log.warning(
                        "AFT_LOG schema version %d is newer than this release's %d",
                        current,
                        SCHEMA_VERSION,
                    )
                for version in sorted(v for v in MIGRATIONS if v > current):
                    for statement in MIGRATIONS[version]:
                        await cur.execute(statement)
                    await cur.execute(
                        "INSERT IGNORE INTO AFT_SCHEMA_VERSION (VERSION) VALUES (%s)", (version,)
                    )
                    await conn.commit()
                    log.info("AFT_LOG schema migrated to version %d", version)
            finally:
                await cur.execute("SET SESSION sql_notes = 1")
                await cur.execute("SELECT RELEASE_LOCK(%s)", (SCHEMA_LOCK,))
                await cur.fetchone()
                await conn.commit()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiomysql.Connection]:
        """A pooled connection, every wait bounded; a connection that failed is discarded."""
        pool = self._pool
        if pool is None:
            raise AuditUnavailable("the AFT_LOG database is not open")
        async with asyncio.timeout(self._connect_timeout):
            conn = await pool.acquire()
        ok = False
        try:
            async with asyncio.timeout(self._query_timeout):
                yield conn
            ok = True
        finally:
            if not ok:
                # Its state (open transaction, half-read result) is unknown: never reuse it.
                conn.close()
            await pool.release(conn)

    def _failed(self, what: str, exc: BaseException) -> None:
        # Counted here; logged by the caller, which knows whether this starts an outage
        # (the spool warns once) or is one more retry during it.
        if self._metrics is not None:
            self._metrics.inc("database_errors")
        log.debug("AFT_LOG %s failed on %s: %s", what, self._safe_url, _describe(exc))

    async def ping(self) -> None:
        """Run ``SELECT 1`` on a pooled connection.

        :raises AuditUnavailable: the database does not answer.
        """
        try:
            async with self._connection() as conn, conn.cursor() as cur:
                await cur.execute("SELECT 1")
                await cur.fetchone()
                await conn.rollback()
        except DB_ERRORS as exc:
            raise AuditUnavailable(f"AFT_LOG database: {_describe(exc)}") from exc

    async def server_version(self) -> str:
        """``MariaDB 10.11.6-MariaDB-0+deb12u1`` (or ``MySQL 8.0.36``), asked of the server.

        :raises AuditUnavailable: the database did not answer.
        """
        rows = await self._fetch("SELECT VERSION()", [])
        version = str(rows[0][0]) if rows else ""
        return f"{'MariaDB' if 'mariadb' in version.lower() else 'MySQL'} {version}"

    async def record(self, rec: AuditRecord) -> None:
        """Insert and commit one row.

        Rows recorded concurrently are written together, in call order, by a few writer
        tasks: one multi-row INSERT and one COMMIT per batch (group commit), so the audit
        log keeps up with many small transfers.

        :raises AuditWriteFailed: the row may not be stored; ``maybe_index`` is set when
            only the COMMIT's answer was lost (the row, if stored, has an index >= it).
        """
        if self._pool is None:
            raise AuditUnavailable("the AFT_LOG database is not open")
        await self._commits.record(rec)

    async def _write_batch(self, batch: list[AuditRecord]) -> None:
        """One multi-row INSERT and one COMMIT for ``batch``.

        :raises AuditWriteFailed: with ``maybe_index`` once the INSERT had its first index.
        """
        first: int | None = None
        try:
            async with self._connection() as conn:
                async with conn.cursor() as cur:
                    await cur.executemany(_INSERT, [record_values(r) for r in batch])
                    first = cur.lastrowid
                await conn.commit()
        except DB_ERRORS as exc:
            self._failed("insert", exc)
            text = f"{self._safe_url}: {_describe(exc)}"
            raise AuditWriteFailed(text, maybe_index=first) from exc

    async def deliver(self, entries: Sequence[SpoolEntry]) -> None:
        """Insert spooled rows in order, in one transaction, skipping any already stored.

        A row is already stored when its event id is in AFT_SPOOL_DELIVERED (an earlier
        delivery committed but the spool was not updated), or when its ``maybe_index`` row
        exists with the same FILENAME, METHOD and DATE_TIME (a direct COMMIT in doubt).

        :raises AuditUnavailable: nothing was stored; deliver the same entries again later.
        """
        if not entries:
            return
        try:
            async with self._connection() as conn:
                async with conn.cursor() as cur:
                    done = await self._already_stored(cur, entries)
                    todo = [e for e in entries if e.event_id not in done]
                    if todo:
                        await cur.executemany(_INSERT, [record_values(e.record) for e in todo])
                        await cur.executemany(
                            "INSERT INTO AFT_SPOOL_DELIVERED (EVENT_ID) VALUES (%s)",
                            [(e.event_id,) for e in todo],
                        )
                await conn.commit()
        except DB_ERRORS as exc:
            self._failed("spool delivery", exc)
            raise AuditUnavailable(f"{self._safe_url}: {_describe(exc)}") from exc
        if len(done):
            log.info("AFT_LOG spool: %d rows were already stored, not inserted again", len(done))

    async def _already_stored(
        self, cur: aiomysql.Cursor, entries: Sequence[SpoolEntry]
    ) -> set[str]:
        ids = [e.event_id for e in entries]
        await cur.execute(
            f"SELECT EVENT_ID FROM AFT_SPOOL_DELIVERED WHERE EVENT_ID IN ({_marks(len(ids))})",
            ids,
        )
        done = {str(r[0]) for r in await cur.fetchall()}
        for e in entries:
            if e.maybe_index is None or e.event_id in done:
                continue
            # A group COMMIT in doubt: the row, if it landed, has an index >= maybe_index.
            row = e.record.clipped().as_row()
            await cur.execute(
                "SELECT 1 FROM AFT_LOG WHERE AFT_INDEX >= %s AND FILENAME = %s AND METHOD = %s"
                " AND DATE_TIME = %s AND JID = %s LIMIT 1",
                (e.maybe_index, row["FILENAME"], row["METHOD"], row["DATE_TIME"], row["JID"]),
            )
            if await cur.fetchone():
                done.add(e.event_id)
        return done

    async def prune_delivered(self) -> None:
        """Forget delivered event ids older than 30 days (their spool is long gone).

        :raises AuditUnavailable: the database did not answer.
        """
        try:
            async with self._connection() as conn:
                async with conn.cursor() as cur:
                    await cur.execute(_PRUNE_DELIVERED)
                await conn.commit()
        except DB_ERRORS as exc:
            raise AuditUnavailable(_describe(exc)) from exc

    async def find_upload(self, resource: str) -> AuditRecord | None:
        """The newest POST row for ``resource``.

        :raises AuditUnavailable: the database did not answer.
        """
        rows = await self._select(upload_sql("%s"), [resource])
        return rows[0] if rows else None

    async def find_upload_and_share(
        self, resource: str
    ) -> tuple[AuditRecord | None, AuditRecord | None]:
        """:meth:`find_upload`, and :meth:`find_first_share` when that row names no
        recipient, in one statement (a GET's two lookups in one round trip).

        :raises AuditUnavailable: the database did not answer.
        """
        return upload_and_share_of(
            await self._select(upload_and_share_sql("%s"), [resource, resource])
        )

    async def find_first_share(self, resource: str) -> AuditRecord | None:
        """The oldest SHARE row for ``resource``.

        :raises AuditUnavailable: the database did not answer.
        """
        rows = await self._select(first_share_sql("%s"), [resource])
        return rows[0] if rows else None

    async def query(self, q: AuditQuery) -> Sequence[AuditRecord]:
        """Rows matching ``q``, oldest first.

        :raises AuditUnavailable: the database did not answer.
        """
        where, params = where_clause(q, "%s")
        sql = SELECT_SQL + where + " ORDER BY AFT_INDEX"
        if q.limit:
            sql += " LIMIT %s"
            params.append(int(q.limit))
        return await self._select(sql, params)

    async def count_uploads(self, jid: str, since: datetime) -> tuple[int, int]:
        """``(files, bytes)`` of POST rows by bare ``jid`` since ``since``.

        :raises AuditUnavailable: the database did not answer.
        """
        where, params = where_clause(AuditQuery(jid=jid, method="POST", since=since), "%s")
        rows = await self._fetch(
            "SELECT COUNT(*), COALESCE(SUM(FILE_SIZE), 0) FROM AFT_LOG" + where, params
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def uploaded_among(self, resources: Sequence[str]) -> set[str]:
        """Which of ``resources`` have a POST row (one query per :data:`IN_BATCH`).

        :raises AuditUnavailable: the database did not answer.
        """
        found: set[str] = set()
        for batch in batches(resources):
            rows = await self._fetch(uploaded_among_sql("%s", len(batch)), batch)
            found.update(str(row[0]) for row in rows)
        return found

    async def count_by_chat_type(self, since: datetime, node_id: str) -> dict[str, int]:
        """POST rows of ``node_id`` since ``since``, counted per CHAT_TYPE.

        :raises AuditUnavailable: the database did not answer.
        """
        rows = await self._fetch(count_by_chat_type_sql("%s"), [node_id, naive_utc(since)])
        return {str(chat_type): int(n) for chat_type, n in rows}

    async def _write(self, sql: str, rows: Sequence[Sequence[object]]) -> int:
        """``executemany`` and COMMIT; the last row id.

        :raises AuditUnavailable: the database did not answer (nothing committed).
        """
        try:
            async with self._connection() as conn:
                async with conn.cursor() as cur:
                    await cur.executemany(sql, [tuple(r) for r in rows])
                    result = int(cur.lastrowid or 0)
                await conn.commit()
        except DB_ERRORS as exc:
            self._failed("write", exc)
            raise AuditUnavailable(f"{self._safe_url}: {_describe(exc)}") from exc
        return result

    async def _select(self, sql: str, params: Sequence[object]) -> list[AuditRecord]:
        return [row_to_record(r) for r in await self._fetch(sql, params)]

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[tuple[Any, ...]]:
        try:
            async with self._connection() as conn:
                async with conn.cursor() as cur:
                    await cur.execute(sql, tuple(params))
                    rows = list(await cur.fetchall())
                # End the read transaction: the pool closes connections left inside one.
                await conn.rollback()
        except DB_ERRORS as exc:
            self._failed("query", exc)
            raise AuditUnavailable(f"{self._safe_url}: {_describe(exc)}") from exc
        return rows


def _marks(n: int) -> str:
    """``n`` comma-separated parameter placeholders, for ``IN (...)``."""
    return ", ".join(["%s"] * n)


def _describe(exc: BaseException) -> str:
    """A short reason for logs and errors (pymysql errors carry ``(code, message)``)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, pymysql.err.Error) and len(exc.args) >= 2:
        return f"{exc.args[1]} ({exc.args[0]})"
    return str(exc) or type(exc).__name__
