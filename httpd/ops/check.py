"""``mft check``: verify the external servers, one line per check (seed: "Verify External
Server Status").

Each line reads ``OK|WARN|FAIL  <name>  <detail>  [hint: ...]``. The checks run
concurrently, each bounded by a timeout, and are printed in a fixed order: database,
repository (connect, probe, space), XMPP router, HTTP public URL. The exit code is 1
when any line is FAIL. No secret ever reaches the output: URLs are shown without
their password and every printed reason is scrubbed of the configuration's secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import urlsplit
from xml.sax.saxutils import quoteattr

import aiohttp

from component.audit import AuditQuery, open_audit_log
from component.config import Config
from component.errors import NotFound, StorageUnavailable
from httpd.headers import NODE_HEADER
from httpd.ops.util import (
    config_secrets,
    error_reason,
    human_bytes,
    is_loopback_host,
    redact,
    safe_url,
)
from httpd.repository import Repository, open_repository

log = logging.getLogger(__name__)

Status = Literal["OK", "WARN", "FAIL"]
STREAMS_NS = "http://etherx.jabber.org/streams"
STREAM_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-streams"
COMPONENT_NS = "jabber:component:accept"
XMPP_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0
PROBE_SIZE = 64 * 1024
MIN_FREE_PERCENT = 10.0  # WARN below this even when the alarm threshold is lower


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One printed line of ``mft check``."""

    status: Status
    name: str
    detail: str
    hint: str = ""

    def line(self) -> str:
        """``OK    name              detail  hint: ...``."""
        text = f"{self.status:<4}  {self.name:<16}  {self.detail}"
        return f"{text}  hint: {self.hint}" if self.hint else text


