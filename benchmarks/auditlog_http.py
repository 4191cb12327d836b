"""Small-file transfers per second through the real HTTP app, for a given audit log.

Used by ``benchmarks/auditlog.py`` (which compares the SQLite and MariaDB logs with a log
that stores nothing); needs ``httpd.app.make_app``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from component.audit import AuditLog
from component.config import Config
from component.layout import SlotPath, new_resource
from component.metrics import Metrics
from component.tokens import UploadGrant
from httpd.app import make_app, make_runner
from httpd.storage import FileRepository
from tests.fixtures.common import free_port

FILE_SIZE = 10 * 1024


def put_url(cfg: Config, body: bytes) -> str:
    """A fresh slot's signed PUT path, as the component would hand it out."""
    path = SlotPath.parse(cfg.node.id, "im", "20240102", "10", new_resource(), "photo.jpg")
    grant = UploadGrant(
        path=path,
        size=len(body),
        expires=int(time.time()) + 3600,
        uploader="alice@example.test",
        recipient="bob@example.test",
    )
    return f"/{path.url_path}?{urlencode(grant.query(cfg.http.secret))}"


async def uploads_per_second(
    cfg: Config, audit: AuditLog, files: int, clients: int
) -> tuple[float, float]:
    """(uploads/s, downloads/s) of ``files`` 10 KiB files over ``clients`` connections."""
    repo = FileRepository(Path(cfg.repository.path))
    await repo.open()
    await audit.open()
    runner = make_runner(make_app(cfg, repo, audit, Metrics()), cfg)
    await runner.setup()
    body = os.urandom(FILE_SIZE)
    urls = [put_url(cfg, body) for _ in range(files)]
    try:
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as s:

            async def put(url: str) -> None:
                async with s.put(url, data=body) as resp:
                    await resp.read()
                    if resp.status != 201:
                        raise RuntimeError(f"PUT answered {resp.status}")

            async def get(url: str) -> None:
                async with s.get(url.partition("?")[0]) as resp:
                    if len(await resp.read()) != FILE_SIZE or resp.status != 200:
                        raise RuntimeError(f"GET answered {resp.status}")

            t0 = time.perf_counter()
            await asyncio.gather(*(put(u) for u in urls))
            up = files / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            await asyncio.gather(*(get(u) for u in urls))
            down = files / (time.perf_counter() - t0)
    finally:
        await runner.cleanup()
        await audit.close()
        await repo.close()
    return up, down
