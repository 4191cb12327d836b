"""Schema version 2 on SQLite: compliance columns, migration of a v1 file, holds, purge marks."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from component.audit import COLUMNS, AuditLog, AuditQuery
from component.audit.base import Hold, held_jids
from component.audit.spool import SpoolEntry
from component.audit.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteAuditLog, sqlite_path
from tests.fixtures.config import ConfigFactory
from tests.unit.test_spool import rec

SHA = "ab" * 32


async def check_holds_and_marks(audit: AuditLog) -> None:
    """Shared by every back-end: add, list, release holds; mark and find purged files."""
    assert await audit.list_holds() == []
    first = await audit.add_hold(
        Hold(column="JID", jid="Alice@Example.test/phone", reason="case 7", created_by="ann")
    )
    second = await audit.add_hold(Hold(column="TO_JID", jid="room@muc.example.test"))
    assert second > first
    holds = await audit.list_holds()
    assert [(h.hold_id, h.column, h.jid, h.reason, h.created_by) for h in holds] == [
        (first, "JID", "alice@example.test", "case 7", "ann"),
        (second, "TO_JID", "room@muc.example.test", "", ""),
    ]
    assert holds[0].created_at.tzinfo is UTC and holds[0].active
    held = held_jids(holds)
    assert held.holds_upload("alice@example.test/pc", [])
    assert held.holds_upload("carol@example.test", ["", "ROOM@muc.example.test"])
    assert not held.holds_upload("carol@example.test", ["bob@example.test"])
    when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    released = await audit.release_hold(first, by="bob", reason="case closed", at=when)
    assert released is not None and not released.active
    assert (released.released_at, released.released_by, released.release_reason) == (
        when,
        "bob",
        "case closed",
    )
    again = await audit.release_hold(first, by="eve", reason="again")
    assert again is not None and again.released_by == "bob"  # the first release stands
    assert await audit.release_hold(99999, by="bob") is None
    assert [h.hold_id for h in await audit.list_holds()] == [second]
    assert [h.hold_id for h in await audit.list_holds(include_released=True)] == [first, second]

    assert await audit.purged(["resA", "resB"]) == set()
    await audit.mark_purged(["resA", "resC"], node_id="node_1", by="ann")
    await audit.mark_purged(["resA"], node_id="node_1", by="bob")  # a second mark is ignored
    await audit.mark_purged([], node_id="node_1", by="bob")
    assert await audit.purged(["resA", "resB", "resC"]) == {"resA", "resC"}


async def test_sqlite_holds_and_purge_marks(config_factory: ConfigFactory) -> None:
    """SQLite keeps holds (with who, when, why) and purge marks."""
    audit = SqliteAuditLog(config_factory())
    await audit.open()
    try:
        await check_holds_and_marks(audit)
    finally:
        await audit.close()


async def test_sqlite_rows_carry_hash_and_scan_result(config_factory: ConfigFactory) -> None:
    """FILE_SHA256 and SCAN_RESULT round-trip; SHARE and POST_INFECTED rows are stored."""
    audit = SqliteAuditLog(config_factory())
    await audit.open()
    try:
        await audit.record(replace(rec(1), file_sha256=SHA, scan_result="clean"))
        await audit.record(replace(rec(2), method="SHARE"))
        await audit.record(replace(rec(3), method="POST_INFECTED", scan_result="Eicar-Signature"))
        rows = await audit.query(AuditQuery())
        assert [(r.method, r.file_sha256, r.scan_result) for r in rows] == [
            ("POST", SHA, "clean"),
            ("SHARE", "", ""),
            ("POST_INFECTED", "", "Eicar-Signature"),
        ]
        after = await audit.query(AuditQuery(after_index=rows[0].index, limit=1))
        assert [r.index for r in after] == [rows[1].index]
    finally:
        await audit.close()


def make_v1_sqlite(path: Path) -> None:
    """A database as the release before schema versioning made it, with two rows."""
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[1]:
        db.execute(statement)
    for n in (1, 2):
        db.execute(
            "INSERT INTO AFT_LOG (JID, TO_JID, METHOD, FILENAME, REAL_FILENAME, FILE_TYPE,"
            " CHAT_TYPE, FILE_SERVER, FILE_SIZE, DATE_TIME, NODE_ID, CLIENT_IP)"
            " VALUES (?, '', 'POST', ?, 'a.txt', 'txt', 'im', 'localhost', 5,"
            " '2024-05-01 12:00:00', 'node_1', '127.0.0.1')",
            (f"old{n}@example.test", f"res{n}"),
        )
    db.commit()
    db.close()


async def test_sqlite_v1_database_is_migrated_keeping_rows(config_factory: ConfigFactory) -> None:
    """A v1 file gains the v2 columns (empty on old rows) and tables; rows are kept."""
    cfg = config_factory()
    path = sqlite_path(cfg.database.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_v1_sqlite(path)
    for _ in range(2):  # the second open migrates nothing
        audit = SqliteAuditLog(cfg)
        await audit.open()
        try:
            rows = await audit.query(AuditQuery())
            assert [(r.jid, r.file_sha256, r.scan_result) for r in rows[:2]] == [
                ("old1@example.test", "", ""),
                ("old2@example.test", "", ""),
            ]
            await audit.record(replace(rec(3), file_sha256=SHA))
            assert await audit.list_holds() == []
        finally:
            await audit.close()
    db = sqlite3.connect(path)
    try:
        assert [r[1] for r in db.execute("PRAGMA table_info(AFT_LOG)")] == list(COLUMNS)
        versions = [r[0] for r in db.execute("SELECT VERSION FROM AFT_SCHEMA_VERSION")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        assert (
            db.execute("SELECT COUNT(*) FROM AFT_LOG WHERE FILE_SHA256 = ?", (SHA,)).fetchone()[0]
            == 2
        )
    finally:
        db.close()


def test_spool_entry_from_before_v2_still_parses() -> None:
    """A spool line written without FILE_SHA256/SCAN_RESULT delivers with them empty."""
    line = json.loads(SpoolEntry(replace(rec(1), file_sha256=SHA)).to_line())
    del line["row"]["FILE_SHA256"], line["row"]["SCAN_RESULT"]
    old = SpoolEntry.from_line(json.dumps(line).encode() + b"\n")
    assert old.record == rec(1)
    assert SpoolEntry.from_line(SpoolEntry(replace(rec(1), file_sha256=SHA)).to_line()).record == (
        replace(rec(1), file_sha256=SHA)
    )
