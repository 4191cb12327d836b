"""The route handlers: thin entries into :mod:`httpd.upload` and :mod:`httpd.download`,
plus the CORS preflight, ``/metrics`` and ``/healthz``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from aiohttp import web

from component.metrics import Metrics
from httpd.appkeys import AUDIT, BUDGET, CONFIG, METRICS, REPOSITORY, STARTED
from httpd.budget import MemoryBudget
from httpd.download import get_download
from httpd.headers import (
    CORS_ALLOW_HEADERS,
    CORS_ALLOW_METHODS,
    CORS_MAX_AGE,
    NODE_HEADER,
    STARTED_HEADER,
)
from httpd.upload import expect_upload, put_upload

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 3.0  # seconds each health probe may take

__all__ = [
    "expect_upload",
    "get_download",
    "healthz",
    "metrics_page",
    "preflight",
    "publish_budget",
    "put_upload",
]


async def preflight(request: web.Request) -> web.Response:
    """CORS preflight for web clients (converse.js, Movim): any origin may PUT and GET."""
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": CORS_ALLOW_METHODS,
            "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
            "Access-Control-Max-Age": CORS_MAX_AGE,
        },
    )


def publish_budget(metrics: Metrics, budget: MemoryBudget) -> None:
    """Set the four ``memory_budget`` gauges from ``budget`` now."""
    metrics.set("memory_budget_bytes", value=budget.total)
    metrics.set("memory_budget_used_bytes", value=budget.in_use)
    metrics.set("memory_budget_peak_bytes", value=budget.peak)
    metrics.set("memory_budget_waiting", value=budget.waiting)


async def metrics_page(request: web.Request) -> web.Response:
    """``GET /metrics``: the Prometheus text exposition format 0.0.4."""
    metrics, budget = request.app[METRICS], request.app[BUDGET]
    publish_budget(metrics, budget)
    resp = web.Response(text=metrics.render())
    resp.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    return resp


async def _probe(name: str, check: Awaitable[object]) -> str | None:
    """``None`` if ``check`` succeeds in time, else a short reason naming ``name``."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            await check
    except TimeoutError:
        return f"{name}: no answer within {HEALTH_TIMEOUT:g}s"
    except Exception as exc:  # any failure makes the node unhealthy; the reason is logged
        log.warning("health check of the %s failed: %s", name, exc)
        return f"{name}: unavailable"
    return None


async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: 200 ``ok`` only when the database and the repository answer."""
    failures = [
        reason
        for reason in await asyncio.gather(
            _probe("database", request.app[AUDIT].ping()),
            _probe("repository", request.app[REPOSITORY].disk_usage()),
        )
        if reason
    ]
    # The node header lets `mft check` tell this node's /healthz from another service's.
    node = {
        NODE_HEADER: request.app[CONFIG].node.id,
        STARTED_HEADER: request.app[STARTED].isoformat(timespec="seconds"),
    }
    if failures:
        return web.Response(status=503, text="\n".join(failures) + "\n", headers=node)
    return web.Response(text="ok\n", headers=node)
