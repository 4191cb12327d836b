"""AFT_LOG on a real PostgreSQL 15: schema, rows, TLS, outages, crashes, exactly-once delivery.

The server runs in a non-UTC zone (Asia/Kolkata): the raw connections below see what a
compliance tool written for Cisco's AFT_LOG sees, without setting any zone themselves.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from component.audit import AuditQuery, open_audit_log
from component.audit.base import Hold
from component.audit.pgschema import MIGRATIONS, RECORD_VERSION_SQL, VERSION_TABLE, schema_script
from component.audit.postgresql import PostgresAuditLog
from component.audit.spool import SpoolFile
from component.audit.spooled import SpooledAuditLog
from component.config import Config
from component.errors import AuditUnavailable
from component.metrics import Metrics
from tests.fixtures.config import ConfigFactory
from tests.fixtures.postgresql import SERVER_TIMEZONE, PostgreSQL
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
from tests.unit.test_audit_v2 import SHA, check_holds_and_marks
from tests.unit.test_spool import rec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SINCE_EVER = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def cfg(config_factory: ConfigFactory, postgresql_url: str) -> Config:
    """A config whose [database] is this test's own PostgreSQL database."""
    return config_factory(database={"url": postgresql_url, "connect_timeout": 3.0})


@pytest.fixture
async def pg_log(cfg: Config) -> AsyncIterator[PostgresAuditLog]:
    """An opened PostgresAuditLog (no spool)."""
    log = PostgresAuditLog(cfg)
    await log.open()
    yield log
    await log.close()


async def superuser(db: PostgreSQL, cfg: Config) -> Any:
    """A superuser connection to this test's database, in the server's own (non-UTC) zone."""
    return await asyncpg.connect(db.superuser_dsn(cfg.database.postgres.database))


@pytest.fixture
async def sql(postgresql: PostgreSQL, cfg: Config) -> AsyncIterator[Any]:
    """A raw connection for looking behind the interface (reconnected by the outage tests)."""
    conn = await superuser(postgresql, cfg)
    yield conn
    await conn.close()


async def stored_filenames(conn: Any) -> list[str]:
    """FILENAME of every AFT_LOG row in AFT_INDEX order."""
    return [r[0] for r in await conn.fetch("SELECT filename FROM aft_log ORDER BY aft_index")]


async def test_schema_has_design_columns_and_types(pg_log: PostgresAuditLog, sql: Any) -> None:
    """aft_log: lower-case DESIGN columns, sizes, bigint key from a sequence, timestamp."""
    rows = await sql.fetch(
        "SELECT column_name, data_type, character_maximum_length, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = 'aft_log' ORDER BY ordinal_position"
    )
    columns = {r[0]: tuple(r[1:]) for r in rows}
    assert list(columns) == [
        "aft_index", "jid", "to_jid", "method", "filename", "real_filename", "file_type",
        "chat_type", "file_server", "file_size", "date_time", "node_id", "client_ip",
        "file_sha256", "scan_result",
    ]  # fmt: skip
    assert columns["aft_index"][0] == "bigint"
    assert columns["aft_index"][3] == "nextval('aft_log_aft_index_seq'::regclass)"
    sizes = {name: length for name, (kind, length, *_rest) in columns.items() if kind != "bigint"}
    assert sizes == {
        "jid": 3071, "to_jid": 3071, "method": 63, "filename": 511, "real_filename": 511,
        "file_type": 10, "chat_type": 10, "file_server": 511, "date_time": None,
        "node_id": 128, "client_ip": 64, "file_sha256": 64, "scan_result": 255,
    }  # fmt: skip
    assert {c[0] for n, c in columns.items() if n not in ("date_time",)} <= {
        "bigint",
        "character varying",
    }
    assert columns["date_time"][0] == "timestamp without time zone"
    assert columns["file_size"][0] == "bigint"
    assert all(c[2] == "NO" for c in columns.values())
    key = await sql.fetch(
        "SELECT kcu.column_name FROM information_schema.table_constraints tc"
        " JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)"
        " WHERE tc.table_name = 'aft_log' AND tc.constraint_type = 'PRIMARY KEY'"
    )
    assert [r[0] for r in key] == ["aft_index"]
    indexes = {
        r[0]: r[1]
        for r in await sql.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'aft_log'"
        )
    }
    assert {"aft_log_jid", "aft_log_to_jid", "aft_log_date", "aft_log_filename"} <= set(indexes)
    assert "split_part((jid)::text, '/'::text, 1)" in indexes["aft_log_jid"]
    assert await versions(sql) == [1, 2]


