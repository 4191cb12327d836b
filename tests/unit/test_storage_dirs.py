"""Which directories a store makes and which a failed store removes again (both back-ends)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from component.errors import SizeMismatch
from component.layout import classify
from httpd.repository import FileRepository, FreshDirs, store_dirs
from httpd.repository.base import PartNames

PATH = "files/im/20260101/10/resource"


def test_store_dirs_shallowest_first() -> None:
    """Every directory holding the path, from the layout root down to the hour."""
    assert store_dirs(PATH) == [
        "files",
        "files/im",
        "files/im/20260101",
        "files/im/20260101/10",
    ]
    assert store_dirs("resource") == []


def test_fresh_dirs_rule() -> None:
    """Only fresh directories, deepest first, stopping at one that is not; never files."""
    fresh = FreshDirs()
    assert fresh.removable(PATH) == []
    fresh.made(store_dirs(PATH))
    assert fresh.removable(PATH) == ["files/im/20260101/10", "files/im/20260101", "files/im"]
    fresh.published("files/im/20260101/11/other")  # the day and type hold a file now
    assert fresh.removable(PATH) == ["files/im/20260101/10"]
    fresh.removed("files/im/20260101/10")
    assert fresh.removable(PATH) == []


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_failed_store_keeps_directories_it_did_not_make(tmp_path: Path) -> None:
    """An hour that existed before stays; the hour a failed store made is removed."""
    repo = FileRepository(tmp_path)
    await repo.open()
    os.makedirs(tmp_path / "files/im/20260101/10")
    with pytest.raises(SizeMismatch):
        await repo.store(PATH, body(b"abc"), 4)
    with pytest.raises(SizeMismatch):
        await repo.store("files/im/20260101/11/resource", body(b"abc"), 4)
    assert sorted(p.name for p in (tmp_path / "files/im/20260101").iterdir()) == ["10"]


async def test_tiny_chunks_are_gathered_and_all_written(tmp_path: Path) -> None:
    """A body in 3000 one-byte and odd-sized pieces is stored whole (writev batches)."""
    repo = FileRepository(tmp_path)
    await repo.open()
    data = bytes(range(256)) * 40 + os.urandom(300_001)

    async def pieces() -> AsyncIterator[bytes]:
        at = 0
        for _i in range(3000):
            yield data[at : at + 1]
            at += 1
        while at < len(data):
            n = 1 + (at * 7919) % 70_000
            yield data[at : at + n]
            at += n

    await repo.store("files/im/20240101/10/TINYCHUNKS", pieces(), len(data))
    assert (tmp_path / "files/im/20240101/10/TINYCHUNKS").read_bytes() == data
    assert repo.budget.in_use == 0


def test_write_block_appends_and_starts_writeback(tmp_path: Path) -> None:
    """Blocks land one after the other; starting their writeback early changes no byte."""
    from httpd.repository import part_file as local

    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    try:
        local._write_block(fd, memoryview(b"a" * 1000 + b"b" * 5000))
        local._write_block(fd, memoryview(b"c"))
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"a" * 1000 + b"b" * 5000 + b"c"


def _names_in_child(n: int) -> list[str]:
    """``n`` part names made by a fresh interpreter (another worker process)."""
    code = (
        "from httpd.repository.base import PartNames; p = PartNames()\n"
        f"print('\\n'.join(p.next({PATH!r}) for _ in range({n})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_part_names_unique_hidden_and_per_process() -> None:
    """Part names are hidden .part files beside the target, never repeated within a
    process, in two other processes, or in a forked child."""
    names = PartNames()
    mine = [names.next(PATH) for _ in range(1000)]
    head, _, tail = PATH.rpartition("/")
    for name in mine:
        assert name.startswith(f"{head}/.{tail}.") and name.endswith(".part")
        assert classify(name) == "part"  # what purge and the start-up sweep recognise
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a name of its own, through the pipe, then out
        os.write(write, names.next(PATH).encode())
        os._exit(0)
    os.close(write)
    forked = os.read(read, 4096).decode()
    os.close(read)
    os.waitpid(pid, 0)
    others = _names_in_child(200) + _names_in_child(200)
    every = [*mine, forked, *others]
    assert len(set(every)) == len(every) == 1401
    assert names.next("resource").startswith(".resource.")


def _no_noreplace(*_args: object) -> int:
    """renameat2 as a kernel or file system without RENAME_NOREPLACE answers."""
    import ctypes
    import errno

    ctypes.set_errno(errno.EINVAL)
    return -1


@pytest.mark.parametrize("flag", ["renameat2", "no RENAME_NOREPLACE"])
def test_publish_never_replaces_and_leaves_no_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str
) -> None:
    """Publishing renames the part away (with renameat2, or link and unlink where the
    flag is missing); over an existing name it refuses and the file there stays."""
    from httpd.repository import part_file as local

    if flag != "renameat2":
        monkeypatch.setattr(local, "_RENAMEAT2", _no_noreplace)
    part, final = tmp_path / ".f.x.part", tmp_path / "f"
    part.write_bytes(b"new")
    local._publish(str(part), str(final))
    assert final.read_bytes() == b"new" and not part.exists()
    part.write_bytes(b"other")
    with pytest.raises(FileExistsError):
        local._publish(str(part), str(final))
    assert final.read_bytes() == b"new" and part.read_bytes() == b"other"


def test_a_large_block_is_written_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block larger than WRITE_PIECE reaches the file whole and in order, in write(2)s
    of at most WRITE_PIECE (larger ones filled the page cache ~10x slower here), again
    after a short write."""
    from httpd.repository import part_file

    sizes: list[int] = []
    real_write = os.write

    def short_write(fd: int, data: memoryview) -> int:
        sizes.append(len(data))
        return real_write(fd, data[: len(data) - 1 if len(sizes) == 2 else len(data)])

    monkeypatch.setattr(part_file.os, "write", short_write)
    data = os.urandom(3 * part_file.WRITE_PIECE + 12_345)
    target = tmp_path / "block"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        part_file._write_block(fd, memoryview(data))
    finally:
        os.close(fd)
    assert target.read_bytes() == data
    assert max(sizes) == part_file.WRITE_PIECE and len(sizes) == 4
