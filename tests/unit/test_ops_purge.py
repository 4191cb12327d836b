"""mft purge: old files and stale .part files go, new ones and strangers stay, AFT_LOG stays."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pytest

from component.audit import AuditQuery, AuditRecord
from component.audit.sqlite import SqliteAuditLog
from component.layout import classify, new_resource
from httpd.ops.purge import PART_MIN_AGE, purge, purge_command
from httpd.repository import FileRepository
from tests.fixtures.config import ConfigFactory

from .ops_helpers import unusable_repository

DAY = 86400


def put(root: Path, rel: str, size: int, age: float) -> Path:
    """A file of ``size`` bytes at ``rel`` whose mtime is ``age`` seconds ago."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("files/im/20240101/10/" + "A" * 24, "file"),
        ("files/groupchat/20240101/23.4/" + "b-_" * 10, "file"),
        ("files/persistent/20240101/00/.abcdefghijklmnopqrstuvwx.0a1b2c3d.part", "part"),
        ("files/im/20240101/24/" + "A" * 24, "other"),
        ("files/video/20240101/10/" + "A" * 24, "other"),
        ("files/im/2024010/10/" + "A" * 24, "other"),
        ("files/im/20240101/10/short", "other"),
        ("files/im/20240101/10/" + "A" * 24 + "/x", "other"),
        ("files/README", "other"),
    ],
)
def test_classify(path: str, kind: str) -> None:
    """Only the service's own layout is recognised."""
    assert classify(path) == kind


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A repository with old, new, stale-part, young-part and foreign files."""
    root = tmp_path / "repo"
    return {
        "old_im": put(root, f"files/im/20200101/10/{new_resource()}", 1000, 40 * DAY),
        "old_gc": put(root, f"files/groupchat/20200101/11.1/{new_resource()}", 500, 31 * DAY),
        "new_im": put(root, f"files/im/20990101/10/{new_resource()}", 70, 1 * DAY),
        "stale_part": put(root, "files/im/20200102/03/.xyz.0a0b0c0d.part", 30, 40 * DAY),
        "young_part": put(root, "files/persistent/20990101/10/.abc.01020304.part", 9, 60),
        "foreign": put(root, "files/im/20200101/notes.txt", 5, 400 * DAY),
    }


async def test_purge_deletes_old_and_keeps_the_rest(tmp_path: Path, tree: dict[str, Path]) -> None:
    """Old files and stale parts go; new files, young parts and foreign files stay."""
    repo = FileRepository(tmp_path / "repo")
    report = await purge(repo, 30 * DAY)
    assert (report.files, report.file_bytes) == (2, 1500)
    assert (report.parts, report.part_bytes) == (1, 30)
    assert report.skipped == 1
    gone = {"old_im", "old_gc", "stale_part"}
    for name, path in tree.items():
        assert path.exists() == (name not in gone), name
    files = tmp_path / "repo" / "files"
    # Emptied hour and day directories are removed; files/ and chat-type dirs stay.
    assert not (files / "groupchat" / "20200101").exists()
    assert not (files / "im" / "20200102").exists()
    assert (files / "groupchat").is_dir() and (files / "im" / "20200101").is_dir()
    assert report.dirs == 5  # im/20200101/10, groupchat/20200101{/11.1,}, im/20200102{/03,}


async def test_young_part_file_survives_a_short_age(tmp_path: Path) -> None:
    """A .part file younger than PART_MIN_AGE is an upload in progress: never purged."""
    part = put(tmp_path / "repo", "files/im/20990101/10/.abc.01020304.part", 9, PART_MIN_AGE / 2)
    report = await purge(FileRepository(tmp_path / "repo"), 60)
    assert part.exists() and report.parts == 0


async def test_dry_run_deletes_nothing(tmp_path: Path, tree: dict[str, Path]) -> None:
    """A dry run reports what would go and leaves every file and directory."""
    seen: list[str] = []
    report = await purge(
        FileRepository(tmp_path / "repo"),
        30 * DAY,
        dry_run=True,
        on_match=lambda f, k: seen.append(k),
    )
    assert (report.files, report.parts, report.dirs) == (2, 1, 0)
    assert sorted(seen) == ["file", "file", "part"]
    assert all(p.exists() for p in tree.values())


async def test_empty_repository(tmp_path: Path) -> None:
    """A repository without files/ yet purges nothing and does not fail."""
    report = await purge(FileRepository(tmp_path / "none"), DAY)
    assert (report.files, report.parts, report.dirs, report.skipped) == (0, 0, 0, 0)


def args(older_than: str, dry_run: bool = False) -> argparse.Namespace:
    return argparse.Namespace(older_than=older_than, dry_run=dry_run)


async def test_command_keeps_aft_log_rows(
    config_factory: ConfigFactory, tree: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """mft purge reports count and bytes, and AFT_LOG rows of purged files remain."""
    cfg = config_factory()
    audit = SqliteAuditLog(cfg)
    await audit.open()
    try:
        for key in ("old_im", "old_gc", "new_im"):
            await audit.record(
                AuditRecord(
                    jid="a@localhost",
                    to_jid="",
                    method="POST",
                    filename=tree[key].name,
                    real_filename="f.txt",
                    file_type="txt",
                    chat_type="im",
                    file_server="localhost",
                    file_size=tree[key].stat().st_size,
                )
            )
        before = await audit.query(AuditQuery())
        assert await purge_command(cfg, args("30d")) == 0
        after = await audit.query(AuditQuery())
    finally:
        await audit.close()
    out = capsys.readouterr().out
    assert "deleted 2 files, 1,500 bytes" in out
    assert "deleted 1 stale .part file, 30 bytes" in out
    assert not tree["old_im"].exists()
    assert after == before and len(after) == 3


async def test_command_dry_run_lists_files(
    config_factory: ConfigFactory, tree: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run prints every file it would delete and deletes none."""
    assert await purge_command(config_factory(), args("30d", dry_run=True)) == 0
    out = capsys.readouterr().out
    assert tree["old_im"].name in out and tree["stale_part"].name in out
    assert tree["new_im"].name not in out
    assert "nothing was deleted" in out
    assert all(p.exists() for p in tree.values())


@pytest.mark.parametrize("age", ["30", "0d", "thirty days", "-1d"])
async def test_command_rejects_bad_age(
    config_factory: ConfigFactory, age: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed --older-than exits 2 with a reason, before touching anything."""
    assert await purge_command(config_factory(), args(age)) == 2
    assert "age" in capsys.readouterr().out


async def test_command_reports_unusable_repository(
    tmp_path: Path, config_factory: ConfigFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """A repository path that cannot be used exits 1 naming the repository."""
    cfg = unusable_repository(tmp_path, config_factory)
    assert await purge_command(cfg, args("1d")) == 1
    assert "FAIL  repository" in capsys.readouterr().out
