"""Repository back-ends: where uploaded bytes live (``file://`` here, ``sftp://`` beside).

Paths given to a repository are relative to the node's directory and come only from
:class:`component.layout.SlotPath` (``files/<chat_type>/<YYYYMMDD>/<HH[.n]>/<resource>``),
never from a user's file name. Every back-end publishes atomically: bytes go to a
hidden ``.part`` file that is renamed into place only when complete, a final name is
never overwritten, and a failed or cancelled upload leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import Executor
from typing import Protocol

from component.config import Config
from httpd.budget import MemoryBudget
from httpd.repository.base import (
    READ_BLOCK,
    DiskUsage,
    FreshDirs,
    StoredFile,
    store_dirs,
)
from httpd.repository.local import FileRepository

__all__ = [
    "READ_BLOCK",
    "DiskUsage",
    "FileRepository",
    "FreshDirs",
    "Repository",
    "StoredFile",
    "open_repository",
    "store_dirs",
]


class Repository(Protocol):
    """What the HTTP server and the operations commands need from a repository."""

    @property
    def file_server(self) -> str:
        """The host recorded in AFT_LOG's FILE_SERVER."""

    @property
    def budget(self) -> MemoryBudget:
        """The memory budget its transfers' buffers are paid from (see httpd.budget)."""

    async def open(self) -> None:
        """Connect and check that the node directory is writable.

        :raises StorageUnavailable: with the reason (unreachable, host key, auth, path).
        """

    async def close(self) -> None:
        """Release connections."""

    async def store(self, path: str, chunks: AsyncIterator[bytes], size: int) -> None:
        """Write exactly ``size`` bytes from ``chunks`` to ``path`` and publish atomically.

        ``chunks`` is read to its end before anything is published, and an exception it
        raises, at its end too, fails the store with nothing left behind: that is where
        the malware scan's verdict (:class:`httpd.scan.UploadScan`) stops a file.

        :raises AlreadyUploaded: ``path`` exists when the file is to be published (never
            overwritten). Whether it exists beforehand is the caller's question (the PUT
            asks :meth:`size` before the body), so a store costs no extra round trip.
        :raises SizeMismatch: ``chunks`` gave more or fewer than ``size`` bytes.
        :raises StorageUnavailable: the repository failed; nothing is left behind.
        """

    async def size(self, path: str) -> int:
        """Size of the published file at ``path``.

        :raises NotFound: no such file.
        """

    def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncGenerator[bytes, None]:
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


def open_repository(
    cfg: Config, budget: MemoryBudget | None = None, small_jobs: Executor | None = None
) -> Repository:
    """The back-end for ``cfg.repository.url`` (not yet opened).

    :param budget: the process's memory budget, shared with the HTTP application; a
        private one of ``[http] memory_budget`` bytes if ``None`` (one-shot commands).
    :param small_jobs: given only to an HTTP worker pinned to one CPU, the executor
        whose threads stay on that CPU: ``file://`` runs a small upload's one
        worker-thread job there (see :class:`FileRepository`); ``sftp://`` then hashes
        uploads on the event loop, since the other CPUs are the other workers'.
    """
    if budget is None:
        budget = MemoryBudget(cfg.http.memory_budget)
    if cfg.repository.scheme == "sftp":
        from httpd.repository.sftp import SftpRepository

        return SftpRepository(cfg.repository, budget, hash_on_loop=small_jobs is not None)
    return FileRepository(cfg.repository.path, budget=budget, small_jobs=small_jobs)
