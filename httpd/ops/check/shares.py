"""The ``share reports`` line of ``mft check``: is the XMPP server's mod_mft_share active?

The running service says on ``/healthz`` when it started (``X-MFT-Started``); AFT_LOG
says whether a ``SHARE`` row was written since. Only a report about one of this node's
uploads leaves a row, so "none yet" is a WARN with the way to enable the module, not a
FAIL: a quiet service has simply seen no shares.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import aiohttp

from component.audit import AuditQuery, open_audit_log
from component.config import Config
from component.errors import AuditUnavailable
from httpd.headers import NODE_HEADER, STARTED_HEADER
from httpd.ops.check.result import HTTP_TIMEOUT, CheckResult

NAME = "share reports"
HOW_TO_ENABLE = (
    "load mod_mft_share on the XMPP server (README 'Recipients for every client':"
    " deploy/prosody/mft_share.cfg.lua or deploy/ejabberd/mft_share.yml); reports are"
    " accepted from [xmpp] share_hosts = {hosts}"
)


async def service_started(cfg: Config) -> datetime | None:
    """When this node's running HTTP server started, from its ``/healthz``; ``None`` if it
    does not answer (or is another service)."""
    try:
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{cfg.http.public_url}/healthz", allow_redirects=False) as resp,
        ):
            if resp.headers.get(NODE_HEADER) != cfg.node.id:
                return None
            stamp = resp.headers.get(STARTED_HEADER, "")
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None
    try:
        started = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return started if started.tzinfo else started.replace(tzinfo=UTC)


def _at(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def check_shares(cfg: Config) -> list[CheckResult]:
    """One ``share reports`` line: OK when a SHARE row arrived since the service started."""
    hint = HOW_TO_ENABLE.format(hosts=list(cfg.xmpp.share_host_set))
    started = await service_started(cfg)
    audit = open_audit_log(cfg, spool=False)
    try:
        async with asyncio.timeout(cfg.database.connect_timeout + 5):
            await audit.open()
            since = await audit.query(AuditQuery(method="SHARE", since=started, limit=1))
            ever = since or await audit.query(AuditQuery(method="SHARE", limit=1))
    except (AuditUnavailable, TimeoutError):
        return [CheckResult("WARN", NAME, "cannot read AFT_LOG (see the database line)")]
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await audit.close()
    if started is None:
        said = "AFT_LOG has SHARE rows" if ever else "AFT_LOG has no SHARE row yet"
        return [
            CheckResult(
                "WARN", NAME, f"the service is not running here, so not known ({said})", hint
            )
        ]
    if since:
        return [
            CheckResult(
                "OK",
                NAME,
                f"mod_mft_share is active: a share arrived at {_at(since[0].date_time)},"
                f" after the service started at {_at(started)}",
            )
        ]
    return [
        CheckResult(
            "WARN",
            NAME,
            f"no share report since the service started at {_at(started)}"
            + ("" if ever else " (and none ever)")
            + "; if users have sent files since, the XMPP server does not report them",
            hint,
        )
    ]
