"""Opening repository files on the event loop from the kernel's caches (openat2 with
RESOLVE_CACHED), and the worker-thread open wherever that cannot be done."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from component.errors import NotFound, StorageUnavailable
from httpd.repository import FileRepository, cached_open
from httpd.repository.cached_open import CachedOpener

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="openat2 is Linux's")


def _failing_syscall(err: int) -> Callable[..., int]:
    """A stand-in for libc's syscall() that fails with ``err``."""

    def syscall(*_args: Any) -> int:
        ctypes.set_errno(err)
        return -1

    return syscall


def _no_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any worker-thread job of the running loop fail the test."""
    loop = asyncio.get_running_loop()

    def refuse(*_args: Any) -> None:
        raise AssertionError("went to a worker thread")

    monkeypatch.setattr(loop, "run_in_executor", refuse)


@linux_only
def test_a_cached_file_opens_with_its_size(tmp_path: Path) -> None:
    """A file just written (its path in the dentry cache) opens, with its size."""
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello, world")
    opened = CachedOpener().open_sized(str(path))
    assert opened is not None
    f, size = opened
    with f:
        assert (size, f.read()) == (12, b"hello, world")


def test_an_unsupported_kernel_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ENOSYS (no openat2) or EINVAL (no RESOLVE_CACHED): None, and no second try."""
    caplog.set_level(logging.INFO, logger=cached_open.__name__)
    calls: list[int] = []
    failing = _failing_syscall(errno.ENOSYS)

    def counted(*args: Any) -> int:
        calls.append(1)
        return failing(*args)

    monkeypatch.setattr(cached_open, "_SYSCALL", counted)
    opener = CachedOpener()
    assert opener.open_sized(str(tmp_path / "x")) is None
    assert opener.open_sized(str(tmp_path / "x")) is None
    assert (calls, opener.enabled) == ([1], False)
    assert "unavailable (ENOSYS)" in caplog.text


def test_a_path_that_needs_the_disk_is_left_to_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EAGAIN (the lookup would read the disk): None, and the opener stays on."""
    monkeypatch.setattr(cached_open, "_SYSCALL", _failing_syscall(errno.EAGAIN))
    opener = CachedOpener()
    assert opener.open_sized(str(tmp_path / "x")) is None
    assert opener.enabled


def test_other_errors_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A known refusal (EACCES, ENOENT from a cached negative entry) is the open's error."""
    monkeypatch.setattr(cached_open, "_SYSCALL", _failing_syscall(errno.EACCES))
    with pytest.raises(PermissionError):
        CachedOpener().open_sized(str(tmp_path / "x"))
    monkeypatch.setattr(cached_open, "_SYSCALL", _failing_syscall(errno.ENOENT))
    with pytest.raises(FileNotFoundError):
        CachedOpener().open_sized(str(tmp_path / "x"))


@linux_only
async def test_a_download_right_after_its_upload_opens_without_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FileRepository.open_to_send of a file it just stored: no worker-thread hop."""
    repo = FileRepository(tmp_path)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "f.bin").write_bytes(b"x" * 1000)
    _no_threads(monkeypatch)
    f, size = await repo.open_to_send("files/f.bin")
    with f:
        assert (size, len(f.read())) == (1000, 1000)


async def test_uncached_and_missing_files_still_open_in_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the cache cannot answer, the thread opens the file; a missing one is
    NotFound, an unreadable path StorageUnavailable, as before."""
    monkeypatch.setattr(cached_open, "_SYSCALL", _failing_syscall(errno.EAGAIN))
    repo = FileRepository(tmp_path)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "f.bin").write_bytes(b"y" * 10)
    f, size = await repo.open_to_send("files/f.bin")
    with f:
        assert (size, f.read()) == (10, b"y" * 10)
    with pytest.raises(NotFound):
        await repo.open_to_send("files/missing.bin")
    monkeypatch.setattr(cached_open, "_SYSCALL", _failing_syscall(errno.EIO))
    with pytest.raises(StorageUnavailable):
        await repo.open_to_send("files/f.bin")
