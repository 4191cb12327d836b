"""PostgreSQL pieces without a server: postgresql:// URLs, TLS modes, the DDL, the SQL."""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from component.audit import COLUMNS, TEXT_LIMITS, AuditQuery
from component.audit import pgschema as S
from component.audit.pgconnect import describe, refused, ssl_setting
from component.audit.pgschema import columns_of
from component.config import parse_config
from component.dburl import parse_postgres_url
from component.errors import ConfigError
from tests.fixtures.config import make_raw_config
from tests.unit.test_spool import rec

SQL_DIR = Path(__file__).resolve().parents[2] / "deploy" / "sql"


def test_url_parts_are_percent_decoded() -> None:
    """User, password and database come out decoded; port 5432 and sslmode prefer by default."""
    t = parse_postgres_url("postgresql://m%40ft:p%40ss%3Aw%2Frd%25@db.example.test/aft%5Flog")
    assert (t.user, t.password, t.host, t.port, t.database, t.sslmode) == (
        "m@ft", "p@ss:w/rd%", "db.example.test", 5432, "aft_log", "prefer",
    )  # fmt: skip
    assert not t.unix_socket and "p@ss" not in repr(t)


def test_unix_socket_and_tls_options() -> None:
    """``?host=/dir`` is a socket directory; sslmode and sslrootcert are read as libpq does."""
    t = parse_postgres_url("postgres://mft@localhost:5433/mft?host=/run/postgresql")
    assert (t.host, t.port, t.unix_socket, t.password) == ("/run/postgresql", 5433, True, "")
    t = parse_postgres_url(
        "postgresql://mft:pw@db.example.test/mft?sslmode=verify-full&sslrootcert=/etc/mft/ca.pem"
    )
    assert (t.sslmode, t.sslrootcert) == ("verify-full", "/etc/mft/ca.pem")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://mft:pw@host/", "database name"),
        ("postgresql://mft:pw@host/a/b", "database name"),
        ("postgresql://mft:pw@host:99999/mft", "bad port"),
        ("postgresql://mft:pw@host/mft?ssl=1", "unknown option 'ssl'"),
        ("postgresql://mft:pw@host/mft?sslmode=on", "sslmode 'on'"),
        ("postgresql://mft:pw@host/mft?host=db2", "socket directory"),
        ("postgresql://mft:pw@host/mft?sslrootcert=/ca.pem", "sslrootcert needs"),
    ],
)
def test_bad_urls_are_named_when_the_config_loads(tmp_path: Path, url: str, message: str) -> None:
    """A URL the pool could not use fails the config load, naming [database] url and why."""
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        parse_config(make_raw_config(tmp_path, database={"url": url}))
    assert str(info.value).startswith("[database] url")


def test_both_schemes_select_postgresql(tmp_path: Path) -> None:
    """postgres:// and postgresql:// are one back-end; the password never shows."""
    for scheme in ("postgres", "postgresql"):
        url = f"{scheme}://mft:hunter2@db:5432/mft"
        cfg = parse_config(make_raw_config(tmp_path, database={"url": url}))
        assert cfg.database.scheme == "postgresql"
        assert cfg.database.postgres.password == "hunter2"
        assert cfg.database.safe_url == f"{scheme}://mft:***@db:5432/mft"
        assert "hunter2" not in repr(cfg)


def test_ssl_modes_map_to_asyncpg(tmp_path: Path) -> None:
    """disable/prefer pass through; require skips verification; verify-full checks the name."""
    base = "postgresql://mft@db/mft?sslmode="
    assert ssl_setting(parse_postgres_url(base + "disable")) is False
    assert ssl_setting(parse_postgres_url(base + "prefer")) == "prefer"
    req = ssl_setting(parse_postgres_url(base + "require"))
    assert isinstance(req, ssl.SSLContext) and req.verify_mode == ssl.CERT_NONE
    full = ssl_setting(parse_postgres_url(base + "verify-full"))
    assert isinstance(full, ssl.SSLContext) and full.check_hostname
    ca = ssl_setting(parse_postgres_url(base + "verify-ca"))
    assert isinstance(ca, ssl.SSLContext) and ca.verify_mode == ssl.CERT_REQUIRED
    assert not ca.check_hostname
    with pytest.raises(OSError):
        ssl_setting(parse_postgres_url(base + f"verify-full&sslrootcert={tmp_path}/none.pem"))


def test_deploy_sql_file_is_the_code_ddl() -> None:
    """deploy/sql/aft_log_postgresql.sql is exactly what the code runs."""
    assert (SQL_DIR / "aft_log_postgresql.sql").read_text() == S.schema_script()


