"""Repository back-ends: where uploaded bytes live (``file://`` here, ``sftp://`` beside).

Paths given to a repository are relative to the node's directory and come only from
:class:`component.layout.SlotPath` (``files/<chat_type>/<YYYYMMDD>/<HH[.n]>/<resource>``),
never from a user's file name. Every back-end publishes atomically: bytes go to a
hidden ``.part`` file that is renamed into place only when complete, a final name is
never overwritten, and a failed or cancelled upload leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from component.config import Config
from component.errors import AlreadyUploaded, NotFound, SizeMismatch, StorageUnavailable

log = logging.getLogger(__name__)

READ_BLOCK = 256 * 1024


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """Space on the repository's file system, in bytes."""

    total: int
    free: int

    @property
    def free_percent(self) -> float:
        """Free space as a percentage of the total (100 when the total is unknown)."""
        return 100.0 * self.free / self.total if self.total else 100.0


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file found by :meth:`Repository.walk`."""

    path: str
    size: int
    mtime: float


class Repository(Protocol):
    """What the HTTP server and the operations commands need from a repository."""

    @property
    def file_server(self) -> str:
        """The host recorded in AFT_LOG's FILE_SERVER."""

    async def open(self) -> None:
        """Connect and check that the node directory is writable.

        :raises StorageUnavailable: with the reason (unreachable, host key, auth, path).
        """

    async def close(self) -> None:
        """Release connections."""

    async def store(self, path: str, chunks: AsyncIterator[bytes], size: int) -> None:
        """Write exactly ``size`` bytes from ``chunks`` to ``path`` and publish atomically.

        :raises AlreadyUploaded: ``path`` exists (before or after the bytes were written).
        :raises SizeMismatch: ``chunks`` gave more or fewer than ``size`` bytes.
        :raises StorageUnavailable: the repository failed; nothing is left behind.
        """

    async def size(self, path: str) -> int:
        """Size of the published file at ``path``.

        :raises NotFound: no such file.
        """

    def read(self, path: str, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes (to the end if ``None``) of ``path`` from ``offset``.

        :raises NotFound: no such file.
        """

    async def delete(self, path: str) -> None:
        """Remove the file at ``path`` (no error if it is already gone)."""

    async def disk_usage(self) -> DiskUsage:
        """Total and free space where the node directory lives."""

    def walk(self, prefix: str = "files") -> AsyncIterator[StoredFile]:
        """Every regular file below ``prefix`` (``.part`` files included)."""

    async def remove_empty_dirs(self, prefix: str = "files") -> int:
        """Remove empty directories below ``prefix``; returns how many were removed."""


def part_name(path: str) -> str:
    """A unique hidden temporary name beside ``path`` (concurrent PUTs never share one)."""
    head, _, tail = path.rpartition("/")
    return f"{head}/.{tail}.{secrets.token_hex(4)}.part" if head else f".{tail}.part"


def store_dirs(path: str) -> list[str]:
    """The directories holding ``path``, shallowest first: ``files``, ``files/im``, ...

    A store makes the missing ones on first use (DESIGN.md); see :class:`FreshDirs` for
    which of them a failed store removes again.
    """
    head = path.split("/")[:-1]
    return ["/".join(head[: i + 1]) for i in range(len(head))]


class FreshDirs:
    """Directories a repository made for uploads none of which has been published yet.

    DESIGN.md: no directory for an hour without transfers. A failed or cancelled store
    removes, deepest first and each only while empty, the directories of its path that
    are still fresh: made by this store or by a concurrent one that failed before it (so
    the last failure in a new hour clears it), never a directory that was there before,
    one holding a published file, or the layout root ``files``. A store racing with the
    removal finds its directory gone when it creates the part file and makes it again.
    """

    def __init__(self) -> None:
        self._dirs: set[str] = set()

    def made(self, directories: Iterable[str]) -> None:
        """Record directories a store has just created."""
        self._dirs.update(directories)

    def published(self, path: str) -> None:
        """A file was published at ``path``: its directories are in use now."""
        self._dirs.difference_update(store_dirs(path))

    def removable(self, path: str) -> list[str]:
        """The directories a failed store of ``path`` may remove, deepest first."""
        found = []
        for directory in reversed(store_dirs(path)[1:]):
            if directory not in self._dirs:
                break
            found.append(directory)
        return found

    def removed(self, directory: str) -> None:
        """``directory`` is gone (removed by us or by a purge)."""
        self._dirs.discard(directory)


class FileRepository:
    """A repository in a local directory (``file://``), the embedded default."""

    def __init__(self, root: str | os.PathLike[str], file_server: str = "localhost") -> None:
        self._root = Path(root)
        self._file_server = file_server
        self._fresh = FreshDirs()

    @property
    def file_server(self) -> str:
        """``localhost`` unless told otherwise."""
        return self._file_server

    def _abs(self, path: str) -> Path:
        if path.startswith("/") or ".." in path.split("/"):
            raise NotFound()  # only SlotPath-made paths get here; refuse anything else
        return self._root / path

    async def open(self) -> None:
        """Create the node directory if needed and check it is writable."""

        def check() -> None:
            self._root.mkdir(parents=True, exist_ok=True)
            probe = self._root / f".probe-{secrets.token_hex(4)}"
            probe.write_bytes(b"ok")
            probe.unlink()

        try:
            await asyncio.to_thread(check)
        except OSError as exc:
            raise StorageUnavailable(
                f"repository directory {self._root} is not writable: {exc.strerror or exc}"
            ) from exc

    async def close(self) -> None:
        """Nothing to release."""

    async def store(self, path: str, chunks: AsyncIterator[bytes], size: int) -> None:
        """Write to a ``.part`` file, check the size, then hard-link into place."""
        final = self._abs(path)
        if await asyncio.to_thread(final.exists):
            raise AlreadyUploaded()
        part = self._abs(part_name(path))
        made: list[str] = []
        published = False
        try:
            try:
                fd = await asyncio.to_thread(self._create_part, part, path, made)
            finally:
                self._fresh.made(made)
            try:
                written = 0
                async for chunk in chunks:
                    written += len(chunk)
                    if written > size:
                        raise SizeMismatch(size, written, larger=True)
                    await asyncio.to_thread(os.write, fd, chunk)
                if written != size:
                    raise SizeMismatch(size, written)
                await asyncio.to_thread(os.fsync, fd)
            finally:
                os.close(fd)
            try:
                # link() refuses an existing target: a slot is never overwritten.
                await asyncio.to_thread(os.link, part, final)
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

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream a byte range of ``path`` in 256 KiB blocks."""
        try:
            f = await asyncio.to_thread(open, self._abs(path), "rb")
        except FileNotFoundError as exc:
            raise NotFound() from exc
        except OSError as exc:
            raise StorageUnavailable() from exc
        try:
            await asyncio.to_thread(f.seek, offset)
            remaining = length
            while remaining is None or remaining > 0:
                n = READ_BLOCK if remaining is None else min(READ_BLOCK, remaining)
                block = await asyncio.to_thread(f.read, n)
                if not block:
                    break
                if remaining is not None:
                    remaining -= len(block)
                yield block
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


def open_repository(cfg: Config) -> Repository:
    """The back-end for ``cfg.repository.url`` (not yet opened)."""
    if cfg.repository.scheme == "sftp":
        from .storage_sftp import SftpRepository

        return SftpRepository(cfg.repository)
    return FileRepository(cfg.repository.path)
