"""AFT_LOG in PostgreSQL (Cisco's own external database) through an asyncpg pool.

``[database] url = "postgresql://user:pw@host:5432/db"`` (or ``postgres://``;
``?host=/run/postgresql`` for a Unix socket; ``sslmode=`` and ``sslrootcert=`` as libpq
spells them), parsed once by :mod:`component.config`. Tables are created and migrated
on :meth:`PostgresAuditLog.open` from :data:`~component.audit.pgschema.MIGRATIONS` in
one transaction under an advisory lock. Statements are prepared once per connection
(asyncpg's statement cache). Sessions run in UTC (``TimeZone=UTC`` at connect), and
DATE_TIME is a ``timestamp`` holding UTC whatever the server's zone. Every asyncpg
error is translated to :class:`~component.errors.AuditUnavailable` here, at the boundary.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg

from component.audit import pgschema as S
from component.audit.base import AuditQuery, AuditRecord, AuditWriteFailed, Hold, naive_utc
from component.audit.holds import (
    HOLD_SELECT,
    hold_insert_sql,
    hold_release_sql,
    hold_values,
    purged_insert_sql,
    release_values,
    row_to_hold,
)
from component.audit.pgconnect import DB_ERRORS, describe, keep_session, refused, ssl_setting
from component.audit.spool import SpoolEntry
from component.audit.sql import GroupCommit, row_to_record, upload_and_share_of
from component.config import Config
from component.errors import AuditUnavailable
from component.metrics import Metrics

log = logging.getLogger(__name__)

# Batches of direct inserts in flight at once (each on its own pooled connection).
MAX_WRITERS = 4


class PostgresAuditLog:
    """AFT_LOG in PostgreSQL. Used alone by read-only tools; the service wraps it in
    :class:`~component.audit.spooled.SpooledAuditLog`, which calls :meth:`deliver`."""

    def __init__(self, cfg: Config, metrics: Metrics | None = None) -> None:
        self._target = cfg.database.postgres
        self._safe_url = cfg.database.safe_url
        self._pool_size = cfg.database.pool_size
        self._connect_timeout = cfg.database.connect_timeout
        self._query_timeout = cfg.database.query_timeout
        self._metrics = metrics
        self._pool: asyncpg.Pool | None = None
        self._version = ""
        self._high_index = 0  # the highest AFT_INDEX this process has been handed
        # A few batches in flight at once (on separate connections): a row arriving while
        # one COMMIT is being flushed need not wait for it.
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
                self._pool = await asyncpg.create_pool(
                    min_size=0,  # no background reconnecting (and logging) during an outage
                    max_size=self._pool_size,
                    host=t.host,
                    port=t.port,
                    user=t.user or None,
                    password=t.password or None,
                    database=t.database,
                    ssl=ssl_setting(t),
                    timeout=self._connect_timeout,
                    command_timeout=self._query_timeout,
                    server_settings={"TimeZone": "UTC", "application_name": "xmpp-mft"},
                    # Sessions keep no state to undo (no LISTEN, cursors, session locks
                    # or SET), so skip asyncpg's reset query: one round trip per release.
                    reset=keep_session,
                )
            await self._migrate()
        except DB_ERRORS as exc:
            await self.close()
            raise AuditUnavailable(
                f"cannot use the AFT_LOG database {self._safe_url}: {describe(exc, t)}"
            ) from exc
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Finish the rows being written (bounded by the query timeout), close the pool."""
        await self._commits.finish(self._query_timeout)
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                # Waits for connections in use to be released, within the query timeout.
                async with asyncio.timeout(self._query_timeout):
                    await pool.close()
            except DB_ERRORS as exc:
                log.debug("AFT_LOG pool closed by force: %s", describe(exc))
                pool.terminate()
            except BaseException:
                pool.terminate()
                raise

    async def _migrate(self) -> None:
        async with self._connection() as conn:
            self._version = str(await conn.fetchval("SHOW server_version"))
            # DDL is transactional here: all of a migration, or none of it, is applied.
            async with conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = {int(self._query_timeout * 1000)}")
                await conn.execute("SET LOCAL client_min_messages = warning")
                await conn.execute(S.LOCK_SQL)
                await conn.execute(S.VERSION_TABLE)
                current = await conn.fetchval(
                    "SELECT COALESCE(max(version), 0) FROM aft_schema_version"
                )
                if current > S.SCHEMA_VERSION:
                    log.warning(
                        "AFT_LOG schema version %d is newer than this release's %d",
                        current,
                        S.SCHEMA_VERSION,
                    )
                for version in sorted(v for v in S.MIGRATIONS if v > current):
                    for statement in S.MIGRATIONS[version]:
                        await conn.execute(statement)
                    await conn.execute(S.RECORD_VERSION_SQL, version)
                    log.info("AFT_LOG schema migrated to version %d", version)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection, every wait bounded; a connection that failed is discarded."""
        pool = self._pool
        if pool is None:
            raise AuditUnavailable("the AFT_LOG database is not open")
        conn = await pool.acquire(timeout=self._connect_timeout)
        ok = False
        try:
            async with asyncio.timeout(self._query_timeout):
                yield conn
            ok = True
        finally:
            if not ok:
                # Its state (open transaction, half-read result) is unknown: never reuse it.
                conn.terminate()
            await pool.release(conn)

    def _failed(self, what: str, exc: BaseException) -> None:
        # Counted here; logged by the caller, which knows whether this starts an outage
        # (the spool warns once) or is one more retry during it.
        if self._metrics is not None:
            self._metrics.inc("database_errors")
        log.debug("AFT_LOG %s failed on %s: %s", what, self._safe_url, describe(exc))

    async def ping(self) -> None:
        """Run ``SELECT 1`` on a pooled connection.

        :raises AuditUnavailable: the database does not answer.
        """
        try:
            async with self._connection() as conn:
                await conn.fetchval("SELECT 1")
        except DB_ERRORS as exc:
            raise AuditUnavailable(f"AFT_LOG database: {describe(exc, self._target)}") from exc

    async def server_version(self) -> str:
        """``PostgreSQL 15.8 (Debian 15.8-0+deb12u1)``: the server :meth:`open` reached."""
        return f"PostgreSQL {self._version}" if self._version else "PostgreSQL"

    async def record(self, rec: AuditRecord) -> None:
        """Insert and commit one row.

        Rows recorded concurrently are written together, in call order, by a few writer
        tasks: one INSERT, committed on its own, per batch (group commit).

        :raises AuditWriteFailed: the row may not be stored; ``maybe_index`` is set unless
            the server refused the INSERT (the row, if stored, has an index >= it).
        """
        if self._pool is None:
            raise AuditUnavailable("the AFT_LOG database is not open")
        await self._commits.record(rec)

    async def _write_batch(self, batch: list[AuditRecord]) -> None:
        """One INSERT, committed on its own, for ``batch``: one round trip, one flush.

        :raises AuditWriteFailed: with ``maybe_index`` unless the server refused it.
        """
        # Every index handed out before this INSERT is sent is lower than the batch's:
        # the bound a COMMIT in doubt is checked from.
        floor = self._high_index + 1
        try:
            async with self._connection() as conn:
                rows = await conn.fetch(S.INSERT_SQL, *S.columns_of(batch))
        except DB_ERRORS as exc:
            self._failed("insert", exc)
            text = f"{self._safe_url}: {describe(exc, self._target)}"
            # Whether it committed is unknown unless the server said it failed.
            raise AuditWriteFailed(text, maybe_index=None if refused(exc) else floor) from exc
        self._high_index = max([self._high_index, *(int(r[0]) for r in rows)])

    async def deliver(self, entries: Sequence[SpoolEntry]) -> None:
        """Insert spooled rows in order, in one transaction, skipping any already stored.

        A row is already stored when its event id is in ``aft_spool_delivered`` (an
        earlier delivery committed but the spool was not updated), or when the row with
        a row from ``maybe_index`` on has the same FILENAME, METHOD, DATE_TIME and JID
        (a direct INSERT whose COMMIT answer was lost).

        :raises AuditUnavailable: nothing was stored; deliver the same entries again later.
        """
        if not entries:
            return
        try:
            async with self._connection() as conn, conn.transaction():
                done = await self._already_stored(conn, entries)
                todo = [e for e in entries if e.event_id not in done]
                if todo:
                    await conn.fetch(S.INSERT_SQL, *S.columns_of([e.record for e in todo]))
                    await conn.execute(S.MARK_DELIVERED_SQL, [e.event_id for e in todo])
        except DB_ERRORS as exc:
            self._failed("spool delivery", exc)
            raise AuditUnavailable(f"{self._safe_url}: {describe(exc, self._target)}") from exc
        if done:
            log.info("AFT_LOG spool: %d rows were already stored, not inserted again", len(done))

    async def _already_stored(self, conn: Any, entries: Sequence[SpoolEntry]) -> set[str]:
        rows = await conn.fetch(S.DELIVERED_SQL, [e.event_id for e in entries])
        done = {str(r[0]) for r in rows}
        for e in entries:
            if e.maybe_index is None or e.event_id in done:
                continue
            # A COMMIT in doubt: the row, if it landed, has an index >= maybe_index.
            row = e.record.clipped().as_row()
            landed = await conn.fetchval(
                S.LANDED_SQL,
                e.maybe_index,
                S.pg_text(row["FILENAME"]),
                row["METHOD"],
                row["DATE_TIME"],
                S.pg_text(row["JID"]),
            )
            if landed:
                done.add(e.event_id)
        return done

    async def prune_delivered(self) -> None:
        """Forget delivered event ids older than 30 days (their spool is long gone).

        :raises AuditUnavailable: the database did not answer.
        """
        try:
            async with self._connection() as conn:
                await conn.execute(S.PRUNE_DELIVERED_SQL)
        except DB_ERRORS as exc:
            raise AuditUnavailable(describe(exc)) from exc

    async def find_upload(self, resource: str) -> AuditRecord | None:
        """The newest POST row for ``resource``.

        :raises AuditUnavailable: the database did not answer.
        """
        rows = await self._fetch(S.FIND_UPLOAD_SQL, [resource])
        return row_to_record(rows[0]) if rows else None

    async def find_upload_and_share(
        self, resource: str
    ) -> tuple[AuditRecord | None, AuditRecord | None]:
        """:meth:`find_upload`, and :meth:`find_first_share` when that row names no
        recipient, in one statement (a GET's two lookups in one round trip).

        :raises AuditUnavailable: the database did not answer.
        """
        rows = await self._fetch(S.UPLOAD_AND_SHARE_SQL, [resource])
        return upload_and_share_of([row_to_record(r) for r in rows])

    async def find_first_share(self, resource: str) -> AuditRecord | None:
        """The oldest SHARE row for ``resource``.

        :raises AuditUnavailable: the database did not answer.
        """
        rows = await self._fetch(S.FIRST_SHARE_SQL, [resource])
        return row_to_record(rows[0]) if rows else None

    async def query(self, q: AuditQuery) -> Sequence[AuditRecord]:
        """Rows matching ``q``, oldest first.

        :raises AuditUnavailable: the database did not answer.
        """
        where, params = S.where_clause(q)
        sql = S.SELECT_SQL + where + " ORDER BY aft_index"
        if q.limit:
            params.append(int(q.limit))
            sql += f" LIMIT ${len(params)}"
        return [row_to_record(r) for r in await self._fetch(sql, params)]

    async def count_uploads(self, jid: str, since: datetime) -> tuple[int, int]:
        """``(files, bytes)`` of POST rows by bare ``jid`` since ``since``.

        :raises AuditUnavailable: the database did not answer.
        """
        where, params = S.where_clause(AuditQuery(jid=jid, method="POST", since=since))
        rows = await self._fetch(
            "SELECT count(*), COALESCE(sum(file_size), 0) FROM aft_log" + where, params
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def uploaded_among(self, resources: Sequence[str]) -> set[str]:
        """Which of ``resources`` have a POST row (one query, the names as one array).

        :raises AuditUnavailable: the database did not answer.
        """
        if not resources:
            return set()
        rows = await self._fetch(S.UPLOADED_AMONG_SQL, [list(resources)])
        return {str(row[0]) for row in rows}

    async def count_by_chat_type(self, since: datetime, node_id: str) -> dict[str, int]:
        """POST rows of ``node_id`` since ``since``, counted per CHAT_TYPE.

        :raises AuditUnavailable: the database did not answer.
        """
        rows = await self._fetch(S.COUNT_BY_CHAT_TYPE_SQL, [node_id, naive_utc(since)])
        return {str(chat_type): int(n) for chat_type, n in rows}

    # --- legal holds and purge marks (written straight to the database, never spooled)

    async def add_hold(self, hold: Hold) -> int:
        """Insert a hold; its id.

        :raises AuditUnavailable: the database did not take it.
        """
        sql = S.numbered(hold_insert_sql("?")) + " RETURNING hold_id"
        rows = await self._fetch(sql, [S.pg_text(v) for v in hold_values(hold)])
        return int(rows[0][0])

    async def list_holds(self, *, include_released: bool = False) -> Sequence[Hold]:
        """Active (or all) holds, oldest first.

        :raises AuditUnavailable: the database did not answer.
        """
        where = "" if include_released else " WHERE released_at IS NULL"
        rows = await self._fetch(HOLD_SELECT + where + " ORDER BY hold_id", [])
        return [row_to_hold(list(r)) for r in rows]

    async def release_hold(
        self, hold_id: int, *, by: str, reason: str = "", at: datetime | None = None
    ) -> Hold | None:
        """Release hold ``hold_id`` if active; the hold as stored, ``None`` if unknown.

        :raises AuditUnavailable: the database did not answer.
        """
        values = release_values(hold_id, by, reason, at or datetime.now(UTC))
        await self._fetch(S.numbered(hold_release_sql("?")), list(values))
        rows = await self._fetch(HOLD_SELECT + " WHERE hold_id = $1", [int(hold_id)])
        return row_to_hold(list(rows[0])) if rows else None

    async def mark_purged(
        self, resources: Sequence[str], *, node_id: str, by: str, at: datetime | None = None
    ) -> None:
        """Record purge marks for ``resources`` in one transaction (first mark kept).

        :raises AuditUnavailable: nothing was recorded.
        """
        if not resources:
            return
        when = naive_utc(at or datetime.now(UTC))
        sql = S.numbered(purged_insert_sql("?", keep_first="ON CONFLICT DO NOTHING"))
        try:
            async with self._connection() as conn, conn.transaction():
                await conn.executemany(sql, [(r, node_id, when, by) for r in resources])
        except DB_ERRORS as exc:
            self._failed("purge mark", exc)
            raise AuditUnavailable(f"{self._safe_url}: {describe(exc, self._target)}") from exc

    async def purged(self, resources: Sequence[str]) -> set[str]:
        """Which of ``resources`` have a purge mark.

        :raises AuditUnavailable: the database did not answer.
        """
        if not resources:
            return set()
        rows = await self._fetch(
            "SELECT filename FROM aft_purged WHERE filename = ANY($1::varchar[])", [list(resources)]
        )
        return {str(r[0]) for r in rows}

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[Any]:
        try:
            async with self._connection() as conn:
                return list(await conn.fetch(sql, *params))
        except DB_ERRORS as exc:
            self._failed("query", exc)
            raise AuditUnavailable(f"{self._safe_url}: {describe(exc, self._target)}") from exc
