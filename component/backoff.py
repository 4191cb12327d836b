"""Exponential back-off between retries, cut short when someone is waiting.

One helper for every retry loop: the XMPP component reconnecting to its server, the
SFTP session reconnecting to the file server, and the audit spool redelivering rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time


class Backoff:
    """Delays that start at ``first`` and double after each wait, up to ``maximum``.

    :param jitter: each wait is the delay times a random factor in ``1 ± jitter``, so
        nodes restarted together do not retry in lockstep.
    :param min_wait: a wake-up never makes a wait shorter than this (a rate limit for
        callers that keep asking).
    """

    def __init__(
        self, first: float, maximum: float, *, jitter: float = 0.0, min_wait: float = 0.0
    ) -> None:
        if not 0 < first <= maximum:
            raise ValueError("Backoff: 0 < first <= maximum")
        self.first = first
        self.maximum = maximum
        self.jitter = jitter
        self.min_wait = min_wait
        self.delay = first

    def reset(self) -> None:
        """Start again from ``first`` (after a success)."""
        self.delay = self.first

    def next_delay(self) -> float:
        """The delay to wait now (jittered); the one after it doubles."""
        delay = self.delay * random.uniform(1 - self.jitter, 1 + self.jitter)
        self.delay = min(self.delay * 2, self.maximum)
        return delay

    async def wait(self, wake: asyncio.Event | None = None) -> float:
        """Wait :meth:`next_delay` seconds, or less once ``wake`` is set.

        A ``wake`` set before the call cuts this wait short too (whoever set it is
        already waiting); the caller clears it when it means a request. At least
        ``min_wait`` seconds pass either way.

        :returns: the delay that was due (for log lines).
        """
        delay = self.next_delay()
        started = time.monotonic()
        if wake is None:
            await asyncio.sleep(delay)
            return delay
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wake.wait()
        rest = started + min(self.min_wait, delay) - time.monotonic()
        if rest > 0:
            await asyncio.sleep(rest)  # rate limit, not synchronisation
        return delay
