"""Pieces every repository back-end shares: disk usage, found files, part names, fresh dirs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class SendsFiles(Protocol):
    """A repository that can hand a byte range to a socket itself (``file://``: the
    kernel's sendfile, no copies through Python)."""

    async def sendfile(
        self, path: str, transport: asyncio.WriteTransport, offset: int, length: int
    ) -> int:
        """Send ``length`` bytes of ``path`` from ``offset`` on ``transport``; bytes sent."""
        ...


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
