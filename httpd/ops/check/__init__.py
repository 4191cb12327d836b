"""``mft check``: verify the external servers, one line per check (seed: "Verify External
Server Status").

Each line reads ``OK|WARN|FAIL  <name>  <detail>  [hint: ...]``. The checks run
concurrently, each bounded by a timeout, and are printed in a fixed order: database,
repository (connect, probe, space), XMPP router, HTTP public URL, share reports,
malware scanner (clamd). The exit code is 1 when any line is FAIL. No secret ever
reaches the output: URLs are shown without their password and every printed reason is
scrubbed of the configuration's secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from component.config import Config
from component.xmpp.probe import Handshake, component_handshake
from httpd.ops.check.database import check_database
from httpd.ops.check.http import check_http
from httpd.ops.check.repository import check_repository
from httpd.ops.check.result import CheckResult, Status
from httpd.ops.check.scanner import check_scanner
from httpd.ops.check.shares import check_shares
from httpd.ops.check.xmpp import check_xmpp
from httpd.ops.util import config_secrets, redact

__all__ = [
    "CHECKS",
    "CheckResult",
    "Handshake",
    "Status",
    "check_command",
    "check_database",
    "check_http",
    "check_repository",
    "check_scanner",
    "check_shares",
    "check_xmpp",
    "component_handshake",
    "run_checks",
]

log = logging.getLogger(__name__)

CHECKS: tuple[Callable[[Config], Awaitable[list[CheckResult]]], ...] = (
    check_database,
    check_repository,
    check_xmpp,
    check_http,
    check_shares,
    check_scanner,
)


async def _guarded(
    fn: Callable[[Config], Awaitable[list[CheckResult]]], cfg: Config
) -> list[CheckResult]:
    """Run one check; an unexpected error becomes a FAIL line instead of a traceback."""
    try:
        return await fn(cfg)
    except Exception as exc:
        log.debug("check %s crashed", fn.__name__, exc_info=True)
        name = fn.__name__.removeprefix("check_")
        return [CheckResult("FAIL", name, f"unexpected error: {type(exc).__name__}: {exc}")]


async def run_checks(cfg: Config) -> AsyncIterator[CheckResult]:
    """Start every check at once; yield their results in the fixed order."""
    tasks = [asyncio.create_task(_guarded(fn, cfg)) for fn in CHECKS]
    try:
        for task in tasks:
            for result in await task:
                yield result
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def check_command(cfg: Config | None, args: argparse.Namespace) -> int:
    """``mft check -c FILE``: print one line per check; 1 if any FAIL, else 0."""
    assert cfg is not None  # the CLI requires -c for this command
    hidden = config_secrets(cfg)
    failed = False
    async for result in run_checks(cfg):
        failed |= result.status == "FAIL"
        print(redact(result.line(), hidden), flush=True)
    return 1 if failed else 0
