"""PUT with malware scanning: the real app, a real clamd, file:// and sftp:// repositories."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from component.audit import AuditQuery
from component.errors import Infected, ScanUnavailable, TooLargeToScan
from tests.fixtures.clamd import FOUND, ClamdServer, eicar
from tests.fixtures.config import ConfigFactory
from tests.fixtures.sshd import SshServer
from tests.integration.bodies import MiB, PausingBody, stream
from tests.integration.test_sftp_http import service
from tests.unit.httpd_harness import UPLOADER, HttpdEnv, httpd_env

pytestmark = pytest.mark.integration

MAX_FILE = 32 * MiB


def scanning(config_factory: ConfigFactory, clamd_url: str, **scan: Any) -> Any:
    """A config with ``[scan] clamd = clamd_url`` (and other ``[scan]`` keys)."""
    return config_factory(
        upload={"max_file_size": MAX_FILE},
        scan={"clamd": clamd_url, "connect_timeout": 2.0, "io_timeout": 10.0, **scan},
    )


@pytest.fixture
async def env(clamd: ClamdServer, config_factory: ConfigFactory) -> AsyncIterator[HttpdEnv]:
    """The app scanning with the session clamd, over file:// and SQLite."""
    async with httpd_env(scanning(config_factory, clamd.url)) as e:
        yield e


async def put(env: HttpdEnv, body: bytes, *, expect: bool = False) -> tuple[int, str, Any]:
    """PUT ``body`` to a fresh slot; status, response text and the slot."""
    slot = env.slot(len(body), "report.pdf")
    length = {"Content-Length": str(len(body))}
    async with env.client.put(
        slot.put_url, data=stream(body), headers=length, expect100=expect
    ) as resp:
        return resp.status, await resp.text(), slot


async def test_clean_upload_is_published(env: HttpdEnv) -> None:
    """A clean file is scanned, published (201) and counted as clean."""
    body = os.urandom(300_000)
    status, _text, slot = await put(env, body)
    assert status == 201
    assert (env.repo.root / slot.path.repo_path).read_bytes() == body
    assert env.metrics.value("scans", {"result": "clean"}) == 1
    row = await env.audit.next_row()
    assert (row.method, row.scan_result) == ("POST", "clean")


async def test_scanning_off_leaves_scan_result_empty(config_factory: ConfigFactory) -> None:
    """Without [scan] clamd nothing is scanned and SCAN_RESULT stays empty."""
    async with httpd_env(config_factory()) as env:
        status, _text, _slot = await put(env, eicar())
        assert status == 201
        row = await env.audit.next_row()
        assert (row.method, row.scan_result) == ("POST", "")
        assert env.metrics.value("scans", {"result": "clean"}) == 0


@pytest.mark.parametrize("expect", [True, False], ids=["expect-100", "no-expect"])
@pytest.mark.parametrize("where", ["alone", "inside-1MB"])
async def test_infected_upload_is_refused(
    env: HttpdEnv, caplog: pytest.LogCaptureFixture, expect: bool, where: str
) -> None:
    """EICAR (alone or inside 1 MB of random bytes): 422 naming the signature, with or
    without Expect, nothing published, the part file gone, a POST_INFECTED row, and a
    WARNING naming who and what."""
    caplog.set_level(logging.WARNING, logger="httpd.upload")
    body = eicar() if where == "alone" else os.urandom(600_000) + eicar() + os.urandom(450_000)
    status, text, slot = await put(env, body, expect=expect)
    assert status == 422
    assert FOUND in text
    assert isinstance(await env.repo.stores.get(), Infected)
    assert env.repo.files() == []  # neither the file nor its .part
    (row,) = await env.rows()
    assert (row.method, row.scan_result, row.jid) == ("POST_INFECTED", FOUND, UPLOADER)
    assert (row.filename, row.real_filename) == (slot.path.resource, "report.pdf")
    assert (row.file_size, row.file_sha256) == (len(body), hashlib.sha256(body).hexdigest())
    assert env.metrics.value("scan_infected", {"signature": FOUND}) == 1
    assert env.metrics.value("scans", {"result": "infected"}) == 1
    (line,) = [r.getMessage() for r in caplog.records if "infected" in r.getMessage()]
    assert UPLOADER in line and "report.pdf" in line and FOUND in line
    assert slot.path.resource in line


async def test_clamd_stopped_then_started(
    clamd_factory: Callable[..., ClamdServer], config_factory: ConfigFactory
) -> None:
    """clamd down: 503 and nothing published (fail closed); back up: uploads work again
    without restarting the service."""
    server = clamd_factory()
    async with httpd_env(scanning(config_factory, server.url)) as env:
        server.stop()
        status, _text, _slot = await put(env, b"while clamd is down")
        assert status == 503
        assert env.repo.started.empty()  # refused before the body reached the repository
        assert env.repo.files() == []
        assert await env.rows() == []
        assert env.metrics.value("scan_errors", {"reason": "unavailable"}) >= 1
        server.start()
        status, _text, slot = await put(env, b"after clamd is back")
        assert status == 201
        assert (env.repo.root / slot.path.repo_path).read_bytes() == b"after clamd is back"
        assert [(r.method, r.scan_result) for r in await env.rows()] == [("POST", "clean")]


