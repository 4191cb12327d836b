"""Small helpers shared by the operations commands (check, speedtest, purge, alarm, ...).

Sizes given on the command line, ages, human-readable byte counts, URLs with the
password removed, scrubbing secrets out of text printed for an admin, and opening the
repository and audit log for a command (export, verify) with its error handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from component.audit import AuditLog, open_audit_log
from component.config import Config
from component.dburl import safe_url
from component.errors import (
    AuditUnavailable,
    AuthRefused,
    FileServerUnreachable,
    HostKeyMismatch,
    HostKeyNotPinned,
    HostKeyTypeMissing,
    NodeKeyUnusable,
    PathNotWritable,
    UploadError,
)
from component.metrics import Metrics
from httpd.budget import MemoryBudget
from httpd.repository import Repository, open_repository

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
# K/M/G/T and KiB/MiB/... are binary (like dd and truncate); KB/MB/GB/TB are decimal.
_BINARY = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DECIMAL = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_AGE_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str) -> int:
    """``"256M"`` -> 268435456; ``K M G T`` (and ``KiB``...) are binary, ``KB MB GB`` decimal.

    :raises ValueError: not a size, or zero.
    """
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"size {text!r}: use a number with an optional K, M, G or T suffix")
    unit = (m.group(2) or "").lower()
    factor = _DECIMAL.get(unit) or _BINARY[unit[:1]]
    size = int(float(m.group(1)) * factor)
    if size <= 0:
        raise ValueError(f"size {text!r}: must be more than 0 bytes")
    return size


def parse_age(text: str) -> int:
    """``"30d"`` -> seconds; units ``s m h d w`` (m is minutes).

    :raises ValueError: not an age, or zero.
    """
    m = _AGE_RE.match(text)
    if not m:
        raise ValueError(f"age {text!r}: use a number and a unit s, m, h, d or w (e.g. 30d)")
    seconds = int(m.group(1)) * AGE_UNITS[m.group(2).lower()]
    if seconds <= 0:
        raise ValueError(f"age {text!r}: must be more than 0")
    return seconds


def plural(n: int, word: str, words: str = "") -> str:
    """``1 file``, ``2 files`` (``words`` for an irregular plural)."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def human_bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as the MB/s figures)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, ``*.localhost`` and loopback addresses."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def config_secrets(cfg: Config) -> list[str]:
    """Every secret string in ``cfg`` that must never be printed."""
    found = [cfg.xmpp.secret, cfg.http.secret]
    for url in (cfg.database.url, cfg.repository.url):
        password = urlsplit(url).password
        if password:
            found.append(password)
    return [s for s in found if s]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***`` (belt and braces for printed reasons)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:  # a 1-3 character "secret" would blank ordinary words
            text = text.replace(secret, "***")
    return text


def error_reason(exc: BaseException) -> str:
    """A one-line reason: the error's text, and its cause's if that adds something."""
    text = exc.text if isinstance(exc, UploadError) else str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None:
        cause_text = str(cause) or type(cause).__name__
        if cause_text not in text:
            text = f"{text}: {cause_text}"
    return " ".join(text.split())


def _host_key_hint(cfg: Config) -> str:
    repo = cfg.repository
    return (
        f"compare [repository] host_key with `mft keyscan {repo.host} -p {repo.port}` and the"
        " server's /etc/ssh/ssh_host_*_key.pub"
    )


def repository_hint(cfg: Config, exc: BaseException) -> str:
    """What to do about a repository that failed to open, chosen by the error's type."""
    repo = cfg.repository
    if isinstance(exc, PathNotWritable):
        if repo.scheme == "file":
            return "create the directory and make it writable by the service user"
        return f"create {repo.path} on the file server, owned by {repo.username}"
    if isinstance(exc, HostKeyMismatch):
        return _host_key_hint(cfg) + "; pin the new line only if the key was changed on purpose"
    if isinstance(exc, HostKeyTypeMissing | HostKeyNotPinned):
        return f"pin a line printed by `mft keyscan {repo.host} -p {repo.port}`"
    if isinstance(exc, AuthRefused):
        return (
            "append the line from `mft keygen --show` to the file server user's"
            " ~/.ssh/authorized_keys"
        )
    if isinstance(exc, NodeKeyUnusable):
        return f"make the node key with `mft keygen -c {cfg.source or 'mft.toml'}`"
    if isinstance(exc, FileServerUnreachable | TimeoutError):
        return f"is sshd running on {repo.host}:{repo.port} and reachable from this host?"
    if repo.scheme == "file":
        return "the service user must be able to create, read and delete files in " + repo.path
    return (
        f"is sshd on {repo.host}:{repo.port} an OpenSSH server with SFTP? The key type in"
        f" [repository] host_key must be one it offers (`mft keyscan {repo.host} -p {repo.port}`)"
    )


