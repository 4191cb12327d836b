"""serve_http's graceful stop, and ``mft run`` as a real process (start refusal, SIGTERM)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from component.audit.sqlite import SqliteAuditLog
from component.config import Config
from component.metrics import Metrics
from httpd.app import serve_http
from tests.fixtures.common import free_port, require_binary, spawn_mft, wait_for_port_async
from tests.fixtures.config import ConfigFactory, ConfigFileFactory
from tests.unit.httpd_harness import ObservedRepository, Slot, make_slot


async def _wait_refused(port: int) -> None:
    """Until 127.0.0.1:port refuses connections (the listener has closed)."""
    async with asyncio.timeout(10):
        while True:
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return
            w.close()
            await asyncio.sleep(0.02)  # polling the listener, not synchronising logic


class Served:
    """serve_http running in a task over a real repository and SQLite AFT_LOG."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.repo = ObservedRepository(Path(cfg.repository.path))
        self.audit = SqliteAuditLog(cfg)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Served:
        await self.repo.open()
        await self.audit.open()
        started = asyncio.Event()
        self.task = asyncio.create_task(
            serve_http(self.cfg, self.repo, self.audit, Metrics(), self.stop, started)
        )
        await asyncio.wait_for(started.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 20)
        await self.audit.close()
        await self.repo.close()

    async def half_put(self, slot: Slot) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Send the headers and half the body of a PUT; return once the store began."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.cfg.http.port)
        head = (
            f"PUT /{slot.path.url_path}?{urlencode(slot.query)} HTTP/1.1\r\nHost: t\r\n"
            f"Content-Length: {slot.size}\r\n\r\n"
        )
        writer.write(head.encode() + b"h" * (slot.size // 2))
        await writer.drain()
        await asyncio.wait_for(self.repo.started.get(), 10)
        return reader, writer


@pytest.fixture
def server_cfg(config_factory: ConfigFactory) -> Any:
    """A config factory with a free port for serve_http."""

    def make(**http: object) -> Config:
        return config_factory(http={"port": free_port(), **http})

    return make


async def test_in_flight_upload_finishes_during_grace(server_cfg: Any) -> None:
    """On stop the listener closes, but an upload in flight may finish within the grace."""
    async with Served(server_cfg(shutdown_grace=10)) as served:
        slot = make_slot(served.cfg, 10_000, "f.bin")
        reader, writer = await served.half_put(slot)
        served.stop.set()
        await _wait_refused(served.cfg.http.port)
        writer.write(b"h" * (slot.size - slot.size // 2))
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status.startswith(b"HTTP/1.1 201")
        assert await served.repo.stores.get() is None
        assert served.repo.files() == [served.repo.root / slot.path.repo_path]


async def test_stalled_upload_is_cancelled_after_grace(server_cfg: Any) -> None:
    """An upload still running when the grace ends is cancelled and leaves no file."""
    async with Served(server_cfg(shutdown_grace=0.3)) as served:
        slot = make_slot(served.cfg, 10_000, "f.bin")
        _reader, writer = await served.half_put(slot)
        served.stop.set()
        assert served.task is not None
        await asyncio.wait_for(asyncio.shield(served.task), 10)
        outcome = await asyncio.wait_for(served.repo.stores.get(), 10)
        writer.close()
        assert isinstance(outcome, asyncio.CancelledError)
        assert served.repo.files() == []


async def test_serve_http_with_tls(server_cfg: Any, tmp_path: Path) -> None:
    """With tls_cert/tls_key the server speaks HTTPS; a large PUT over it (read through
    aiohttp, not from the socket) is stored byte for byte and comes back encrypted."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    proc = await asyncio.create_subprocess_exec(
        require_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    async with Served(server_cfg(tls_cert=str(cert), tls_key=str(key))) as served:
        base = f"https://127.0.0.1:{served.cfg.http.port}"
        body = os.urandom(3 * 1024 * 1024)
        slot = make_slot(served.cfg, len(body), "big.bin")
        put_url = f"{base}/{slot.path.url_path}?{urlencode(slot.query)}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/healthz", ssl=False) as resp:
                assert (resp.status, await resp.text()) == (200, "ok\n")
            async with http.put(put_url, data=io.BytesIO(body), ssl=False) as resp:
                assert resp.status == 201
            async with http.get(f"{base}/{slot.path.url_path}", ssl=False) as resp:
                assert (resp.status, await resp.read()) == (200, body)  # not sent in clear
        assert (served.repo.root / slot.path.repo_path).read_bytes() == body


@pytest.mark.parametrize(
    ("section", "key", "named"),
    [("repository", "url", "repository"), ("database", "url", "database")],
)
async def test_mft_run_refuses_to_start_without_storage(
    config_file: ConfigFileFactory, tmp_path: Path, section: str, key: str, named: str
) -> None:
    """`mft run` exits 1 naming the repository or database it cannot open; nothing listens."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    scheme = "file://" if section == "repository" else "sqlite:///"
    port = free_port()
    path = config_file(http={"port": port}, **{section: {key: f"{scheme}{blocker}/sub/target"}})
    proc = await spawn_mft("run", "-c", str(path))
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    message = err.decode()
    assert f"cannot start: {named}" in message
    assert "Not a directory" in message or "not writable" in message


async def test_mft_run_only_httpd_serves_and_stops_on_sigterm(
    config_file: ConfigFileFactory,
) -> None:
    """`mft run --only httpd` serves /healthz and exits 0 on SIGTERM."""
    port = free_port()
    path = config_file(http={"port": port, "shutdown_grace": 2.0})
    proc = await spawn_mft("run", "-c", str(path), "--only", "httpd")
    try:
        await wait_for_port_async(port, 30)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert (resp.status, await resp.text()) == (200, "ok\n")
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert b"stopped cleanly" in err
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
