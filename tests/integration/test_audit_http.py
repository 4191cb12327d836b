"""AFT_LOG rows in MariaDB for uploads and downloads through the real HTTP app."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from component.audit import AuditQuery, AuditRecord, open_audit_log
from component.audit.spooled import SpooledAuditLog
from component.config import Config
from component.metrics import Metrics
from httpd.repository import FileRepository
from tests.fixtures.config import ConfigFactory
from tests.fixtures.mariadb import MariaDB
from tests.unit.httpd_harness import RECIPIENT, UPLOADER, Slot, make_slot, serve_app

pytestmark = pytest.mark.integration


@pytest.fixture
def cfg(config_factory: ConfigFactory, mariadb_url: str) -> Config:
    """A config whose AFT_LOG is this test's MariaDB database."""
    return config_factory(database={"url": mariadb_url, "connect_timeout": 3.0})


@contextlib.asynccontextmanager
async def serving(
    cfg: Config, audit: SpooledAuditLog, metrics: Metrics | None = None
) -> AsyncIterator[aiohttp.ClientSession]:
    """The app on a loopback port with ``audit`` (opened by the caller) and a client.

    Leaving the block runs the runner's cleanup, which waits for handlers in flight: a
    download's row is written after its last byte, so rows are complete afterwards.
    """
    repo = FileRepository(Path(cfg.repository.path))
    await repo.open()
    try:
        async with serve_app(cfg, repo, audit, metrics) as (_port, client):
            yield client
    finally:
        await repo.close()


async def opened(cfg: Config, metrics: Metrics | None = None) -> SpooledAuditLog:
    """The service's audit log for ``cfg``, opened."""
    audit = open_audit_log(cfg, metrics or Metrics())
    assert isinstance(audit, SpooledAuditLog)
    await audit.open()
    return audit


async def put(client: aiohttp.ClientSession, slot: Slot, body: bytes) -> None:
    """PUT ``body``; it must be stored (201)."""
    async with client.put(slot.put_url, data=body) as resp:
        assert resp.status == 201, await resp.text()


async def get(client: aiohttp.ClientSession, slot: Slot, body: bytes) -> None:
    """GET the slot; it must return ``body``."""
    async with client.get(slot.get_url) as resp:
        assert resp.status == 200 and await resp.read() == body


def check_rows(rows: list[AuditRecord], slot: Slot, size: int) -> None:
    """Exactly one POST then one GET row for ``slot``, the GET repeating the upload."""
    assert [r.method for r in rows] == ["POST", "GET"]
    post, got = rows
    assert post.jid == UPLOADER and post.to_jid == RECIPIENT
    assert {r.filename for r in rows} == {slot.path.resource}
    for r in rows:
        assert (r.to_jid, r.real_filename, r.file_type, r.chat_type, r.file_size) == (
            RECIPIENT,
            "Quartalsbericht Q3.pdf",
            "pdf",
            "groupchat",
            size,
        )
        assert (r.node_id, r.client_ip, r.file_server) == ("node_1", "127.0.0.1", "localhost")
    assert post.index is not None and got.index is not None and post.index < got.index
    assert post.date_time <= got.date_time


async def check_upload_then_download_after_restart(cfg: Config) -> None:
    """PUT, restart the app and its log, GET: one POST and one GET row, columns repeated.

    Shared by every database back-end's stack tests (``cfg`` names the database).
    """
    body = os.urandom(20_000)
    slot = make_slot(cfg, len(body), "Quartalsbericht Q3.pdf", chat_type="groupchat")
    audit = await opened(cfg)
    async with serving(cfg, audit) as client:
        await put(client, slot, body)
    await audit.close()
    audit = await opened(cfg)  # a new process: nothing cached, the POST row from the database
    try:
        async with serving(cfg, audit) as client:
            await get(client, slot, body)
        rows = list(await audit.query(AuditQuery(filename=slot.path.resource)))
    finally:
        await audit.close()
    check_rows(rows, slot, len(body))


async def test_upload_then_download_after_restart(cfg: Config) -> None:
    """PUT, restart the app and its log, GET on MariaDB: one POST and one GET row."""
    await check_upload_then_download_after_restart(cfg)


async def test_transfers_during_outage_are_logged_once(cfg: Config, mariadb: MariaDB) -> None:
    """Database down during PUT and GET: both succeed, rows arrive once, in order, complete;
    a lookup that fails meanwhile is one database error, not two."""
    body = os.urandom(5000)
    slot = make_slot(cfg, len(body), "Quartalsbericht Q3.pdf", chat_type="groupchat")
    metrics = Metrics()
    audit = await opened(cfg, metrics)
    try:
        await asyncio.to_thread(mariadb.stop)
        async with serving(cfg, audit, metrics) as client:
            await put(client, slot, body)
            await get(client, slot, body)  # the POST row is found in the spool
            before = metrics.value("database_errors")
            # Never uploaded: the HEAD's 404 needs AFT_LOG, which does not answer.
            async with client.head(make_slot(cfg, 5).get_url) as resp:
                assert resp.status == 404
            assert metrics.value("database_errors") == before + 1
        assert audit.spooled == 2
        await asyncio.to_thread(mariadb.start)
        async with asyncio.timeout(30):
            await audit.flush()
        rows = list(await audit.query(AuditQuery(filename=slot.path.resource)))
    finally:
        await asyncio.to_thread(mariadb.start)
        await audit.close()
    check_rows(rows, slot, len(body))
