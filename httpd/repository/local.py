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
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

from component.errors import (
    AlreadyUploaded,
    NotFound,
    PathNotWritable,
    StorageUnavailable,
)
from httpd.budget import MemoryBudget
from httpd.repository.base import (
    READ_BLOCK,
    BodySource,
    ChunkBody,
    DiskUsage,
    FreshDirs,
    Hasher,
    PartNames,
    StoredFile,
    already_in,
    store_dirs,
)

log = logging.getLogger(__name__)

# Each upload receives into buffers of this size, paid for in the memory budget for as
# long as it runs: one fills from the network while a worker thread hashes and writes
# the other (one thread hop per block, write(2) and SHA-256 in the same hop). 512 KiB
# blocks let 64 uploads run at once in the default 64 MiB budget; the next ones wait in
# line without reading their sockets.
RECV_BLOCK = 512 * 1024
# Below this, a second buffer would not overlap anything worth it: one block.
DOUBLE_BUFFER_MIN = 64 * 1024


def _write_all(fd: int, chunks: list[bytes] | list[memoryview]) -> None:
    """writev() ``chunks`` to ``fd``, again after a short write."""
    parts: list[bytes | memoryview] = list(chunks)
    while parts:
        n = os.writev(fd, parts)
        while parts and n >= len(parts[0]):
            n -= len(parts[0])
            parts = parts[1:]
        if n:
            parts = [memoryview(parts[0])[n:], *parts[1:]]


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


def _write_block(fd: int, chunks: list[bytes] | list[memoryview]) -> None:
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


def _link_durably(part: str, final: str, dirs: set[str]) -> None:
    """Publish ``part`` as ``final``; fsync the directories whose entries changed.

    ``dirs``: the file's directory (its new name) and the parents of any directory this
    store made, so that after a crash the published file is there, not just its bytes.
    """
    os.link(part, final)
    for directory in sorted(dirs, key=lambda p: -p.count("/")):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sendfile_now(transport: asyncio.WriteTransport, f: BinaryIO, offset: int, length: int) -> int:
    """What one non-blocking sendfile(2) takes of the range at once: a small file
    usually fits the socket buffer whole, and asyncio's sendfile machinery (pause
    reading, wait for the buffer to drain, register a writer) then costs more than the
    send. Nothing when the transport still holds bytes (they must go first) or is TLS.

    :raises ConnectionError: the client went away.
    """
    sock = transport.get_extra_info("socket")
    if (
        sock is None
        or transport.get_extra_info("sslcontext") is not None
        or transport.get_write_buffer_size()
        or transport.is_closing()
    ):
        return 0
    try:
        return os.sendfile(sock.fileno(), f.fileno(), offset, length)
    except (BlockingIOError, InterruptedError):
        return 0
    except ConnectionError:
        raise
    except OSError:
        return 0  # let asyncio's sendfile decide (and fall back to reads)


def _open_sized(name: str) -> tuple[BinaryIO, int]:
    """``name`` opened for reading, and its size (one worker-thread job)."""
    f = open(name, "rb")  # the caller closes it
    try:
        return f, os.fstat(f.fileno()).st_size
    except BaseException:
        f.close()
        raise


