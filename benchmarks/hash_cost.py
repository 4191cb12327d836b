"""What FILE_SHA256 costs an upload: PUTs over file:// with and without the hash.

Also prints one PUT/GET over file:// beside a plain file copy, as http_transfer.py does
(that script compares malware scanning on and off). Usage::

    python benchmarks/hash_cost.py [--size-mib 256] --hash-cost 5

``--hash-cost N`` measures what FILE_SHA256 costs: N PUTs with the upload hash on
and N with it replaced by a pass-through (benchmark only), interleaved, medians compared,
plus hashlib's own SHA-256 rate on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import resource
import shutil
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
from component.audit.sqlite import SqliteAuditLog
from component.metrics import Metrics
from httpd.app import make_app, make_runner
from httpd.repository import FileRepository
from tests.fixtures.common import free_port
from tests.fixtures.config import make_raw_config
from tests.unit.httpd_harness import make_slot

BLOCK = b"\x5a" * (1024 * 1024)


def rss_mib() -> float:
    """Peak resident set size of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def body(size: int) -> AsyncIterator[bytes]:
    """``size`` bytes in 1 MiB blocks, never all at once."""
    for _ in range(size // len(BLOCK)):
        yield BLOCK


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


async def main(size_mib: int, hash_runs: int = 0) -> None:
    """Run the reference copy, then PUT and GET through the server; print a table."""
    from component.config import parse_config

    size = size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory() as tmp:
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

        cfg = parse_config(make_raw_config(base), source=str(base / "mft.toml"))
        repo, audit = FileRepository(cfg.repository.path), SqliteAuditLog(cfg)
        await repo.open()
        await audit.open()
        runner = make_runner(make_app(cfg, repo, audit, Metrics()))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        rss0 = rss_mib()
        slot = make_slot(cfg, size, "big.bin")
        try:
            async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
                t = time.perf_counter()
                headers = {"Content-Length": str(size)}
                async with http.put(slot.put_url, data=body(size), headers=headers) as r:
                    assert r.status == 201, r.status
                put = time.perf_counter() - t
                t = time.perf_counter()
                got = 0
                async with http.get(slot.get_url) as r:
                    async for chunk in r.content.iter_chunked(1024 * 1024):
                        got += len(chunk)
                get = time.perf_counter() - t
                assert got == size
                if hash_runs:
                    await hash_cost(cfg, http, size, hash_runs)
        finally:
            await runner.cleanup()
            await audit.close()
            await repo.close()
    print(f"{size_mib} MiB, loopback, client and server in one process")
    print(f"{'operation':<28}{'MB/s':>10}{'seconds':>10}")
    for name, secs in (("reference: file copy", ref), ("HTTP PUT -> file://", put)):
        print(f"{name:<28}{size / secs / 1e6:>10.0f}{secs:>10.2f}")
    print(f"{'HTTP GET <- file://':<28}{size / get / 1e6:>10.0f}{get:>10.2f}")
    print(f"peak RSS before transfers {rss0:.0f} MiB, after {rss_mib():.0f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--hash-cost", type=int, default=0, metavar="RUNS")
    args = parser.parse_args()
    asyncio.run(main(args.size_mib, args.hash_cost))
