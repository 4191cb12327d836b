"""``mft run``: the component and the HTTP server.

With ``[http] workers`` = 1 both run in this process's one asyncio loop; above 1 this
process runs the component and supervises that many HTTP worker processes
(:mod:`httpd.ops.workers`).

Seed ("service activation"): the service starts only when it can reach the database and
the file server. So the audit log and the repository are opened first; if either fails
the command says which and why on stderr and exits non-zero before anything listens.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from component.config import Config
from component.errors import UploadError
from component.metrics import Metrics
from httpd.app import serve_http
from httpd.budget import MemoryBudget
from httpd.ops.alarm import DiskAlarm, Notify
from httpd.ops.purge import remove_stale_parts
from httpd.ops.util import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    first_or_stop,
    open_stores,
    run_until_stopped,
)
from httpd.ops.workers import HttpWorkers, deliver_orphan_spools, metrics_directory
from httpd.repository import Repository

log = logging.getLogger(__name__)


async def _remove_stale_parts(cfg: Config, repo: Repository) -> None:
    """Clear ``.part`` files an earlier, killed process left (see
    :func:`httpd.ops.purge.remove_stale_parts`); a failure is logged, the service runs on."""
    older_than = max(cfg.upload.slot_lifetime, cfg.http.body_timeout)
    try:
        report = await remove_stale_parts(repo, older_than)
    except (UploadError, OSError) as exc:
        log.warning("could not look for stale .part files at start: %s", exc)
        return
    if report.parts:
        log.warning(
            "removed %d stale .part file(s), %d bytes, older than %gs: uploads cut off by "
            "an earlier process that did not stop cleanly",
            report.parts,
            report.part_bytes,
            older_than,
        )


async def _announce_when_ready(
    stop: asyncio.Event, started: list[asyncio.Event], on_ready: Callable[[], None] | None
) -> None:
    """Log (and call ``on_ready``) once every half has started; give up on ``stop``."""
    await first_or_stop(asyncio.gather(*(e.wait() for e in started)), stop)
    if not stop.is_set():
        log.info("service ready")
        if on_ready is not None:
            on_ready()


async def run_command(
    cfg: Config | None, args: argparse.Namespace, *, on_ready: Callable[[], None] | None = None
) -> int:
    """``mft run -c FILE [--only component|httpd]`` until SIGTERM/SIGINT.

    :param on_ready: called once the component has its first XMPP session and the HTTP
        server listens (``mft sandbox`` prints its banner then).
    :returns: 0 after a clean stop; 1 if the database or repository cannot be opened
        or a server failed.
    """
    assert cfg is not None  # cli.py loads the configuration for this command
    only = getattr(args, "only", None)
    workers = cfg.http.workers if only in (None, "httpd") else 1
    metrics_dir = metrics_directory() if workers > 1 else None
    try:
        return await _run(cfg, args, only, metrics_dir, on_ready)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


async def _run(
    cfg: Config,
    args: argparse.Namespace,
    only: str | None,
    metrics_dir: Path | None,
    on_ready: Callable[[], None] | None,
) -> int:
    """:func:`run_command` with HTTP workers in their own processes if ``metrics_dir``."""
    metrics = Metrics() if metrics_dir is None else Metrics.shared(metrics_dir)
    # One budget for every transfer of this process: the repository's buffers and the
    # HTTP side that waits for it.
    budget = MemoryBudget(cfg.http.memory_budget)
    opened = await open_stores(cfg, metrics, budget)
    if isinstance(opened, int):
        return opened
    audit, repo = opened
    try:
        await deliver_orphan_spools(cfg, metrics, cfg.http.workers if metrics_dir else 0)
    except (UploadError, OSError) as exc:
        log.warning("former HTTP workers' spools kept for the next start: %s", exc)
    stop = asyncio.Event()
    servers: list[Coroutine[Any, Any, None]] = []
    started: list[asyncio.Event] = []
    notify: Notify | None = None
    if only in (None, "component"):
        # Imported here: --only httpd does not need the XMPP stack.
        from component.xmpp.service import UploadComponent, serve_component

        ready: list[UploadComponent] = []
        connected = asyncio.Event()
        started.append(connected)

        async def notify_admins(text: str) -> None:
            # The first disk check runs at start-up, usually before the first session.
            async with asyncio.timeout(cfg.repository.connect_timeout):
                await connected.wait()
            await ready[0].notify_admins(text)

        notify = notify_admins
        servers.append(serve_component(cfg, audit, metrics, stop, connected, on_ready=ready.append))
    if only in (None, "httpd"):
        started.append(asyncio.Event())
        if metrics_dir is not None:
            http = HttpWorkers(
                cfg,
                metrics_dir,
                log_level=logging.getLogger().getEffectiveLevel(),
                verbose=getattr(args, "verbose", 0),
            )
            servers.append(http.run(stop, started[-1]))
        else:
            servers.append(serve_http(cfg, repo, audit, metrics, stop, started[-1], budget))
        servers.append(_remove_stale_parts(cfg, repo))
    # The disk alarm: gauges for /metrics always, chat messages where the component runs.
    servers.append(DiskAlarm(cfg, repo, metrics, notify).run(stop))
    servers.append(_announce_when_ready(stop, started, on_ready))
    failures = await run_until_stopped(servers, stop, audit, repo, budget)
    for failure in failures:
        log.error("server failed: %s", failure, exc_info=failure)
        print(f"mft: stopped: {failure}", file=sys.stderr)
    if failures:
        return EXIT_UNAVAILABLE
    log.info("stopped cleanly")
    return EXIT_OK