async def versions(conn: Any) -> list[int]:
    """The schema versions recorded as applied."""
    return [r[0] for r in await conn.fetch("SELECT version FROM aft_schema_version ORDER BY 1")]


async def test_deploy_script_is_adopted_and_reopen_migrates_nothing(
    cfg: Config, sql: Any, postgresql: PostgreSQL
) -> None:
    """Tables made with psql from deploy/sql are adopted; opening twice migrates once."""
    script = ROOT / "deploy" / "sql" / "aft_log_postgresql.sql"
    assert script.read_text() == schema_script()
    database = cfg.database.postgres.database
    await sql.execute(f"SET ROLE {postgresql.user}")  # the tables belong to the app's role
    await sql.execute(schema_script())
    await sql.execute("RESET ROLE")
    for _ in range(2):
        log = PostgresAuditLog(cfg)
        await log.open()
        await log.record(rec(1))
        await log.close()
    assert await versions(sql) == [1, 2]
    assert await stored_filenames(sql) == ["res1", "res1"]
    assert database in postgresql.psql("SELECT current_database()", database=database)


async def test_concurrent_opens_migrate_once(cfg: Config, sql: Any) -> None:
    """Four processes' worth of opens at once: the advisory lock lets one create the tables."""
    logs = [PostgresAuditLog(cfg) for _ in range(4)]
    await asyncio.gather(*(log.open() for log in logs))
    for log in logs:
        await log.close()
    assert await versions(sql) == [1, 2]


async def test_rows_round_trip_in_utc_on_a_non_utc_server(
    pg_log: PostgresAuditLog, sql: Any
) -> None:
    """Every column comes back as written; DATE_TIME holds UTC whatever the server's zone."""
    assert await sql.fetchval("SHOW timezone") == SERVER_TIMEZONE
    async with pg_log._connection() as conn:
        assert await conn.fetchval("SHOW timezone") == "UTC"  # the service's sessions
    cest = timezone(timedelta(hours=2))
    long_jid = "u" * 3100 + "@example.test"
    original = replace(
        rec(1),
        jid=long_jid,
        to_jid="t" * 3071,  # a recipient as long as the column: its index takes a prefix
        real_filename="Zürich 🎉 report.pdf",
        date_time=datetime(2024, 5, 1, 14, 30, 0, 250000, tzinfo=cest),
    )
    await check_round_trip(pg_log, original)
    # What another tool reads, in the server's zone: the UTC wall clock, unshifted.
    stored = await sql.fetchval("SELECT date_time FROM aft_log WHERE aft_index = 1")
    assert stored == datetime(2024, 5, 1, 12, 30, 0, 250000)
    # A row another tool inserts without DATE_TIME gets the UTC time too.
    default = await sql.fetchval(
        "INSERT INTO aft_log (method, filename) VALUES ('POST', 'x') RETURNING date_time"
    )
    assert abs(default - datetime.now(UTC).replace(tzinfo=None)) < timedelta(minutes=5)


async def test_find_upload_returns_the_post_row(pg_log: PostgresAuditLog) -> None:
    """The newest POST row of a resource; GET rows and case-variants of the name do not count."""
    await check_find_upload(pg_log)


async def test_query_filters_and_counts(pg_log: PostgresAuditLog) -> None:
    """Filters by bare JID (any case), recipient, method, chat type, dates, limit; counts."""
    rows = [
        rec(1),
        replace(rec(2), jid="Alice@Example.test", chat_type="groupchat", to_jid="room@conf.test"),
        replace(rec(3), method="GET", jid="bob@example.test/pc"),
        replace(rec(4), jid="alicex@example.test/r"),
        replace(rec(5), jid="alice@example.test.evil/r", method="GET_GONE"),
    ]
    for r in rows:
        await pg_log.record(r)

    async def names(**kw: object) -> list[str]:
        return [r.filename for r in await pg_log.query(AuditQuery(**kw))]  # type: ignore[arg-type]

    assert await names(jid="Alice@example.test/other") == ["res1", "res2"]
    assert await names(to_jid="room@conf.test") == ["res2"]
    assert await names(method="GET") == ["res3"]
    assert await names(method="GET_GONE") == ["res5"]
    assert await names(chat_type="groupchat") == ["res2"]
    t2 = rows[1].date_time
    assert await names(since=t2) == ["res2", "res3", "res4", "res5"]
    assert await names(since=t2, until=t2 + timedelta(seconds=1)) == ["res2"]
    assert await names(limit=2) == ["res1", "res2"]
    assert await pg_log.count_uploads("alice@example.test", SINCE_EVER) == (2, 1001 + 1002)
    assert await pg_log.count_uploads("alice@example.test", t2) == (1, 1002)
    assert await pg_log.count_uploads("carol@example.test", SINCE_EVER) == (0, 0)


