"""Typed :class:`aiohttp.web.AppKey` s through which the HTTP handlers reach their services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator
from datetime import datetime
from typing import Any

from aiohttp import web

from component.audit import AuditLog
from component.config import Config, IPNetwork
from component.metrics import Metrics
from httpd.budget import MemoryBudget
from httpd.repository import Repository
from httpd.scan import Scanner

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
REPOSITORY = web.AppKey("repository", Repository)
AUDIT = web.AppKey("audit", AuditLog)
METRICS = web.AppKey("metrics", Metrics)
# The process's [http] memory_budget, shared with the repository (see httpd.budget).
BUDGET = web.AppKey("memory_budget", MemoryBudget)
# [scan]: clamd scanning of uploads (a pass-through when no clamd is configured).
SCANNER = web.AppKey("scanner", Scanner)
# [http] trusted_proxies, parsed once (see httpd.clientip).
TRUSTED_PROXIES = web.AppKey("trusted_proxies", tuple[IPNetwork, ...])
# When the application was made (UTC), reported on /healthz.
STARTED = web.AppKey("started", datetime)


class InFlight:
    """Counts requests being handled, so a shutdown can wait for them to finish."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._detached: set[asyncio.Task[None]] = set()

    def _enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def _leave(self) -> None:
        self.count -= 1
        if not self.count:
            self._idle.set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count one request for the duration of the block."""
        self._enter()
        try:
            yield
        finally:
            self._leave()

    async def idle(self) -> None:
        """Return once no request is being handled (nor work one left behind)."""
        await self._idle.wait()

    def detach(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` after its request has returned, counted like a request: a
        shutdown waits for it too. Its failure is logged (``work`` should handle its own)."""
        self._enter()
        task = asyncio.create_task(work, name=name)
        self._detached.add(task)
        task.add_done_callback(self._finished)

    async def detached_done(self, within: float) -> None:
        """Wait up to ``within`` seconds for the work :meth:`detach` left running."""
        if self._detached:
            await asyncio.wait(set(self._detached), timeout=within)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._detached.discard(task)
        self._leave()
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())


IN_FLIGHT = web.AppKey("in_flight", InFlight)
