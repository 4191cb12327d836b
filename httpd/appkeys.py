"""Typed :class:`aiohttp.web.AppKey` s through which the HTTP handlers reach their services."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import datetime

from aiohttp import web

from component.audit import AuditLog
from component.config import Config, IPNetwork
from component.metrics import Metrics
from httpd.budget import MemoryBudget
from httpd.repository import Repository
from httpd.scan import Scanner

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

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count one request for the duration of the block."""
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if not self.count:
                self._idle.set()

    async def idle(self) -> None:
        """Return once no request is being handled."""
        await self._idle.wait()


IN_FLIGHT = web.AppKey("in_flight", InFlight)
