"""AFT_LOG's schema and SQL for PostgreSQL, derived from :data:`~component.audit.base.COLUMNS`.

The table is Cisco's AFT_LOG as tools written for it on PostgreSQL expect: ``aft_log``
with the columns in lower case (PostgreSQL folds unquoted names, so ``SELECT JID FROM
AFT_LOG`` works too), ``aft_index`` a BIGINT primary key from a sequence and
``date_time`` a ``timestamp`` holding UTC. :data:`MIGRATIONS` is the one source of the
DDL; ``deploy/sql/aft_log_postgresql.sql`` is :func:`schema_script` (a test keeps the
two equal). Column types come from :data:`~component.audit.base.TEXT_LIMITS`, so a new
column needs one line in a new migration, nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

from component.audit.base import (
    COLUMNS,
    TEXT_LIMITS,
    AuditQuery,
    AuditRecord,
    bare_jid,
    naive_utc,
)
from component.audit.sql import record_values

# pg_advisory_xact_lock key of the migration ("mft_aft1" as a 64-bit number): several
# nodes or processes may start at once; one migrates, the others wait for its COMMIT.
SCHEMA_LOCK_KEY = 0x6D66745F61667431

# Bare JIDs are matched through an index on this expression. A full JID may be 3071
# characters (more bytes than a btree entry may hold), so only a prefix is indexed;
# 255 characters are at most 1020 bytes, under PostgreSQL's ~2700-byte limit.
JID_PREFIX = 255


def bare_jid_sql(column: str) -> str:
    """SQL for the bare, lower-cased JID stored in ``column`` (as :func:`bare_jid` does)."""
    return f"lower(split_part({column}, '/', 1))"


def _jid_key(column: str) -> str:
    return f"left({bare_jid_sql(column)}, {JID_PREFIX})"


def column_type(name: str) -> str:
    """The PostgreSQL type of AFT_LOG column ``name`` (texts sized by TEXT_LIMITS).

    :raises KeyError: a column this module does not know how to store.
    """
    if name in TEXT_LIMITS:
        return f"varchar({TEXT_LIMITS[name]})"
    return {"AFT_INDEX": "bigint", "FILE_SIZE": "bigint", "DATE_TIME": "timestamp"}[name]


def column_ddl(name: str) -> str:
    """One column of CREATE TABLE / ALTER TABLE ADD COLUMN (NOT NULL, with a default).

    DATE_TIME defaults to the current time in UTC, whatever the session's zone, so a
    row inserted by another tool is UTC too.
    """
    if name == "AFT_INDEX":
        return "aft_index     bigserial     PRIMARY KEY"
    default = {
        "METHOD": "",
        "FILENAME": "",
        "FILE_SIZE": " DEFAULT 0",
        "DATE_TIME": " DEFAULT (now() AT TIME ZONE 'utc')",
    }.get(name, " DEFAULT ''")
    return f"{name.lower():<13} {column_type(name):<13} NOT NULL{default}"


# The columns as version 1 created them; later versions add columns with ALTER TABLE
# (a test checks that the migrations together make every column of COLUMNS).
V1_COLUMNS = (
    "AFT_INDEX", "JID", "TO_JID", "METHOD", "FILENAME", "REAL_FILENAME", "FILE_TYPE",
    "CHAT_TYPE", "FILE_SERVER", "FILE_SIZE", "DATE_TIME", "NODE_ID", "CLIENT_IP",
)  # fmt: skip

VERSION_TABLE = """CREATE TABLE IF NOT EXISTS aft_schema_version (
    version    integer     NOT NULL PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""

# version -> statements, run in one transaction under the advisory lock. Append a new
# version for every schema change; never edit one that has shipped. IF NOT EXISTS lets
# tables made from deploy/sql/aft_log_postgresql.sql be adopted.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE IF NOT EXISTS aft_log (\n    "
        + ",\n    ".join(column_ddl(c) for c in V1_COLUMNS)
        + "\n)",
        # mft log's filters: bare JID or recipient (with a date range), a date range
        # alone, a resource name (GET rows find their upload). text_pattern_ops is not
        # needed: bare JIDs are compared whole, never with LIKE.
        f"CREATE INDEX IF NOT EXISTS aft_log_jid ON aft_log ({_jid_key('jid')}, date_time)",
        f"CREATE INDEX IF NOT EXISTS aft_log_to_jid ON aft_log ({_jid_key('to_jid')}, date_time)",
        "CREATE INDEX IF NOT EXISTS aft_log_date ON aft_log (date_time)",
        "CREATE INDEX IF NOT EXISTS aft_log_filename ON aft_log (filename)",
        # Event ids of spooled rows already inserted, written in the same transaction
        # as their AFT_LOG rows, so a spooled row is delivered exactly once.
        """CREATE TABLE IF NOT EXISTS aft_spool_delivered (
    event_id     char(32)    NOT NULL PRIMARY KEY,
    delivered_at timestamptz NOT NULL DEFAULT now()
)""",
        "CREATE INDEX IF NOT EXISTS aft_spool_delivered_at ON aft_spool_delivered (delivered_at)",
    ),
    # DESIGN.md "Compliance records": the content hash and the malware verdict, legal
    # holds and purge marks (component/audit/holds.py says what the two tables hold).
    2: (
        "ALTER TABLE aft_log"
        f" ADD COLUMN IF NOT EXISTS {column_ddl('FILE_SHA256')},"
        f" ADD COLUMN IF NOT EXISTS {column_ddl('SCAN_RESULT')}",
        """CREATE TABLE IF NOT EXISTS aft_hold (
    hold_id        bigserial      PRIMARY KEY,
    hold_column    varchar(10)    NOT NULL,
    hold_jid       varchar(3071)  NOT NULL,
    reason         varchar(1024)  NOT NULL DEFAULT '',
    created_at     timestamp      NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    created_by     varchar(255)   NOT NULL DEFAULT '',
    released_at    timestamp      NULL,
    released_by    varchar(255)   NOT NULL DEFAULT '',
    release_reason varchar(1024)  NOT NULL DEFAULT ''
)""",
        """CREATE TABLE IF NOT EXISTS aft_purged (
    filename  varchar(511) NOT NULL PRIMARY KEY,
    node_id   varchar(128) NOT NULL DEFAULT '',
    purged_at timestamp    NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    purged_by varchar(255) NOT NULL DEFAULT ''
)""",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)

