"""SpooledAuditLog over an injected fake database: spooling, order, exactly once, find_upload."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from component.audit import AuditQuery, AuditRecord, AuditWriteFailed, jid_matches
from component.audit.spool import SpoolEntry
from component.audit.spooled import SpooledAuditLog
from component.errors import AuditUnavailable
from component.metrics import Metrics
from tests.unit.test_spool import rec


class FakeDatabase:
    """An in-memory SpoolTarget whose availability the test switches."""

    def __init__(self) -> None:
        self.up = True
        self.writable = True  # False: reads answer, writes fail
        self.rows: list[AuditRecord] = []
        self.delivered: set[str] = set()
        self.commit_in_doubt = False  # next record(): stored, but the answer is lost
        self.opened = False
        self.lookups: list[list[str]] = []  # uploaded_among calls
        self.combined: list[str] = []  # find_upload_and_share calls

    def _check(self) -> None:
        if not self.up:
            raise AuditUnavailable("database down")

    async def open(self) -> None:
        self._check()
        self.opened = True

    async def close(self) -> None:
        self.opened = False

    async def ping(self) -> None:
        self._check()

    async def record(self, rec: AuditRecord) -> None:
        if not (self.up and self.writable):
            raise AuditWriteFailed("down")
        self.rows.append(rec)
        if self.commit_in_doubt:
            self.commit_in_doubt = False
            raise AuditWriteFailed("lost answer", maybe_index=len(self.rows))

    async def deliver(self, entries: Sequence[SpoolEntry]) -> None:
        self._check()
        if not self.writable:
            raise AuditUnavailable("read-only")
        for e in entries:
            if e.event_id in self.delivered:
                continue
            if e.maybe_index is not None and self.rows[e.maybe_index - 1] == e.record:
                continue
            self.rows.append(e.record)
            self.delivered.add(e.event_id)

    async def prune_delivered(self) -> None:
        self._check()

    async def find_upload(self, resource: str) -> AuditRecord | None:
        self._check()
        return next((r for r in reversed(self.rows) if r.filename == resource), None)

    async def find_first_share(self, resource: str) -> AuditRecord | None:
        self._check()
        return next((r for r in self.rows if r.filename == resource and r.method == "SHARE"), None)

    async def find_upload_and_share(
        self, resource: str
    ) -> tuple[AuditRecord | None, AuditRecord | None]:
        self._check()
        self.combined.append(resource)
        mine = [r for r in self.rows if r.filename == resource]
        up = next((r for r in reversed(mine) if r.method == "POST"), None)
        share = next((r for r in mine if r.method == "SHARE"), None)
        return up, (share if up is not None and not up.to_jid else None)

    async def query(self, q: AuditQuery) -> Sequence[AuditRecord]:
        self._check()
        return list(self.rows)

    async def count_uploads(self, jid: str, since: datetime) -> tuple[int, int]:
        self._check()
        mine = [r for r in self.rows if r.method == "POST" and jid_matches(r.jid, jid)]
        return len(mine), sum(r.file_size for r in mine)

    async def uploaded_among(self, resources: Sequence[str]) -> set[str]:
        self._check()
        self.lookups.append(list(resources))
        return {r.filename for r in self.rows if r.method == "POST"} & set(resources)

    async def count_by_chat_type(self, since: datetime, node_id: str) -> dict[str, int]:
        self._check()
        counts: dict[str, int] = {}
        for r in self.rows:
            if r.method == "POST" and r.node_id == node_id and r.date_time >= since:
                counts[r.chat_type] = counts.get(r.chat_type, 0) + 1
        return counts


@pytest.fixture
def db() -> FakeDatabase:
    """A fake database that is up."""
    return FakeDatabase()


@pytest.fixture
async def audit(db: FakeDatabase, tmp_path: Path) -> AsyncIterator[SpooledAuditLog]:
    """An opened SpooledAuditLog over ``db`` with fast retries."""
    log = SpooledAuditLog(db, tmp_path / "aft.spool", Metrics(), retry_min=0.01, retry_max=0.05)
    await log.open()
    yield log
    db.up = True
    await log.close()


async def test_uploaded_among_asks_the_database_only_for_the_rest(
    audit: SpooledAuditLog, db: FakeDatabase
) -> None:
    """Spooled and recent uploads are known locally; the rest go in one database query."""
    await audit.record(rec(0))  # stored, and remembered as recent
    db.up = False
    await audit.record(rec(1))  # spooled
    db.up = True
    db.rows.append(rec(2))  # another process's upload
    names = [rec(i).filename for i in range(4)]
    assert await audit.uploaded_among(names) == set(names[:3])
    assert db.lookups == [names[2:]]


async def test_rows_go_straight_to_the_database(audit: SpooledAuditLog, db: FakeDatabase) -> None:
    """With the database up nothing is spooled."""
    await audit.record(rec(1))
    assert db.rows == [rec(1)] and audit.spooled == 0


async def test_outage_spools_in_order_and_delivers_once(
    audit: SpooledAuditLog, db: FakeDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows during an outage (and after, until drained) reach the database in order, once."""
    caplog.set_level(logging.INFO, logger="component.audit.spooled")
    await audit.record(rec(0))
    db.up = False
    for i in range(1, 6):
        await audit.record(rec(i))
    assert audit.spooled == 5
    assert audit._metrics.value("spool_rows") == 5
    db.up = True
    await audit.record(rec(6))  # queues behind the spooled rows
    async with asyncio.timeout(10):
        await audit.flush()
    assert db.rows == [rec(i) for i in range(7)]
    assert audit._metrics.value("spool_rows") == 0
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert any(lvl == "WARNING" and "spooling rows" in m for lvl, m in messages)
    assert any(lvl == "INFO" and "drained: 6 rows" in m for lvl, m in messages)