def test_migrations_make_every_column_with_its_size() -> None:
    """Versions 1..N without gaps; together they create every COLUMNS entry, sized by
    TEXT_LIMITS, so a new column without a PostgreSQL migration fails here."""
    assert sorted(S.MIGRATIONS) == list(range(1, S.SCHEMA_VERSION + 1))
    ddl = "\n".join(s for v in sorted(S.MIGRATIONS) for s in S.MIGRATIONS[v])
    for column in COLUMNS:
        assert re.search(rf"\b{column.lower()}\s+{re.escape(S.column_type(column))}", ddl) or (
            column == "AFT_INDEX" and "aft_index     bigserial     PRIMARY KEY" in ddl
        ), column
    for column, size in TEXT_LIMITS.items():
        assert S.column_type(column) == f"varchar({size})"
    assert S.column_type("DATE_TIME") == "timestamp"  # without time zone, holding UTC


def test_insert_takes_one_array_per_column() -> None:
    """The INSERT names every column but AFT_INDEX and keeps call order (ORDINALITY)."""
    names = re.search(r"INSERT INTO aft_log \(([^)]*)\)", S.INSERT_SQL)
    assert names and names.group(1).split(", ") == [c.lower() for c in COLUMNS[1:]]
    assert f"${len(COLUMNS) - 1}::" in S.INSERT_SQL and "ORDER BY n" in S.INSERT_SQL
    cols = columns_of([rec(1), rec(2)])
    assert len(cols) == len(COLUMNS) - 1 and cols[3] == ["res1", "res2"]


def test_text_postgresql_cannot_hold_is_replaced() -> None:
    """NUL and lone surrogates (which PostgreSQL refuses) become replacement characters."""
    odd = replace(rec(1), real_filename="a\x00b\ud800c.txt")
    (value,) = columns_of([odd])[COLUMNS.index("REAL_FILENAME") - 1]
    assert isinstance(value, str) and "\x00" not in value
    value.encode("utf-8")  # no lone surrogate left


def test_where_clause_numbers_parameters() -> None:
    """Bare JIDs match caselessly through the indexed prefix; parameters are $1..$n."""
    since = datetime(2024, 5, 1, tzinfo=UTC)
    where, params = S.where_clause(
        AuditQuery(jid="Alice@Example.test/phone", method="GET", since=since), first=1
    )
    assert where.count("$") == len(params) == 4
    assert params[:2] == ["alice@example.test", "alice@example.test"]
    assert "left(lower(split_part(jid, '/', 1)), 255) = $1" in where
    assert params[3] == datetime(2024, 5, 1)  # naive UTC, for a timestamp column
    assert S.where_clause(AuditQuery()) == ("", [])
    assert S.where_clause(AuditQuery(after_index=41)) == (" WHERE aft_index > $1", [41])
    long_where, long_params = S.where_clause(AuditQuery(to_jid="u" * 400 + "@x"))
    assert len(str(long_params[0])) == S.JID_PREFIX and "to_jid" in long_where


def test_errors_are_described_with_the_place() -> None:
    """Refused, unresolvable and timed-out connections name host and port."""
    t = parse_postgres_url("postgresql://mft@db.example.test:5999/mft")
    assert describe(ConnectionRefusedError(111, "refused"), t) == (
        "connection refused by db.example.test:5999"
    )
    assert "db.example.test:5999" in describe(TimeoutError(), t)
    assert describe(OSError(-2, "Name or service not known"), t)
    unknown = socket.gaierror(-2, "Name or service not known")
    assert describe(unknown, t) == "cannot resolve db.example.test:5999 (Name or service not known)"
    sock = parse_postgres_url("postgresql://mft@localhost/mft?host=/run/postgresql/")
    assert describe(FileNotFoundError(2, "No such file or directory"), sock) == (
        "no PostgreSQL server listens on the socket /run/postgresql/.s.PGSQL.5432"
    )


def test_only_a_refusal_by_the_server_rules_out_a_commit() -> None:
    """A data error means nothing was stored; a lost connection or a shutdown leaves it
    in doubt, so the spooled row is checked by index before it is sent again."""
    assert refused(asyncpg.exceptions.StringDataRightTruncationError("too long"))
    assert not refused(asyncpg.exceptions.AdminShutdownError("terminating connection"))
    assert not refused(asyncpg.exceptions.ConnectionDoesNotExistError("closed"))
    assert not refused(ConnectionResetError(104, "reset"))
