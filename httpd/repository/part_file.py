"""An upload's ``.part`` file in a ``file://`` repository, and how it is published
durably: written in blocks (writeback started as they go), fsync'd, renamed to its final
name (never over a file there), its directories fsync'd. Everything here runs in worker
threads."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from collections.abc import Callable
from typing import Any, cast

from httpd.repository.base import Hasher, store_dirs

# One write(2) puts at most this much into the page cache. In larger writes (4 MiB) the
# same bytes took ~10x the system time here, medians of 8 rounds after the page cache was
# warmed (benchmarks/write_size.py), likely because the kernel sizes a file's page-cache
# folios by the length of the write and 2 MiB ones came from memory this VM's hypervisor
# had taken back; 512 KiB and 1 MiB writes cost the same.
WRITE_PIECE = 1024 * 1024


def _write_all(fd: int, data: memoryview) -> None:
    """write() ``data`` to ``fd`` in pieces of at most :data:`WRITE_PIECE`, again after
    a short write."""
    at, end = 0, len(data)
    while at < end:
        at += os.write(fd, data[at : at + WRITE_PIECE])


def _from_libc(name: str, argtypes: list[type[Any]]) -> Any | None:
    """The libc function ``name`` returning an int (errno kept for ctypes.get_errno),
    for calls the os module lacks; None where libc has no such function."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = argtypes
    fn.restype = ctypes.c_int
    return fn


# sync_file_range(2)
_SYNC_FILE_RANGE = cast(
    "Callable[[int, int, int, int], int] | None",
    _from_libc("sync_file_range", [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]),
)
SYNC_FILE_RANGE_WRITE = 2  # start writeback of the range's dirty pages; do not wait


def _write_block(fd: int, data: memoryview) -> None:
    """:func:`_write_all`, then start the disk write of those bytes at once.

    Without it the kernel keeps a whole upload dirty in the page cache (far below its
    background threshold) and the closing fsync writes it all while the client waits;
    started early, the disk works while the body still arrives and the fsync finds
    little left to do. Durability still comes from that fsync.
    """
    start = os.lseek(fd, 0, os.SEEK_CUR)
    _write_all(fd, data)
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, start, len(data), SYNC_FILE_RANGE_WRITE)


# renameat2(2): os.rename takes no flags.
_RENAMEAT2 = cast(
    "Callable[[int, bytes, int, bytes, int], int] | None",
    _from_libc(
        "renameat2", [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    ),
)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
# What renameat2 answers where the kernel or the file system lacks RENAME_NOREPLACE.
_NO_NOREPLACE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


def _publish(part: str, final: str) -> None:
    """Give ``part`` the name ``final``, never replacing a file already there.

    ``renameat2(RENAME_NOREPLACE)`` changes one directory entry, atomically: there is no
    moment with both names, as between ``link`` and ``unlink`` (the fallback where the
    kernel or file system lacks the flag), which change two and the inode's link count
    twice. In a loop publishing 100 KB files (fsyncs included) the pair took 17-21 % more
    CPU per file; in the service (``benchmarks/smallio.py``) the worker threads' CPU per
    upload did not move measurably.

    :raises FileExistsError: ``final`` exists.
    """
    if _RENAMEAT2 is not None:
        src, dst = os.fsencode(part), os.fsencode(final)
        if _RENAMEAT2(AT_FDCWD, src, AT_FDCWD, dst, RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in _NO_NOREPLACE:
            # OSError picks the subclass from the code (EEXIST: FileExistsError).
            raise OSError(code, os.strerror(code), part, None, final)
    os.link(part, final)  # link() refuses an existing target too
    with contextlib.suppress(OSError):
        os.unlink(part)


def _publish_durably(part: str, final: str, dirs: set[str]) -> None:
    """Publish ``part`` as ``final``; fsync the directories whose entries changed.

    ``dirs``: the file's directory (its new name) and the parents of any directory this
    store made, so that after a crash the published file is there, not just its bytes.
    """
    _publish(part, final)
    for directory in sorted(dirs, key=lambda p: -p.count("/")):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class PartFile:
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
            _write_block(self.fd, block)
            return
        _write_all(self.fd, block)
        # The bytes are on disk before the rename publishes the file (and before the 201).
        os.fsync(self.fd)
        self.close()
        # A slot is never overwritten: publishing refuses an existing name.
        dirs = {os.path.dirname(self.final)}
        dirs.update(os.path.dirname(f"{self.root}/{d}") for d in self.made)
        _publish_durably(self.part, self.final, dirs)
        self.published = True

    def close(self) -> None:
        """Close the fd if open."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)