def _os_reason(exc: OSError) -> str:
    """``connection refused`` rather than asyncio's "Connect call failed (...)"."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return exc.strerror or str(exc) or type(exc).__name__


# --- database -------------------------------------------------------------------------


async def check_database(cfg: Config) -> list[CheckResult]:
    """Connect to AFT_LOG's database, ping it, and read from the table.

    :returns: one ``database`` line.
    """
    where = safe_url(cfg.database.url)
    hint = (
        "check host, port, user and password in [database] url; the user needs CREATE,"
        " INSERT and SELECT on that database"
        if cfg.database.scheme in ("mysql", "postgresql")
        else "the file's directory must exist or be creatable and writable by the service user"
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


# --- repository -----------------------------------------------------------------------


def _repository_hint(cfg: Config, reason: str) -> str:
    """What to do about a repository that failed to open, from the reason's words."""
    if cfg.repository.scheme == "file":
        return "create the directory and make it writable by the service user"
    low = reason.lower()
    host = cfg.repository.host
    port = cfg.repository.port
    if "host key" in low or "man-in-the-middle" in low:
        return (
            f"compare [repository] host_key with `mft keyscan {host} -p {port}` and the"
            " server's /etc/ssh/ssh_host_*_key.pub"
        )
    if "auth" in low or "permission denied" in low or "publickey" in low:
        return (
            "append the line from `mft keygen --show` to the file server user's"
            " ~/.ssh/authorized_keys"
        )
    if "no such" in low or "not writable" in low or "path" in low:
        return (
            f"create {cfg.repository.path} on the file server, owned by {cfg.repository.username}"
        )
    return (
        f"is sshd running on {host}:{port} and reachable from this host? If it is, the key"
        f" type in [repository] host_key must be one the server offers (`mft keyscan {host}"
        f" -p {port}`)"
    )


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
            return [
                CheckResult(
                    "FAIL", "repository", f"{where}: {reason}", _repository_hint(cfg, reason)
                )
            ]
        except Exception as exc:
            reason = error_reason(exc)
            return [
                CheckResult(
                    "FAIL", "repository", f"{where}: {reason}", _repository_hint(cfg, reason)
                )
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


# --- XMPP router (XEP-0114) -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    """How the XMPP server answered a component handshake."""

    accepted: bool
    condition: str = ""  # stream error condition when refused, e.g. not-authorized
    text: str = ""


async def component_handshake(
    host: str, port: int, jid: str, secret: str, within: float = XMPP_TIMEOUT
) -> Handshake:
    """Open a XEP-0114 stream as ``jid`` and send the handshake; close it again.

    :raises OSError: the TCP connection failed.
    :raises TimeoutError: the server did not answer within ``within`` seconds.
    :raises ValueError: the server's answer is not a component stream.
    """
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            return await _handshake(reader, writer, jid, secret)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, jid: str, secret: str
) -> Handshake:
    writer.write(
        (
            "<?xml version='1.0'?>"
            f"<stream:stream xmlns='{COMPONENT_NS}' xmlns:stream='{STREAMS_NS}'"
            f" to={quoteattr(jid)}>"
        ).encode()
    )
    await writer.drain()
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
    depth = 0
    while True:
        data = await reader.read(4096)
        if not data:
            return Handshake(False, "connection-closed", "the server closed the connection")
        parser.feed(data)
        # typeshed types read_events() too loosely to unpack; it yields (event, element).
        for event, elem in cast(Iterator[tuple[str, object]], parser.read_events()):
            if not isinstance(elem, ET.Element):
                continue  # only start/end events were asked for
            if event == "start":
                depth += 1
                if depth == 1:
                    if elem.tag != f"{{{STREAMS_NS}}}stream":
                        raise ValueError(f"not an XMPP stream: {elem.tag}")
                    stream_id = elem.get("id")
                    if stream_id is None:
                        continue  # an error follows (RFC 6120 4.9.1.2: no id then)
                    # XEP-0114 §3: handshake = hex SHA-1 of stream id + secret.
                    token = hashlib.sha1((stream_id + secret).encode()).hexdigest()
                    writer.write(f"<handshake>{token}</handshake>".encode())
                    await writer.drain()
                continue
            depth -= 1
            if depth != 1:
                continue
            if elem.tag == f"{{{COMPONENT_NS}}}handshake":
                writer.write(b"</stream:stream>")
                with contextlib.suppress(OSError):
                    await writer.drain()
                return Handshake(True)
            if elem.tag == f"{{{STREAMS_NS}}}error":
                condition, text = "undefined-condition", ""
                for child in elem:
                    name = child.tag.rpartition("}")[2]
                    if child.tag == f"{{{STREAM_ERRORS_NS}}}text":
                        text = (child.text or "").strip()
                    elif child.tag.startswith(f"{{{STREAM_ERRORS_NS}}}"):
                        condition = name
                return Handshake(False, condition, text)


async def check_xmpp(cfg: Config) -> list[CheckResult]:
    """TCP connect to the component port and try the XEP-0114 handshake.

    A ``conflict`` answer means the secret was right and the running service holds the
    JID (Prosody checks the secret first, then refuses a second connection), so it is
    OK. ejabberd instead accepts several connections for one component and balances
    between them; the check closes its stream right after the handshake.
    """
    x = cfg.xmpp
    where = f"{x.host}:{x.port} as {x.component_jid}"
    name = "xmpp router"
    try:
        answer = await component_handshake(x.host, x.port, x.component_jid, x.secret)
    except TimeoutError:
        return [CheckResult("FAIL", name, f"{where}: no answer within {XMPP_TIMEOUT:g}s")]
    except OSError as exc:
        return [
            CheckResult(
                "FAIL",
                name,
                f"{where}: cannot connect: {_os_reason(exc)}",
                "is the XMPP server running with a component port there? (Prosody:"
                " component_ports/component_interface; ejabberd: an ejabberd_service listener)",
            )
        ]
    except (ValueError, ET.ParseError) as exc:
        return [CheckResult("FAIL", name, f"{where}: not a component port: {exc}")]
    if answer.accepted:
        return [CheckResult("OK", name, f"{where}: handshake accepted")]
    if answer.condition == "conflict":
        return [CheckResult("OK", name, f"{where}: component already connected (service running)")]
    detail = f"{where}: handshake refused: {answer.condition}"
    if answer.text:
        detail += f" ({answer.text})"
    if answer.condition == "not-authorized":
        hint = (
            "[xmpp] secret must equal the component's component_secret (Prosody) or"
            " password (ejabberd)"
        )
    elif answer.condition in ("host-unknown", "improper-addressing", "invalid-from"):
        hint = (
            f"the XMPP server has no component {x.component_jid}: add"
            " deploy/prosody/mft.cfg.lua or deploy/ejabberd/mft.yml and reload it"
        )
    else:
        hint = "read the XMPP server's log"
    return [CheckResult("FAIL", name, detail, hint)]


