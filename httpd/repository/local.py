"""The ``file://`` repository: a local directory, the embedded default."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import shutil
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, BinaryIO

from component.errors import AlreadyUploaded, NotFound, PathNotWritable, StorageUnavailable
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
)
from httpd.repository.cached_open import (
    CachedOpener,
    range_cached,
    read_into_cache,
    with_size,
)
from httpd.repository.part_file import PartFile

log = logging.getLogger(__name__)

# Each upload receives into buffers of this size, paid for in the memory budget for as
# long as it runs: one fills from the network while two worker threads write and hash
# the other (two thread hops per block; a small body's only block takes one hop for
# both). 512 KiB blocks let 64 uploads run at once in the default 64 MiB budget; the
# next ones wait in line without reading their sockets.
RECV_BLOCK = 512 * 1024
# A download is sent in steps of this size; a step that is not in the page cache is read
# into it in a worker thread first (through a budgeted buffer of WARM_BLOCK), so that
# sendfile on the event loop never waits for the disk. Each step is one asyncio sendfile
# call: 16 MiB steps made a cached 1 GiB GET ~10 % slower, 64 MiB ones no slower.
SEND_STEP = 64 * 1024 * 1024
WARM_BLOCK = 256 * 1024
# Below this, a second buffer would not overlap anything worth it: one block.
DOUBLE_BUFFER_MIN = 64 * 1024
# A body of two of these or more is received into two blocks of this size while the
# budget is plentiful (three quarters of it stay free: two such uploads in the default
# budget; the next ones get RECV_BLOCK). A block costs its thread hops and event-loop
# wake-ups whatever its size, and at 512 KiB those were half the event loop's CPU of a
# 256 MiB PUT: 4 MiB blocks made it 1.5x as fast (benchmarks/bigput.py, README).
LARGE_BLOCK = 4 * 1024 * 1024


def _close_opened(opening: asyncio.Future[tuple[BinaryIO, int]]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result()[0].close()


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
    return with_size(open(name, "rb"))


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
        small_jobs: Executor | None = None,
    ) -> None:
        """:param budget: the process's memory budget (a private default one if ``None``).
        :param small_jobs: where the one worker-thread job of a small upload or of an
            open for reading runs (an HTTP worker pinned to a CPU passes threads pinned
            with it: see :mod:`httpd.ops.placement`); ``None``: the loop's default
            executor, like everything else here (a large upload's blocks and hashing).
        """
        self._root = Path(root)
        # Paths are strings on the hot path: a pathlib object per syscall costs more.
        self._root_str = os.fspath(self._root)
        self._parts = PartNames()
        self._budget = budget if budget is not None else MemoryBudget()
        self._file_server = file_server
        self._fresh = FreshDirs()
        self._cached = CachedOpener()
        self._small_jobs = small_jobs

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
        """Write to a ``.part`` file, check the size, then rename it into place.

        :raises AlreadyUploaded: ``path`` exists when the file is to be published (the
            rename refuses it; the caller checks beforehand, as the PUT does).
        """
        await self._receive(path, ChunkBody(chunks, size), size, None)

    async def receive(self, path: str, body: BodySource, size: int, sha: Hasher | None) -> None:
        """:meth:`store` from a :class:`BodySource`, hashing into ``sha`` as it writes.

        The buffers (two blocks, one for a small body) are paid for in the memory
        budget before the first byte is read and held until the end: while the budget
        is spent, the upload waits in line holding nothing, its socket unread. A body
        that fits one block costs one worker-thread hop in all (create, write, hash,
        fsync, rename, directory fsync).

        :raises AlreadyUploaded: as :meth:`store`.
        :raises SizeMismatch: ``body`` ends early or goes on.
        """
        await self._receive(path, body, size, sha)

    async def _receive(self, path: str, body: BodySource, size: int, sha: Hasher | None) -> None:
        block = min(RECV_BLOCK, size) or 1
        count, granted = await self._take_buffers(size, block)
        part = self._abs(self._parts.next(path))
        state = PartFile(self._root_str, path, part, self._abs(path))
        loop = asyncio.get_running_loop()
        job: asyncio.Future[Any] | None = None
        try:
            ready = already_in(body, size)
            if ready is not None:
                # Written from where aiohttp put it (the budget is paid all the same).
                await body.end()
                job = loop.run_in_executor(self._small_jobs, state.write, ready, sha, True)
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
                    where = self._small_jobs if size <= block else None
                    job = loop.run_in_executor(where, state.write, data, sha, last)
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

        Two blocks of :data:`LARGE_BLOCK` for a large body while that leaves three
        quarters of the budget free; else two blocks of ``block`` while that leaves half
        free (the overlap matters to a few large uploads, not to a crowd, which keeps
        the cores busy anyway); else one, waited for in line. Buffers are held while
        their upload waits for its client, so a crowd of stalled uploads (each with a
        valid slot, and only until ``body_timeout``) holds one small block each once the
        budget is half taken.
        """
        total = self._budget.total
        if size >= 2 * LARGE_BLOCK and self._budget.try_acquire(
            2 * LARGE_BLOCK, leave=total - total // 4
        ):
            return 2, 2 * LARGE_BLOCK
        if size > block and block >= DOUBLE_BUFFER_MIN:
            if self._budget.try_acquire(2 * block, leave=total // 2):
                return 2, min(2 * block, total)
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
        """Open ``path``: the file and its size, on the event loop when the kernel can
        open it from its caches (:class:`CachedOpener`), else in one worker-thread hop
        (not to_thread: no context to copy). :raises NotFound: / :raises StorageUnavailable:."""
        name = self._abs(path)
        try:
            cached = self._cached.open_sized(name)
        except FileNotFoundError as exc:
            raise NotFound() from exc
        except OSError as exc:
            raise StorageUnavailable() from exc
        if cached is not None:
            return cached
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(self._small_jobs, _open_sized, name)
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:  # e.g. verify's other reader failed: close what
            # the thread opens at once, not at garbage collection
            opening.add_done_callback(_close_opened)
            raise
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
        """``path`` opened for :meth:`sendfile` and its size (see :meth:`_open_read`).
        :raises NotFound: no such file. :raises StorageUnavailable: it cannot be opened."""
        return await self._open_read(path)

    async def sendfile(
        self, f: BinaryIO, transport: asyncio.WriteTransport, offset: int, length: int
    ) -> int:
        """Send a byte range of ``f`` (from :meth:`open_to_send`) with the kernel's
        sendfile (page cache to socket); the caller closes ``f``.

        In steps of :data:`SEND_STEP`: one that is not in the page cache (an old file,
        evicted) is read into it in a worker thread first, since sendfile on the event
        loop would otherwise stop every other request of this worker while the disk
        reads. asyncio falls back to reads and writes where sendfile cannot work (TLS).

        :returns: bytes sent (fewer than ``length`` if the file is shorter).
        :raises ConnectionError: the client went away.
        """
        loop = asyncio.get_running_loop()
        fd, sent = f.fileno(), 0
        while sent < length:
            at, step = offset + sent, min(SEND_STEP, length - sent)
            if not range_cached(fd, at, step):
                async with self._budget.hold(WARM_BLOCK):
                    await asyncio.to_thread(read_into_cache, fd, at, step, WARM_BLOCK)
            got = _sendfile_now(transport, f, at, step)
            if got < step:
                got += await loop.sendfile(transport, f, at + got, step - got)
            sent += got
            if got < step:
                break  # the file is shorter than the range
        return sent

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
