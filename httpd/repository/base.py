"""Pieces every repository back-end shares: disk usage, found files, part names, fresh dirs."""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import BinaryIO, Protocol, cast, runtime_checkable

from component.errors import SizeMismatch

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


class Hasher(Protocol):
    """What a repository needs of a ``hashlib`` object it feeds while it writes."""

    def update(self, data: memoryview, /) -> None:
        """Add ``data`` to the hash."""
        ...


class BodySource(Protocol):
    """A request body that a repository pulls into buffers of its own (no chunk objects).

    :meth:`readinto` runs on the event loop; the bytes are then hashed and written in
    a worker thread while the next buffer fills.
    """

    async def readinto(self, buf: memoryview) -> int:
        """Fill up to ``len(buf)`` bytes of ``buf`` (at least one): the count.

        :raises InvalidRequest: the body ended (connection closed) before that.
        """
        ...

    async def end(self) -> None:
        """Called once the declared size has been read, before anything is published.

        :raises SizeMismatch: the body goes on past its declared size.
        :raises UploadError: a verdict that waits for the end of the body (malware scan).
        """
        ...


@runtime_checkable
class ReceivesBodies(Protocol):
    """A repository that takes a body as a :class:`BodySource` and hashes it as it writes
    (``file://``: SHA-256 and write in the same worker-thread hop, off the event loop)."""

    async def receive(self, path: str, body: BodySource, size: int, sha: Hasher | None) -> None:
        """As :meth:`Repository.store`, feeding every byte to ``sha`` (if given)."""
        ...


class ChunkBody:
    """A :class:`BodySource` over an async iterator of chunks (the generic store path).

    :meth:`readinto` copies out of the chunks (a memcpy, cheaper than a thread hop per
    chunk); :meth:`end` reads the iterator to its end, where a scan verdict is raised.
    """

    def __init__(self, chunks: AsyncIterator[bytes], size: int) -> None:
        self._chunks = aiter(chunks)
        self._rest = memoryview(b"")
        self._size = size
        self._read = 0

    async def readinto(self, buf: memoryview) -> int:
        """Copy from the next chunk(s). :raises SizeMismatch: they end early."""
        while not self._rest:
            try:
                self._rest = memoryview(await anext(self._chunks))
            except StopAsyncIteration:
                raise SizeMismatch(self._size, self._read) from None
        n = min(len(buf), len(self._rest))
        buf[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        self._read += n
        return n

    async def end(self) -> None:
        """:raises SizeMismatch: a byte past the size (at once, the rest unread)."""
        if self._rest:
            raise SizeMismatch(self._size, self._size + len(self._rest), larger=True)
        async for chunk in self._chunks:
            if chunk:
                raise SizeMismatch(self._size, self._size + len(chunk), larger=True)


@runtime_checkable
class SendsFiles(Protocol):
    """A repository that can hand a byte range to a socket itself (``file://``: the
    kernel's sendfile, no copies through Python)."""

    async def open_to_send(self, path: str) -> tuple[BinaryIO, int]:
        """``path`` opened for :meth:`sendfile`, and its size: one worker-thread hop for
        what a GET needs before its headers. The caller closes the file.

        :raises NotFound: no such file. :raises StorageUnavailable: it cannot be opened.
        """
        ...

    async def sendfile(
        self, f: BinaryIO, transport: asyncio.WriteTransport, offset: int, length: int
    ) -> int:
        """Send ``length`` bytes of ``f`` (from :meth:`open_to_send`) from ``offset`` on
        ``transport``; bytes sent."""
        ...


def already_in(body: BodySource, size: int) -> memoryview | None:
    """The whole body, if ``body`` has all ``size`` bytes in memory already and hands them
    over (an optional ``whole(size)`` method: the PUT's bodies have it), else ``None``."""
    whole = getattr(body, "whole", None)
    return cast(memoryview | None, whole(size)) if callable(whole) else None


def receiver_of(repo: object) -> ReceivesBodies | None:
    """``repo`` as a :class:`ReceivesBodies` if it has ``receive``, else ``None``.

    A plain attribute test, on every request: ``isinstance`` against a runtime-checkable
    protocol walks the protocol's members each time (tens of microseconds).
    """
    return cast(ReceivesBodies, repo) if callable(getattr(repo, "receive", None)) else None


def file_sender_of(repo: object) -> SendsFiles | None:
    """``repo`` as a :class:`SendsFiles` if it has ``sendfile``, else ``None`` (as above)."""
    return cast(SendsFiles, repo) if callable(getattr(repo, "sendfile", None)) else None


class PartNames:
    """Unique hidden temporary names beside the files being stored (concurrent PUTs
    never share one), cheaply.

    Rather than random bytes per name (a getrandom(2) per upload), 8 are drawn once per
    process and a counter follows. Another process (a forked child too: the pid is
    checked) has another prefix, and the part is created exclusively all the same.
    """

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._counter = itertools.count()

    def next(self, path: str) -> str:
        """The next name for ``path``: ``dir/.name.<prefix><n>.part``."""
        if self._pid != os.getpid():
            self._pid, self._prefix = os.getpid(), secrets.token_hex(8)
            self._counter = itertools.count()
        head, _, tail = path.rpartition("/")
        unique = f"{self._prefix}{next(self._counter):x}"
        return f"{head}/.{tail}.{unique}.part" if head else f".{tail}.{unique}.part"


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
