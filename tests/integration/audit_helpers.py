"""Checks shared by the MariaDB and PostgreSQL AFT_LOG tests: each runs the same steps on
either database; the callers look behind the interface in their own SQL dialect."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from component.audit import AuditLog, AuditQuery, AuditRecord, open_audit_log
from component.audit.base import Hold
from component.audit.spool import SpoolEntry, SpoolFile
from component.audit.spooled import SpooledAuditLog, SpoolTarget
from component.config import Config
from component.errors import AuditUnavailable
from component.metrics import Metrics
from tests.unit.test_spool import rec

ROOT = Path(__file__).resolve().parents[2]

Step = Callable[[], Awaitable[object]]


async def check_round_trip(log: AuditLog, original: AuditRecord) -> None:
    """``original`` (2024-05-01 14:30:00.25 +02:00, an over-long JID) and a GET_INCOMPLETE
    row come back as written, clipped, in UTC."""
    await log.record(original)
    await log.record(rec(2, method="GET_INCOMPLETE"))
    rows = await log.query(AuditQuery())
    assert [r.index for r in rows] == [1, 2]
    assert replace(rows[0], index=None) == original.clipped()
    assert len(rows[0].jid) == 3071
    assert rows[0].date_time == datetime(2024, 5, 1, 12, 30, 0, 250000, tzinfo=UTC)
    assert rows[1].method == "GET_INCOMPLETE"


async def check_find_upload(log: AuditLog) -> None:
    """The newest POST row of a resource; GET rows and case-variants of the name do not count."""
    await log.record(rec(1))
    await log.record(replace(rec(1), method="GET", jid="bob@example.test"))
    found = await log.find_upload("res1")
    assert found is not None and found.method == "POST" and found.to_jid == "bob@example.test"
    assert await log.find_upload("RES1") is None
    assert await log.find_upload("nope") is None


async def check_outage_during_20_records(
    log: AuditLog, metrics: Metrics, stop: Step, start: Step, flush_within: float
) -> None:
    """``stop`` the database at the 7th of 20 record() calls, ``start`` it at the 14th:
    7 rows are spooled meanwhile, and the spool drains within ``flush_within`` seconds."""
    assert isinstance(log, SpooledAuditLog)
    await log.open()
    try:
        for i in range(20):
            if i == 6:
                await stop()
            if i == 13:
                assert metrics.value("spool_rows") == 7
                await start()
            await log.record(rec(i))
        async with asyncio.timeout(flush_within):
            await log.flush()
        assert metrics.value("spool_rows") == 0
    finally:
        await log.close()


async def check_killed_process_delivers_once(
    cfg: Config, stop: Step, start: Step, starts: int, flush_within: float
) -> None:
    """A service SIGKILLed with 12 rows spooled (database stopped); after ``start``, each of
    ``starts`` fresh instances finds the 12 rows stored exactly once."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.spool_child", cfg.database.url,
        str(cfg.spool_path), "12",
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        async with asyncio.timeout(60):
            assert await child.stdout.readline() == b"open\n"
            await stop()
            child.stdin.write(b"go\n")
            await child.stdin.drain()
            assert await child.stdout.readline() == b"spooled 12\n"
            child.send_signal(signal.SIGKILL)
            assert await child.wait() == -signal.SIGKILL
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert len(cfg.spool_path.read_bytes().splitlines()) == 12
    await start()
    for _ in range(starts):
        log = open_audit_log(cfg, Metrics())
        await log.open()
        try:
            assert isinstance(log, SpooledAuditLog)
            async with asyncio.timeout(flush_within):
                await log.flush()
            rows = await log.query(AuditQuery())
        finally:
            await log.close()
        assert [r.filename for r in rows] == [f"res{i}" for i in range(12)]


async def check_crash_after_commit(log: SpoolTarget, fresh: SpoolTarget, spool_path: Path) -> None:
    """Six rows spooled, four of them delivered through ``log`` (the spool not updated);
    a spooled ``fresh`` log then flushes: the caller finds res0..res5, each once."""
    spool = SpoolFile(spool_path)
    await spool.open()
    entries = [SpoolEntry(rec(i)) for i in range(6)]
    for e in entries:
        await spool.append(e)
    await spool.close()
    await log.deliver(entries[:4])  # committed; then the "process died"
    spooled = SpooledAuditLog(fresh, spool_path, Metrics())
    await spooled.open()
    async with asyncio.timeout(30):
        await spooled.flush()
    await spooled.close()


async def check_commit_in_doubt(log: SpoolTarget) -> None:
    """res1 recorded, then res1/res2/res3 delivered as in doubt at indexes 1, 1, 99: the
    caller finds res1, res2, res3 (the landed res1 skipped)."""
    landed: AuditRecord = rec(1)
    await log.record(landed)
    await log.deliver(
        [
            SpoolEntry(landed, maybe_index=1),  # it did land: skip
            SpoolEntry(rec(2), maybe_index=1),  # index 1 is another row: insert
            SpoolEntry(rec(3), maybe_index=99),  # never landed: insert
        ]
    )


async def check_unwritable_spool_fails_the_record(
    log: AuditLog, cfg: Config, stop: Step, start: Step
) -> None:
    """With the database down and the spool unwritable, record() raises AuditUnavailable."""
    await log.open()
    try:
        await stop()
        cfg.spool_path.mkdir()  # the spool file cannot be opened for writing
        with pytest.raises(AuditUnavailable):
            await log.record(rec(1))
        cfg.spool_path.rmdir()
        await log.record(rec(2))  # spool writable again: accepted
        assert isinstance(log, SpooledAuditLog) and log.spooled == 1
    finally:
        await start()
        await log.close()


async def check_concurrent_records(log: AuditLog) -> None:
    """200 concurrent record() calls (filenames c0..c199) within 60 seconds."""
    async with asyncio.timeout(60):
        await asyncio.gather(*(log.record(replace(rec(1), filename=f"c{i}")) for i in range(200)))


async def check_holds_bypass_the_spool(audit: AuditLog, bare: AuditLog) -> None:
    """Through the spooled ``audit``, holds and marks go straight to the database (``bare``)."""
    assert isinstance(audit, SpooledAuditLog)
    await audit.open()
    try:
        hold_id = await audit.add_hold(Hold(column="TO_JID", jid="bob@example.test"))
        await audit.mark_purged(["resX"], node_id="node_1", by="ann")
        assert audit.spooled == 0
    finally:
        await audit.close()
    await bare.open()
    try:
        assert [h.hold_id for h in await bare.list_holds()] == [hold_id]
        assert await bare.purged(["resX"]) == {"resX"}
    finally:
        await bare.close()