async def test_counts_uploads_per_chat_type(pg_log: PostgresAuditLog) -> None:
    """PostgreSQL counts this node's POST rows since the hour began, per chat type."""
    await check_count_by_chat_type(pg_log)


async def test_finds_uploads_among_names(pg_log: PostgresAuditLog) -> None:
    """PostgreSQL answers which of many resource names have a POST row, in one query."""
    await check_uploaded_among(pg_log)


async def test_finds_the_first_share(pg_log: PostgresAuditLog) -> None:
    """PostgreSQL returns the oldest SHARE row of a resource."""
    await check_first_share(pg_log)


async def test_finds_upload_and_share_in_one_statement(pg_log: PostgresAuditLog) -> None:
    """PostgreSQL answers a GET's two lookups (POST row, first SHARE row) in one query."""
    await check_upload_and_share(pg_log)


async def test_unix_socket_url(config_factory: ConfigFactory, postgresql: PostgreSQL) -> None:
    """``?host=/dir`` connects through the Unix socket in that directory."""
    name = postgresql.create_database()
    try:
        cfg = config_factory(database={"url": postgresql.url(name, unix_socket=True)})
        assert cfg.database.postgres.unix_socket
        log = PostgresAuditLog(cfg)
        await log.open()
        await log.record(rec(1))
        assert [r.filename for r in await log.query(AuditQuery())] == ["res1"]
        await log.close()
        out = postgresql.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE client_addr IS NULL"
            " AND application_name = 'xmpp-mft'",
            database=name,
        )
        assert out.strip() == "0"  # closed again
    finally:
        postgresql.drop_database(name)


@pytest.mark.parametrize("mode", ["require", "verify-full"])
async def test_tls_connections(
    config_factory: ConfigFactory, postgresql: PostgreSQL, postgresql_url: str, mode: str
) -> None:
    """sslmode=require and verify-full (against the server's CA) encrypt every session."""
    query = f"sslmode={mode}" + (f"&sslrootcert={postgresql.cert}" if mode == "verify-full" else "")
    cfg = config_factory(database={"url": f"{postgresql_url}?{query}"})
    log = PostgresAuditLog(cfg)
    await log.open()
    try:
        await log.record(rec(1))
        async with log._connection() as conn:
            assert await conn.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await log.close()


