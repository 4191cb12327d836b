"""SQL pieces without a server: mysql:// URLs, the DDL files, bare-JID matching."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from component.audit import (
    AuditLog,
    AuditQuery,
    AuditRecord,
    AuditWriteFailed,
    bare_jid,
    upload_and_share_finder_of,
)
from component.audit.base import COLUMNS, TEXT_LIMITS
from component.audit.mysql import MIGRATIONS, SCHEMA_VERSION, schema_script
from component.audit.sql import IN_BATCH, GroupCommit, record_values, where_clause
from component.audit.sqlite import SqliteAuditLog
from component.audit.sqlite import schema_script as sqlite_schema_script
from component.dburl import parse_mysql_url
from component.errors import AuditUnavailable, ConfigError
from tests.fixtures.config import ConfigFactory
from tests.unit.test_spool import rec

SQL_DIR = Path(__file__).resolve().parents[2] / "deploy" / "sql"


def test_url_credentials_are_percent_decoded() -> None:
    """User, password and database come out decoded; the port defaults to 3306."""
    t = parse_mysql_url("mysql://m%40ft:p%40ss%3Aw%2Frd%25@db.example.test/aft%5Flog")
    assert (t.user, t.password, t.host, t.port, t.database) == (
        "m@ft",
        "p@ss:w/rd%",
        "db.example.test",
        3306,
        "aft_log",
    )
    assert t.unix_socket is None
    assert "p@ss" not in repr(t)


def test_url_with_unix_socket() -> None:
    """``?unix_socket=`` selects the socket."""
    t = parse_mysql_url("mysql://mft:pw@localhost:3307/mft?unix_socket=/run/mysqld/mysqld.sock")
    assert (t.unix_socket, t.port, t.database) == ("/run/mysqld/mysqld.sock", 3307, "mft")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://mft:pw@host/", "database name"),
        ("mysql://mft:pw@host:99999/mft", "bad port"),
        ("mysql://mft:pw@host/mft?ssl=1", "unknown option 'ssl'"),
        ("mysql://mft:pw@host/a/b", "database name"),
    ],
)
def test_bad_urls_are_named(url: str, message: str) -> None:
    """A URL the pool could not use is a ConfigError saying why."""
    with pytest.raises(ConfigError, match=message):
        parse_mysql_url(url)


def test_deploy_sql_files_are_the_code_ddl() -> None:
    """deploy/sql holds exactly the DDL the code runs (one source of truth)."""
    assert (SQL_DIR / "aft_log_mysql.sql").read_text() == schema_script()
    assert (SQL_DIR / "aft_log_sqlite.sql").read_text() == sqlite_schema_script()


def test_mysql_migrations_are_numbered_from_one() -> None:
    """Versions are 1..N without gaps, and the script ends at the newest version."""
    assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))
    assert f"VALUES ({SCHEMA_VERSION});" in schema_script().splitlines()[-1]


def test_mysql_ddl_keeps_index_keys_under_innodb_limit() -> None:
    """The 3071-character JID columns are indexed by prefix (3072-byte key limit)."""
    ddl = "\n".join(MIGRATIONS[1])
    assert "KEY AFT_LOG_JID (JID(255), DATE_TIME)" in ddl
    assert "KEY AFT_LOG_TO_JID (TO_JID(255), DATE_TIME)" in ddl
    assert "DATE_TIME     TIMESTAMP(6)" in ddl


def test_sqlite_script_runs() -> None:
    """The SQLite file creates the table in an empty database."""
    db = sqlite3.connect(":memory:")
    db.executescript((SQL_DIR / "aft_log_sqlite.sql").read_text())
    names = [r[1] for r in db.execute("PRAGMA table_info(AFT_LOG)")]
    assert names == list(COLUMNS)
    assert db.execute("SELECT MAX(VERSION) FROM AFT_SCHEMA_VERSION").fetchone() == (2,)
    db.close()


def test_bare_jid_matching_in_where_clause() -> None:
    """A JID filter matches the bare JID and its full JIDs, with LIKE wildcards escaped."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE AFT_LOG (JID TEXT, TO_JID TEXT)")
    stored = ["a_b@x.test", "a_b@x.test/phone", "axb@x.test/phone", "a_b@x.test.evil/r", "a%@x"]
    db.executemany("INSERT INTO AFT_LOG VALUES (?, '')", [(j,) for j in stored])
    where, params = where_clause(AuditQuery(jid="A_B@x.test/laptop"), "?")
    rows = [r[0] for r in db.execute("SELECT JID FROM AFT_LOG" + where, params)]
    assert rows == ["a_b@x.test", "a_b@x.test/phone"]
    assert bare_jid("Alice@Example.test/Phone") == "alice@example.test"
    db.close()


