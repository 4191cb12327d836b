"""Small-file transfers per second through the real HTTP app, for a given audit log.

Used by ``benchmarks/auditlog.py`` (which compares the SQLite and MariaDB logs with a log
that stores nothing); needs ``httpd.app.make_app``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from component.audit import AuditLog
from component.config import Config
from component.metrics import Metrics
from httpd.app import make_app, make_runner
from httpd.repository import FileRepository
from tests.fixtures.common import free_port
from tests.unit.httpd_harness import Slot, make_slot

FILE_SIZE = 10 * 1024


async def uploads_per_second(
    cfg: Config, audit: AuditLog, files: int, clients: int
) -> tuple[float, float]:
    """(uploads/s, downloads/s) of ``files`` 10 KiB files over ``clients`` connections."""
    repo = FileRepository(Path(cfg.repository.path))
    await repo.open()
    await audit.open()
    runner = make_runner(make_app(cfg, repo, audit, Metrics()))
    await runner.setup()
    body = os.urandom(FILE_SIZE)
    slots = [make_slot(cfg, len(body), lifetime=3600) for _ in range(files)]
    try:
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as s:

            async def put(slot: Slot) -> None:
                async with s.put(slot.put_url, data=body) as resp:
                    await resp.read()
                    if resp.status != 201:
                        raise RuntimeError(f"PUT answered {resp.status}")

            async def get(slot: Slot) -> None:
                async with s.get(slot.get_url) as resp:
                    if len(await resp.read()) != FILE_SIZE or resp.status != 200:
                        raise RuntimeError(f"GET answered {resp.status}")

            t0 = time.perf_counter()
            await asyncio.gather(*(put(slot) for slot in slots))
            up = files / (time.perf_counter() - t0)
            t0 = time.perf_counter()
            await asyncio.gather(*(get(slot) for slot in slots))
            down = files / (time.perf_counter() - t0)
    finally:
        await runner.cleanup()
        await audit.close()
        await repo.close()
    return up, down
