"""Opening repository files on the event loop from the kernel's caches (openat2 with
RESOLVE_CACHED), and the worker-thread open wherever that cannot be done."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import hashlib
import logging
import mmap
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from component.errors import NotFound, StorageUnavailable
from httpd.repository import FileRepository, cached_open, local
from httpd.repository.cached_open import CachedOpener, range_cached, read_into_cache

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


def _resident_pages(path: Path, offset: int = 0, length: int | None = None) -> int:
    """How many pages of ``path`` (of ``length`` bytes at ``offset``; all if ``None``) are
    in the page cache: ``mincore(2)`` of a mapping, which reads nothing (a ``preadv2``
    probe that misses would start a readahead)."""
    size = path.stat().st_size
    pages = -(-size // mmap.PAGESIZE)
    vec = (ctypes.c_ubyte * pages)()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    with path.open("r+b") as f, mmap.mmap(f.fileno(), size) as mapped:
        view = ctypes.c_char.from_buffer(mapped)
        try:
            if libc.mincore(ctypes.addressof(view), size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            del view  # the mapping cannot close while ctypes holds its buffer
    first = offset // mmap.PAGESIZE
    last = pages if length is None else -(-(offset + length) // mmap.PAGESIZE)
    return sum(b & 1 for b in vec[first:last])


def _drop(path: Path, fd: int, offset: int = 0, length: int | None = None) -> None:
    """Drop ``length`` bytes at ``offset`` of ``path`` (all if ``None``) from the page
    cache, asked again while mincore still sees a page there (a page under a readahead's
    I/O stays until that I/O ends)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        os.posix_fadvise(fd, offset, length or 0, os.POSIX_FADV_DONTNEED)
        if _resident_pages(path, offset, length) == 0:
            return
        os.sched_yield()
    raise AssertionError(f"{path} stays in the page cache")


# A probe that misses starts a readahead, and this VM's virtio disk often ends that read
# before the kernel looks at the page again, so the non-blocking probe returns the byte
# after all: 89 of 200 probes of a range mincore had just seen absent (in runs of up to
# 14). So "an evicted range is reported uncached" is asked of up to this many evictions;
# an answer that is always yes (or a probe that waits for the disk) fails all of them.
COLD_TRIES = 40


def _reported_cold(path: Path, fd: int, offset: int, length: int) -> bool:
    """Whether range_cached says no for ``length`` bytes at ``offset``, not in the page
    cache, in one of COLD_TRIES evictions."""
    for _attempt in range(COLD_TRIES):
        if not range_cached(fd, offset, length):
            return True
        _drop(path, fd, offset, length)
    return False


def _cold_file(path: Path, size: int) -> bytes:
    """Write ``size`` random bytes to ``path``, durable, then drop them from the page cache
    (clean pages go; should a page stay after one call, it is asked again, as checked
    with mincore); skip where the file system keeps them (tmpfs)."""
    data = os.urandom(size)
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        for _attempt in range(10):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            if _resident_pages(path) == 0:
                return data
    pytest.skip("this file system keeps the pages (tmpfs?)")


# Far past the kernel's readahead window (8 MiB on the CI VM's disk) behind the first
# megabyte: reading that megabyte must not have brought this part in.
FAR = 32 * 1024 * 1024


@linux_only
def test_a_range_dropped_from_the_page_cache_is_seen_and_read_back(tmp_path: Path) -> None:
    """range_cached says no for evicted pages and yes once read_into_cache read them
    (through a buffer smaller than the range); an empty range counts as cached."""
    path = tmp_path / "cold.bin"
    _cold_file(path, FAR + 1024 * 1024 + 17)
    with path.open("rb") as f:
        fd = f.fileno()
        assert _reported_cold(path, fd, 0, 1024 * 1024)
        read_into_cache(fd, 0, 1024 * 1024, 64 * 1024)
        assert range_cached(fd, 0, 1024 * 1024)
        assert _resident_pages(path, FAR, 1024 * 1024 + 17) == 0  # not read yet
        assert _reported_cold(path, fd, FAR, 1024 * 1024 + 17)
        read_into_cache(fd, FAR, 8 * 1024 * 1024, 64 * 1024)  # past the end
        assert range_cached(fd, FAR, 1024 * 1024 + 17)
        assert range_cached(fd, 0, 0)


@linux_only
async def test_sendfile_reads_a_cold_file_in_a_thread_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download of an evicted file: a step not in the page cache is read into it in a
    worker thread before sendfile sends it from the event loop (every step is cached
    when sent); the bytes arrive whole; the same file sent again takes no thread."""
    monkeypatch.setattr(local, "SEND_STEP", 1024 * 1024)
    warmed: list[tuple[int, int]] = []
    real = local.read_into_cache

    def counted(fd: int, offset: int, length: int, block: int) -> None:
        warmed.append((offset, length))
        real(fd, offset, length, block)

    monkeypatch.setattr(local, "read_into_cache", counted)
    sends: list[bool] = []  # per step: was its range cached when sendfile got it?
    send_now = local._sendfile_now

    def checked(transport: asyncio.WriteTransport, f: BinaryIO, offset: int, n: int) -> int:
        sends.append(range_cached(f.fileno(), offset, n))
        return send_now(transport, f, offset, n)

    monkeypatch.setattr(local, "_sendfile_now", checked)
    (tmp_path / "files").mkdir()
    path = tmp_path / "files" / "cold.bin"
    data = _cold_file(path, 3 * 1024 * 1024 + 5)
    repo = FileRepository(tmp_path)
    got = hashlib.sha256()
    done = asyncio.Event()

    async def receive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(1 << 20):
            got.update(chunk)
        writer.close()
        done.set()

    server = await asyncio.start_server(receive, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for cold in (True, False):
            for attempt in range(COLD_TRIES if cold else 1):
                if attempt:  # the first step's probe read the page itself: evict again
                    with path.open("rb") as again:
                        _drop(path, again.fileno())
                warmed.clear()
                sends.clear()
                done.clear()
                got = hashlib.sha256()
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                f, size = await repo.open_to_send("files/cold.bin")
                with f:
                    sent = await repo.sendfile(f, writer.transport, 0, size)
                writer.close()
                await writer.wait_closed()
                await done.wait()
                assert sent == len(data)
                assert got.hexdigest() == hashlib.sha256(data).hexdigest()
                assert sends == [True] * 4  # four 1 MiB steps, each cached by then
                if warmed[:1] == [(0, 1024 * 1024)]:
                    break
            assert warmed[:1] == ([(0, 1024 * 1024)] if cold else [])
            assert cold or not warmed
    finally:
        server.close()
        await server.wait_closed()
