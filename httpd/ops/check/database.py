"""The ``database`` line of ``mft check``: AFT_LOG's database reachable and readable."""

from __future__ import annotations

import asyncio
import contextlib

from component.audit import AuditQuery, open_audit_log
from component.config import Config
from component.dburl import safe_url
from httpd.ops.check.result import CheckResult
from httpd.ops.util import error_reason


async def check_database(cfg: Config) -> list[CheckResult]:
    """Connect to AFT_LOG's database, ping it, read from the table, name the server.

    :returns: one ``database`` line.
    """
    where = safe_url(cfg.database.url)
    hint = {
        "mysql": "check host, port, user and password in [database] url; the user needs"
        " CREATE, INSERT and SELECT on that database",
        # PostgreSQL 15: only the owner (not PUBLIC) may create tables in schema public.
        "postgresql": "check host, port, user and password in [database] url; make that"
        " role the database's owner (CREATE DATABASE ... OWNER ...)",
    }.get(
        cfg.database.scheme,
        "the file's directory must exist or be creatable and writable by the service user",
    )
    # The bare back-end: the durable spool belongs to the running service, and a check
    # must test the database itself, not succeed by spooling.
    audit = open_audit_log(cfg, spool=False)
    try:
        async with asyncio.timeout(cfg.database.connect_timeout + 5):
            await audit.open()
            await audit.ping()
            await audit.query(AuditQuery(limit=1))  # fails if AFT_LOG is missing
            version = await audit.server_version()
    except TimeoutError:
        return [
            CheckResult(
                "FAIL", "database", f"{where}: no answer within {cfg.database.connect_timeout}s"
            )
        ]
    except Exception as exc:
        return [CheckResult("FAIL", "database", f"{where}: {error_reason(exc)}", hint)]
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await audit.close()
    return [CheckResult("OK", "database", f"{where}: {version}, AFT_LOG present")]