# --- HTTP public URL ------------------------------------------------------------------


async def _listening(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        async with asyncio.timeout(2):
            _r, w = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    w.close()
    with contextlib.suppress(OSError):
        await w.wait_closed()
    return True


async def check_http(cfg: Config) -> list[CheckResult]:
    """GET ``{public_url}/healthz``; WARN for http:// on a non-loopback host."""
    url = f"{cfg.http.public_url}/healthz"
    name = "http public url"
    parts = urlsplit(cfg.http.public_url)
    plain_public = parts.scheme == "http" and not is_loopback_host(parts.hostname or "")
    try:
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            status = resp.status
            node = resp.headers.get(NODE_HEADER)
            body = (await resp.content.read(200)).decode("utf-8", "replace")
    except aiohttp.ClientConnectorCertificateError as exc:
        return [
            CheckResult(
                "FAIL",
                name,
                f"{url}: TLS certificate not trusted: {exc.certificate_error}",
                "clients refuse it too: use a certificate from a public CA (e.g. Let's Encrypt)",
            )
        ]
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {HTTP_TIMEOUT:g}s"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            reason = f"cannot connect to {exc.host}:{exc.port}: {_os_reason(exc.os_error)}"
        else:
            reason = error_reason(exc)
        bind = "127.0.0.1" if cfg.http.bind in ("0.0.0.0", "::", "") else cfg.http.bind
        if cfg.http.port and not await _listening(bind, cfg.http.port):
            return [
                CheckResult(
                    "WARN",
                    name,
                    f"{url}: {reason}; the HTTP server is not running here"
                    f" ({bind}:{cfg.http.port})",
                    "start the service (`mft run`), then check again",
                )
            ]
        return [
            CheckResult(
                "FAIL",
                name,
                f"{url}: {reason}",
                f"public_url must reach this node's HTTP server ({cfg.http.bind}:{cfg.http.port})"
                " through DNS, firewall and reverse proxy",
            )
        ]
    if status != 200:
        said = " ".join(body.split())[:120]
        return [
            CheckResult(
                "FAIL",
                name,
                f"{url}: HTTP {status}" + (f" {said}" if said else ""),
                "503 means the service cannot reach its database or repository (see above);"
                " 404/502 usually a reverse-proxy location or upstream mistake",
            )
        ]
    if node != cfg.node.id:
        return [
            CheckResult(
                "FAIL",
                name,
                f"{url}: answers 200, but "
                + (f"from node {node!r}, not {cfg.node.id!r}" if node else "not from xmpp-mft"),
                "public_url must lead to this node's HTTP server: check DNS, the reverse"
                " proxy and [http] port",
            )
        ]
    if plain_public:
        return [
            CheckResult(
                "WARN",
                name,
                f"{url}: answers, but public_url is plain http on a public host",
                "Gajim and Dino refuse http:// upload URLs: put nginx with TLS in front"
                " (deploy/nginx/mft.conf) and use an https:// public_url",
            )
        ]
    return [CheckResult("OK", name, f"{url}: answers 200")]


# --- command --------------------------------------------------------------------------

CHECKS: tuple[Callable[[Config], Awaitable[list[CheckResult]]], ...] = (
    check_database,
    check_repository,
    check_xmpp,
    check_http,
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