async def test_clamd_dies_mid_upload(
    clamd_factory: Callable[..., ClamdServer], config_factory: ConfigFactory
) -> None:
    """clamd stops while the body streams: the upload fails (503 or a cut connection)
    and nothing is published."""
    server = clamd_factory()
    async with httpd_env(scanning(config_factory, server.url)) as env:
        body = PausingBody(half_mib=1)
        slot = env.slot(body.size)
        request = asyncio.create_task(
            env.client.put(
                slot.put_url, data=aiter(body), headers={"Content-Length": str(body.size)}
            )
        )
        async with asyncio.timeout(30):
            await body.half.wait()
            await env.repo.started.get()  # the scan's connection is open, the body flowing
        server.stop()
        body.resume.set()
        try:
            async with asyncio.timeout(30):
                resp = await request
            status: int | None = resp.status
            resp.release()
        except aiohttp.ClientError:
            status = None  # refused mid-body: the client may see the connection cut
        assert status in (None, 503)
        assert isinstance(await env.repo.stores.get(), ScanUnavailable)
        assert env.repo.files() == []
        assert await env.rows() == []


async def test_clamd_down_refused_before_100_continue(
    clamd_factory: Callable[..., ClamdServer], config_factory: ConfigFactory
) -> None:
    """With Expect: 100-continue and clamd down, 503 comes instead of 100 Continue."""
    server = clamd_factory()
    async with httpd_env(scanning(config_factory, server.url)) as env:
        server.stop()
        slot = env.slot(1000)
        reader, writer = await env.raw(
            f"PUT {slot.put_url} HTTP/1.1\nHost: t\nContent-Length: 1000\nExpect: 100-continue\n"
        )
        try:
            status_line = await asyncio.wait_for(reader.readline(), 10)
        finally:
            writer.close()
        assert status_line.startswith(b"HTTP/1.1 503")
        assert env.repo.started.empty() and env.repo.files() == []


async def test_hung_clamd_times_out_with_503(
    clamd_factory: Callable[..., ClamdServer], config_factory: ConfigFactory
) -> None:
    """clamd accepts but never answers (SIGSTOP): 503 after io_timeout, nothing published."""
    server = clamd_factory()
    assert server.process is not None and server.process.proc is not None
    cfg = scanning(config_factory, server.url, io_timeout=0.5)
    async with httpd_env(cfg) as env:
        server.process.proc.send_signal(signal.SIGSTOP)
        try:
            status, _text, _slot = await put(env, os.urandom(10_000))
        finally:
            server.process.proc.send_signal(signal.SIGCONT)
        assert status == 503
        assert env.repo.files() == []


async def test_on_error_accept_publishes_unscanned(
    config_factory: ConfigFactory, tmp_path: Path
) -> None:
    """on_error = "accept": clamd unreachable, the upload is published as unscanned."""
    cfg = scanning(config_factory, f"unix://{tmp_path}/no-clamd.sock", on_error="accept")
    async with httpd_env(cfg) as env:
        status, _text, slot = await put(env, b"published unscanned")
        assert status == 201
        assert (env.repo.root / slot.path.repo_path).exists()
        assert env.metrics.value("scans", {"result": "unscanned"}) == 1
        assert [(r.method, r.scan_result) for r in await env.rows()] == [("POST", "unscanned")]


async def test_past_stream_max_length_is_refused_413(env: HttpdEnv, clamd: ClamdServer) -> None:
    """Larger than clamd's StreamMaxLength with max_size 0: 413 after the body, nothing kept."""
    body = os.urandom(clamd.stream_max + MiB)
    status, text, _slot = await put(env, body)
    assert status == 413
    assert "malware scanner" in text
    assert isinstance(await env.repo.stores.get(), TooLargeToScan)
    assert env.repo.files() == []
    assert env.metrics.value("scan_errors", {"reason": "too_large"}) == 1
    assert await env.rows() == []


async def test_max_size_lets_larger_files_through_unscanned(
    clamd: ClamdServer, config_factory: ConfigFactory
) -> None:
    """[scan] max_size: larger uploads are published unscanned, smaller ones still scanned."""
    async with httpd_env(scanning(config_factory, clamd.url, max_size=1000)) as env:
        big = os.urandom(500) + eicar() + os.urandom(1000)  # over max_size: not scanned
        status, _text, slot = await put(env, big)
        assert status == 201
        assert (env.repo.root / slot.path.repo_path).read_bytes() == big
        assert env.metrics.value("scans", {"result": "unscanned"}) == 1
        status, _text, _slot = await put(env, eicar())
        assert status == 422
        rows = [(r.method, r.scan_result) for r in await env.rows()]
        assert rows == [("POST", "unscanned"), ("POST_INFECTED", FOUND)]


async def test_sftp_repository_infected_and_clean(
    clamd: ClamdServer, sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """Over sftp://: EICAR is refused with nothing on the file server; a clean file is stored."""
    cfg = config_factory(
        repository=sshd.repository(node_dir),
        upload={"max_file_size": MAX_FILE},
        scan={"clamd": clamd.url},
    )
    async with service(cfg, node_dir) as svc:
        bad = os.urandom(700_000) + eicar() + os.urandom(400_000)
        _path, put_url, _get = svc.slot(len(bad))
        length = {"Content-Length": str(len(bad))}
        async with svc.client.put(put_url, data=stream(bad), headers=length) as resp:
            assert resp.status == 422
            assert FOUND in await resp.text()
        assert svc.files() == []
        good = os.urandom(2 * MiB)
        path, put_url, _get = svc.slot(len(good))
        length = {"Content-Length": str(len(good))}
        async with svc.client.put(
            put_url, data=stream(good), headers=length, expect100=True
        ) as resp:
            assert resp.status == 201
        assert svc.files() == [path.repo_path]
        assert (node_dir / path.repo_path).read_bytes() == good
        rows = [(r.method, r.scan_result) for r in await svc.audit.query(AuditQuery())]
        assert rows == [("POST_INFECTED", FOUND), ("POST", "clean")]