LOCK_SQL = f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})"
RECORD_VERSION_SQL = "INSERT INTO aft_schema_version (version) VALUES ($1) ON CONFLICT DO NOTHING"


def schema_script() -> str:
    """Every migration as one psql script: the content of ``deploy/sql/aft_log_postgresql.sql``."""
    parts = [
        "-- AFT_LOG for PostgreSQL: what component/audit/postgresql.py creates when missing.",
        "-- psql -d mft -f aft_log_postgresql.sql   (the service adopts tables made this way)",
        "-- Run it as the role the service connects as, or make that role the tables' owner.",
        "",
        "BEGIN;",
        LOCK_SQL + ";",
        VERSION_TABLE + ";",
    ]
    for version, statements in sorted(MIGRATIONS.items()):
        parts += ["", f"-- schema version {version}"]
        parts += [s + ";" for s in statements]
        parts.append(RECORD_VERSION_SQL.replace("$1", str(version)) + ";")
    parts += ["", "COMMIT;"]
    return "\n".join(parts) + "\n"


# --- statements ------------------------------------------------------------------------

_NAMES = [c.lower() for c in COLUMNS[1:]]

# One statement for any number of rows: one array parameter per column, unnested in
# call order (WITH ORDINALITY ... ORDER BY), so AFT_INDEX follows the order of record().
INSERT_SQL = (
    f"INSERT INTO aft_log ({', '.join(_NAMES)})"
    f" SELECT {', '.join(_NAMES)} FROM unnest("
    + ", ".join(f"${i}::{column_type(c).split('(')[0]}[]" for i, c in enumerate(COLUMNS[1:], 1))
    + f") WITH ORDINALITY AS r({', '.join(_NAMES)}, n) ORDER BY n RETURNING aft_index"
)
SELECT_SQL = f"SELECT {', '.join(c.lower() for c in COLUMNS)} FROM aft_log"
FIND_UPLOAD_SQL = (
    SELECT_SQL + " WHERE filename = $1 AND method = 'POST' ORDER BY aft_index DESC LIMIT 1"
)
FIRST_SHARE_SQL = (
    SELECT_SQL + " WHERE filename = $1 AND method = 'SHARE' ORDER BY aft_index LIMIT 1"
)
# A GET's two lookups in one round trip (see component.audit.sql.upload_and_share_sql).
UPLOAD_AND_SHARE_SQL = f"({FIND_UPLOAD_SQL}) UNION ALL ({FIRST_SHARE_SQL})"
COUNT_BY_CHAT_TYPE_SQL = (
    "SELECT chat_type, count(*) FROM aft_log WHERE method = 'POST'"
    " AND node_id = $1 AND date_time >= $2 GROUP BY chat_type"
)
UPLOADED_AMONG_SQL = (
    "SELECT DISTINCT filename FROM aft_log WHERE method = 'POST' AND filename = ANY($1::text[])"
)
DELIVERED_SQL = "SELECT event_id FROM aft_spool_delivered WHERE event_id = ANY($1::char(32)[])"
MARK_DELIVERED_SQL = "INSERT INTO aft_spool_delivered (event_id) SELECT unnest($1::char(32)[])"
# A direct INSERT whose COMMIT answer was lost: did a row like it land from that index on?
LANDED_SQL = (
    "SELECT 1 FROM aft_log WHERE aft_index >= $1 AND filename = $2 AND method = $3"
    " AND date_time = $4 AND jid = $5 LIMIT 1"
)
# Delivered ids are only needed while a spool may still hold their rows.
PRUNE_DELIVERED_SQL = (
    "DELETE FROM aft_spool_delivered WHERE delivered_at < now() - interval '30 days'"
)


