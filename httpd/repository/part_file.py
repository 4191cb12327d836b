"""An upload's part file in a ``file://`` repository, and how it is published durably:
written in blocks (writeback started as they go), fsync'd, linked to its final name, its
directories fsync'd. Everything here runs in worker threads.

The part file has no name at all where the file system allows it (``O_TMPFILE``: ext4,
XFS, Btrfs, tmpfs; Linux 3.11): ``linkat`` through ``/proc/self/fd`` gives it its final
name, refusing an existing one as ``link`` does. Nothing is added to the directory before
that, nothing removed after it (a named ``.part`` costs a directory entry, its removal,
and a write of the directory block inside the file's ``fsync`` on ext4), and a process
killed mid-upload leaves nothing behind: the kernel frees the inode with its descriptor.
Elsewhere it is a hidden ``.part`` file beside the target, as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
from collections.abc import Callable
from typing import cast

from httpd.repository.base import Hasher, store_dirs


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


# open(O_TMPFILE) fails with these where the file system (or an old kernel) has no
# unnamed files: the store falls back to a named part, and so do later ones.
_NO_UNNAMED = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})


def _fsync_dirs(dirs: set[str]) -> None:
    """fsync ``dirs``, deepest first: after a crash the published name is there too."""
    for directory in sorted(dirs, key=lambda p: -p.count("/")):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _link_unnamed(fd: int, final: str) -> None:
    """Give the unnamed file open on ``fd`` the name ``final`` (refused if it exists).

    ``os.link`` calls linkat(2) with AT_SYMLINK_FOLLOW only when a directory descriptor
    is given, and only the followed ``/proc`` link reaches the inode (AT_EMPTY_PATH
    would need CAP_DAC_READ_SEARCH).
    """
    head, _, tail = final.rpartition("/")
    dfd = os.open(head, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.link(f"/proc/self/fd/{fd}", tail, dst_dir_fd=dfd, follow_symlinks=True)
    finally:
        os.close(dfd)


def unnamed_parts_work(directory: str) -> bool:
    """Whether ``directory`` takes unnamed part files and can name them (a probe file is
    made, linked and removed). False on any refusal: no ``O_TMPFILE`` there, no
    ``/proc``, a seccomp filter."""
    probe = f"{directory}/.probe-{secrets.token_hex(4)}"
    try:
        fd = os.open(directory, os.O_WRONLY | os.O_TMPFILE, 0o640)
    except OSError:
        return False
    try:
        os.write(fd, b"ok")
        _link_unnamed(fd, probe)
    except OSError:
        return False
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return True


class PartFile:
    """The part file of one store, touched only by its worker-thread jobs (one at a
    time, in order): created by the first, closed and published by the last.

    ``unnamed``: try an ``O_TMPFILE`` part first; it is False afterwards if the file
    system refused one and the named ``part`` was made instead.
    """

    def __init__(self, repo_root: str, path: str, part: str, final: str, unnamed: bool) -> None:
        self.root, self.path, self.part, self.final = repo_root, path, part, final
        self.unnamed = unnamed
        self.fd: int | None = None
        self.made: list[str] = []  # directories the first job created
        self.published = False

    def _open(self) -> int:
        if self.unnamed:
            try:
                return os.open(os.path.dirname(self.final), os.O_WRONLY | os.O_TMPFILE, 0o640)
            except OSError as exc:
                if exc.errno not in _NO_UNNAMED:
                    raise
                self.unnamed = False
        return os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)

    def create(self) -> int:
        """Create the part (exclusively, if named), making its directories on first use
        (into ``made``).

        A failed upload beside this one may remove the (then empty) directories between
        ``mkdir`` and ``open``: that shows as ``FileNotFoundError``, and we make them again.
        """
        for attempt in range(4):
            try:
                return self._open()
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
        # Both links refuse an existing target: a slot is never overwritten.
        if self.unnamed:
            _link_unnamed(self.fd, self.final)
            self.close()
        else:
            self.close()
            os.link(self.part, self.final)
        # The file's directory (its new name) and the parents of any directory this
        # store made.
        dirs = {os.path.dirname(self.final)}
        dirs.update(os.path.dirname(f"{self.root}/{d}") for d in self.made)
        _fsync_dirs(dirs)
        self.published = True
        if not self.unnamed:
            with contextlib.suppress(OSError):
                os.unlink(self.part)

    def close(self) -> None:
        """Close the fd if open."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def discard(self) -> None:
        """After a failed store: close, and remove the named part (an unnamed one goes
        with its descriptor)."""
        self.close()
        if not self.unnamed:
            with contextlib.suppress(OSError):
                os.unlink(self.part)
