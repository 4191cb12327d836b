"""What the kernel has cached of a ``file://`` repository: opening a file on the event
loop when it can be done from the caches alone, and whether a byte range is in the page
cache (so that ``sendfile`` on the event loop does not wait for the disk).

``openat2(2)`` with ``RESOLVE_CACHED`` (Linux 5.12) fails with ``EAGAIN`` instead of
reading a directory or an inode from disk, so trying it on the event loop cannot stall
it; only a file whose path is not in the dentry cache then goes to a worker thread. A
GET right after its upload (the usual case: the recipient downloads what was just
shared) is then opened without a thread hop, whose wake-up of another thread (a futex
and, on a VM, an inter-processor interrupt) py-spy showed as a fifth of a small GET's
event-loop time. Where the call is missing (another kernel or OS, a seccomp filter),
:class:`CachedOpener` turns itself off after the first refusal and every open goes to
the thread as before.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import sys
from collections.abc import Callable
from typing import BinaryIO, cast

log = logging.getLogger(__name__)

# openat2's number is the same on every Linux architecture (the unified syscall table).
_SYS_OPENAT2 = 437
_AT_FDCWD = -100
RESOLVE_CACHED = 0x20
# preadv2's "fail instead of waiting for the disk" (Linux 4.14; None elsewhere).
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
# What a kernel or filter without openat2 / RESOLVE_CACHED answers.
_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.EPERM, errno.E2BIG})


class _OpenHow(ctypes.Structure):
    """``struct open_how`` of ``<linux/openat2.h>``."""

    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_Syscall = Callable[[int, int, bytes, object, int], int]


def _load_syscall() -> _Syscall | None:
    """libc's ``syscall()``, typed for openat2, or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_long
    fn.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    return cast(_Syscall, fn)


_SYSCALL = _load_syscall()


class CachedOpener:
    """Opens files read-only from the kernel's caches, or says it cannot (one per
    repository: it remembers that the kernel lacks the call)."""

    def __init__(self) -> None:
        self.enabled = _SYSCALL is not None

    def open_sized(self, name: str) -> tuple[BinaryIO, int] | None:
        """``name`` opened for reading and its size, if the kernel could open it without
        disk I/O; ``None`` when it would have had to read the disk (or cannot tell).

        :raises FileNotFoundError: no such file (known from the cache).
        :raises OSError: it cannot be opened.
        """
        if not self.enabled or _SYSCALL is None:
            return None
        how = _OpenHow(os.O_RDONLY | os.O_CLOEXEC, 0, RESOLVE_CACHED)
        fd = _SYSCALL(
            _SYS_OPENAT2, _AT_FDCWD, os.fsencode(name), ctypes.byref(how), ctypes.sizeof(how)
        )
        if fd < 0:
            err = ctypes.get_errno()
            if err == errno.EAGAIN:
                return None  # needs the disk: the caller opens it in a thread
            if err in _UNSUPPORTED:
                self.enabled = False
                log.info(
                    "openat2(RESOLVE_CACHED) unavailable (%s): opening in threads",
                    errno.errorcode.get(err, err),
                )
                return None
            raise OSError(err, os.strerror(err), name)
        return with_size(open(fd, "rb"))


def with_size(f: BinaryIO) -> tuple[BinaryIO, int]:
    """``f`` and its size; ``f`` is closed if its size cannot be read (else the caller
    closes it)."""
    try:
        return f, os.fstat(f.fileno()).st_size
    except BaseException:
        f.close()
        raise


def range_cached(fd: int, offset: int, length: int) -> bool:
    """Whether the first and the last page of ``length`` bytes at ``offset`` are in the
    page cache (a one-byte ``preadv2`` with ``RWF_NOWAIT`` at each end, which fails
    instead of reading the disk). Where that cannot be asked: ``True``, as before.

    Ends, not every page: the kernel reads ahead in whole windows, so a range read
    once is cached throughout or its tail was evicted first. A probe that misses starts
    that readahead itself (without waiting for it), a head start for the read that
    follows.
    """
    if _RWF_NOWAIT is None or length <= 0:
        return True
    probe = bytearray(1)
    for at in (offset, offset + length - 1):
        try:
            os.preadv(fd, [probe], at, _RWF_NOWAIT)
        except BlockingIOError:
            return False
        except OSError:  # EOPNOTSUPP and the like: we cannot tell
            return True
    return True


def read_into_cache(fd: int, offset: int, length: int, block: int) -> None:
    """Read ``length`` bytes at ``offset`` (blocking: in a worker thread) into the page
    cache, through one buffer of ``block`` bytes; stops early at the end of the file."""
    buf = memoryview(bytearray(min(block, max(length, 1))))
    at, end = offset, offset + length
    while at < end:
        n = os.preadv(fd, [buf[: min(len(buf), end - at)]], at)
        if n <= 0:
            return
        at += n