async def test_commit_in_doubt_is_not_stored_twice(
    audit: SpooledAuditLog, db: FakeDatabase
) -> None:
    """A row whose COMMIT answer was lost is spooled with its index and not inserted again."""
    db.commit_in_doubt = True
    await audit.record(rec(1))
    assert audit.spooled == 1
    async with asyncio.timeout(10):
        await audit.flush()
    assert db.rows == [rec(1)]


async def test_restart_delivers_rows_left_in_the_spool(db: FakeDatabase, tmp_path: Path) -> None:
    """Rows spooled by a closed instance are delivered by the next one on open()."""
    path = tmp_path / "aft.spool"
    first = SpooledAuditLog(db, path, Metrics(), retry_min=10, retry_max=10)
    await first.open()
    db.up = False
    await first.record(rec(1))
    await first.record(rec(2))
    await first.close()
    assert db.rows == []
    db.up = True
    second = SpooledAuditLog(db, path, Metrics())
    await second.open()
    async with asyncio.timeout(10):
        await second.flush()
    await second.close()
    assert db.rows == [rec(1), rec(2)]
    assert path.stat().st_size == 0


async def test_open_requires_the_database(db: FakeDatabase, tmp_path: Path) -> None:
    """The service must not start without its database; the spool lock is released."""
    db.up = False
    log = SpooledAuditLog(db, tmp_path / "aft.spool", Metrics())
    with pytest.raises(AuditUnavailable):
        await log.open()
    db.up = True
    again = SpooledAuditLog(db, tmp_path / "aft.spool", Metrics())
    await again.open()
    await again.close()


async def test_unwritable_spool_fails_the_record(audit: SpooledAuditLog, db: FakeDatabase) -> None:
    """Only when the database AND the spool fail does record() raise AuditUnavailable."""
    db.up = False
    audit.spool_path.mkdir()  # the spool file cannot be opened for writing
    with pytest.raises(AuditUnavailable):
        await audit.record(rec(1))
    assert audit.spooled == 0
    audit.spool_path.rmdir()


