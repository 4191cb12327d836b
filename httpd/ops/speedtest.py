"""``mft speedtest``: repository write and read throughput, like the seed's
``show fileserver transferspeed``.

A test file of ``--size`` bytes is generated block by block (never whole in memory),
written through :meth:`Repository.store`, read back through :meth:`Repository.read`
(its length checked, and 16 bytes at both ends of every block: that catches shifted,
misordered or truncated reads without a full compare slowing the measurement), and
deleted. Speeds are in MB/s with MB = 10^6 bytes. The seed requires more than 60 MB/s
between the service and the file server; slower results print a WARNING line but
exit 0. A failing repository exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from component.config import Config
from component.dburl import safe_url
from component.errors import StorageUnavailable, UploadError
from httpd.ops.util import parse_size, repository_failure
from httpd.repository import Repository, open_repository

log = logging.getLogger(__name__)

BLOCK = 1024 * 1024
MIN_MB_PER_S = 60.0  # seed: "must be greater than 60 megabytes per second"
SPOT = 16  # bytes compared at each end of every block read back


@dataclass(frozen=True, slots=True)
class SpeedResult:
    """Measured transfer times for one test file."""

    size: int
    write_seconds: float
    read_seconds: float

    @property
    def write_mb_s(self) -> float:
        """Write throughput in MB/s (10^6 bytes per second)."""
        return self.size / self.write_seconds / 1e6

    @property
    def read_mb_s(self) -> float:
        """Read throughput in MB/s (10^6 bytes per second)."""
        return self.size / self.read_seconds / 1e6


async def _generate(pattern: bytes, size: int) -> AsyncIterator[bytes]:
    """``size`` bytes of ``pattern`` repeated, one block at a time."""
    sent = 0
    while sent < size:
        n = min(len(pattern), size - sent)
        yield pattern if n == len(pattern) else pattern[:n]
        sent += n


def _expected(pattern: bytes, pos: int, n: int) -> bytes:
    """The ``n`` bytes of the repeated pattern starting at file offset ``pos``."""
    start = pos % len(pattern)
    out = pattern[start : start + n]
    while len(out) < n:
        out += pattern[: n - len(out)]
    return out


async def run_speedtest(repo: Repository, size: int, pattern: bytes | None = None) -> SpeedResult:
    """Write, read back and delete a ``size``-byte file in ``repo``; time both directions.

    :raises StorageUnavailable: the repository failed, or the bytes read back differ.
    """
    pattern = pattern or os.urandom(BLOCK)  # random: a compressing link cannot cheat
    path = f"mft-speedtest-{secrets.token_hex(8)}.tmp"
    try:
        started = time.perf_counter()
        await repo.store(path, _generate(pattern, size), size)
        write_seconds = time.perf_counter() - started

        started = time.perf_counter()
        pos = 0
        async for block in repo.read(path):
            n = len(block)
            if n and (
                block[:SPOT] != _expected(pattern, pos, min(SPOT, n))
                or block[-SPOT:] != _expected(pattern, pos + n - min(SPOT, n), min(SPOT, n))
            ):
                raise StorageUnavailable(f"the bytes read back at offset {pos} differ")
            pos += n
        read_seconds = time.perf_counter() - started
        if pos != size:
            raise StorageUnavailable(f"read back {pos} bytes of the {size} written")
    finally:
        # Never leave a test file behind, whatever happened (cancellation included).
        with contextlib.suppress(Exception):
            await asyncio.shield(repo.delete(path))
    return SpeedResult(size, max(write_seconds, 1e-9), max(read_seconds, 1e-9))


def report_lines(cfg: Config, result: SpeedResult) -> list[str]:
    """The printed report, WARNING lines included."""
    size = result.size
    lines = [
        f"Repository:  {safe_url(cfg.repository.url)} (file server {cfg.repository.host})",
        f"Test file:   {size:,} bytes ({size / 1024**2:.0f} MiB)",
        f"Write:       {result.write_mb_s:8.1f} MB/s  ({result.write_seconds:.2f} s)",
        f"Read:        {result.read_mb_s:8.1f} MB/s  ({result.read_seconds:.2f} s)",
        "(MB = 1,000,000 bytes)",
    ]
    for direction, speed in (("write", result.write_mb_s), ("read", result.read_mb_s)):
        if speed < MIN_MB_PER_S:
            lines.append(
                f"WARNING: {direction} throughput {speed:.1f} MB/s is below {MIN_MB_PER_S:g} MB/s;"
                " the link to the file server must be greater than 60 megabytes per second"
            )
    return lines


async def speedtest_command(cfg: Config | None, args: argparse.Namespace) -> int:
    """``mft speedtest -c FILE [--size 256M]``: 0 when measured, 1 when the repository
    fails, 2 for a bad ``--size``."""
    assert cfg is not None  # the CLI requires -c for this command
    try:
        size = parse_size(args.size)
    except ValueError as exc:
        print(f"mft speedtest: {exc}")
        return 2
    repo = open_repository(cfg)
    try:
        await repo.open()
        result = await run_speedtest(repo, size)
    except (UploadError, OSError) as exc:
        print(repository_failure(cfg, exc))
        return 1
    finally:
        await repo.close()
    for line in report_lines(cfg, result):
        print(line)
    return 0
