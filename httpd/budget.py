"""The memory budget: bytes that transfers in flight may hold, shared by a whole process.

Every buffer a transfer keeps beyond one read from its socket is paid for here first:
SFTP write blocks until acknowledged, SFTP read-ahead and file blocks until handed to the
response. A transfer that cannot pay waits (FIFO), and while it waits it does not read
its socket, so the client is slowed by TCP instead of the server buffering for it.

A transfer only ever *waits* for budget while it holds nothing that needs its own
progress to be given back (see the repositories), so the budget cannot deadlock. Once the
budget has been idle for a moment, free heap is handed back to the kernel
(:func:`release_free_memory`): glibc otherwise keeps the arenas a busy hour grew.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import logging
from collections.abc import AsyncIterator, Callable

from component.config import DEFAULT_MEMORY_BUDGET

log = logging.getLogger(__name__)

# How long the budget stays unused before free heap is returned.
IDLE_TRIM_DELAY = 1.0


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (returns free pages in every arena), or ``None`` elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _load_malloc_trim()


def release_free_memory() -> bool:
    """Hand free heap pages back to the kernel (glibc ``malloc_trim(0)``).

    :returns: whether the C library could do it (``False`` off glibc).
    """
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True


class MemoryBudget:
    """A semaphore of bytes: :meth:`acquire` waits, in order of arrival, until ``n`` fit.

    One object per process, made by ``mft run`` and handed to the repository and the
    HTTP application. A request larger than the whole budget is cut to the budget, so
    it still runs (alone).
    """

    def __init__(
        self,
        total: int = DEFAULT_MEMORY_BUDGET,
        *,
        on_idle: Callable[[], object] | None = release_free_memory,
        idle_delay: float = IDLE_TRIM_DELAY,
    ) -> None:
        """:param total: bytes; :param on_idle: called once the budget has been unused
        for ``idle_delay`` seconds after use (``None``: nothing)."""
        if total < 1:
            raise ValueError("a memory budget needs at least one byte")
        self.total = total
        self.in_use = 0
        self.peak = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._on_idle = on_idle
        self._idle_delay = idle_delay
        self._idle_timer: asyncio.TimerHandle | None = None

    @property
    def waiting(self) -> int:
        """Transfers waiting for budget now."""
        return len(self._waiters)

    def _fit(self, n: int) -> int:
        return max(0, min(n, self.total))

    def _take(self, n: int) -> None:
        self.in_use += n
        self.peak = max(self.peak, self.in_use)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def try_acquire(self, n: int, *, leave: int = 0) -> bool:
        """Take ``n`` bytes if they fit now and nobody is waiting (no queue-jumping).

        :param leave: succeed only if this many bytes stay free afterwards (read-ahead
            leaves room for other transfers' first blocks).
        """
        n = self._fit(n)
        if self._waiters or self.in_use + n + leave > self.total:
            return False
        self._take(n)
        return True

    async def acquire(self, n: int) -> int:
        """Take ``n`` bytes (cut to the budget), waiting in line until they fit.

        :returns: the bytes taken, to give to :meth:`release`.
        """
        n = self._fit(n)
        if self.try_acquire(n):
            return n
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just as we were cancelled: give it back
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
                self._wake()  # the next in line may fit now
            raise
        return n

    def release(self, n: int) -> None:
        """Give back ``n`` bytes taken by :meth:`acquire` or :meth:`try_acquire`."""
        n = self._fit(n)
        self.in_use -= n
        if self.in_use < 0:  # a bug in a caller; never let it widen the budget
            log.error("memory budget released more than it gave (%d)", self.in_use)
            self.in_use = 0
        self._wake()
        if self.in_use == 0 and not self._waiters and self._on_idle is not None:
            self._arm_idle()

    def _wake(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():  # cancelled; its acquire() removes it
                self._waiters.popleft()
                continue
            if self.in_use + n > self.total:
                return
            self._waiters.popleft()
            self._take(n)
            fut.set_result(None)

    def _arm_idle(self) -> None:
        if self._idle_timer is not None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to schedule
            loop = asyncio.get_running_loop()
            self._idle_timer = loop.call_later(self._idle_delay, self._idle)

    def _idle(self) -> None:
        self._idle_timer = None
        if self.in_use == 0 and self._on_idle is not None:
            self._on_idle()

    def close(self) -> None:
        """Cancel the pending idle call (the loop is about to end)."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    @contextlib.asynccontextmanager
    async def hold(self, n: int) -> AsyncIterator[int]:
        """``n`` bytes for the duration of the block (waits for them first)."""
        taken = await self.acquire(n)
        try:
            yield taken
        finally:
            self.release(taken)