async def test_find_upload_sees_spooled_and_recent_rows(
    audit: SpooledAuditLog, db: FakeDatabase
) -> None:
    """A GET during an outage still finds the POST row, spooled or recently written."""
    await audit.record(rec(1))
    db.up = False
    await audit.record(rec(2))
    assert await audit.find_upload("res2") == rec(2)  # in the spool
    assert await audit.find_upload("res1") == rec(1)  # written before the outage
    with pytest.raises(AuditUnavailable):
        await audit.find_upload("unknown")


async def test_first_share_from_database_spool_or_memory(
    audit: SpooledAuditLog, db: FakeDatabase
) -> None:
    """The oldest SHARE row: the database's first, else the spool's, else this process's."""
    first = replace(rec(1, method="SHARE"), to_jid="room@conference.example.test")
    await audit.record(first)
    await audit.record(replace(rec(1, method="SHARE"), to_jid="carol@example.test"))
    assert await audit.find_first_share("res1") == first
    db.writable = False
    spooled = replace(rec(2, method="SHARE"), to_jid="dave@example.test")
    await audit.record(spooled)
    assert await audit.find_first_share("res2") == spooled  # only in the spool
    db.up = False
    assert await audit.find_first_share("res1") == first  # remembered from record()
    assert await audit.find_first_share("res2") == spooled
    with pytest.raises(AuditUnavailable):
        await audit.find_first_share("unknown")


async def test_upload_and_share_in_one_database_lookup(
    audit: SpooledAuditLog, db: FakeDatabase
) -> None:
    """A GET's combined lookup: one call to the database for a POST row another process
    wrote; the SHARE row only for an upload without recipient, from the spool when the
    database has none; an upload addressed to someone needs no SHARE row."""
    anonymous = replace(rec(1), to_jid="")  # a client that sends no <recipient>
    share = replace(rec(1, method="SHARE"), to_jid="room@conference.example.test")
    db.rows += [anonymous, share, rec(2)]  # written by another worker: not recent here
    assert await audit.find_upload_and_share("res1") == (anonymous, share)
    assert await audit.find_upload_and_share("res2") == (rec(2), None)
    assert db.combined == ["res1", "res2"]
    db.rows.append(replace(rec(3), to_jid=""))
    db.writable = False
    spooled = replace(rec(3, method="SHARE"), to_jid="dave@example.test")
    await audit.record(spooled)
    assert await audit.find_upload_and_share("res3") == (db.rows[-1], spooled)
    assert await audit.find_upload_and_share("unknown") == (None, None)


async def test_upload_and_share_of_a_local_upload_during_an_outage(
    audit: SpooledAuditLog, db: FakeDatabase
) -> None:
    """A POST row this process wrote is found without the database; a SHARE lookup that
    then fails leaves the recipient to the upload's row instead of failing the lookup."""
    anonymous = replace(rec(1), to_jid="")
    await audit.record(anonymous)
    share = replace(rec(1, method="SHARE"), to_jid="room@conference.example.test")
    db.rows.append(share)
    assert await audit.find_upload_and_share("res1") == (anonymous, share)
    assert db.combined == []  # known here: only the SHARE row was looked up
    db.up = False
    assert await audit.find_upload_and_share("res1") == (anonymous, None)
    with pytest.raises(AuditUnavailable):
        await audit.find_upload_and_share("unknown")


async def test_counts_include_spooled_rows(audit: SpooledAuditLog, db: FakeDatabase) -> None:
    """Quota (by bare JID) and roll-over (by node, chat type) counts see spooled rows."""
    await audit.record(rec(1))
    db.writable = False
    await audit.record(rec(2))
    await audit.record(rec(3, method="GET"))
    await audit.record(replace(rec(4), chat_type="groupchat"))
    await audit.record(replace(rec(5), node_id="node_2"))
    assert audit.spooled == 4
    files, size = await audit.count_uploads("ALICE@example.test", datetime(2000, 1, 1, tzinfo=UTC))
    assert (files, size) == (4, sum(rec(n).file_size for n in (1, 2, 4, 5)))
    since = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert await audit.count_by_chat_type(since, "node_1") == {"im": 2, "groupchat": 1}
    db.writable = True