async def test_tls_with_the_wrong_root_certificate_is_refused(
    config_factory: ConfigFactory, postgresql_url: str, tmp_path: Path
) -> None:
    """verify-full with another CA: start-up fails naming the certificate problem."""
    other = tmp_path / "other-ca.pem"
    await asyncio.to_thread(
        subprocess.run,
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=other", "-keyout", str(tmp_path / "k"),
         "-out", str(other)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    url = f"{postgresql_url}?sslmode=verify-full&sslrootcert={other}"
    with pytest.raises(AuditUnavailable, match=r"TLS certificate of 127\.0\.0\.1:\d+ not accepted"):
        await PostgresAuditLog(config_factory(database={"url": url})).open()


async def test_bad_password_and_unreachable_server_fail_open(
    config_factory: ConfigFactory, postgresql: PostgreSQL, postgresql_url: str
) -> None:
    """Start-up fails with AuditUnavailable naming the safe URL and the reason, never the
    password; a log that never opened closes cleanly."""
    bad_pw = postgresql_url.replace("p%40ss", "wrong", 1)
    cfg = config_factory(database={"url": bad_pw})
    with pytest.raises(AuditUnavailable, match=r"postgresql://mft:\*\*\*@") as info:
        await open_audit_log(cfg, Metrics()).open()
    assert "wrong" not in info.value.text
    assert 'password authentication failed for user "mft" (28P01)' in info.value.text
    port = urlsplit(postgresql_url).port
    postgresql.stop()
    cfg = config_factory(database={"url": postgresql_url, "connect_timeout": 3.0})
    log = open_audit_log(cfg, Metrics())
    with pytest.raises(AuditUnavailable, match=f"connection refused by 127.0.0.1:{port}"):
        await log.open()
    assert isinstance(log, SpooledAuditLog)
    await log.close()


async def test_a_role_that_may_not_create_tables_is_named(
    config_factory: ConfigFactory, postgresql: PostgreSQL
) -> None:
    """PostgreSQL 15 lets only the owner create in schema public: the reason says so."""
    name = postgresql.create_database()
    try:
        postgresql.psql(f"ALTER DATABASE {name} OWNER TO postgres")
        url = postgresql.url(name)
        denied = r"permission denied for schema public \(42501\)"
        with pytest.raises(AuditUnavailable, match=denied):
            await PostgresAuditLog(config_factory(database={"url": url})).open()
    finally:
        postgresql.drop_database(name)


async def test_a_missing_socket_is_named(config_factory: ConfigFactory, tmp_path: Path) -> None:
    """?host= naming a directory without a server: the socket file tried is named."""
    url = f"postgresql://mft:pw@localhost:5999/mft?host={tmp_path}"
    missing = r"no PostgreSQL server listens on the socket .*/\.s\.PGSQL\.5999"
    with pytest.raises(AuditUnavailable, match=missing):
        await PostgresAuditLog(config_factory(database={"url": url})).open()


async def test_outage_during_20_records(
    cfg: Config, postgresql: PostgreSQL, caplog: pytest.LogCaptureFixture
) -> None:
    """Database stopped during 20 record() calls, then restarted: 20 rows, once, in order."""
    caplog.set_level(logging.INFO)
    metrics = Metrics()
    await check_outage_during_20_records(
        open_audit_log(cfg, metrics),
        metrics,
        lambda: asyncio.to_thread(postgresql.stop),
        lambda: asyncio.to_thread(postgresql.start),
        flush_within=60,
    )
    conn = await superuser(postgresql, cfg)  # the server restarted: a fresh connection
    try:
        assert await stored_filenames(conn) == [f"res{i}" for i in range(20)]
        assert await conn.fetchval("SELECT count(*) FROM aft_spool_delivered") >= 7
    finally:
        await conn.close()
    text = caplog.text
    assert "spooling rows" in text and "spool drained" in text
    assert cfg.spool_path.stat().st_size == 0


async def test_killed_process_rows_delivered_once_after_restart(
    cfg: Config, postgresql: PostgreSQL
) -> None:
    """Service SIGKILLed with rows spooled; a fresh instance delivers each row exactly once."""
    await check_killed_process_delivers_once(
        cfg,
        lambda: asyncio.to_thread(postgresql.stop),
        lambda: asyncio.to_thread(postgresql.start),
        starts=2,  # a second start finds nothing left to deliver
        flush_within=60,
    )


async def test_crash_after_commit_before_spool_update(
    cfg: Config, pg_log: PostgresAuditLog, sql: Any
) -> None:
    """Rows already committed from the spool (spool not updated) are not inserted again."""
    await check_crash_after_commit(pg_log, PostgresAuditLog(cfg), cfg.spool_path)
    assert await stored_filenames(sql) == [f"res{i}" for i in range(6)]


async def test_commit_in_doubt_is_checked_by_index(pg_log: PostgresAuditLog, sql: Any) -> None:
    """A spooled row whose direct COMMIT did land (same index and row) is skipped."""
    await check_commit_in_doubt(pg_log)
    assert await stored_filenames(sql) == ["res1", "res2", "res3"]


DIE_AT_COMMIT = """
CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.filename = 'res1' THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON aft_log
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die_at_commit();
"""


async def test_connection_lost_at_commit_is_spooled_with_its_index(cfg: Config, sql: Any) -> None:
    """The session dies inside COMMIT (a deferred trigger ends it): the row is spooled with
    the lowest AFT_INDEX it can have as the COMMIT in doubt (one past the highest this
    process was given), checked, and then stored exactly once."""
    log = open_audit_log(cfg, Metrics())
    assert isinstance(log, SpooledAuditLog)
    await log.open()
    try:
        await log.record(rec(0))
        await sql.execute(DIE_AT_COMMIT)
        await log.record(rec(1))  # accepted: into the spool
        [entry] = list(SpoolFile(cfg.spool_path)._load())
        assert entry.record.filename == "res1" and entry.maybe_index == 2
        await sql.execute("DROP TRIGGER die_at_commit ON aft_log")
        async with asyncio.timeout(60):
            await log.flush()
    finally:
        await log.close()
    assert await stored_filenames(sql) == ["res0", "res1"]
    assert await sql.fetchval("SELECT max(aft_index) FROM aft_log") == 3  # 2 never committed


async def test_unwritable_spool_during_outage_fails_the_record(
    cfg: Config, postgresql: PostgreSQL
) -> None:
    """With the database down and the spool unwritable, record() raises AuditUnavailable."""
    await check_unwritable_spool_fails_the_record(
        open_audit_log(cfg, Metrics()),
        cfg,
        lambda: asyncio.to_thread(postgresql.stop),
        lambda: asyncio.to_thread(postgresql.start),
    )


async def test_concurrent_records_are_group_committed_once_each(
    pg_log: PostgresAuditLog, sql: Any
) -> None:
    """200 concurrent record() calls store 200 distinct rows in a few transactions."""
    await check_concurrent_records(pg_log)
    row = await sql.fetchrow(
        "SELECT count(*), count(DISTINCT filename), count(DISTINCT xmin::text) FROM aft_log"
    )
    assert (row[0], row[1]) == (200, 200)
    assert row[2] <= 8  # rows of one transaction share its xmin: batches, not 200 COMMITs


async def test_v1_database_is_migrated_keeping_rows(
    cfg: Config, sql: Any, postgresql: PostgreSQL
) -> None:
    """A version-1 aft_log gains file_sha256/scan_result (empty on its rows) and the v2
    tables, in one locked transaction; rows are kept and a second open migrates nothing."""
    await sql.execute(f"SET ROLE {postgresql.user}")
    await sql.execute(VERSION_TABLE)
    for statement in MIGRATIONS[1]:
        await sql.execute(statement)
    await sql.execute(RECORD_VERSION_SQL, 1)
    await sql.execute(
        "INSERT INTO aft_log (jid, method, filename, file_size, date_time)"
        " VALUES ('old@example.test', 'POST', 'oldres', 7, '2024-05-01 12:00:00')"
    )
    await sql.execute("RESET ROLE")
    for _ in range(2):
        log = PostgresAuditLog(cfg)
        await log.open()
        try:
            rows = await log.query(AuditQuery())
        finally:
            await log.close()
        assert (rows[0].filename, rows[0].file_sha256, rows[0].scan_result) == ("oldres", "", "")
        assert rows[0].jid == "old@example.test" and rows[0].file_size == 7
    assert await versions(sql) == [1, 2]


async def test_rows_carry_hash_and_scan_result(pg_log: PostgresAuditLog) -> None:
    """FILE_SHA256 and SCAN_RESULT round-trip; SHARE and POST_INFECTED rows; keyset paging."""
    await pg_log.record(replace(rec(1), file_sha256=SHA, scan_result="clean"))
    await pg_log.record(replace(rec(2), method="SHARE"))
    await pg_log.record(replace(rec(3), method="POST_INFECTED", scan_result="Eicar-Signature"))
    rows = await pg_log.query(AuditQuery())
    assert [(r.method, r.file_sha256, r.scan_result) for r in rows] == [
        ("POST", SHA, "clean"),
        ("SHARE", "", ""),
        ("POST_INFECTED", "", "Eicar-Signature"),
    ]
    after = await pg_log.query(AuditQuery(after_index=rows[0].index, limit=1))
    assert [r.index for r in after] == [rows[1].index]


async def test_holds_and_purge_marks(pg_log: PostgresAuditLog, sql: Any) -> None:
    """PostgreSQL keeps holds (who, when, why, release; times UTC) and purge marks."""
    await check_holds_and_marks(pg_log)
    created = await sql.fetchval("SELECT created_at FROM aft_hold ORDER BY hold_id LIMIT 1")
    assert abs(created - datetime.now(UTC).replace(tzinfo=None)) < timedelta(minutes=5)


async def test_holds_bypass_the_spool(cfg: Config) -> None:
    """Through the spooled log, holds and marks go straight to the database."""
    await check_holds_bypass_the_spool(open_audit_log(cfg, Metrics()), PostgresAuditLog(cfg))


async def test_hold_jid_with_nul_is_stored_replaced(pg_log: PostgresAuditLog) -> None:
    """A NUL in a hold's JID (PostgreSQL text cannot hold it) is stored replaced."""
    hold_id = await pg_log.add_hold(Hold(column="JID", jid="nul\x00@example.test"))
    assert [h.jid for h in await pg_log.list_holds() if h.hold_id == hold_id] == [
        "nul\ufffd@example.test"
    ]
