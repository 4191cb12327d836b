"""The ``http public url`` line of ``mft check``: ``/healthz`` through the public URL."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

import aiohttp

from component.config import Config
from httpd.headers import NODE_HEADER
from httpd.ops.check.result import CheckResult, os_reason
from httpd.ops.util import error_reason, is_loopback_host

HTTP_TIMEOUT = 10.0


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
            reason = f"cannot connect to {exc.host}:{exc.port}: {os_reason(exc.os_error)}"
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
