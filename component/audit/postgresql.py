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
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from component.audit import pgschema as S
from component.audit.base import AuditQuery, AuditRecord, AuditWriteFailed, naive_utc
from component.audit.holds import SqlHolds
from component.audit.spool import SpoolEntry
from component.audit.sql import record_values, row_to_record
from component.config import Config
from component.dburl import PostgresTarget
from component.errors import AuditUnavailable
from component.metrics import Metrics

log = logging.getLogger(__name__)

# What a lost server, a dropped connection, a refused login or a bounded wait raise.
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,  # refused, reset, unresolvable, TLS failures (ssl.SSLError)
    EOFError,
    TimeoutError,
)
# Rows per INSERT of the group-committing writer and of spool delivery.
BATCH_ROWS = 200
# Batches of direct inserts in flight at once (each on its own pooled connection).
MAX_WRITERS = 4


def ssl_setting(t: PostgresTarget) -> ssl.SSLContext | str | bool:
    """asyncpg's ``ssl=`` for libpq's ``sslmode`` (and ``sslrootcert``).

    As libpq: ``require`` encrypts without checking the certificate unless a root
    certificate is given; ``verify-ca`` checks the chain; ``verify-full`` also the name.

    :raises OSError: ``sslrootcert`` cannot be read.
    :raises ssl.SSLError: it holds no usable certificate.
    """
    if t.sslmode == "disable":
        return False
    if t.sslmode in ("allow", "prefer"):
        return t.sslmode
    ctx = ssl.create_default_context(cafile=t.sslrootcert or None)
    if t.sslmode == "require" and not t.sslrootcert:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = t.sslmode == "verify-full"
    return ctx


def _text(value: object) -> object:
    # PostgreSQL text holds no NUL and no lone surrogates (MariaDB and the JSON spool
    # do): store a replacement rather than fail, and so block the spool, forever.
    if isinstance(value, str) and (not value.isprintable() or "\x00" in value):
        return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return value


def columns_of(records: Sequence[AuditRecord]) -> list[list[object]]:
    """:data:`~component.audit.pgschema.INSERT_SQL`'s parameters: one list per column."""
    rows = [[_text(v) for v in record_values(r)] for r in records]
    return [list(col) for col in zip(*rows, strict=True)]


