"""AFT_LOG on a real MariaDB: schema, rows, queries, outages, crashes, exactly-once delivery."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pymysql
import pytest

from component.audit import AuditQuery, open_audit_log
from component.audit.mysql import MysqlAuditLog, schema_script
from component.audit.mysql_schema import MIGRATIONS, VERSION_TABLE
from component.audit.spooled import SpooledAuditLog
from component.config import Config
from component.dburl import parse_mysql_url
from component.errors import AuditUnavailable
from component.metrics import Metrics
from tests.fixtures.config import ConfigFactory
from tests.fixtures.mariadb import MariaDB
from tests.integration.audit_helpers import (
    check_commit_in_doubt,
    check_concurrent_records,
    check_crash_after_commit,
    check_find_upload,
    check_holds_bypass_the_spool,
    check_killed_process_delivers_once,
    check_outage_during_20_records,
    check_round_trip,
    check_unwritable_spool_fails_the_record,
)
from tests.unit.test_audit_sql import (
    check_count_by_chat_type,
    check_first_share,
    check_upload_and_share,
    check_uploaded_among,
)
from tests.unit.test_audit_v2 import check_holds_and_marks
from tests.unit.test_spool import rec

pytestmark = pytest.mark.integration

SINCE_EVER = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def cfg(config_factory: ConfigFactory, mariadb_url: str) -> Config:
    """A config whose [database] is this test's own MariaDB database."""
    return config_factory(database={"url": mariadb_url, "connect_timeout": 3.0})


@pytest.fixture
async def mysql_log(cfg: Config) -> AsyncIterator[MysqlAuditLog]:
    """An opened MysqlAuditLog (no spool)."""
    log = MysqlAuditLog(cfg)
    await log.open()
    yield log
    await log.close()


@pytest.fixture
def sql(mariadb: MariaDB, cfg: Config) -> Iterator[pymysql.cursors.Cursor]:
    """A root cursor on this test's database, in UTC, for looking behind the interface."""
    conn = mariadb.root()
    cur = conn.cursor()
    cur.execute(f"USE `{parse_mysql_url(cfg.database.url).database}`")
    cur.execute("SET time_zone = '+00:00'")
    yield cur
    conn.close()


def stored_filenames(cur: pymysql.cursors.Cursor) -> list[str]:
    """FILENAME of every AFT_LOG row in AFT_INDEX order."""
    cur.execute("SELECT FILENAME FROM AFT_LOG ORDER BY AFT_INDEX")
    return [r[0] for r in cur.fetchall()]


async def test_schema_has_design_columns_and_indexes(
    mysql_log: MysqlAuditLog, sql: pymysql.cursors.Cursor
) -> None:
    """AFT_LOG has the DESIGN columns and sizes, utf8mb4, prefix indexes, schema version 2."""
    sql.execute(
        "SELECT COLUMN_NAME, COLUMN_TYPE, EXTRA FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'AFT_LOG' ORDER BY ORDINAL_POSITION"
    )
    columns = {name: (ctype, extra) for name, ctype, extra in sql.fetchall()}
    assert list(columns) == [
        "AFT_INDEX", "JID", "TO_JID", "METHOD", "FILENAME", "REAL_FILENAME", "FILE_TYPE",
        "CHAT_TYPE", "FILE_SERVER", "FILE_SIZE", "DATE_TIME", "NODE_ID", "CLIENT_IP",
        "FILE_SHA256", "SCAN_RESULT",
    ]  # fmt: skip
    assert columns["FILE_SHA256"][0] == "varchar(64)"
    assert columns["SCAN_RESULT"][0] == "varchar(255)"
    assert (
        columns["AFT_INDEX"][0].startswith("bigint") and "auto_increment" in columns["AFT_INDEX"][1]
    )
    assert columns["JID"][0] == columns["TO_JID"][0] == "varchar(3071)"
    assert columns["METHOD"][0] == "varchar(63)"
    assert columns["FILENAME"][0] == columns["REAL_FILENAME"][0] == "varchar(511)"
    assert columns["FILE_TYPE"][0] == columns["CHAT_TYPE"][0] == "varchar(10)"
    assert columns["FILE_SERVER"][0] == "varchar(511)"
    assert columns["FILE_SIZE"][0].startswith("bigint")
    assert columns["DATE_TIME"][0] == "timestamp(6)"
    sql.execute(
        "SELECT INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'AFT_LOG'"
    )
    index = {(n, s): (c, p) for n, s, c, p in sql.fetchall()}
    assert index[("AFT_LOG_JID", 1)] == ("JID", 255)
    assert index[("AFT_LOG_JID", 2)] == ("DATE_TIME", None)
    assert index[("AFT_LOG_TO_JID", 1)] == ("TO_JID", 255)
    assert index[("AFT_LOG_DATE", 1)] == ("DATE_TIME", None)
    assert index[("AFT_LOG_FILENAME", 1)] == ("FILENAME", None)
    sql.execute(
        "SELECT TABLE_COLLATION FROM information_schema.TABLES"
        " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'AFT_LOG'"
    )
    assert sql.fetchone()[0].startswith("utf8mb4")
    sql.execute("SELECT VERSION FROM AFT_SCHEMA_VERSION ORDER BY VERSION")
    assert sql.fetchall() == ((1,), (2,))


