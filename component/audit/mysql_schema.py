"""The DDL of AFT_LOG on MariaDB/MySQL: versioned migrations and the deploy script.

:data:`MIGRATIONS` is the one source of the schema: :class:`~component.audit.mysql.MysqlAuditLog`
runs the versions a database lacks at open, and ``deploy/sql/aft_log_mysql.sql`` is
:func:`schema_script` (a test keeps them equal).
"""

from __future__ import annotations

# Created before anything else: which migrations have run.
VERSION_TABLE = """CREATE TABLE IF NOT EXISTS AFT_SCHEMA_VERSION (
    VERSION    INT          NOT NULL PRIMARY KEY,
    APPLIED_AT TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""

# version -> statements. Append a new version for every schema change; never edit one
# that has shipped. IF NOT EXISTS lets a table an administrator made from
# deploy/sql/aft_log_mysql.sql be adopted as version 1.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        # InnoDB keys are at most 3072 bytes and utf8mb4 takes 4 per character, so the
        # 3071-character JID columns get 255-character prefix indexes; FILENAME (511 ->
        # 2044 bytes) fits whole and is binary-collated: resource names are case-sensitive.
        """CREATE TABLE IF NOT EXISTS AFT_LOG (
    AFT_INDEX     BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    JID           VARCHAR(3071) NOT NULL DEFAULT '',
    TO_JID        VARCHAR(3071) NOT NULL DEFAULT '',
    METHOD        VARCHAR(63)   NOT NULL,
    FILENAME      VARCHAR(511)  COLLATE utf8mb4_bin NOT NULL,
    REAL_FILENAME VARCHAR(511)  NOT NULL DEFAULT '',
    FILE_TYPE     VARCHAR(10)   NOT NULL DEFAULT '',
    CHAT_TYPE     VARCHAR(10)   NOT NULL DEFAULT '',
    FILE_SERVER   VARCHAR(511)  NOT NULL DEFAULT '',
    FILE_SIZE     BIGINT        NOT NULL DEFAULT 0,
    DATE_TIME     TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    NODE_ID       VARCHAR(128)  NOT NULL DEFAULT '',
    CLIENT_IP     VARCHAR(64)   NOT NULL DEFAULT '',
    KEY AFT_LOG_JID (JID(255), DATE_TIME),
    KEY AFT_LOG_TO_JID (TO_JID(255), DATE_TIME),
    KEY AFT_LOG_DATE (DATE_TIME),
    KEY AFT_LOG_FILENAME (FILENAME)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci ROW_FORMAT=DYNAMIC""",
        # Event ids of spooled rows already inserted: written in the same transaction as
        # the AFT_LOG row, so a spooled row is delivered exactly once.
        """CREATE TABLE IF NOT EXISTS AFT_SPOOL_DELIVERED (
    EVENT_ID     CHAR(32)     CHARACTER SET ascii NOT NULL PRIMARY KEY,
    DELIVERED_AT TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY AFT_SPOOL_DELIVERED_AT (DELIVERED_AT)
) ENGINE=InnoDB""",
    ),
    # Compliance records (DESIGN.md): content hash and scan verdict (rows written before
    # keep them empty), legal holds, and the marks `mft purge` leaves for `mft verify`.
    2: (
        """ALTER TABLE AFT_LOG
    ADD COLUMN FILE_SHA256 VARCHAR(64)  CHARACTER SET ascii NOT NULL DEFAULT '',
    ADD COLUMN SCAN_RESULT VARCHAR(255) NOT NULL DEFAULT ''""",
        """CREATE TABLE IF NOT EXISTS AFT_HOLD (
    HOLD_ID        BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    HOLD_COLUMN    VARCHAR(10)   CHARACTER SET ascii NOT NULL,
    HOLD_JID       VARCHAR(3071) NOT NULL,
    REASON         VARCHAR(1024) NOT NULL DEFAULT '',
    CREATED_AT     TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    CREATED_BY     VARCHAR(255)  NOT NULL DEFAULT '',
    RELEASED_AT    TIMESTAMP(6)  NULL DEFAULT NULL,
    RELEASED_BY    VARCHAR(255)  NOT NULL DEFAULT '',
    RELEASE_REASON VARCHAR(1024) NOT NULL DEFAULT ''
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci ROW_FORMAT=DYNAMIC""",
        """CREATE TABLE IF NOT EXISTS AFT_PURGED (
    FILENAME  VARCHAR(511)  COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    NODE_ID   VARCHAR(128)  NOT NULL DEFAULT '',
    PURGED_AT TIMESTAMP(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PURGED_BY VARCHAR(255)  NOT NULL DEFAULT ''
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci ROW_FORMAT=DYNAMIC""",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)


def schema_script() -> str:
    """Every migration as one script: the content of ``deploy/sql/aft_log_mysql.sql``."""
    parts = [
        "-- AFT_LOG for MariaDB/MySQL: what component/audit_mysql.py creates when missing.",
        "-- mariadb mft < aft_log_mysql.sql   (the service adopts tables made this way)",
        "",
        VERSION_TABLE + ";",
    ]
    for version, statements in sorted(MIGRATIONS.items()):
        parts += ["", f"-- schema version {version}"]
        parts += [s + ";" for s in statements]
        parts.append(f"INSERT IGNORE INTO AFT_SCHEMA_VERSION (VERSION) VALUES ({version});")
    return "\n".join(parts) + "\n"