def repository_failure(cfg: Config, exc: BaseException) -> str:
    """The ``FAIL  repository URL: reason  hint: ...`` line the commands print (secrets
    removed)."""
    reason = redact(error_reason(exc), config_secrets(cfg))
    where = safe_url(cfg.repository.url)
    return f"FAIL  repository {where}: {reason}  hint: {repository_hint(cfg, exc)}"


@dataclass
class Stores:
    """The repository and audit log a command works on; ``failed`` once it has given up."""

    repo: Repository
    audit: AuditLog
    failed: bool = False

    async def open(self) -> None:
        """Open the audit log, then the repository."""
        await self.audit.open()
        await self.repo.open()


@asynccontextmanager
async def command_stores(cfg: Config, command: str) -> AsyncIterator[Stores]:
    """The repository and audit log of ``cfg``, closed however the body ends.

    The body opens them (``await stores.open()``), so that failing to open ends the body
    too: AuditUnavailable, UploadError and OSError raised in it are printed for the admin
    (``mft <command>: ...``) and swallowed, and ``failed`` is set: the command returns 1.
    """
    stores = Stores(open_repository(cfg), open_audit_log(cfg, spool=False))
    try:
        yield stores
    except AuditUnavailable as exc:
        print(f"mft {command}: the audit database is unavailable: {exc.text}", file=sys.stderr)
        stores.failed = True
    except (UploadError, OSError) as exc:
        print(repository_failure(cfg, exc), file=sys.stderr)
        stores.failed = True
    finally:
        await stores.repo.close()
        await stores.audit.close()


T = TypeVar("T")

EXIT_OK = 0
EXIT_UNAVAILABLE = 1  # database or repository unreachable at start, or a server failed


def fail_to_start(what: str, exc: BaseException, hint: str = "") -> int:
    """Tell the operator which dependency failed, why, and what to do; the exit code."""
    reason = exc.text if isinstance(exc, UploadError) else (str(exc) or type(exc).__name__)
    print(f"mft: cannot start: {what}: {reason}", file=sys.stderr)
    if hint:
        print(f"mft: hint: {hint}", file=sys.stderr)
    return EXIT_UNAVAILABLE


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
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


async def open_stores(
    cfg: Config, metrics: Metrics, budget: MemoryBudget, small_jobs: Executor | None = None
) -> tuple[AuditLog, Repository] | int:
    """Open the audit log, then the repository; an exit code if either fails (and the
    reason printed on stderr). ``small_jobs``: see :func:`open_repository`."""
    audit = open_audit_log(cfg, metrics)  # metrics: the spool exports spool_rows
    try:
        await audit.open()
    except Exception as exc:  # any failure to open is reported, by name, once
        return fail_to_start(f"database {cfg.database.safe_url}", exc)
    try:
        repo = open_repository(cfg, budget, small_jobs)
        await repo.open()
    except Exception as exc:
        await audit.close()
        return fail_to_start(
            f"repository {safe_url(cfg.repository.url)}", exc, repository_hint(cfg, exc)
        )
    return audit, repo


async def run_until_stopped(
    servers: Sequence[Coroutine[Any, Any, None]],
    stop: asyncio.Event,
    audit: AuditLog,
    repo: Repository,
    budget: MemoryBudget,
) -> list[Exception]:
    """Run ``servers`` together, SIGTERM/SIGINT setting ``stop``, until all return or one
    fails (the others are then cancelled); close the stores; the failures."""
    failures: list[Exception] = []
    try:
        with stop_on_signals(stop):
            async with asyncio.TaskGroup() as tg:
                for coro in servers:
                    tg.create_task(coro)
    except* Exception as group:
        failures.extend(group.exceptions)
    finally:
        budget.close()
        await repo.close()
        await audit.close()
    return failures


async def first_or_stop(work: Awaitable[T], stop: asyncio.Event) -> asyncio.Future[T] | None:
    """Await ``work`` unless ``stop`` is set first: its finished future, or ``None``
    (then ``work`` is cancelled)."""
    job: asyncio.Future[T] = asyncio.ensure_future(work)
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    pair: set[asyncio.Future[Any]] = {job, stopping}
    try:
        await asyncio.wait(pair, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not job.done():
            job.cancel()  # pending until the loop runs it: not done below
    return job if job.done() and not job.cancelled() else None