async def test_reopen_and_deploy_script_are_adopted(
    cfg: Config, sql: pymysql.cursors.Cursor
) -> None:
    """Tables made from deploy/sql are adopted; opening again migrates nothing twice."""
    for statement in schema_script().split(";\n"):
        body = "\n".join(ln for ln in statement.splitlines() if not ln.startswith("--")).strip()
        if body:
            sql.execute(body)
    for _ in range(2):
        log = MysqlAuditLog(cfg)
        await log.open()
        await log.record(rec(1))
        await log.close()
    sql.execute("SELECT VERSION FROM AFT_SCHEMA_VERSION ORDER BY VERSION")
    assert sql.fetchall() == ((1,), (2,))
    assert stored_filenames(sql) == ["res1", "res1"]


async def test_rows_round_trip_in_utc(
    mysql_log: MysqlAuditLog, sql: pymysql.cursors.Cursor
) -> None:
    """Every column comes back as written: Unicode, over-long JIDs clipped, DATE_TIME in UTC."""
    cest = timezone(timedelta(hours=2))
    long_jid = "u" * 3100 + "@example.test"
    original = replace(
        rec(1),
        jid=long_jid,
        real_filename="Zürich 🎉 report.pdf",
        date_time=datetime(2024, 5, 1, 14, 30, 0, 250000, tzinfo=cest),
    )
    await check_round_trip(mysql_log, original)
    sql.execute("SELECT DATE_TIME FROM AFT_LOG WHERE AFT_INDEX = 1")
    assert sql.fetchone()[0] == datetime(2024, 5, 1, 12, 30, 0, 250000)


async def test_find_upload_returns_the_post_row(mysql_log: MysqlAuditLog) -> None:
    """The newest POST row of a resource; GET rows and case-variants of the name do not count."""
    await check_find_upload(mysql_log)


async def test_query_filters_and_counts(mysql_log: MysqlAuditLog) -> None:
    """Filters by bare JID, recipient, method, chat type, dates and limit; upload counts."""
    rows = [
        rec(1),
        replace(rec(2), jid="alice@example.test", chat_type="groupchat", to_jid="room@conf.test"),
        replace(rec(3), method="GET", jid="bob@example.test/pc"),
        replace(rec(4), jid="alicex@example.test/r"),
    ]
    for r in rows:
        await mysql_log.record(r)

    async def names(**kw: object) -> list[str]:
        return [r.filename for r in await mysql_log.query(AuditQuery(**kw))]  # type: ignore[arg-type]

    assert await names(jid="Alice@example.test/other") == ["res1", "res2"]
    assert await names(to_jid="room@conf.test") == ["res2"]
    assert await names(method="GET") == ["res3"]
    assert await names(chat_type="groupchat") == ["res2"]
    t2 = rows[1].date_time
    assert await names(since=t2) == ["res2", "res3", "res4"]
    assert await names(since=t2, until=t2 + timedelta(seconds=1)) == ["res2"]
    assert await names(limit=2) == ["res1", "res2"]
    assert await mysql_log.count_uploads("alice@example.test", SINCE_EVER) == (2, 1001 + 1002)
    assert await mysql_log.count_uploads("alice@example.test", t2) == (1, 1002)
    assert await mysql_log.count_uploads("carol@example.test", SINCE_EVER) == (0, 0)