class PostgresAuditLog(SqlHolds):
    """AFT_LOG in PostgreSQL. Used alone by read-only tools; the service wraps it in
    :class:`~component.audit.spooled.SpooledAuditLog`, which calls :meth:`deliver`."""

    PLACEHOLDER = "%s"  # numbered by _sql

    def _sql(self, text: str) -> str:
        """The shared hold SQL with ``$n`` parameters; a new hold returns its id."""
        if text.startswith("INSERT INTO AFT_HOLD"):
            text += " RETURNING hold_id"
        return S.numbered(text)

    def __init__(self, cfg: Config, metrics: Metrics | None = None) -> None:
        self._target = cfg.database.postgres
        self._safe_url = cfg.database.safe_url
        self._pool_size = cfg.database.pool_size
        self._connect_timeout = cfg.database.connect_timeout
        self._query_timeout = cfg.database.query_timeout
        self._metrics = metrics
        self._pool: asyncpg.Pool | None = None
        self._version = ""
        self._queue: list[tuple[AuditRecord, asyncio.Future[None]]] = []
        self._writers: set[asyncio.Task[None]] = set()
        # A few batches in flight at once (on separate connections): a row arriving while
        # one COMMIT is being flushed need not wait for it.
        self._max_writers = max(1, min(MAX_WRITERS, self._pool_size - 1))

    async def open(self) -> None:
        """Create the pool, then create or migrate the tables.

        :raises AuditUnavailable: the server cannot be reached or refuses us.
        """
        t = self._target
        try:
            async with asyncio.timeout(self._connect_timeout + 5):
                self._pool = await asyncpg.create_pool(
                    min_size=1,
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
        writers = set(self._writers)
        if writers:
            _done, late = await asyncio.wait(writers, timeout=self._query_timeout)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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
            self._metrics.inc("database_errors", "AFT_LOG database errors")
        log.debug("AFT_LOG %s failed on %s: %s", what, self._safe_url, describe(exc))

    async def ping(self) -> None:
        """Run ``SELECT 1`` on a pooled connection.

        :raises AuditUnavailable: the database does not answer.
        """
        try:
            async with self._connection() as conn:
                await conn.fetchval("SELECT 1")
        except DB_ERRORS as exc:
            raise AuditUnavailable(f"AFT_LOG database: {describe(exc)}") from exc

    async def server_version(self) -> str:
        """``PostgreSQL 15.8 (Debian 15.8-0+deb12u1)``: the server :meth:`open` reached."""
        return f"PostgreSQL {self._version}" if self._version else "PostgreSQL"

    async def record(self, rec: AuditRecord) -> None:
        """Insert and commit one row.

        Rows recorded concurrently are written together, in call order, by a few writer
        tasks: one INSERT and one COMMIT per batch (group commit).

        :raises AuditWriteFailed: the row may not be stored; ``maybe_index`` is set when
            only the COMMIT's answer was lost (the row, if stored, has that index).
        """
        if self._pool is None:
            raise AuditUnavailable("the AFT_LOG database is not open")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((rec, done))
        if len(self._writers) < self._max_writers:
            task = asyncio.create_task(self._write_queue(), name="AFT_LOG writer")
            self._writers.add(task)
            task.add_done_callback(self._writers.discard)
        await done

    async def _write_queue(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:BATCH_ROWS], self._queue[BATCH_ROWS:]
            indexes: list[int] = []
            try:
                async with self._connection() as conn:
                    tx = conn.transaction()
                    await tx.start()
                    try:
                        rows = await conn.fetch(S.INSERT_SQL, *columns_of([r for r, _ in batch]))
                    except BaseException:
                        await tx.rollback()
                        raise
                    # Sequence values are taken in insert order: sorted, they are the batch's.
                    indexes = sorted(int(r[0]) for r in rows)
                    await tx.commit()
            except DB_ERRORS as exc:
                self._failed("insert", exc)
                text = f"{self._safe_url}: {describe(exc)}"
                for i, (_, fut) in enumerate(batch):
                    if not fut.done():
                        maybe = indexes[i] if indexes else None
                        fut.set_exception(AuditWriteFailed(text, maybe_index=maybe))
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

    async def deliver(self, entries: Sequence[SpoolEntry]) -> None:
        """Insert spooled rows in order, in one transaction, skipping any already stored.

        A row is already stored when its event id is in ``aft_spool_delivered`` (an
        earlier delivery committed but the spool was not updated), or when the row with
        its ``maybe_index`` has the same FILENAME, METHOD, DATE_TIME and JID (a direct
        COMMIT in doubt: sequence values are never handed out twice).

        :raises AuditUnavailable: nothing was stored; deliver the same entries again later.
        """
        if not entries:
            return
        try:
            async with self._connection() as conn, conn.transaction():
                done = await self._already_stored(conn, entries)
                todo = [e for e in entries if e.event_id not in done]
                if todo:
                    await conn.fetch(S.INSERT_SQL, *columns_of([e.record for e in todo]))
                    await conn.execute(S.MARK_DELIVERED_SQL, [e.event_id for e in todo])
        except DB_ERRORS as exc:
            self._failed("spool delivery", exc)
            raise AuditUnavailable(f"{self._safe_url}: {describe(exc)}") from exc
        if done:
            log.info("AFT_LOG spool: %d rows were already stored, not inserted again", len(done))

    async def _already_stored(self, conn: Any, entries: Sequence[SpoolEntry]) -> set[str]:
        rows = await conn.fetch(S.DELIVERED_SQL, [e.event_id for e in entries])
        done = {str(r[0]) for r in rows}
        doubtful: dict[int, list[SpoolEntry]] = {}
        for e in entries:
            if e.maybe_index is not None and e.event_id not in done:
                doubtful.setdefault(e.maybe_index, []).append(e)
        if doubtful:
            for index, filename, method, date_time, jid in await conn.fetch(
                S.LANDED_SQL, list(doubtful)
            ):
                for e in doubtful[index]:
                    row = e.record.clipped().as_row()
                    if (filename, method, date_time, jid) == (
                        _text(row["FILENAME"]),
                        row["METHOD"],
                        row["DATE_TIME"],
                        _text(row["JID"]),
                    ):
                        done.add(e.event_id)
                        break  # one stored row accounts for one spooled entry
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

    async def count_by_chat_type(self, since: datetime, node_id: str) -> dict[str, int]:
        """POST rows of ``node_id`` since ``since``, counted per CHAT_TYPE.

        :raises AuditUnavailable: the database did not answer.
        """
        rows = await self._fetch(S.COUNT_BY_CHAT_TYPE_SQL, [node_id, naive_utc(since)])
        return {str(chat_type): int(n) for chat_type, n in rows}

    async def _write(self, sql: str, rows: Sequence[Sequence[object]]) -> int:
        """Run ``sql`` for every parameter row in one transaction; the last RETURNING id.

        :raises AuditUnavailable: nothing was committed.
        """
        last = 0
        try:
            async with self._connection() as conn, conn.transaction():
                for params in rows:
                    value = await conn.fetchval(sql, *(_text(p) for p in params))
                    last = int(value) if isinstance(value, int) else last
        except DB_ERRORS as exc:
            self._failed("write", exc)
            raise AuditUnavailable(f"{self._safe_url}: {describe(exc)}") from exc
        return last

    async def _fetch(self, sql: str, params: Sequence[object]) -> list[Any]:
        try:
            async with self._connection() as conn:
                return list(await conn.fetch(sql, *params))
        except DB_ERRORS as exc:
            self._failed("query", exc)
            raise AuditUnavailable(f"{self._safe_url}: {describe(exc)}") from exc


def describe(exc: BaseException, target: PostgresTarget | None = None) -> str:
    """A short reason for logs and errors: the server's message and SQLSTATE, or what the
    network said (``connection refused by 127.0.0.1:5432``)."""
    where = ""
    if target is not None:
        where = f" {target.host}" if target.unix_socket else f" {target.host}:{target.port}"
    if isinstance(exc, TimeoutError):
        return f"no answer from{where or ' the server'} (timed out)"
    if isinstance(exc, asyncpg.PostgresError):
        return f"{exc.args[0] if exc.args else type(exc).__name__} ({exc.sqlstate})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate of{where} not accepted: {exc.verify_message}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by{where or ' the server'}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve{where or ' the host'} ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}{' (' + where.strip() + ')' if where else ''}"
    return str(exc) or type(exc).__name__
