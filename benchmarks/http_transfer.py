"""PUT and GET throughput of the HTTP server over a file:// repository, and peak memory.

Reference, measured in the same run: a plain file copy of the same size on the same disk
(the ceiling for the file:// back-end). PUT runs twice, with malware scanning off and
on (a real clamd, the test fixture's, with only the EICAR signatures: this measures the
cost of streaming to clamd and its pass over the file, not a full signature set).
Usage::

    python benchmarks/http_transfer.py [--size-mib 256] [--no-scan]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from component.audit.sqlite import SqliteAuditLog
from component.metrics import Metrics
from httpd.app import make_app, make_runner
from httpd.repository import FileRepository
from tests.fixtures.clamd import ClamdServer, clamd_server
from tests.fixtures.common import free_port
from tests.fixtures.config import make_raw_config
from tests.unit.httpd_harness import make_slot

# Random bytes: clamd passes over uniform data faster than over real files.
BLOCK = os.urandom(1024 * 1024)


def rss_mib() -> float:
    """Peak resident set size of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def body(size: int) -> AsyncIterator[bytes]:
    """``size`` bytes in 1 MiB blocks, never all at once."""
    for _ in range(size // len(BLOCK)):
        yield BLOCK


async def transfer(
    base: Path, size: int, scan: dict[str, Any], get_back: bool
) -> tuple[float, float, float, float]:
    """Serve the app on ``base``; PUT ``size`` bytes (and GET them back if ``get_back``).

    :returns: PUT seconds, GET seconds (0 without ``get_back``), RSS before the PUT, and
        the seconds spent waiting for clamd's verdict after the last byte.
    """
    from component.config import parse_config

    cfg = parse_config(make_raw_config(base, scan=scan), source=str(base / "mft.toml"))
    repo, audit = FileRepository(cfg.repository.path), SqliteAuditLog(cfg)
    await repo.open()
    await audit.open()
    metrics = Metrics()
    runner = make_runner(make_app(cfg, repo, audit, metrics))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rss0 = rss_mib()
    slot = make_slot(cfg, size, "big.bin")
    get = 0.0
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            t = time.perf_counter()
            headers = {"Content-Length": str(size)}
            async with http.put(slot.put_url, data=body(size), headers=headers) as r:
                assert r.status == 201, (r.status, await r.text())
            put = time.perf_counter() - t
            if get_back:
                t = time.perf_counter()
                got = 0
                async with http.get(slot.get_url) as r:
                    async for chunk in r.content.iter_chunked(1024 * 1024):
                        got += len(chunk)
                get = time.perf_counter() - t
                assert got == size
    finally:
        await runner.cleanup()
        await audit.close()
        await repo.close()
    await repo.delete(slot.path.repo_path)
    verdict = sum(
        float(line.split()[-1])
        for line in metrics.render().splitlines()
        if line.startswith("mft_scan_seconds_sum")
    )
    return put, get, rss0, verdict


async def main(size_mib: int, scan: bool) -> None:
    """Run the reference copy, then PUT (scanning off, on) and GET; print a table."""
    size = size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        src = base / "src.bin"
        with src.open("wb") as f:
            for _ in range(size_mib):
                f.write(BLOCK)
        t = time.perf_counter()
        shutil.copyfile(src, base / "copy.bin")
        ref = time.perf_counter() - t
        src.unlink()
        (base / "copy.bin").unlink()

        put, get, rss0, _v = await transfer(base / "off", size, {}, get_back=True)
        rows = [("reference: file copy", ref), ("HTTP PUT -> file://", put)]
        if scan:
            clamd: ClamdServer = stack.enter_context(
                clamd_server(base / "clamd", stream_max=size + 1024 * 1024)
            )
            scanned, _get, _rss, verdict = await transfer(
                base / "on", size, {"clamd": clamd.url, "io_timeout": 600.0}, get_back=False
            )
            rows.append(("HTTP PUT -> file://, clamd", scanned))
            rows.append(("  of which clamd's verdict", verdict))
    print(f"{size_mib} MiB, loopback, client and server in one process")
    print(f"{'operation':<28}{'MB/s':>10}{'seconds':>10}")
    for name, secs in rows:
        print(f"{name:<28}{size / secs / 1e6:>10.0f}{secs:>10.2f}")
    print(f"{'HTTP GET <- file://':<28}{size / get / 1e6:>10.0f}{get:>10.2f}")
    print(f"peak RSS before transfers {rss0:.0f} MiB, after {rss_mib():.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--no-scan", action="store_true", help="skip the PUT with clamd")
    args = parser.parse_args()
    asyncio.run(main(args.size_mib, not args.no_scan))