async def test_counts_uploads_per_chat_type(mysql_log: MysqlAuditLog) -> None:
    """MariaDB counts this node's POST rows since the hour began, per chat type."""
    await check_count_by_chat_type(mysql_log)


async def test_finds_uploads_among_names(mysql_log: MysqlAuditLog) -> None:
    """MariaDB answers which of many resource names have a POST row."""
    await check_uploaded_among(mysql_log)


async def test_finds_the_first_share(mysql_log: MysqlAuditLog) -> None:
    """MariaDB returns the oldest SHARE row of a resource."""
    await check_first_share(mysql_log)


async def test_finds_upload_and_share_in_one_statement(mysql_log: MysqlAuditLog) -> None:
    """MariaDB answers a GET's two lookups (POST row, first SHARE row) in one query."""
    await check_upload_and_share(mysql_log)


async def test_unix_socket_url(config_factory: ConfigFactory, mariadb: MariaDB) -> None:
    """``?unix_socket=`` connects through the socket."""
    name = mariadb.create_database()
    try:
        cfg = config_factory(database={"url": mariadb.url(name, unix_socket=True)})
        log = MysqlAuditLog(cfg)
        await log.open()
        await log.ping()
        await log.record(rec(1))
        assert [r.filename for r in await log.query(AuditQuery())] == ["res1"]
        await log.close()
    finally:
        mariadb.drop_database(name)


async def test_unreachable_or_refused_database_fails_open(
    config_factory: ConfigFactory, mariadb: MariaDB, mariadb_url: str
) -> None:
    """Start-up fails with AuditUnavailable naming the safe URL, never the password."""
    bad_pw = mariadb_url.replace("p%40ss", "wrong", 1)
    cfg = config_factory(database={"url": bad_pw})
    with pytest.raises(AuditUnavailable, match=r"mysql://mft:\*\*\*@") as info:
        await open_audit_log(cfg, Metrics()).open()
    assert "wrong" not in info.value.text and "Access denied" in info.value.text
    mariadb.stop()
    cfg = config_factory(database={"url": mariadb_url})
    log = open_audit_log(cfg, Metrics())
    with pytest.raises(AuditUnavailable, match="Can't connect"):
        await log.open()
    assert isinstance(log, SpooledAuditLog)
    await log.close()  # a log that never opened closes cleanly


async def test_outage_during_20_records(
    cfg: Config, mariadb: MariaDB, sql: pymysql.cursors.Cursor, caplog: pytest.LogCaptureFixture
) -> None:
    """Database stopped during 20 record() calls, then restarted: 20 rows, once, in order."""
    caplog.set_level(logging.INFO)
    metrics = Metrics()

    async def stop() -> None:
        mariadb.stop()  # on the event loop's thread

    await check_outage_during_20_records(
        open_audit_log(cfg, metrics), metrics, stop, lambda: asyncio.to_thread(mariadb.start), 30
    )
    sql.close()
    conn = mariadb.root()  # the server restarted: a fresh connection
    with contextlib.closing(conn), conn.cursor() as cur:
        cur.execute(f"USE `{parse_mysql_url(cfg.database.url).database}`")
        assert stored_filenames(cur) == [f"res{i}" for i in range(20)]
    text = caplog.text
    assert "spooling rows" in text and "spool drained" in text
    assert cfg.spool_path.stat().st_size == 0


