"""The clamd client (httpd.scan.clamd) against a real clamd with its own EICAR database."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from component.config import ScanConfig
from component.errors import ScanUnavailable, TooLargeToScan
from httpd.ops.check.scanner import check_scanner
from httpd.scan.clamd import Instream, Verdict, ping, version
from tests.fixtures.clamd import FOUND, ClamdServer, eicar
from tests.fixtures.config import ConfigFactory

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


async def scan(cfg: ScanConfig, data: bytes, chunk: int = 256 * 1024) -> Verdict:
    """INSTREAM ``data`` in chunks of ``chunk`` bytes; clamd's verdict."""
    stream = await Instream.open(cfg)
    try:
        for i in range(0, len(data), chunk):
            await stream.send(data[i : i + chunk])
        return await stream.verdict()
    finally:
        stream.close()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
async def test_clean_and_eicar(clamd: ClamdServer, transport: str) -> None:
    """Random bytes are clean; the EICAR file is found, over the unix socket and TCP."""
    cfg = ScanConfig(clamd=clamd.url if transport == "unix" else clamd.tcp_url)
    assert await scan(cfg, os.urandom(100_000)) == Verdict()
    assert await scan(cfg, eicar()) == Verdict(FOUND)


async def test_eicar_inside_a_megabyte_across_chunks(clamd: ClamdServer) -> None:
    """EICAR in the middle of 1 MB of random bytes, split over two chunks, is found."""
    cfg = ScanConfig(clamd=clamd.url)
    half = 512 * 1024
    data = os.urandom(half - 30) + eicar() + os.urandom(half)
    verdict = await scan(cfg, data, chunk=half)  # the signature straddles two chunks
    assert verdict.infected and verdict.signature == FOUND


@pytest.mark.parametrize("transport", ["unix", "tcp"])
async def test_past_stream_max_length_is_too_large(clamd: ClamdServer, transport: str) -> None:
    """More than StreamMaxLength: clamd closes mid-stream and the client says why."""
    cfg = ScanConfig(clamd=clamd.url if transport == "unix" else clamd.tcp_url)
    with pytest.raises(TooLargeToScan):
        await scan(cfg, os.urandom(clamd.stream_max + MiB))
    assert await scan(cfg, b"still serving") == Verdict()


async def test_ping_and_version(clamd: ClamdServer) -> None:
    """PING answers, VERSION names the engine (no official database: no date)."""
    cfg = ScanConfig(clamd=clamd.tcp_url)
    await ping(cfg)
    found = await version(cfg)
    assert found.engine.startswith("ClamAV ")
    assert found.signatures_date is None


async def test_unreachable_clamd(tmp_path: Path) -> None:
    """No socket at the path, or nothing on the port: ScanUnavailable naming the URL."""
    for url in (f"unix://{tmp_path}/none.sock", "tcp://127.0.0.1:9"):
        with pytest.raises(ScanUnavailable, match="cannot connect"):
            await Instream.open(ScanConfig(clamd=url, connect_timeout=2.0))


async def test_hung_clamd_times_out(clamd_factory: Callable[..., ClamdServer]) -> None:
    """A stopped (SIGSTOP) clamd accepts the connection but never answers: a timeout."""
    server = clamd_factory()
    assert server.process is not None and server.process.proc is not None
    cfg = ScanConfig(clamd=server.url, connect_timeout=1.0, io_timeout=0.5)
    server.process.proc.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(ScanUnavailable, match=r"no answer within|took more than"):
            await scan(cfg, b"hello")
    finally:
        server.process.proc.send_signal(signal.SIGCONT)


async def test_check_scanner_lines(
    clamd: ClamdServer, config_factory: ConfigFactory, tmp_path: Path
) -> None:
    """mft check's scanner line: off, reachable (engine named; WARN without an official
    database), unreachable FAIL when uploads are refused for it, WARN when accepted."""
    [off] = await check_scanner(config_factory())
    assert (off.status, off.name) == ("OK", "scanner") and "off" in off.detail
    [up] = await check_scanner(config_factory(scan={"clamd": clamd.url}))
    assert up.status == "WARN" and "ClamAV " in up.detail and clamd.url in up.detail
    assert "no official signature database" in up.detail and "freshclam" in up.hint
    gone = f"unix://{tmp_path}/none.sock"
    [down] = await check_scanner(config_factory(scan={"clamd": gone}))
    assert down.status == "FAIL" and "cannot connect" in down.detail and "refused" in down.detail
    assert "clamav-daemon" in down.hint
    [soft] = await check_scanner(config_factory(scan={"clamd": gone, "on_error": "accept"}))
    assert soft.status == "WARN" and "published unscanned" in soft.detail
