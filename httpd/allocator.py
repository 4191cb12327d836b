"""glibc ``malloc`` settings for a process that serves HTTP.

asyncio reads a socket with ``recv(256 KiB)``: CPython allocates the whole 256 KiB, then
shrinks the bytes object to what arrived. Above glibc's ``mmap`` threshold (128 KiB at
start) that allocation is a fresh ``mmap``, shrunk with ``mremap`` and ``munmap``'d when
freed, and every page it touches is a page fault on zeroed memory. glibc raises its
threshold only when it frees an ``mmap``'d chunk larger than the threshold, and the
shrunk chunk never is: so every large read of an upload paid for it, about once per
100 KB PUT (``perf trace``: one ``mmap``, ``mremap`` and ``munmap`` per upload).
A threshold above 256 KiB keeps those reads in the heap, where the freed memory is
used again at once; buffers of 512 KiB and more (the repository's receive blocks)
stay ``mmap``'d and go back to the system when freed, as before.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt() parameters
# Above asyncio's 256 KiB socket reads (and CPython's header on them), below the
# repository's 512 KiB blocks.
MMAP_THRESHOLD = 384 * 1024
# Free memory at the top of the heap kept for the next reads instead of handed back
# with brk() after each (setting the mmap threshold stops glibc adjusting this one).
TRIM_THRESHOLD = 4 * 1024 * 1024


def keep_socket_reads_in_heap() -> bool:
    """Set glibc's mmap and trim thresholds for this process (see the module doc).

    :returns: whether they were set: False with another C library (no ``mallopt``),
        which then keeps its own behaviour.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done: bool = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    done = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and done
    if not done:
        log.debug("mallopt() refused the HTTP thresholds; glibc's defaults stay")
    return done