async def test_killed_process_rows_delivered_once_after_restart(
    cfg: Config, mariadb: MariaDB
) -> None:
    """Service SIGKILLed with rows spooled; a fresh instance delivers each row exactly once."""
    await check_killed_process_delivers_once(
        cfg,
        lambda: asyncio.to_thread(mariadb.stop),
        lambda: asyncio.to_thread(mariadb.start),
        starts=1,
        flush_within=30,
    )


async def test_crash_after_commit_before_spool_update(
    cfg: Config, mysql_log: MysqlAuditLog, sql: pymysql.cursors.Cursor
) -> None:
    """Rows already committed from the spool (spool not updated) are not inserted again."""
    await check_crash_after_commit(mysql_log, MysqlAuditLog(cfg), cfg.spool_path)
    assert stored_filenames(sql) == [f"res{i}" for i in range(6)]


async def test_commit_in_doubt_is_checked_by_index(
    mysql_log: MysqlAuditLog, sql: pymysql.cursors.Cursor
) -> None:
    """A spooled row whose direct COMMIT did land (same index and row) is skipped."""
    await check_commit_in_doubt(mysql_log)
    assert stored_filenames(sql) == ["res1", "res2", "res3"]


async def test_unwritable_spool_during_outage_fails_the_record(
    cfg: Config, mariadb: MariaDB
) -> None:
    """With the database down and the spool unwritable, record() raises AuditUnavailable."""
    await check_unwritable_spool_fails_the_record(
        open_audit_log(cfg, Metrics()),
        cfg,
        lambda: asyncio.to_thread(mariadb.stop),
        lambda: asyncio.to_thread(mariadb.start),
    )


async def test_concurrent_records_are_each_stored_once(
    mysql_log: MysqlAuditLog, sql: pymysql.cursors.Cursor
) -> None:
    """200 concurrent record() calls (group-committed in batches) store 200 distinct rows."""
    await check_concurrent_records(mysql_log)
    sql.execute("SELECT COUNT(*), COUNT(DISTINCT FILENAME) FROM AFT_LOG")
    assert sql.fetchone() == (200, 200)


async def test_v1_database_is_migrated_keeping_rows(
    cfg: Config, sql: pymysql.cursors.Cursor
) -> None:
    """A version-1 AFT_LOG gains FILE_SHA256/SCAN_RESULT (empty on its rows) and the v2 tables."""
    sql.execute(VERSION_TABLE)
    for statement in MIGRATIONS[1]:
        sql.execute(statement)
    sql.execute("INSERT INTO AFT_SCHEMA_VERSION (VERSION) VALUES (1)")
    sql.execute(
        "INSERT INTO AFT_LOG (JID, METHOD, FILENAME, FILE_SIZE, DATE_TIME)"
        " VALUES ('old@example.test', 'POST', 'oldres', 7, '2024-05-01 12:00:00')"
    )
    sql.connection.commit()
    log = MysqlAuditLog(cfg)
    await log.open()
    try:
        await log.record(replace(rec(1), file_sha256="cd" * 32, scan_result="clean"))
        rows = await log.query(AuditQuery())
        assert [(r.filename, r.file_sha256, r.scan_result) for r in rows] == [
            ("oldres", "", ""),
            ("res1", "cd" * 32, "clean"),
        ]
        assert rows[0].jid == "old@example.test" and rows[0].file_size == 7
    finally:
        await log.close()
    sql.execute("SELECT VERSION FROM AFT_SCHEMA_VERSION ORDER BY VERSION")
    assert sql.fetchall() == ((1,), (2,))


async def test_holds_and_purge_marks(mysql_log: MysqlAuditLog) -> None:
    """MariaDB keeps holds (who, when, why, release) and purge marks."""
    await check_holds_and_marks(mysql_log)


async def test_holds_bypass_the_spool(cfg: Config, tmp_path: Path) -> None:
    """Through the spooled log, holds and marks go straight to the database."""
    await check_holds_bypass_the_spool(
        SpooledAuditLog(MysqlAuditLog(cfg), tmp_path / "spool.jsonl", Metrics()),
        MysqlAuditLog(cfg),
    )
