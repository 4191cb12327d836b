"""mft speedtest: streamed round trip through a Repository, report, warnings, failures."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from component.errors import StorageUnavailable
from httpd.ops.speedtest import SpeedResult, report_lines, run_speedtest, speedtest_command
from httpd.repository import FileRepository
from tests.fixtures.config import ConfigFactory

from .ops_helpers import unusable_repository


class ReorderingRepository(FileRepository):
    """A file:// repository whose reads swap the second and third blocks, as a broken
    read-ahead would."""

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        blocks = [b async for b in super().read(path, offset, length)]
        blocks[1], blocks[2] = blocks[2], blocks[1]
        for block in blocks:
            yield block


class FullRepository(FileRepository):
    """A repository whose writes fail like a full disk."""

    async def store(self, path: str, chunks: AsyncIterator[bytes], size: int) -> None:
        async for _ in chunks:
            raise StorageUnavailable("No space left on device")


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def test_round_trip_leaves_nothing(tmp_path: Path) -> None:
    """A file of an odd size is written, read back whole and deleted."""
    repo = FileRepository(tmp_path)
    size = 3 * 1024 * 1024 + 12345
    result = await run_speedtest(repo, size)
    assert result.size == size
    assert result.write_mb_s > 0 and result.read_mb_s > 0
    assert leftovers(tmp_path) == []


async def test_misordered_read_is_detected(tmp_path: Path) -> None:
    """Blocks coming back out of order fail the test, and the file is still deleted."""
    repo = ReorderingRepository(tmp_path)
    with pytest.raises(StorageUnavailable, match="differ"):
        await run_speedtest(repo, 1024 * 1024)
    assert leftovers(tmp_path) == []


def test_report_warns_below_60_mb_s(config_factory: ConfigFactory) -> None:
    """Only the direction under 60 MB/s gets a WARNING line; MB is defined."""
    lines = report_lines(config_factory(), SpeedResult(100 * 10**6, 2.0, 0.5))
    text = "\n".join(lines)
    assert "Write:" in text and "50.0 MB/s" in text and "200.0 MB/s" in text
    assert "MB = 1,000,000 bytes" in text
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == 1 and "write throughput 50.0 MB/s" in warnings[0]


async def test_command_prints_speeds(
    config_factory: ConfigFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """mft speedtest exits 0 and prints write and read MB/s."""
    cfg = config_factory()
    assert await speedtest_command(cfg, argparse.Namespace(size="2M")) == 0
    out = capsys.readouterr().out
    assert "Test file:   2,097,152 bytes" in out
    assert "Write:" in out and "Read:" in out and "MB/s" in out


async def test_command_bad_size(
    config_factory: ConfigFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed --size exits 2."""
    assert await speedtest_command(config_factory(), argparse.Namespace(size="lots")) == 2
    assert "size" in capsys.readouterr().out


async def test_command_unusable_repository(
    tmp_path: Path, config_factory: ConfigFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """A repository that cannot be opened exits 1 with FAIL and the reason."""
    cfg = unusable_repository(tmp_path, config_factory)
    assert await speedtest_command(cfg, argparse.Namespace(size="1M")) == 1
    assert "FAIL  repository" in capsys.readouterr().out


async def test_full_repository_fails_cleanly(tmp_path: Path) -> None:
    """A write failure propagates and leaves no test file."""
    repo = FullRepository(tmp_path)
    with pytest.raises(StorageUnavailable, match="No space"):
        await run_speedtest(repo, 1024 * 1024)
    assert leftovers(tmp_path) == []