# rec(n) completes at 2024-05-01 12:00:0n UTC on node_1, chat type im.
HOUR = datetime(2024, 5, 1, 12, tzinfo=UTC)


def rollover_rows() -> list[AuditRecord]:
    """Rows of which two im and one groupchat upload count for node_1 since :data:`HOUR`."""
    return [
        rec(1),
        replace(rec(2), chat_type="groupchat"),
        rec(3),
        rec(4, method="GET"),  # downloads take no directory entry
        replace(rec(5), node_id="node_2"),  # another node's directory
        replace(rec(6), date_time=HOUR - timedelta(seconds=1)),  # the previous hour
    ]


async def check_count_by_chat_type(audit: AuditLog) -> None:
    """Store :func:`rollover_rows` in ``audit`` and check what it counts."""
    for row in rollover_rows():
        await audit.record(row)
    assert await audit.count_by_chat_type(HOUR, "node_1") == {"im": 2, "groupchat": 1}
    assert await audit.count_by_chat_type(HOUR, "node_3") == {}
    assert await audit.count_by_chat_type(HOUR + timedelta(hours=1), "node_1") == {}


async def check_uploaded_among(audit: AuditLog) -> None:
    """POST rows are found among many names (beyond one IN batch); other methods are not."""
    base = rollover_rows()[0]
    await audit.record(replace(base, filename="up-1"))
    await audit.record(replace(base, filename="up-2"))
    await audit.record(replace(base, filename="got-only", method="GET"))
    names = ["got-only", "up-2", *(f"never-{i}" for i in range(IN_BATCH)), "up-1"]
    assert await audit.uploaded_among(names) == {"up-1", "up-2"}
    assert await audit.uploaded_among(["never-0"]) == set()
    assert await audit.uploaded_among([]) == set()


async def test_sqlite_finds_uploads_among_names(config_factory: ConfigFactory) -> None:
    """SQLite answers which of many resource names have a POST row."""
    audit = SqliteAuditLog(config_factory())
    await audit.open()
    try:
        await check_uploaded_among(audit)
    finally:
        await audit.close()


async def check_first_share(audit: AuditLog) -> None:
    """The oldest SHARE row of a resource comes back; other methods and files do not."""
    share = rollover_rows()[0]
    rows = [
        replace(share, method="POST", to_jid=""),
        replace(share, method="GET", to_jid="x@example.test"),
        replace(share, method="SHARE", to_jid="room@conference.example.test"),
        replace(share, method="SHARE", to_jid="carol@example.test"),
        replace(share, method="SHARE", filename="other-resource", to_jid="y@example.test"),
    ]
    for row in rows:
        await audit.record(row)
    first = await audit.find_first_share(share.filename)
    assert first is not None
    assert (first.method, first.to_jid) == ("SHARE", "room@conference.example.test")
    assert await audit.find_first_share("never-shared") is None


async def test_sqlite_finds_the_first_share(config_factory: ConfigFactory) -> None:
    """SQLite returns the oldest SHARE row of a resource."""
    audit = SqliteAuditLog(config_factory())
    await audit.open()
    try:
        await check_first_share(audit)
    finally:
        await audit.close()


async def test_sqlite_counts_uploads_per_chat_type(config_factory: ConfigFactory) -> None:
    """SQLite counts this node's POST rows since the hour began, per chat type."""
    audit = SqliteAuditLog(config_factory())
    await audit.open()
    try:
        await check_count_by_chat_type(audit)
    finally:
        await audit.close()