class _PartFile:
    """The ``.part`` file of one store, touched only by its worker-thread jobs (one at a
    time, in order): created by the first, closed and published by the last."""

    def __init__(self, repo_root: str, path: str, part: str, final: str) -> None:
        self.root, self.path, self.part, self.final = repo_root, path, part, final
        self.fd: int | None = None
        self.made: list[str] = []  # directories the first job created
        self.published = False

    def create(self) -> int:
        """Create the part exclusively, making its directories on first use (into ``made``).

        A failed upload beside this one may remove the (then empty) directories between
        ``mkdir`` and ``open``: that shows as ``FileNotFoundError``, and we make them again.
        """
        for attempt in range(4):
            try:
                return os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            except FileNotFoundError:
                if attempt == 3:
                    raise
            for directory in store_dirs(self.path):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(f"{self.root}/{directory}")
                    self.made.append(directory)
        raise AssertionError("unreachable")

    def write(self, block: memoryview, sha: Hasher | None, last: bool) -> None:
        """Hash and write ``block``; after the ``last`` one fsync, close and publish.

        hashlib releases the GIL on a large buffer, so the hash runs beside the event
        loop, which meanwhile fills the other buffer from the socket.

        :raises FileExistsError: the final name exists (never overwritten).
        """
        if self.fd is None:
            self.fd = self.create()
        if sha is not None:
            sha.update(block)
        if not last:
            _write_block(self.fd, [block])
            return
        _write_all(self.fd, [block])
        # The bytes are on disk before the link publishes the file (and before the 201).
        os.fsync(self.fd)
        self.close()
        # link() refuses an existing target: a slot is never overwritten.
        dirs = {os.path.dirname(self.final)}
        dirs.update(os.path.dirname(f"{self.root}/{d}") for d in self.made)
        _link_durably(self.part, self.final, dirs)
        self.published = True
        with contextlib.suppress(OSError):
            os.unlink(self.part)

    def close(self) -> None:
        """Close the fd if open."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


async def _finish(job: asyncio.Future[Any] | None) -> None:
    """Wait for a worker-thread job to end, even through cancellation: it owns the part
    file's descriptor, which must not be closed under it (a block's write, milliseconds).
    """
    if job is None:
        return
    cancelled = False
    while not job.done():
        try:
            await asyncio.wait([job])
        except asyncio.CancelledError:
            cancelled = True
    if not job.cancelled():
        job.exception()  # retrieved: the caller is already failing for another reason
    if cancelled:
        raise asyncio.CancelledError()


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
        # Paths are strings on the hot path: a pathlib object per syscall costs more.
        self._root_str = os.fspath(self._root)
        self._parts = PartNames()
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

    def _abs(self, path: str) -> str:
        if path.startswith("/") or ".." in path.split("/"):
            raise NotFound()  # only SlotPath-made paths get here; refuse anything else
        return f"{self._root_str}/{path}"

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
        await self._receive(path, ChunkBody(chunks, size), size, None)

    async def receive(self, path: str, body: BodySource, size: int, sha: Hasher | None) -> None:
        """:meth:`store` from a :class:`BodySource`, hashing into ``sha`` as it writes.

        The buffers (two blocks, one for a small body) are paid for in the memory
        budget before the first byte is read and held until the end: while the budget
        is spent, the upload waits in line holding nothing, its socket unread. A body
        that fits one block costs one worker-thread hop in all (create, write, hash,
        fsync, link, directory fsync).

        :raises AlreadyUploaded: as :meth:`store`.
        :raises SizeMismatch: ``body`` ends early or goes on.
        """
        await self._receive(path, body, size, sha)

    async def _receive(self, path: str, body: BodySource, size: int, sha: Hasher | None) -> None:
        block = min(RECV_BLOCK, size) or 1
        count, granted = await self._take_buffers(size, block)
        part = self._abs(self._parts.next(path))
        state = _PartFile(self._root_str, path, part, self._abs(path))
        loop = asyncio.get_running_loop()
        job: asyncio.Future[Any] | None = None
        try:
            ready = already_in(body, size)
            if ready is not None:
                # Written from where aiohttp put it (the budget is paid all the same).
                await body.end()
                job = loop.run_in_executor(None, state.write, ready, sha, True)
                await asyncio.shield(job)
                return
            block = max(1, granted // count)
            bufs = [memoryview(bytearray(block)) for _ in range(count)]
            received, turn = 0, 0
            while True:
                view = bufs[turn % count]
                if count == 1 and job is not None:
                    await asyncio.shield(job)  # it still reads the only buffer
                want, filled = min(block, size - received), 0
                while filled < want:
                    filled += await body.readinto(view[filled:want])
                received += filled
                last = received == size
                if last:
                    await body.end()
                if job is not None:
                    await asyncio.shield(job)  # its buffer is free again
                data = view[:filled]
                if sha is None or last:
                    # A small body's only block: one hop does it all.
                    job = loop.run_in_executor(None, state.write, data, sha, last)
                else:
                    # Hash and write the block in two threads at once: the longer of
                    # the two, not their sum, is what the next block waits for.
                    job = asyncio.gather(
                        loop.run_in_executor(None, sha.update, data),
                        loop.run_in_executor(None, state.write, data, None, last),
                    )
                if last:
                    await asyncio.shield(job)
                    break
                turn += 1
        except FileExistsError as exc:
            raise AlreadyUploaded() from exc
        except OSError as exc:
            raise StorageUnavailable() from exc
        finally:
            await _finish(job)
            self._budget.release(granted)
            self._fresh.made(state.made)
            if state.published:
                self._fresh.published(path)
            else:
                state.close()
                with contextlib.suppress(OSError):
                    os.unlink(state.part)
                self._prune_fresh(path)

    async def _take_buffers(self, size: int, block: int) -> tuple[int, int]:
        """Pay for a store's buffers: ``(count, bytes granted)``.

        Two blocks only while that leaves half the budget free (the overlap matters to
        a few large uploads, not to a crowd, which keeps the cores busy anyway); else
        one, waited for in line. Buffers are held while their upload
        waits for its client, so a crowd of stalled uploads (each with a valid slot,
        and only until ``body_timeout``) holds one small block each once the budget is
        half taken.
        """
        if size > block and block >= DOUBLE_BUFFER_MIN:
            if self._budget.try_acquire(2 * block, leave=self._budget.total // 2):
                return 2, min(2 * block, self._budget.total)
        return 1, await self._budget.acquire(block)

    def _prune_fresh(self, path: str) -> None:
        """Remove what a failed store of ``path`` may remove (see :class:`FreshDirs`)."""
        for directory in self._fresh.removable(path):
            try:
                os.rmdir(f"{self._root_str}/{directory}")  # only ever removes an empty directory
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

    async def _open_read(self, path: str) -> tuple[BinaryIO, int]:
        """Open ``path``: the file and its size, in one worker-thread hop (not to_thread:
        no context to copy). :raises NotFound: / :raises StorageUnavailable:."""
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, _open_sized, self._abs(path))
        except FileNotFoundError as exc:
            raise NotFound() from exc
        except OSError as exc:
            raise StorageUnavailable() from exc

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Stream a byte range of ``path`` in 256 KiB blocks."""
        f, _size = await self._open_read(path)
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

    async def open_to_send(self, path: str) -> tuple[BinaryIO, int]:
        """``path`` opened for :meth:`sendfile` and its size, in one worker-thread hop.
        :raises NotFound: no such file. :raises StorageUnavailable: it cannot be opened."""
        return await self._open_read(path)

    async def sendfile(
        self, f: BinaryIO, transport: asyncio.WriteTransport, offset: int, length: int
    ) -> int:
        """Send a byte range of ``f`` (from :meth:`open_to_send`) with the kernel's
        sendfile (page cache to socket); the caller closes ``f``.

        asyncio falls back to reads and writes where sendfile cannot work (TLS).

        :returns: bytes sent (fewer than ``length`` if the file is shorter).
        :raises ConnectionError: the client went away.
        """
        sent = _sendfile_now(transport, f, offset, length)
        if sent == length:
            return sent
        rest = await asyncio.get_running_loop().sendfile(transport, f, offset + sent, length - sent)
        return sent + rest

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
        base = Path(self._abs(prefix))

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
        base = Path(self._abs(prefix))

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
