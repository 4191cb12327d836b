"""The ``file://`` repository: a local directory, the embedded default."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO, cast

from component.errors import (
    AlreadyUploaded,
    NotFound,
    PathNotWritable,
    SizeMismatch,
    StorageUnavailable,
)
from httpd.budget import MemoryBudget
from httpd.repository.base import (
    READ_BLOCK,
    DiskUsage,
    FreshDirs,
    StoredFile,
    part_name,
    store_dirs,
)

log = logging.getLogger(__name__)

# Bytes gathered from the network per write(2): one thread hop per 256 KiB, however
# small the pieces the body arrives in (a hop costs more CPU than the copy). A batch
# being gathered is outside the memory budget, so it stays small: 100 uploads of 1 MiB
# batches would hold 100 MiB the budget never saw.
WRITE_BLOCK = 256 * 1024
WRITE_PARTS = 64  # well below IOV_MAX (1024), for bodies that arrive in tiny pieces


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """writev() ``chunks`` to ``fd``, again after a short write."""
    while chunks:
        n = os.writev(fd, chunks)
        while chunks and n >= len(chunks[0]):
            n -= len(chunks[0])
            chunks = chunks[1:]
        if n:
            chunks = [chunks[0][n:], *chunks[1:]]


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range(2) from libc (the os module lacks it), or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], fn)


_SYNC_FILE_RANGE = _load_sync_file_range()
SYNC_FILE_RANGE_WRITE = 2  # start writeback of the range's dirty pages; do not wait


def _write_block(fd: int, chunks: list[bytes]) -> None:
    """:func:`_write_all`, then start the disk write of those bytes at once.

    Without it the kernel keeps a whole upload dirty in the page cache (far below its
    background threshold) and the closing fsync writes it all while the client waits;
    started early, the disk works while the body still arrives and the fsync finds
    little left to do. Durability still comes from that fsync.
    """
    start = os.lseek(fd, 0, os.SEEK_CUR)
    _write_all(fd, chunks)
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, start, os.lseek(fd, 0, os.SEEK_CUR) - start, SYNC_FILE_RANGE_WRITE)


def _link_durably(part: Path, final: Path, dirs: set[Path]) -> None:
    """Publish ``part`` as ``final``; fsync the directories whose entries changed.

    ``dirs``: the file's directory (its new name) and the parents of any directory this
    store made, so that after a crash the published file is there, not just its bytes.
    """
    os.link(part, final)
    for directory in sorted(dirs, key=lambda p: -len(p.parts)):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all_and_sync(fd: int, chunks: list[bytes]) -> None:
    """:func:`_write_all`, then fsync the file."""
    _write_all(fd, chunks)
    os.fsync(fd)


class FileRepository:
    """A repository in a local directory (``file://``), the embedded default.

    A block being written or read is paid for in the process's memory budget (see
    :mod:`httpd.budget`) while a worker thread holds it or the response is sending it.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        file_server: str = "localhost",
        budget: MemoryBudget | None = None,
    ) -> None:
        """:param budget: the process's memory budget (a private default one if ``None``)."""
        self._root = Path(root)
        self._budget = budget if budget is not None else MemoryBudget()
        self._file_server = file_server
        self._fresh = FreshDirs()

    @property
    def file_server(self) -> str:
        """``localhost`` unless told otherwise."""
        return self._file_server

    @property
    def budget(self) -> MemoryBudget:
        """The memory budget its transfers pay into."""
        return self._budget

    def _abs(self, path: str) -> Path:
        if path.startswith("/") or ".." in path.split("/"):
            raise NotFound()  # only SlotPath-made paths get here; refuse anything else
        return self._root / path

    async def open(self) -> None:
        """Create the node directory if needed and check it is writable.

        :raises PathNotWritable: it cannot be created, or a probe file cannot be written.
        """

        def check() -> None:
            self._root.mkdir(parents=True, exist_ok=True)
            probe = self._root / f".probe-{secrets.token_hex(4)}"
            probe.write_bytes(b"ok")
            probe.unlink()

        try:
            await asyncio.to_thread(check)
        except OSError as exc:
            raise PathNotWritable(
                f"repository directory {self._root} is not writable: {exc.strerror or exc}"
            ) from exc

    async def close(self) -> None:
        """Nothing to release."""

    async def store(self, path: str, chunks: AsyncIterator[bytes], size: int) -> None:
        """Write to a ``.part`` file, check the size, then hard-link into place.

        :raises AlreadyUploaded: ``path`` exists when the file is to be published (the
            link refuses it; the caller checks beforehand, as the PUT does).
        """
        final = self._abs(path)
        part = self._abs(part_name(path))
        made: list[str] = []
        published = False
        try:
            try:
                fd = await asyncio.to_thread(self._create_part, part, path, made)
            finally:
                self._fresh.made(made)
            try:
                written, batch, batched = 0, [], 0
                async for chunk in chunks:
                    written += len(chunk)
                    if written > size:
                        raise SizeMismatch(size, written, larger=True)
                    batch.append(chunk)
                    batched += len(chunk)
                    if batched >= WRITE_BLOCK or len(batch) >= WRITE_PARTS:
                        await self._write(fd, batch, batched)
                        batch, batched = [], 0
                if written != size:
                    raise SizeMismatch(size, written)
                # The rest, then fsync: the bytes are on disk before the link publishes
                # the file (and before the 201).
                await self._write(fd, batch, batched, sync=True)
            finally:
                os.close(fd)
            try:
                # link() refuses an existing target: a slot is never overwritten.
                dirs = {final.parent, *((self._root / d).parent for d in made)}
                await asyncio.to_thread(_link_durably, part, final, dirs)
            except FileExistsError as exc:
                raise AlreadyUploaded() from exc
            published = True
            self._fresh.published(path)
        except OSError as exc:
            raise StorageUnavailable() from exc
        finally:
            with contextlib.suppress(OSError):
                part.unlink()
            if not published:
                self._prune_fresh(path)

    async def _write(self, fd: int, parts: list[bytes], size: int, sync: bool = False) -> None:
        """Write ``parts`` (``size`` bytes) in one worker-thread hop, paid for in the budget
        (then fsync, if ``sync``).

        The batch is paid for once complete, not chunk by chunk: a store waits for budget
        holding only its own complete batch, never a half-filled one that only more of
        its body could finish (which, across many uploads, could hold the whole budget
        and wait forever). Meanwhile no more of the body is read: TCP back-pressure.
        """
        async with self._budget.hold(size):
            await asyncio.to_thread(_write_all_and_sync if sync else _write_block, fd, parts)

    def _create_part(self, part: Path, path: str, made: list[str]) -> int:
        """Create ``part`` exclusively, making its directories on first use (into ``made``).

        A failed upload beside this one may remove the (then empty) directories between
        ``mkdir`` and ``open``: that shows as ``FileNotFoundError``, and we make them again.
        """
        for attempt in range(4):
            try:
                return os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            except FileNotFoundError:
                if attempt == 3:
                    raise
            for directory in store_dirs(path):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(self._root / directory)
                    made.append(directory)
        raise AssertionError("unreachable")

    def _prune_fresh(self, path: str) -> None:
        """Remove what a failed store of ``path`` may remove (see :class:`FreshDirs`)."""
        for directory in self._fresh.removable(path):
            try:
                os.rmdir(self._root / directory)  # only ever removes an empty directory
            except FileNotFoundError:
                pass
            except OSError:
                return
            self._fresh.removed(directory)

    async def size(self, path: str) -> int:
        """Size of ``path``."""
        try:
            st = await asyncio.to_thread(os.stat, self._abs(path))
        except FileNotFoundError as exc:
            raise NotFound() from exc
        except OSError as exc:
            raise StorageUnavailable() from exc
        return st.st_size

    async def _open_read(self, path: str) -> BinaryIO:
        """Open ``path`` for reading. :raises NotFound: / :raises StorageUnavailable:."""
        try:
            return await asyncio.to_thread(open, self._abs(path), "rb")
        except FileNotFoundError as exc:
            raise NotFound() from exc
        except OSError as exc:
            raise StorageUnavailable() from exc

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream a byte range of ``path`` in 256 KiB blocks."""
        f = await self._open_read(path)
        try:
            await asyncio.to_thread(f.seek, offset)
            remaining = length
            while remaining is None or remaining > 0:
                n = READ_BLOCK if remaining is None else min(READ_BLOCK, remaining)
                # Held until the consumer asks for the next block: it has sent this one.
                async with self._budget.hold(n):
                    block = await asyncio.to_thread(f.read, n)
                    if not block:
                        break
                    if remaining is not None:
                        remaining -= len(block)
                    yield block
        finally:
            f.close()

    async def sendfile(
        self, path: str, transport: asyncio.WriteTransport, offset: int, length: int
    ) -> int:
        """Send a byte range of ``path`` with the kernel's sendfile (page cache to socket).

        asyncio falls back to reads and writes where sendfile cannot work (TLS).

        :returns: bytes sent (fewer than ``length`` if the file is shorter).
        :raises NotFound: no such file. :raises StorageUnavailable: it cannot be opened.
        :raises ConnectionError: the client went away.
        """
        f = await self._open_read(path)
        try:
            return await asyncio.get_running_loop().sendfile(transport, f, offset, length)
        finally:
            f.close()

    async def delete(self, path: str) -> None:
        """Unlink ``path``."""
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self._abs(path))

    async def disk_usage(self) -> DiskUsage:
        """statvfs of the node directory."""
        usage = await asyncio.to_thread(shutil.disk_usage, self._root)
        return DiskUsage(total=usage.total, free=usage.free)

    async def walk(self, prefix: str = "files") -> AsyncIterator[StoredFile]:
        """Every regular file below ``prefix``."""
        base = self._abs(prefix)

        def scan() -> list[StoredFile]:
            found = []
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    full = Path(dirpath) / name
                    with contextlib.suppress(FileNotFoundError):
                        st = full.stat()
                        rel = full.relative_to(self._root).as_posix()
                        found.append(StoredFile(rel, st.st_size, st.st_mtime))
            return found

        for item in await asyncio.to_thread(scan):
            yield item

    async def remove_empty_dirs(self, prefix: str = "files") -> int:
        """Remove empty directories below ``prefix`` (deepest first)."""
        base = self._abs(prefix)

        def prune() -> int:
            removed = 0
            for dirpath, _dirs, _files in sorted(os.walk(base), key=lambda t: -len(t[0])):
                if Path(dirpath) == base:
                    continue
                try:
                    os.rmdir(dirpath)
                    removed += 1
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                        raise
            return removed

        return await asyncio.to_thread(prune)
