"""The aiohttp application (routes, middleware, services) and the server that runs it."""

from __future__ import annotations

import asyncio
import logging
import ssl
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from component.audit import AuditLog
from component.config import Config
from component.metrics import Metrics
from httpd import handlers
from httpd.allocator import keep_socket_reads_in_heap
from httpd.appkeys import (
    AUDIT,
    BUDGET,
    CONFIG,
    IN_FLIGHT,
    METRICS,
    REPOSITORY,
    SCANNER,
    STARTED,
    TRUSTED_PROXIES,
    InFlight,
)
from httpd.budget import MemoryBudget
from httpd.clientip import client_ip
from httpd.middleware import add_cors_headers, error_middleware, in_flight_middleware
from httpd.repository import Repository
from httpd.routing import FILE_ROUTE
from httpd.scan import Scanner

log = logging.getLogger(__name__)

# After the grace, how long aiohttp waits for a handler before and after cancelling it.
CANCEL_TIMEOUT = 1.0

__all__ = ["AUDIT", "CONFIG", "METRICS", "REPOSITORY", "make_app", "make_runner", "serve_http"]


class SafeAccessLogger(AbstractAccessLogger):
    """Access log without the query string: PUT tokens and tickets are bearer secrets.

    The client is the one behind trusted proxies (:func:`httpd.clientip.client_ip`).
    """

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        """One line per request: client, method, path, status, body bytes, seconds."""
        self.logger.info(
            '%s "%s %s" %d %d %.3fs',
            client_ip(request),
            request.method,
            request.path,
            response.status,
            response.body_length,
            time,
        )


def _prefixes(cfg: Config) -> list[str]:
    """URL path prefixes to serve: ``""`` and the path of ``public_url`` if it has one.

    Both, because a reverse proxy may or may not strip the prefix it is mounted on.
    """
    prefix = urlsplit(cfg.http.public_url).path.rstrip("/")
    return [""] + ([prefix] if prefix else [])


def make_app(
    cfg: Config,
    repo: Repository,
    audit: AuditLog,
    metrics: Metrics,
    budget: MemoryBudget | None = None,
) -> web.Application:
    """The HTTP application serving uploads, downloads, ``/metrics`` and ``/healthz``.

    The repository and the audit log must already be open; the caller closes them.

    :param budget: the process's memory budget, which the repository pays into too
        (the repository's own if ``None``).
    """
    app = web.Application(middlewares=[in_flight_middleware, error_middleware])
    app[IN_FLIGHT] = InFlight()
    app[CONFIG] = cfg
    app[REPOSITORY] = repo
    app[AUDIT] = audit
    app[METRICS] = metrics
    app[BUDGET] = budget if budget is not None else repo.budget
    app[SCANNER] = Scanner(cfg.scan, metrics)
    app[TRUSTED_PROXIES] = cfg.http.trusted_networks
    app[STARTED] = datetime.now(UTC)
    for prefix in _prefixes(cfg):
        files = app.router.add_resource(prefix + FILE_ROUTE)
        files.add_route("PUT", handlers.put_upload, expect_handler=handlers.expect_upload)
        files.add_route("GET", handlers.get_download)
        files.add_route("HEAD", handlers.get_download)
        files.add_route("OPTIONS", handlers.preflight)
        app.router.add_get(prefix + "/metrics", handlers.metrics_page, allow_head=False)
        app.router.add_get(prefix + "/healthz", handlers.healthz, allow_head=False)
    app.on_response_prepare.append(add_cors_headers)
    app.on_cleanup.append(_finish_detached)
    return app


async def _finish_detached(app: web.Application) -> None:
    """Before the caller closes the audit log: let the rows written after their
    responses (downloads) reach it."""
    await app[IN_FLIGHT].detached_done(app[CONFIG].http.shutdown_grace)


def _ssl_context(cfg: Config) -> ssl.SSLContext | None:
    """A server TLS context from ``[http] tls_cert``/``tls_key``, or ``None`` (plain HTTP)."""
    if not cfg.http.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg.http.tls_cert, cfg.http.tls_key)
    return ctx


def make_runner(app: web.Application) -> web.AppRunner:
    """The runner for ``app``: safe access log, handlers cancelled soon after cleanup().

    Handlers are not cancelled when a client disconnects (aiohttp's default): an upload
    then sees the broken body stream and a download its failed write, and each cleans
    up and writes its row in order.
    """
    return web.AppRunner(
        app,
        handle_signals=False,
        access_log_class=SafeAccessLogger,
        # The grace for requests in flight is served by serve_http() before cleanup():
        # aiohttp's own shutdown stops reading request bodies at once.
        shutdown_timeout=CANCEL_TIMEOUT,
    )


async def serve_http(
    cfg: Config,
    repo: Repository,
    audit: AuditLog,
    metrics: Metrics,
    stop: asyncio.Event,
    started: asyncio.Event | None = None,
    budget: MemoryBudget | None = None,
    *,
    reuse_port: bool = False,
) -> None:
    """Serve on ``[http] bind``:``port`` until ``stop`` is set, then shut down gracefully.

    On stop the listening socket closes at once, idle connections are closed, requests
    in flight get ``[http] shutdown_grace`` seconds to finish, and are then cancelled (a
    cancelled upload leaves no file: the repository removes its ``.part``).

    :param reuse_port: bind with ``SO_REUSEPORT``, beside the other HTTP workers: the
        kernel spreads new connections over every process listening on the port.
    :raises OSError: the address cannot be bound, or the TLS files cannot be read.
    """
    keep_socket_reads_in_heap()  # this process now reads request bodies
    app = make_app(cfg, repo, audit, metrics, budget)
    runner = make_runner(app)
    await runner.setup()
    try:
        site = web.TCPSite(
            runner,
            cfg.http.bind,
            cfg.http.port,
            ssl_context=_ssl_context(cfg),
            reuse_port=reuse_port or None,
        )
        await site.start()
        log.info(
            "HTTP server on %s:%d (%s), public URL %s",
            cfg.http.bind,
            cfg.http.port,
            "TLS" if cfg.http.tls_cert else "plain HTTP",
            cfg.http.public_url,
        )
        if started is not None:
            started.set()
        await app[SCANNER].announce()
        await stop.wait()
        await site.stop()  # no new connections from here on
        await _drain(app[IN_FLIGHT], cfg.http.shutdown_grace)
    finally:
        await runner.cleanup()  # closes idle connections, cancels what is left
    log.info("HTTP server stopped")


async def _drain(in_flight: InFlight, grace: float) -> None:
    """Let requests in flight finish for up to ``grace`` seconds."""
    if in_flight.count:
        log.info("HTTP server stopping; %d requests get %gs", in_flight.count, grace)
    try:
        async with asyncio.timeout(grace):
            await in_flight.idle()
    except TimeoutError:
        log.warning("%d requests still running after %gs; cancelling", in_flight.count, grace)
