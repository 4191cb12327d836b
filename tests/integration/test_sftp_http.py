"""Uploads and downloads through the HTTP app into a real sshd (SftpRepository)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp
import pytest

from component.audit import AuditQuery, open_audit_log
from component.audit.sqlite import SqliteAuditLog
from component.config import Config, RepositoryConfig
from component.layout import SlotPath
from httpd.repository.sftp import SftpRepository
from tests.fixtures.config import ConfigFactory
from tests.fixtures.sshd import SshServer
from tests.integration.bodies import MiB, PausingBody, stream
from tests.unit.httpd_harness import make_slot, serve_app

pytestmark = pytest.mark.integration

T = TypeVar("T")


class CountingRepository(SftpRepository):
    """An SftpRepository that names its SFTP requests (each one is bounded by _timed)."""

    def __init__(self, repo_cfg: RepositoryConfig) -> None:
        super().__init__(repo_cfg)
        self.requests: list[str] = []

    async def _timed(self, aw: Awaitable[T]) -> T:
        # "SFTPClient.stat", "SFTPClientFile.write", ...; open() comes in an async
        # context manager wrapper around its coroutine.
        coro = getattr(aw, "_coro", aw)
        self.requests.append(getattr(coro, "__qualname__", type(coro).__name__).split(".")[-1])
        return await super()._timed(aw)


@dataclass
class Service:
    """The app serving on a loopback port over an open SftpRepository."""

    cfg: Config
    repo: CountingRepository
    audit: SqliteAuditLog
    client: aiohttp.ClientSession
    node_dir: Path
    port: int

    def slot(self, size: int) -> tuple[SlotPath, str, str]:
        """A fresh slot: its path, PUT URL (signed) and GET URL."""
        made = make_slot(self.cfg, size, "report 2024 ü.pdf")
        return made.path, made.put_url, made.get_url

    def files(self) -> list[str]:
        """Every file below the node directory on the "file server" (parts included)."""
        return sorted(
            str(p.relative_to(self.node_dir)) for p in self.node_dir.rglob("*") if p.is_file()
        )


@asynccontextmanager
async def service(cfg: Config, node_dir: Path) -> AsyncIterator[Service]:
    """make_app over SftpRepository and SQLite, on a free port; all closed afterwards."""
    repo = CountingRepository(cfg.repository)
    await repo.open()
    audit = open_audit_log(cfg)
    await audit.open()
    try:
        async with serve_app(cfg, repo, audit) as (port, client):
            assert isinstance(audit, SqliteAuditLog)
            yield Service(cfg, repo, audit, client, node_dir, port)
    finally:
        await audit.close()
        await repo.close()


async def test_put_get_range_through_app(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """PUT 201 stores identical bytes on the file server; GET and Range read them back."""
    cfg = config_factory(repository=sshd.repository(node_dir))
    async with service(cfg, node_dir) as svc:
        data = os.urandom(5 * MiB + 3)
        path, put, get = svc.slot(len(data))
        length = {"Content-Length": str(len(data))}
        async with svc.client.put(put, data=stream(data), headers=length) as resp:
            assert resp.status == 201, await resp.text()
        assert (node_dir / path.repo_path).read_bytes() == data
        async with svc.client.get(get) as resp:
            assert resp.status == 200
            assert resp.content_length == len(data)
            assert await resp.read() == data
        async with svc.client.get(get, headers={"Range": "bytes=261000-262000"}) as resp:
            assert resp.status == 206
            assert await resp.read() == data[261000:262001]
        async with svc.client.put(put, data=stream(data), headers=length) as resp:
            assert resp.status == 409  # a slot is never overwritten
        rows = await svc.audit.query(AuditQuery())
        assert [r.method for r in rows][:1] == ["POST"]
        assert rows[0].file_server == "127.0.0.1" and rows[0].file_size == len(data)
        assert svc.files() == [path.repo_path]


@pytest.mark.parametrize("expect", [True, False])
async def test_one_sftp_request_before_the_body(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory, expect: bool
) -> None:
    """A PUT's checks cost one SFTP request (is the slot free?) with Expect, none for a
    small body without it (it is on its way anyway; the rename refuses a taken slot)."""
    cfg = config_factory(repository=sshd.repository(node_dir))
    async with service(cfg, node_dir) as svc:
        data = os.urandom(1000)
        _first, warm_up, _get = svc.slot(len(data))  # makes the hour's directories
        async with svc.client.put(warm_up, data=data) as resp:
            assert resp.status == 201
        path, put, _get = svc.slot(len(data))
        target = urlsplit(put)
        reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
        try:
            head = f"PUT {target.path}?{target.query} HTTP/1.1\r\nHost: t\r\n"
            head += f"Content-Length: {len(data)}\r\n"
            head += "Expect: 100-continue\r\n\r\n" if expect else "\r\n"
            before = len(svc.repo.requests)
            writer.write(head.encode())
            if expect:
                async with asyncio.timeout(10):
                    assert await reader.readline() == b"HTTP/1.1 100 Continue\r\n"
                    assert await reader.readline() == b"\r\n"
            writer.write(data)
            async with asyncio.timeout(10):
                assert (await reader.readline()).split()[1] == b"201"
        finally:
            writer.close()
        # Is the slot free (one stat, with Expect), then the file: open the part, write,
        # fsync (the bytes are durable before the 201), close, rename.
        asked = ["stat"] if expect else []
        assert svc.repo.requests[before:] == [*asked, "open", "write", "fsync", "close", "rename"]
        assert (node_dir / path.repo_path).read_bytes() == data


async def test_missing_file_is_404(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """GET of a slot never uploaded is 404 (SFTPNoSuchFile translated)."""
    cfg = config_factory(repository=sshd.repository(node_dir))
    async with service(cfg, node_dir) as svc:
        _path, _put, get = svc.slot(10)
        async with svc.client.get(get) as resp:
            assert resp.status == 404


async def test_sshd_killed_mid_put_gives_error_then_recovers(
    sshd_factory: Callable[[], SshServer], config_factory: ConfigFactory
) -> None:
    """sshd dies during a PUT: the client gets an error, nothing is published; later PUTs work."""
    server = sshd_factory()
    node_dir = server.store / "node_1"
    cfg = config_factory(repository=server.repository(node_dir, connect_timeout=2.0))
    async with service(cfg, node_dir) as svc:
        body = PausingBody()
        path, put, _get = svc.slot(body.size)
        request = asyncio.create_task(
            svc.client.put(put, data=aiter(body), headers={"Content-Length": str(body.size)})
        )
        async with asyncio.timeout(20):
            await body.half.wait()
        server.kill()
        body.resume.set()
        try:
            async with asyncio.timeout(30):
                resp = await request
            status = resp.status
            resp.release()
        except aiohttp.ClientError:
            status = None  # the server may also cut the connection: an error either way
        assert status != 201
        assert status in (None, 503)
        assert not (node_dir / path.repo_path).exists()

        server.start()
        data = b"after the outage"
        path2, put2, get2 = svc.slot(len(data))
        async with asyncio.timeout(30):
            async with svc.client.put(put2, data=data) as resp:
                assert resp.status == 201
            async with svc.client.get(get2) as resp:
                assert await resp.read() == data
        assert svc.files() == [path2.repo_path]  # the killed upload's part file is gone
