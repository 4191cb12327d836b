"""``mft run``: the component and the HTTP server in one asyncio loop.

Seed ("service activation"): the service starts only when it can reach the database and
the file server. So the audit log and the repository are opened first; if either fails
the command says which and why on stderr and exits non-zero before anything listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from component.audit import AuditLog, open_audit_log
from component.config import Config
from component.dburl import safe_url
from component.errors import UploadError
from component.metrics import Metrics
from httpd.app import serve_http
from httpd.budget import MemoryBudget
from httpd.ops.alarm import DiskAlarm, Notify
from httpd.ops.purge import remove_stale_parts
from httpd.ops.util import repository_hint
from httpd.repository import Repository, open_repository

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_UNAVAILABLE = 1  # database or repository unreachable at start, or a server failed


def _fail(what: str, exc: BaseException, hint: str = "") -> int:
    """Tell the operator which dependency failed, why, and what to do; the exit code."""
    reason = exc.text if isinstance(exc, UploadError) else (str(exc) or type(exc).__name__)
    print(f"mft: cannot start: {what}: {reason}", file=sys.stderr)
    if hint:
        print(f"mft: hint: {hint}", file=sys.stderr)
    return EXIT_UNAVAILABLE


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (graceful shutdown) for the duration."""
    loop = asyncio.get_running_loop()
    sigs = (signal.SIGTERM, signal.SIGINT)
    for sig in sigs:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)


async def _open(
    cfg: Config, metrics: Metrics, budget: MemoryBudget
) -> tuple[AuditLog, Repository] | int:
    """Open the audit log, then the repository; an exit code if either fails."""
    audit = open_audit_log(cfg, metrics)  # metrics: the spool exports spool_rows
    try:
        await audit.open()
    except Exception as exc:  # any failure to open is reported, by name, once
        return _fail(f"database {cfg.database.safe_url}", exc)
    try:
        repo = open_repository(cfg, budget)
        await repo.open()
    except Exception as exc:
        await audit.close()
        return _fail(f"repository {safe_url(cfg.repository.url)}", exc, repository_hint(cfg, exc))
    return audit, repo


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
    ready: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*(e.wait() for e in started)))
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({ready, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
        stopping.cancel()
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
    metrics = Metrics()
    # One budget for every transfer of this process: the repository's buffers and the
    # HTTP side that waits for it.
    budget = MemoryBudget(cfg.http.memory_budget)
    opened = await _open(cfg, metrics, budget)
    if isinstance(opened, int):
        return opened
    audit, repo = opened
    stop = asyncio.Event()
    only = getattr(args, "only", None)
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
        servers.append(serve_http(cfg, repo, audit, metrics, stop, started[-1], budget))
        servers.append(_remove_stale_parts(cfg, repo))
    # The disk alarm: gauges for /metrics always, chat messages where the component runs.
    servers.append(DiskAlarm(cfg, repo, metrics, notify).run(stop))
    servers.append(_announce_when_ready(stop, started, on_ready))
    failures: list[Exception] = []
    try:
        with _stop_on_signals(stop):
            async with asyncio.TaskGroup() as tg:
                for coro in servers:
                    tg.create_task(coro)
    except* Exception as group:
        failures.extend(group.exceptions)
    finally:
        budget.close()
        await repo.close()
        await audit.close()
    for exc in failures:
        log.error("server failed: %s", exc, exc_info=exc)
        print(f"mft: stopped: {exc}", file=sys.stderr)
    if failures:
        return EXIT_UNAVAILABLE
    log.info("stopped cleanly")
    return EXIT_OK
