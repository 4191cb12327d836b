"""The ``repository`` lines of ``mft check``: open, probe, free space."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

from component.config import Config
from component.dburl import safe_url
from component.errors import FileServerUnreachable, NotFound, StorageUnavailable
from httpd.ops.check.result import CheckResult
from httpd.ops.util import error_reason, human_bytes, repository_hint
from httpd.repository import Repository, open_repository

PROBE_SIZE = 64 * 1024
MIN_FREE_PERCENT = 10.0  # WARN below this even when the alarm threshold is lower


async def _probe_chunks(payload: bytes) -> AsyncIterator[bytes]:
    yield payload


async def _probe(repo: Repository) -> str:
    """Write, read back and delete a probe file; return a detail line.

    :raises StorageUnavailable: any step failed or the bytes differ.
    """
    path = f"mft-check-{secrets.token_hex(8)}.probe"
    payload = secrets.token_bytes(PROBE_SIZE)
    started = time.monotonic()
    await repo.store(path, _probe_chunks(payload), len(payload))
    try:
        got = bytearray()
        async for block in repo.read(path):
            got += block
        if bytes(got) != payload:
            raise StorageUnavailable(f"read back {len(got)} bytes that differ from those written")
    finally:
        await repo.delete(path)
    try:
        await repo.size(path)
    except NotFound:
        pass
    else:
        raise StorageUnavailable("the probe file is still there after delete")
    ms = (time.monotonic() - started) * 1000
    return f"wrote, read back and deleted a {PROBE_SIZE // 1024} KiB probe in {ms:.0f} ms"


async def check_repository(cfg: Config) -> list[CheckResult]:
    """Open the repository (connect, host key, auth), probe it, and look at free space.

    :returns: ``repository``, ``repository probe`` and ``repository space`` lines (only
        the first when the repository cannot be opened).
    """
    where = safe_url(cfg.repository.url)
    rcfg = cfg.repository
    try:
        repo = open_repository(cfg)
    except Exception as exc:  # e.g. the sftp back-end cannot be loaded
        return [CheckResult("FAIL", "repository", f"{where}: {error_reason(exc)}")]
    results: list[CheckResult] = []
    try:
        try:
            async with asyncio.timeout(rcfg.connect_timeout + 5):
                await repo.open()
        except TimeoutError:
            reason = f"no answer within {rcfg.connect_timeout}s"
            hint = repository_hint(cfg, FileServerUnreachable(reason))
            return [CheckResult("FAIL", "repository", f"{where}: {reason}", hint)]
        except Exception as exc:
            reason = error_reason(exc)
            return [
                CheckResult("FAIL", "repository", f"{where}: {reason}", repository_hint(cfg, exc))
            ]
        opened = (
            "connected, host key matches, key accepted, directory writable"
            if rcfg.scheme == "sftp"
            else "directory writable"
        )
        results.append(CheckResult("OK", "repository", f"{where}: {opened}"))

        try:
            async with asyncio.timeout(rcfg.io_timeout):
                results.append(CheckResult("OK", "repository probe", await _probe(repo)))
        except TimeoutError:
            results.append(
                CheckResult("FAIL", "repository probe", f"no answer within {rcfg.io_timeout}s")
            )
        except Exception as exc:
            results.append(
                CheckResult(
                    "FAIL",
                    "repository probe",
                    error_reason(exc),
                    "the service user must be able to create, read and delete files in"
                    f" {rcfg.path}",
                )
            )

        results.append(await _check_space(cfg, repo))
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await repo.close()
    return results


async def _check_space(cfg: Config, repo: Repository) -> CheckResult:
    """Free space on the repository: WARN under the alarm threshold or under 10 %."""
    try:
        async with asyncio.timeout(cfg.repository.io_timeout):
            usage = await repo.disk_usage()
    except Exception as exc:
        return CheckResult("WARN", "repository space", f"free space unknown: {error_reason(exc)}")
    detail = (
        f"{usage.free_percent:.1f}% free ({human_bytes(usage.free)} of {human_bytes(usage.total)})"
    )
    limit = max(cfg.alarm.disk_free_min_percent, MIN_FREE_PERCENT)
    if usage.free_percent < limit:
        return CheckResult(
            "WARN",
            "repository space",
            f"{detail}, below {limit:g}%",
            "delete old files (`mft purge --older-than 30d`) or grow the partition",
        )
    return CheckResult("OK", "repository space", detail)
