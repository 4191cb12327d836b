"""The ``sftp://`` repository: the node directory on an SSH file server.

Transfers are pipelined (FIELD-NOTES "SFTP speed"): fixed blocks of the server's
``max_write_len`` written at explicit offsets with :data:`IN_FLIGHT` requests
outstanding (:mod:`httpd.repository.sftp_write`), ordered read-ahead of as many blocks
for downloads. Memory stays ``IN_FLIGHT`` blocks per transfer whatever the file size,
and every block is paid for in the process's :class:`~httpd.budget.MemoryBudget` first,
so all transfers together stay within ``[http] memory_budget``. The connection, its
supervision and the translation of library errors are :class:`SftpSession`'s.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import posixpath
from collections.abc import AsyncGenerator, AsyncIterator

import asyncssh

from component.config import RepositoryConfig
from component.errors import AlreadyUploaded, NotFound, StorageUnavailable
from httpd.budget import MemoryBudget
from httpd.repository.base import (
    BodySource,
    ChunkBody,
    DiskUsage,
    FreshDirs,
    Hasher,
    PartNames,
    StoredFile,
    store_dirs,
)
from httpd.repository.sftp_session import SftpSession
from httpd.repository.sftp_write import IN_FLIGHT, write_body

log = logging.getLogger(__name__)


class SftpRepository(SftpSession):
    """A node directory on an SSH file server (``sftp://user@host:port/path``)."""

    def __init__(
        self,
        repo_cfg: RepositoryConfig,
        budget: MemoryBudget | None = None,
        *,
        hash_on_loop: bool = False,
    ) -> None:
        """:param budget: the process's memory budget (a private default one if ``None``).
        :param hash_on_loop: hash uploads on the event loop rather than in a worker
            thread (for a worker pinned to one CPU: see :func:`write_body`)."""
        super().__init__(repo_cfg)
        self._budget = budget if budget is not None else MemoryBudget()
        self._hash_on_loop = hash_on_loop
        # Failed stores whose part file (and fresh directories) are still to remove,
        # part file -> slot path: at once, or once reconnected.
        self._orphans: dict[str, str] = {}
        self._fresh = FreshDirs()
        self._parts = PartNames()
        self._warned_no_fsync = False

    @property
    def budget(self) -> MemoryBudget:
        """The memory budget its transfers pay into."""
        return self._budget

    async def _on_reconnect(self, sftp: asyncssh.SFTPClient) -> None:
        await self._remove_orphans(sftp)

    # ------------------------------------------------------------------ store

    async def store(self, path: str, chunks: AsyncIterator[bytes], size: int) -> None:
        """:meth:`receive` of ``chunks`` (copied into its blocks), not hashed.

        :raises AlreadyUploaded: ``path`` exists when the file is to be published.
        :raises SizeMismatch: ``chunks`` gave more or fewer than ``size`` bytes.
        :raises StorageUnavailable: see :meth:`receive`.
        """
        await self.receive(path, ChunkBody(chunks, size), size, None)

    async def receive(self, path: str, body: BodySource, size: int, sha: Hasher | None) -> None:
        """Receive ``body`` into a ``.part`` file, fsync it, rename it into place; every
        byte goes to ``sha`` (if given), in a worker thread beside the writes or on the
        event loop (``hash_on_loop``).

        No request is spent on whether ``path`` exists first: the caller has asked (the
        PUT's checks), and the rename refuses an existing target anyway.

        :raises AlreadyUploaded: ``path`` exists when the file is to be published.
        :raises SizeMismatch: ``body`` gave more or fewer than ``size`` bytes (and what
            else ``body`` raises: an early end, a stall, a scan verdict).
        :raises StorageUnavailable: the file server failed or went away; the part file
            and the directories made for it are removed (at once, or after the reconnect).
        """
        final, part = self._abs(path), self._abs(self._parts.next(path))
        sftp = await self._client()
        behind = self._write_behind(part, size)
        try:
            with self._errors("store", path):
                f = await self._open_part(sftp, part, path)
            try:
                with self._errors("write", path):
                    await write_body(
                        body,
                        size,
                        block=self._write_len,
                        budget=self._budget,
                        write=lambda data, offset: self._write_block(f, data, offset),
                        sha=sha,
                        behind=behind,
                        hash_on_loop=self._hash_on_loop,
                    )
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._timed(f.close())
                raise
            with self._errors("fsync", path):
                try:
                    # The bytes on the file server's disk before the rename publishes
                    # them and the 201 goes out (fsync@openssh.com), whatever the
                    # write-behind flushed already.
                    await self._timed(f.fsync())
                except asyncssh.SFTPOpUnsupported:
                    if not self._warned_no_fsync:
                        self._warned_no_fsync = True
                        log.warning("the SFTP server cannot fsync (no fsync@openssh.com)")
                except BaseException:
                    with contextlib.suppress(Exception):
                        await self._timed(f.close())
                    raise
            with self._errors("close", path):
                await self._timed(f.close())
            with self._errors("rename", path):
                try:
                    # SFTPv3 rename refuses an existing target on OpenSSH (link + unlink):
                    # a slot is never overwritten. Not posix-rename, which would replace.
                    await self._timed(sftp.rename(part, final))
                except asyncssh.SFTPFailure:
                    if await self._timed(sftp.exists(final)):
                        raise AlreadyUploaded() from None
                    raise
        except BaseException:
            task = self._spawn(self._discard(part, path))
            # Shielded: a cancelled PUT still gets its part file removed.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(task)
            raise
        finally:
            if behind is not None:
                self._spawn(behind.close())  # the second handle, off the PUT's path
        self._fresh.published(path)

    async def _open_part(
        self, sftp: asyncssh.SFTPClient, part: str, path: str
    ) -> asyncssh.SFTPClientFile:
        """Open ``part`` exclusively, making the directories of ``path`` on first use.

        A failed store beside this one may remove the (then empty) directories between
        ``mkdir`` and ``open``: the open then finds no directory, and we make them again.
        """
        for _attempt in range(3):
            try:
                # block_size=0: each write()/read() is exactly one SFTP request; the
                # pipelining is ours.
                return await self._timed(sftp.open(part, "xb", block_size=0))
            except asyncssh.SFTPNoSuchFile:
                await self._makedirs(sftp, store_dirs(path))
        raise asyncssh.SFTPFailure(f"cannot create {posixpath.dirname(part)}")

    async def _makedirs(self, sftp: asyncssh.SFTPClient, dirs: list[str]) -> None:
        """``mkdir -p`` of ``dirs`` (shallowest first, below the node directory), deepest
        first, so a new hour costs one request; records what it made in :class:`FreshDirs`.
        """
        if not dirs:
            raise asyncssh.SFTPFailure("the node directory is gone")
        i = len(dirs) - 1
        for _step in range(4 * len(dirs)):  # bounded, should a purge race us up and down
            if i == len(dirs):
                return
            try:
                await self._timed(sftp.mkdir(self._abs(dirs[i])))
                self._fresh.made([dirs[i]])
            except asyncssh.SFTPNoSuchFile as exc:
                if i == 0:
                    # The node directory itself is gone: a repository failure, not a 404.
                    raise asyncssh.SFTPFailure(f"cannot create directories: {exc.reason}") from exc
                i -= 1
                continue
            except (asyncssh.SFTPFailure, asyncssh.SFTPFileAlreadyExists):
                if not await self._timed(sftp.isdir(self._abs(dirs[i]))):
                    raise
            i += 1
        raise asyncssh.SFTPFailure(f"cannot create {dirs[-1]}")

    async def _discard(self, part: str, path: str) -> None:
        """Clean up after a failed store now, or remember it for after the reconnect."""
        self._orphans[part] = path
        if self._sftp is not None:
            await self._clean_up(self._sftp, part)

    async def _remove_orphans(self, sftp: asyncssh.SFTPClient) -> None:
        """Clean up after every remembered failed store, until the session fails."""
        tried: set[str] = set()
        # Stores failing meanwhile add orphans (no session is installed yet): take them too.
        while todo := [part for part in self._orphans if part not in tried]:
            for part in todo:
                tried.add(part)
                if not await self._clean_up(sftp, part):
                    return  # the next session tries again

    async def _clean_up(self, sftp: asyncssh.SFTPClient, part: str) -> bool:
        """Remove one remembered part file, then the fresh directories of its slot (see
        :class:`FreshDirs`); it stays remembered if the session fails meanwhile.

        :returns: whether the session still works.
        """
        path = self._orphans.get(part)
        if path is None:
            return True  # done by a concurrent clean-up
        try:
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await self._timed(sftp.remove(part))
            for directory in self._fresh.removable(path):
                try:
                    await self._timed(sftp.rmdir(self._abs(directory)))
                except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
                    raise
                except asyncssh.SFTPNoSuchFile:
                    pass
                except asyncssh.SFTPError:
                    break  # not empty: a concurrent store's file is in it
                self._fresh.removed(directory)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            log.warning("could not clean up after the failed store of %s yet: %s", path, exc)
            return False
        self._orphans.pop(part, None)
        return True

    # ------------------------------------------------------------------ read

    async def size(self, path: str) -> int:
        """Size of the published file at ``path``.

        :raises NotFound: no such file.
        :raises StorageUnavailable: the file server failed.
        """
        full = self._abs(path)
        sftp = await self._client()
        with self._errors("stat", path):
            attrs = await self._timed(sftp.stat(full))
        return int(attrs.size or 0)

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Stream ``length`` bytes (to the end if ``None``) from ``offset``, in order,
        with up to IN_FLIGHT block reads ahead of the consumer.

        Every block is paid for in the budget from its read request until the consumer
        asks for the next one (it has written the block to the response by then). Only
        the first block waits for budget, when this read holds none; read-ahead beyond it
        is taken only when the budget has room now (and half of it stays free), so no
        download waits while holding blocks that only its own progress would give back,
        and slow readers cannot hoard the budget with read-ahead.

        :raises NotFound: no such file.
        :raises StorageUnavailable: the file server failed.
        """
        full = self._abs(path)
        sftp = await self._client()
        with self._errors("read", path):
            f = await self._timed(sftp.open(full, "rb", block_size=0))
        ahead: collections.deque[tuple[int, int, asyncio.Task[bytes]]] = collections.deque()
        try:
            with self._errors("read", path):
                end = int((await self._timed(f.stat())).size or 0)
            if length is not None:
                end = min(end, offset + length)
            block, budget = self._read_len, self._budget
            next_offset = offset

            def launch(n: int) -> None:
                nonlocal next_offset
                task = asyncio.ensure_future(self._read_block(f, n, next_offset))
                ahead.append((next_offset, n, task))
                next_offset += n

            while True:
                if not ahead and next_offset < end:
                    n = min(block, end - next_offset)
                    await budget.acquire(n)  # we hold no block now: waiting is safe
                    launch(n)
                while len(ahead) < IN_FLIGHT and next_offset < end:
                    n = min(block, end - next_offset)
                    # Read-ahead never takes the last half of the budget: a client
                    # that reads slowly holds its blocks, and the others still start.
                    if not budget.try_acquire(n, leave=budget.total // 2):
                        break
                    launch(n)
                if not ahead:
                    break
                at, n, task = ahead.popleft()
                try:
                    with self._errors("read", path):
                        data = await task
                        while 0 < len(data) < n:  # a short read: fetch the rest in order
                            more = await self._read_block(f, n - len(data), at + len(data))
                            if not more:
                                break
                            data += more
                    if len(data) < n:
                        break  # the file shrank under us: stop at what exists
                    yield data
                finally:
                    budget.release(n)
        finally:
            for _at, _n, task in ahead:
                task.cancel()
            if ahead:
                await asyncio.wait([t for _a, _n, t in ahead])
                for _a, n, task in ahead:
                    budget.release(n)
                    if not task.cancelled():
                        task.exception()
            with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
                await self._timed(f.close())

    # ------------------------------------------------------------------ housekeeping

    async def delete(self, path: str) -> None:
        """Remove the file at ``path`` (no error if it is already gone).

        :raises StorageUnavailable: the file server failed.
        """
        full = self._abs(path)
        sftp = await self._client()
        with contextlib.suppress(NotFound), self._errors("delete", path):
            await self._timed(sftp.remove(full))

    async def disk_usage(self) -> DiskUsage:
        """``statvfs@openssh.com`` of the node directory (zeros if unsupported).

        :raises StorageUnavailable: the file server failed.
        """
        sftp = await self._client()
        try:
            with self._errors("statvfs", self._root):
                vfs = await self._timed(sftp.statvfs(self._root))
        except StorageUnavailable as exc:
            if isinstance(exc.__cause__, asyncssh.SFTPOpUnsupported):
                return DiskUsage(total=0, free=0)
            raise
        return DiskUsage(total=vfs.blocks * vfs.frsize, free=vfs.bavail * vfs.frsize)

    async def _listdir(
        self, sftp: asyncssh.SFTPClient, directory: str
    ) -> list[tuple[str, asyncssh.SFTPAttrs]]:
        """Names (sorted) and attributes in ``directory``, without ``.`` and ``..``."""
        with self._errors("list", directory):
            names = await self._timed(sftp.readdir(directory))
        found = [
            (n.filename.decode() if isinstance(n.filename, bytes) else n.filename, n.attrs)
            for n in names
        ]
        return sorted((name, attrs) for name, attrs in found if name not in (".", ".."))

    async def walk(self, prefix: str = "files") -> AsyncIterator[StoredFile]:
        """Every regular file below ``prefix`` (``.part`` files included); symlinks skipped.

        :raises StorageUnavailable: the file server failed.
        """
        sftp = await self._client()
        todo = [prefix]
        while todo:
            rel = todo.pop()
            try:
                names = await self._listdir(sftp, self._abs(rel))
            except NotFound:
                continue  # absent prefix, or removed by a concurrent purge
            for name, attrs in names:
                child = f"{rel}/{name}"
                if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                    todo.append(child)
                elif attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                    yield StoredFile(child, int(attrs.size or 0), float(attrs.mtime or 0))

    async def remove_empty_dirs(self, prefix: str = "files") -> int:
        """Remove empty directories below ``prefix`` (not ``prefix`` itself).

        :returns: how many were removed.
        :raises StorageUnavailable: the file server failed.
        """
        sftp = await self._client()

        async def prune(directory: str) -> tuple[int, bool]:
            try:
                names = await self._listdir(sftp, directory)
            except NotFound:
                return 0, False
            removed, keep = 0, False
            for name, attrs in names:
                if attrs.type != asyncssh.FILEXFER_TYPE_DIRECTORY:
                    keep = True
                    continue
                n, empty = await prune(f"{directory}/{name}")
                removed += n
                if empty:
                    try:
                        await self._timed(sftp.rmdir(f"{directory}/{name}"))
                        removed += 1
                    except (asyncssh.SFTPFailure, asyncssh.SFTPNoSuchFile):
                        keep = True  # an upload just made a file in it
                else:
                    keep = True
            return removed, not keep

        with self._errors("prune", prefix):
            removed, _ = await prune(self._abs(prefix))
        return removed