def numbered(sql: str) -> str:
    """``sql`` written with ``?`` placeholders (the shared hold SQL), with ``$1, $2, ...``."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], 1))


def where_clause(q: AuditQuery, first: int = 1) -> tuple[str, list[object]]:
    """``WHERE ...`` (or ``''``) with ``$n`` parameters from ``first`` on, and the values.

    JIDs match as bare JIDs, caselessly: ``alice@example.com`` finds rows stored with
    that bare JID and with any of its full JIDs, through the bare-JID index.
    """
    conds: list[str] = []
    params: list[object] = []

    def param(value: object) -> str:
        params.append(value)
        return f"${first + len(params) - 1}"

    for column, jid in (("jid", q.jid), ("to_jid", q.to_jid)):
        if jid is not None:
            bare = bare_jid(jid)
            conds.append(
                f"{_jid_key(column)} = {param(bare[:JID_PREFIX])}"
                f" AND {bare_jid_sql(column)} = {param(bare)}"
            )
    for column, value in (
        ("method", q.method),
        ("chat_type", q.chat_type),
        ("filename", q.filename),
    ):
        if value is not None:
            conds.append(f"{column} = {param(value)}")
    if q.since is not None:
        conds.append(f"date_time >= {param(naive_utc(q.since))}")
    if q.until is not None:
        conds.append(f"date_time < {param(naive_utc(q.until))}")
    if q.after_index is not None:  # keyset paging (mft verify, mft export)
        conds.append(f"aft_index > {param(int(q.after_index))}")
    return (" WHERE " + " AND ".join(conds)) if conds else "", params


def pg_text(value: object) -> object:
    """``value`` as PostgreSQL text can hold it (NUL and lone surrogates replaced)."""
    # MariaDB and the JSON spool take them: storing a replacement here beats failing,
    # and so blocking the spool, forever.
    if isinstance(value, str) and (not value.isprintable() or "\x00" in value):
        return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return value


def columns_of(records: Sequence[AuditRecord]) -> list[list[object]]:
    """:data:`~component.audit.pgschema.INSERT_SQL`'s parameters: one list per column."""
    rows = [[pg_text(v) for v in record_values(r)] for r in records]
    return [list(col) for col in zip(*rows, strict=True)]
