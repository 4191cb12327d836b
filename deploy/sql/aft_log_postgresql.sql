-- AFT_LOG for PostgreSQL: what component/audit/postgresql.py creates when missing.
-- psql -d mft -f aft_log_postgresql.sql   (the service adopts tables made this way)
-- Run it as the role the service connects as, or make that role the tables' owner.

BEGIN;
SELECT pg_advisory_xact_lock(7883116150763451441);
CREATE TABLE IF NOT EXISTS aft_schema_version (
    version    integer     NOT NULL PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- schema version 1
CREATE TABLE IF NOT EXISTS aft_log (
    aft_index     bigserial     PRIMARY KEY,
    jid           varchar(3071) NOT NULL DEFAULT '',
    to_jid        varchar(3071) NOT NULL DEFAULT '',
    method        varchar(63)   NOT NULL,
    filename      varchar(511)  NOT NULL,
    real_filename varchar(511)  NOT NULL DEFAULT '',
    file_type     varchar(10)   NOT NULL DEFAULT '',
    chat_type     varchar(10)   NOT NULL DEFAULT '',
    file_server   varchar(511)  NOT NULL DEFAULT '',
    file_size     bigint        NOT NULL DEFAULT 0,
    date_time     timestamp     NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    node_id       varchar(128)  NOT NULL DEFAULT '',
    client_ip     varchar(64)   NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS aft_log_jid ON aft_log (left(lower(split_part(jid, '/', 1)), 255), date_time);
CREATE INDEX IF NOT EXISTS aft_log_to_jid ON aft_log (left(lower(split_part(to_jid, '/', 1)), 255), date_time);
CREATE INDEX IF NOT EXISTS aft_log_date ON aft_log (date_time);
CREATE INDEX IF NOT EXISTS aft_log_filename ON aft_log (filename);
CREATE TABLE IF NOT EXISTS aft_spool_delivered (
    event_id     char(32)    NOT NULL PRIMARY KEY,
    delivered_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS aft_spool_delivered_at ON aft_spool_delivered (delivered_at);
INSERT INTO aft_schema_version (version) VALUES (1) ON CONFLICT DO NOTHING;

-- schema version 2
ALTER TABLE aft_log ADD COLUMN IF NOT EXISTS file_sha256   varchar(64)   NOT NULL DEFAULT '', ADD COLUMN IF NOT EXISTS scan_result   varchar(255)  NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS aft_hold (
    hold_id        bigserial      PRIMARY KEY,
    hold_column    varchar(10)    NOT NULL,
    hold_jid       varchar(3071)  NOT NULL,
    reason         varchar(1024)  NOT NULL DEFAULT '',
    created_at     timestamp      NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    created_by     varchar(255)   NOT NULL DEFAULT '',
    released_at    timestamp      NULL,
    released_by    varchar(255)   NOT NULL DEFAULT '',
    release_reason varchar(1024)  NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS aft_purged (
    filename  varchar(511) NOT NULL PRIMARY KEY,
    node_id   varchar(128) NOT NULL DEFAULT '',
    purged_at timestamp    NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    purged_by varchar(255) NOT NULL DEFAULT ''
);
INSERT INTO aft_schema_version (version) VALUES (2) ON CONFLICT DO NOTHING;

COMMIT;