async def test_sqlite_group_commit_keeps_every_row_in_call_order(
    config_factory: ConfigFactory,
) -> None:
    """Rows recorded concurrently are all committed (one batch), in call order."""
    import asyncio

    audit = SqliteAuditLog(config_factory())
    await audit.open()
    try:
        await asyncio.gather(*(audit.record(rec(n)) for n in range(40)))
        rows = await audit.query(AuditQuery())
        assert [r.filename for r in rows] == [f"res{n}" for n in range(40)]
    finally:
        await audit.close()
    with pytest.raises(AuditUnavailable):
        await audit.record(rec(41))


async def test_group_commit_batches_in_order_and_fails_a_batch_whole() -> None:
    """Concurrent rows share batches in call order; a failed batch fails each of its rows."""
    written: list[list[str]] = []
    fail = {"bad"}

    async def write(batch: list[AuditRecord]) -> None:
        names = [r.filename for r in batch]
        await asyncio.sleep(0)  # a round trip: others queue meanwhile
        if fail & set(names):
            raise AuditWriteFailed("down", maybe_index=7)
        written.append(names)

    commits = GroupCommit(write, writers=1)
    base = rollover_rows()[0]
    await commits.record(replace(base, filename="first"))
    # The writer just finished its loop: the next row must still get one (no hang).
    async with asyncio.timeout(5):
        await commits.record(replace(base, filename="second"))
        results = await asyncio.gather(
            *(commits.record(replace(base, filename=n)) for n in ("a", "b", "bad")),
            return_exceptions=True,
        )
    assert written[:2] == [["first"], ["second"]]
    assert all(isinstance(r, AuditWriteFailed) and r.maybe_index == 7 for r in results)
    assert len({id(r) for r in results}) == 3  # one exception object per row
    await commits.finish(1.0)


def test_record_values_are_the_clipped_row_in_column_order() -> None:
    """INSERT parameters: every text cut to its column size, DATE_TIME naive UTC, in
    COLUMNS order (as ``clipped().as_row()`` has them)."""
    long = replace(
        rec(7),
        jid="a" * 4000 + "@x",
        real_filename="é" * 600,
        scan_result="s" * 300,
        date_time=datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    values = record_values(long)
    row = long.clipped().as_row()
    assert values == tuple(row[c] for c in COLUMNS[1:])
    by_column = dict(zip(COLUMNS[1:], values, strict=True))
    assert len(str(by_column["JID"])) == TEXT_LIMITS["JID"]
    assert len(str(by_column["SCAN_RESULT"])) == TEXT_LIMITS["SCAN_RESULT"]
    assert by_column["DATE_TIME"] == datetime(2024, 5, 1, 12, 0)


async def check_upload_and_share(audit: AuditLog) -> None:
    """The combined GET lookup: the newest POST row, and the first SHARE row only when
    that POST row has no recipient; nothing for an unknown resource."""
    finder = upload_and_share_finder_of(audit)
    assert finder is not None
    await check_first_share(audit)  # POST without TO_JID, then GET and SHARE rows
    name = rollover_rows()[0].filename
    up, share = await finder.find_upload_and_share(name)
    assert up is not None and (up.method, up.to_jid) == ("POST", "")
    assert share is not None and share.to_jid == "room@conference.example.test"
    addressed = replace(rollover_rows()[0], filename="addressed", to_jid="bob@example.test")
    await audit.record(addressed)
    await audit.record(replace(addressed, method="SHARE", to_jid="room@example.test"))
    up, share = await finder.find_upload_and_share("addressed")
    assert up is not None and up.to_jid == "bob@example.test" and share is None
    shared_only = replace(addressed, filename="shared-only", method="SHARE")
    await audit.record(shared_only)  # a SHARE row without its POST row
    assert await finder.find_upload_and_share("shared-only") == (None, None)
    assert await finder.find_upload_and_share("never-uploaded") == (None, None)


async def test_sqlite_finds_upload_and_share_in_one_go(config_factory: ConfigFactory) -> None:
    """SQLite's combined GET lookup (:func:`check_upload_and_share`)."""
    audit = SqliteAuditLog(config_factory())
    await audit.open()
    try:
        await check_upload_and_share(audit)
    finally:
        await audit.close()
