"""The nginx example in front of the real HTTP app: streamed PUT, GET and Range via TLS."""

from __future__ import annotations

import contextlib
import os
import re
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.common import ServerProcess, free_port, require_binary, running
from tests.fixtures.config import ConfigFactory
from tests.unit.httpd_harness import httpd_env

from .ops_helpers import self_signed

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
LIVE = "/etc/letsencrypt/live/upload.example.com"


def proxy_config(site: str, tmp: Path, upstream: int, tls_port: int, plain_port: int) -> str:
    """The example site on loopback ports, our upstream and dummy certificates."""
    site = site.replace("server 127.0.0.1:5443;", f"server 127.0.0.1:{upstream};")
    site = re.sub(r"\n\s*listen \[::\]:\d+[^;]*;", "", site)
    site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{tls_port} ssl http2;")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{plain_port};")
    site = site.replace(f"{LIVE}/fullchain.pem", str(tmp / "cert.pem"))
    return site.replace(f"{LIVE}/privkey.pem", str(tmp / "key.pem"))


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """A self-signed certificate and key in ``tmp_path``."""
    return self_signed(tmp_path)


@pytest.fixture
def nginx_factory(certs: Path) -> Iterator[object]:
    """Starts nginx with the example in front of a given upstream port; stops it after."""
    nginx = require_binary("nginx", "/usr/sbin/nginx")
    stack = contextlib.ExitStack()

    def start(upstream: int) -> int:
        tls_port = free_port()
        (certs / "site.conf").write_text(
            proxy_config((DEPLOY / "nginx" / "mft.conf").read_text(), certs, upstream,
                         tls_port, free_port())
        )  # fmt: skip
        (certs / "nginx.conf").write_text(
            f"user root;\ndaemon off;\npid {certs}/nginx.pid;\nerror_log {certs}/error.log;\n"
            f"events {{}}\nhttp {{\n  access_log off;\n"
            f"  client_body_temp_path {certs}/body;\n  proxy_temp_path {certs}/proxy;\n"
            f"  include {certs}/site.conf;\n}}\n"
        )
        proc = ServerProcess(
            "nginx", [nginx, "-p", str(certs), "-c", str(certs / "nginx.conf")], certs / "out.log"
        )
        stack.enter_context(running(proc, tls_port))
        return tls_port

    with stack:
        yield start


async def chunks(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``body`` as a stream of blocks (what a client streaming a file sends)."""
    for i in range(0, len(body), size):
        yield body[i : i + size]


async def test_upload_download_range_through_nginx(
    config_factory: ConfigFactory, nginx_factory: object
) -> None:
    """A 3 MB PUT with Expect: 100-continue is stored; GET and a Range GET come back intact."""
    body = os.urandom(3 * 1024 * 1024 + 17)
    async with httpd_env(config_factory()) as env:
        tls_port = nginx_factory(env.port)  # type: ignore[operator]
        base = f"https://127.0.0.1:{tls_port}"
        context = ssl.create_default_context(cafile=str(Path(env.cfg.source).parent / "cert.pem"))
        context.check_hostname = False
        slot = env.slot(len(body), "big.bin")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as web:
            put = web.put(
                base + slot.put_url,
                data=chunks(body),
                headers={"Content-Length": str(len(body))},
                expect100=True,
            )
            async with put as resp:
                assert resp.status == 201, await resp.text()
            assert (await env.audit.next_row()).method == "POST"
            async with web.get(base + slot.get_url) as resp:
                assert resp.status == 200 and await resp.read() == body
            headers = {"Range": "bytes=1000-1999"}
            async with web.get(base + slot.get_url, headers=headers) as resp:
                assert resp.status == 206 and await resp.read() == body[1000:2000]
