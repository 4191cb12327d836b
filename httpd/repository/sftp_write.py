"""Uploads into the ``sftp://`` repository: a body read into blocks of our own, written
at explicit offsets with up to :data:`IN_FLIGHT` writes outstanding, hashed beside them.

Each block is a buffer of the server's ``max_write_len`` that the body is received into
(:class:`~httpd.repository.base.BodySource`: from the socket itself for a large PUT), so
no chunk objects and no copies of ours; it is paid for in the memory budget from before
it is filled until the server has acknowledged its write and the SHA-256 has passed it.
The hash runs either in a worker thread (hashlib releases the GIL), several blocks per
hop, beside the event loop that meanwhile encrypts and sends, or on the event loop
itself, each block as it is sent (``hash_on_loop``: for a worker pinned to one CPU, see
:func:`write_body`). Large uploads are also flushed early (:class:`WriteBehind`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from httpd.budget import MemoryBudget
from httpd.repository.base import BodySource, Hasher

log = logging.getLogger(__name__)

# Writes in flight per upload: 16 reach full speed here; more only add memory.
IN_FLIGHT = 16
# asyncssh holds a write three times until the server acknowledges it: our block, the
# SFTP packet String() makes of it, and the channel's send-buffer bytearray while the
# SSH window is full (tracemalloc of 100 concurrent uploads, asyncssh 2.24). The budget
# is charged for all three. With sftp_fastpath's write there is one (the send buffer
# holds a view of our block) and a packet being sealed; the charge stays three, which
# also covers asyncssh's own path when the fast one steps aside.
WRITE_COPIES = 3
# Blocks per worker-thread hop of the hash (~1 MiB): a hop costs the event loop about a
# tenth of what hashing one block on it would.
HASH_BATCH = 4


# Write-behind: a large upload's part file is fsync'd every FLUSH_STEP bytes through a
# second SFTP session (OpenSSH runs one sftp-server per channel, so this fsync does not
# hold up the upload's writes). The file server's disk then writes beside the transfer,
# and the final fsync on the upload's own handle, the one durability rests on, only has
# the tail left (it took ~0.14 s of a ~0.9 s 256 MiB PUT here).
FLUSH_STEP = 16 * 1024 * 1024


class WriteBehind:
    """Early fsyncs of one part file through the write-behind session (see FLUSH_STEP).

    Only a hint to the file server's disk: failures are logged at debug level and end
    the hints for this file; the upload's own fsync still decides durability.
    """

    def __init__(self, flusher: asyncssh.SFTPClient, part: str, timeout: float) -> None:
        self._flusher, self._part, self._timeout = flusher, part, timeout
        self._file: asyncssh.SFTPClientFile | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = 0
        self._failed = False
        self.flushed = 0
        """Bytes the last completed early fsync covered."""

    def written(self, acknowledged: int) -> None:
        """``acknowledged`` bytes are on the server: flush them if a step has passed and
        no flush is under way."""
        if self._failed or acknowledged - self._started < FLUSH_STEP:
            return
        if self._task is not None and not self._task.done():
            return
        self._started = acknowledged
        self._task = asyncio.ensure_future(self._flush(acknowledged))

    async def _flush(self, upto: int) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                if self._file is None:
                    # Read-only is enough: Linux fsyncs the file whatever the open mode.
                    self._file = await self._flusher.open(self._part, "rb", block_size=0)
                await self._file.fsync()
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            self._failed = True
            log.debug("write-behind fsync of %s skipped: %s", self._part, exc)
        else:
            self.flushed = upto

    async def close(self) -> None:
        """Let a flush under way end and close the second handle (errors ignored)."""
        if self._task is not None:
            await asyncio.wait([self._task])
        if self._file is not None:
            with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
                async with asyncio.timeout(self._timeout):
                    await self._file.close()


class _Hashing:
    """``sha`` fed in order in a worker thread, one job at a time, several blocks a job;
    or at once on the event loop if ``on_loop``."""

    def __init__(self, sha: Hasher, *, on_loop: bool = False) -> None:
        self._sha = sha
        self._on_loop = on_loop
        self._queue: list[tuple[memoryview, Callable[[], None]]] = []
        self._job: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, view: memoryview, hashed: Callable[[], None], *, last: bool) -> None:
        """Hash ``view`` after everything added before; call ``hashed`` once done."""
        if self._on_loop:
            try:
                if self._error is None:
                    self._sha.update(view)
            except Exception as exc:  # raised by finish(), as a thread's would be
                self._error = exc
            hashed()
            return
        self._queue.append((view, hashed))
        self._idle.clear()
        self._kick(last)

    def flush(self) -> None:
        """Hash what is queued now, batch full or not: the upload is about to wait for
        blocks to be given back, and queued ones would otherwise wait for more blocks
        (across many uploads, a budget spent on part-filled batches: a deadlock)."""
        self._kick(flush=True)

    def _kick(self, flush: bool) -> None:
        if self._job is not None or not self._queue:
            return
        if len(self._queue) < HASH_BATCH and not flush:
            return
        batch, self._queue = self._queue, []
        views = [v for v, _ in batch]
        self._job = asyncio.get_running_loop().run_in_executor(None, _update, self._sha, views)
        self._job.add_done_callback(lambda job: self._done(job, batch))

    def _done(self, job: asyncio.Future[None], batch: list[Any]) -> None:
        self._job = None
        if job.cancelled():
            self._error = self._error or asyncio.CancelledError()
        elif job.exception() is not None:
            self._error = self._error or job.exception()
        for _view, hashed in batch:
            hashed()
        self._kick(flush=True)  # what queued meanwhile: the upload is waiting for it
        if self._job is None and not self._queue:
            self._idle.set()

    async def finish(self) -> None:
        """Wait until every block added is hashed (even when cancelled: the thread may
        still read our buffers).

        :raises BaseException: what a hash job raised.
        """
        self._kick(flush=True)
        while not self._idle.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._idle.wait())
        if self._error is not None:
            raise self._error


def _update(sha: Hasher, views: list[memoryview]) -> None:
    for view in views:
        sha.update(view)


async def write_body(
    body: BodySource,
    size: int,
    *,
    block: int,
    budget: MemoryBudget,
    write: Callable[[memoryview, int], Awaitable[None]],
    sha: Hasher | None = None,
    behind: WriteBehind | None = None,
    hash_on_loop: bool = False,
) -> None:
    """Receive ``size`` bytes of ``body`` into blocks and ``write`` each at its offset.

    ``hash_on_loop``: feed ``sha`` on the event loop instead of a worker thread. Where
    no CPU is spare (a worker pinned to each; on a small box the file server's sshd too),
    a thread adds its hand-offs and cross-CPU wake-ups to the hash itself:
    ``benchmarks/sftp_cpu.py --hash-on-loop both`` (8 rounds of 256 MiB) measured 1.06
    against 1.19 s of our CPU per upload, 195 against 176 MB/s.

    At most IN_FLIGHT blocks are held at a time (written and not yet acknowledged, or
    not yet hashed). A new block is paid for before it is filled: while the budget is
    short this waits holding only blocks whose writes and hashes end on their own, and
    reads no more of the body, so the client is slowed by TCP.

    :raises BaseException: a failed write (asyncssh's error, for the caller to
        translate), or what ``body`` raises (early end, stall, past its size, a verdict).
    """
    hashing = _Hashing(sha, on_loop=hash_on_loop) if sha is not None else None
    tasks: set[asyncio.Task[None]] = set()
    freed = asyncio.Event()
    held = acknowledged = 0
    failure: list[BaseException] = []

    # One finished full-size block's buffer, still paid for, for the next block: a fresh
    # bytearray is zero-filled first (and its pages may be new), which cost about as
    # much as framing the block's SFTP request. One at most, kept only while nobody
    # waits for memory (this upload included) and given back before this upload waits:
    # an upload waiting for its client holds one block more than before, not a pool.
    spare: list[memoryview] = []

    def release(cost: int, view: memoryview | None = None) -> None:
        nonlocal held
        held -= 1
        if view is not None and not spare and len(view) == block and not budget.waiting:
            spare.append(view)
        else:
            budget.release(cost)
        freed.set()

    def drop_spare() -> None:
        while spare:
            spare.pop()
            budget.release(WRITE_COPIES * block)

    def track(n: int, cost: int, task: asyncio.Task[None], view: memoryview) -> Callable[[], None]:
        """A block's end: once its write is acknowledged and (if hashing) it is hashed."""
        waiting = 2 if hashing is not None else 1
        reusable = False

        def one_done() -> None:
            nonlocal waiting
            waiting -= 1
            if not waiting:
                release(cost, view if reusable else None)

        def written(t: asyncio.Task[None]) -> None:
            nonlocal acknowledged, reusable
            tasks.discard(t)
            if t.cancelled():
                failure.append(asyncio.CancelledError())
            elif (exc := t.exception()) is not None:
                failure.append(exc)
            else:
                reusable = True  # acknowledged: the channel holds no part of it any more
                acknowledged += n
                if behind is not None:
                    behind.written(acknowledged)
            one_done()

        task.add_done_callback(written)
        return one_done

    def check() -> None:
        if failure:
            raise failure[0]

    async def one_freed() -> None:
        # A queued hash batch may hold the block we wait for: hash it first.
        if hashing is not None:
            hashing.flush()
        freed.clear()
        await freed.wait()
        check()

    try:
        offset = 0
        while offset < size or offset == size == 0:
            n = min(block, size - offset)
            while held >= IN_FLIGHT:
                await one_freed()
            check()
            cost = WRITE_COPIES * n
            if spare and n == block:
                view = spare.pop()  # paid for already
            else:
                drop_spare()  # not of use to this block: never hold it while waiting below
                if not budget.try_acquire(cost):
                    if hashing is not None:
                        hashing.flush()
                    await budget.acquire(cost)
                view = memoryview(bytearray(n))
            held += 1
            try:
                filled = 0
                while filled < n:
                    filled += await body.readinto(view[filled:])
                if offset + n == size:
                    await body.end()  # past the size, or a verdict: before any last write
            except BaseException:
                release(cost)
                raise
            if n == 0:
                release(cost)
                break
            task = asyncio.ensure_future(write(view, offset))
            tasks.add(task)
            hashed = track(n, cost, task, view)
            if hashing is not None:
                hashing.add(view, hashed, last=offset + n == size)
            offset += n
        while held:
            await one_freed()
        check()
        if hashing is not None:
            await hashing.finish()
    finally:
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if hashing is not None:
            with contextlib.suppress(BaseException):
                await hashing.finish()
        drop_spare()
