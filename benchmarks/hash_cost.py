"""What FILE_SHA256 costs an upload: PUTs over file:// with and without the hash.

N PUTs with the upload hash and N with it replaced by a pass-through (benchmark only),
interleaved, medians compared (wall clock and CPU seconds), plus hashlib's own SHA-256
rate on this machine. Usage::

    python benchmarks/hash_cost.py [--size-mib 256] [--runs 5]

``benchmarks/http_transfer.py`` measures PUT/GET against a file copy, scanning on and off.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpd.upload
from benchmarks.http_transfer import BLOCK, body
from component.audit.sqlite import SqliteAuditLog
from component.metrics import Metrics
from httpd.app import make_app, make_runner
from httpd.repository import FileRepository
from tests.fixtures.common import free_port
from tests.fixtures.config import make_raw_config
from tests.unit.httpd_harness import make_slot


class _NoDigest(httpd.upload.StreamDigest):
    """StreamDigest without the hash: the reference for the hash's cost."""

    async def feed(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield chunk


async def hash_cost(cfg: object, http: aiohttp.ClientSession, size: int, runs: int) -> None:
    """Interleaved PUTs with and without the upload hash; print medians and the ratio."""
    from component.config import Config

    assert isinstance(cfg, Config)
    real = httpd.upload.StreamDigest
    times: dict[str, list[float]] = {"with SHA-256": [], "without (pass-through)": []}
    # CPU seconds of the process (client and server, all threads): on a busy machine
    # wall-clock speed mostly measures the other tenants, CPU time does not.
    cpu: dict[str, list[float]] = {name: [] for name in times}
    for _ in range(runs):
        for name in times:
            httpd.upload.StreamDigest = real if name == "with SHA-256" else _NoDigest  # type: ignore[misc]
            slot = make_slot(cfg, size, "hash.bin")
            t, c = time.perf_counter(), time.process_time()
            async with http.put(
                slot.put_url, data=body(size), headers={"Content-Length": str(size)}
            ) as r:
                assert r.status == 201, r.status
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
            (Path(cfg.repository.path) / slot.path.repo_path).unlink()
    httpd.upload.StreamDigest = real  # type: ignore[misc]
    digest, t = hashlib.sha256(), time.perf_counter()
    for _ in range(size // len(BLOCK)):
        digest.update(BLOCK)
    raw = time.perf_counter() - t
    print(
        f"FILE_SHA256 cost, {size // 2**20} MiB PUT -> file://, median of {runs} interleaved runs"
    )
    med = {name: statistics.median(v) for name, v in times.items()}
    for name, secs in med.items():
        used = statistics.median(cpu[name])
        print(f"  PUT {name:<24}{size / secs / 1e6:>8.0f} MB/s{secs:>8.2f} s{used:>8.2f} s CPU")
    base = med["without (pass-through)"]
    print(f"  upload speed with the hash: {100 * base / med['with SHA-256']:.1f}% of without")
    print(f"  hashlib sha256 alone: {size / raw / 1e6:.0f} MB/s")


async def main(size_mib: int, runs: int) -> None:
    """Serve the app over a temporary file:// repository and compare PUTs."""
    from component.config import parse_config

    size = size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        cfg = parse_config(make_raw_config(base), source=str(base / "mft.toml"))
        repo, audit = FileRepository(cfg.repository.path), SqliteAuditLog(cfg)
        await repo.open()
        await audit.open()
        runner = make_runner(make_app(cfg, repo, audit, Metrics()))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
                await hash_cost(cfg, http, size, runs)
        finally:
            await runner.cleanup()
            await audit.close()
            await repo.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", "--hash-cost", type=int, default=5, dest="runs")
    args = parser.parse_args()
    asyncio.run(main(args.size_mib, args.runs))
