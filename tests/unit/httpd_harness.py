"""Test harness for the HTTP server: the real app, FileRepository and SqliteAuditLog.

The repository and audit log are our own classes with a queue added, so tests can wait
for "the upload finished" or "the row was written" instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from component.audit import AuditLog, AuditQuery, AuditRecord, Method, open_audit_log
from component.audit.sqlite import SqliteAuditLog
from component.config import Config
from component.errors import StorageUnavailable
from component.layout import SlotPath, new_resource
from component.metrics import Metrics
from component.tokens import DownloadTicket, UploadGrant
from httpd.app import make_app, make_runner
from httpd.repository import FileRepository, Repository
from httpd.repository.base import BodySource, Hasher
from tests.fixtures.common import free_port

UPLOADER = "alice@localhost"
RECIPIENT = "bob@localhost"


class _FailingBody:
    """A body source failing once ``fail_at`` bytes were read (``None``: never)."""

    def __init__(self, body: BodySource, fail_at: int | None) -> None:
        self._body, self._fail_at, self._seen = body, fail_at, 0

    async def readinto(self, buf: memoryview) -> int:
        n = await self._body.readinto(buf)
        self._seen += n
        if self._fail_at is not None and self._seen >= self._fail_at:
            raise StorageUnavailable("injected failure")
        return n

    async def end(self) -> None:
        await self._body.end()


class ObservedRepository(FileRepository):
    """A FileRepository reporting each store()'s outcome; optionally failing at byte N."""

    def __init__(
        self, root: Path, fail_at: int | None = None, read_fail_at: int | None = None
    ) -> None:
        super().__init__(root)
        self.root = root
        self.fail_at = fail_at
        self.read_fail_at = read_fail_at
        self.started: asyncio.Queue[str] = asyncio.Queue()
        self.stores: asyncio.Queue[BaseException | None] = asyncio.Queue()

    async def _failing(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in chunks:
            seen += len(chunk)
            if self.fail_at is not None and seen >= self.fail_at:
                raise StorageUnavailable("injected failure")
            yield chunk

    async def store(self, path: str, chunks: AsyncIterator[bytes], size: int) -> None:
        """FileRepository.store, announced on :attr:`started`, outcome on :attr:`stores`."""
        self.started.put_nowait(path)
        try:
            await super().store(path, self._failing(chunks), size)
        except BaseException as exc:
            self.stores.put_nowait(exc)
            raise
        self.stores.put_nowait(None)

    async def receive(self, path: str, body: BodySource, size: int, sha: Hasher | None) -> None:
        """FileRepository.receive, observed and failing as :meth:`store`."""
        self.started.put_nowait(path)
        try:
            await super().receive(path, _FailingBody(body, self.fail_at), size, sha)
        except BaseException as exc:
            self.stores.put_nowait(exc)
            raise
        self.stores.put_nowait(None)

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """FileRepository.read, failing once ``read_fail_at`` bytes were produced."""
        seen = 0
        async with contextlib.aclosing(super().read(path, offset, length)) as blocks:
            async for block in blocks:
                if self.read_fail_at is not None and seen + len(block) > self.read_fail_at:
                    raise StorageUnavailable("injected read failure")
                seen += len(block)
                yield block

    async def sendfile(
        self, f: BinaryIO, transport: asyncio.WriteTransport, offset: int, length: int
    ) -> int:
        """FileRepository.sendfile, failing after ``read_fail_at`` bytes were sent."""
        if self.read_fail_at is None or length <= self.read_fail_at:
            return await super().sendfile(f, transport, offset, length)
        await super().sendfile(f, transport, offset, self.read_fail_at)
        raise StorageUnavailable("injected read failure")

    def files(self) -> list[Path]:
        """Every regular file under the repository (``.part`` files included)."""
        return sorted(p for p in self.root.rglob("*") if p.is_file())


class RecordingAudit(SqliteAuditLog):
    """SqliteAuditLog that announces every row it stored."""

    def __init__(self, cfg: Config, metrics: Metrics | None = None) -> None:
        super().__init__(cfg, metrics)
        self.recorded: asyncio.Queue[AuditRecord] = asyncio.Queue()

    async def record(self, rec: AuditRecord) -> None:
        """Store the row, then announce it."""
        await super().record(rec)
        self.recorded.put_nowait(rec)

    async def next_row(self) -> AuditRecord:
        """The next row recorded (waits for it)."""
        async with asyncio.timeout(10):
            return await self.recorded.get()


class RecordingLog:
    """The service's own audit log for a database URL (spooled), announcing every row
    it stored, as :class:`RecordingAudit` does for SQLite."""

    def __init__(self, inner: AuditLog) -> None:
        self._inner = inner
        self.recorded: asyncio.Queue[AuditRecord] = asyncio.Queue()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def record(self, rec: AuditRecord) -> None:
        """Store the row, then announce it."""
        await self._inner.record(rec)
        self.recorded.put_nowait(rec)

    async def next_row(self) -> AuditRecord:
        """The next row recorded (waits for it)."""
        async with asyncio.timeout(10):
            return await self.recorded.get()


def recording_audit(cfg: Config, metrics: Metrics) -> RecordingAudit | RecordingLog:
    """The audit log the service would use for ``cfg``, announcing its rows."""
    if cfg.database.scheme == "sqlite":
        return RecordingAudit(cfg, metrics)
    return RecordingLog(open_audit_log(cfg, metrics))


@dataclass
class Slot:
    """A slot as the component would hand it out."""

    path: SlotPath
    size: int
    query: dict[str, str]

    @property
    def get_url(self) -> str:
        """The GET URL's path (relative to the server)."""
        return "/" + self.path.url_path

    @property
    def put_url(self) -> str:
        """The PUT URL's path and signed query."""
        return f"{self.get_url}?{urlencode(self.query)}"


def make_slot(
    cfg: Config,
    size: int,
    filename: str = "photo.jpg",
    *,
    chat_type: str = "im",
    node: str | None = None,
    lifetime: int = 300,
    uploader: str = UPLOADER,
    recipient: str = RECIPIENT,
    date: str = "20240102",
    hour: str = "10",
) -> Slot:
    """A fresh slot signed with ``cfg``'s secret, as the component would issue it."""
    path = SlotPath.parse(node or cfg.node.id, chat_type, date, hour, new_resource(), filename)
    grant = UploadGrant(
        path=path,
        size=size,
        expires=int(time.time()) + lifetime,
        uploader=uploader,
        recipient=recipient,
    )
    return Slot(path, size, grant.query(cfg.http.secret))


@dataclass
class HttpdEnv:
    """A running app on a loopback port with its services."""

    cfg: Config
    repo: ObservedRepository
    audit: RecordingAudit | RecordingLog
    metrics: Metrics
    port: int
    client: aiohttp.ClientSession

    def slot(self, size: int, filename: str = "photo.jpg", **kw: Any) -> Slot:
        """A fresh slot for this server (keywords as :func:`make_slot`)."""
        return make_slot(self.cfg, size, filename, **kw)

    def ticket_url(self, slot: Slot, jid: str, lifetime: int = 300) -> str:
        """The slot's GET URL with a personal download ticket for ``jid``."""
        ticket = DownloadTicket(path=slot.path, jid=jid, expires=int(time.time()) + lifetime)
        return f"{slot.get_url}?{urlencode(ticket.query(self.cfg.http.secret))}"

    async def put(self, slot: Slot, body: bytes) -> int:
        """PUT ``body`` to the slot; the status."""
        async with self.client.put(slot.put_url, data=body) as resp:
            await resp.read()
            return resp.status

    async def upload(self, body: bytes, filename: str = "photo.jpg", **kw: Any) -> Slot:
        """A stored upload (its POST row consumed from the queue)."""
        slot = self.slot(len(body), filename, **kw)
        assert await self.put(slot, body) == 201
        assert (await self.audit.next_row()).method == "POST"
        return slot

    async def rows(self, method: Method | None = None) -> list[AuditRecord]:
        """AFT_LOG rows, oldest first."""
        return list(await self.audit.query(AuditQuery(method=method)))

    async def raw(
        self, head: str, body: bytes = b""
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A raw connection that has sent ``head`` (CRLF line ends added) and ``body``."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        return reader, writer

    async def raw_status(self, head: str, body: bytes = b"") -> int:
        """Send a raw request and return the status of the first response line."""
        reader, writer = await self.raw(head, body)
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()
        return int(line.split()[1])


@contextlib.asynccontextmanager
async def httpd_env(
    cfg: Config, fail_at: int | None = None, read_fail_at: int | None = None
) -> AsyncIterator[HttpdEnv]:
    """Open the services, serve the app on a loopback port, and close everything after."""
    repo = ObservedRepository(Path(cfg.repository.path), fail_at, read_fail_at)
    await repo.open()
    metrics = Metrics()
    audit = recording_audit(cfg, metrics)
    await audit.open()
    try:
        async with serve_app(cfg, repo, audit, metrics) as (port, client):
            yield HttpdEnv(cfg, repo, audit, metrics, port, client)
    finally:
        await audit.close()
        await repo.close()


@contextlib.asynccontextmanager
async def serve_app(
    cfg: Config, repo: Repository, audit: AuditLog, metrics: Metrics | None = None
) -> AsyncIterator[tuple[int, aiohttp.ClientSession]]:
    """``make_app`` with the production runner on a free loopback port, and a client.

    Leaving the block runs the runner's cleanup, which waits for handlers in flight (a
    download's row is written after its last byte). The caller opens and closes
    ``repo`` and ``audit``.
    """
    runner = make_runner(make_app(cfg, repo, audit, metrics or Metrics()))
    await runner.setup()
    try:
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:
            yield port, client
    finally:
        await runner.cleanup()
