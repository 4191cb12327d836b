"""``mft run`` as its own process under load and after a crash, on file:// and sftp://.

Memory: 100 concurrent 10 MiB uploads then 100 concurrent downloads, all byte-checked,
peak RSS (VmHWM) under 300 MiB and back within 50 MiB of idle soon after. Start-up:
``.part`` files a killed process left are removed, live ones and published files kept.
Hygiene: a PUT URL with a repeated or unknown query key is 400 before the body, logged.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from httpd.budget import MemoryBudget
from httpd.repository import open_repository
from tests.fixtures.config import ConfigFactory
from tests.fixtures.sshd import SshServer
from tests.unit.httpd_harness import make_slot

from .memory_load import MIB, measure, service, until, write_config

pytestmark = pytest.mark.integration

PEAK_LIMIT_KIB = 300 * 1024
SETTLE_MARGIN_KIB = 50 * 1024


def _repository(kind: str, tmp_path: Path, sshd: SshServer | None) -> dict[str, Any]:
    if kind == "file":
        return {"url": f"file://{tmp_path}/repo"}
    assert sshd is not None
    node = sshd.store / f"mem-{os.urandom(4).hex()}"
    node.mkdir()
    return sshd.repository(node)


def _node_dir(repository: dict[str, Any]) -> Path:
    """The node directory on this machine (the sshd store is local too)."""
    url = str(repository["url"])
    return Path("/" + url.split("://", 1)[1].split("/", 1)[1])


@pytest.fixture(params=["file", "sftp"])
def kind(request: pytest.FixtureRequest) -> str:
    """The repository back-end."""
    return str(request.param)


@pytest.fixture
def repository(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A ``[repository]`` section of this back-end in a fresh node directory."""
    sshd = request.getfixturevalue("sshd") if kind == "sftp" else None
    return _repository(kind, tmp_path, sshd)


async def test_memory_bounded_under_100_concurrent_transfers(
    tmp_path: Path, repository: dict[str, Any]
) -> None:
    """100 x 10 MiB up then down, byte-identical: peak < 300 MiB, then back near idle."""
    cfg = write_config(tmp_path, repository, {})
    async with service(cfg) as svc:
        res = await measure(svc, 100, 10 * MIB, settle_s=30, margin_kib=SETTLE_MARGIN_KIB)
        log = (tmp_path / "mft.log").read_text()
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{svc.port}/metrics") as resp,
        ):
            gauges = {
                name: float(value)
                for name, _, value in (
                    line.partition(" ") for line in (await resp.text()).splitlines()
                )
                if name.startswith("mft_memory_budget")
            }
    assert res.peak < PEAK_LIMIT_KIB, (res, log[-3000:])
    assert res.after <= res.idle + SETTLE_MARGIN_KIB, res
    # The budget was used and never exceeded, and is all given back. (Since FILE_SHA256
    # is hashed inline it holds no batches, so 100 uploads no longer fill the budget.)
    assert gauges["mft_memory_budget_bytes"] == 64 * MIB
    assert 0 < gauges["mft_memory_budget_peak_bytes"] <= 64 * MIB, gauges
    assert gauges["mft_memory_budget_used_bytes"] == 0
    assert gauges["mft_memory_budget_waiting"] == 0


async def test_stale_parts_removed_at_start(tmp_path: Path, repository: dict[str, Any]) -> None:
    """A killed process's old .part goes at start; a fresh .part and old files stay."""
    node = _node_dir(repository)
    hour = node / "files" / "im" / "20240101" / "10"
    hour.mkdir(parents=True)
    stale = hour / ".AAAAAAAAAAAAAAAAAAAAAA.deadbeef.part"
    live = hour / ".BBBBBBBBBBBBBBBBBBBBBB.cafebabe.part"
    published = hour / "CCCCCCCCCCCCCCCCCCCCCC"
    not_ours = hour / "notes.part"  # not a name the service makes: left alone
    old = time.time() - 400  # past the 300 s slot lifetime (and the 60 s body timeout)
    for path in (stale, live, published, not_ours):
        path.write_bytes(b"x" * 1000)
    for path in (stale, published, not_ours):
        os.utime(path, (old, old))
    cfg = write_config(tmp_path, repository, {})
    log_path = tmp_path / "mft.log"
    async with service(cfg):
        await until(lambda: not stale.exists(), 30, "the stale .part removed")
        await until(lambda: "stale .part" in log_path.read_text(), 30, "the removal logged")
    assert live.exists() and published.exists() and not_ours.exists()
    assert "removed 1 stale .part file(s), 1000 bytes" in log_path.read_text()


async def test_ambiguous_put_refused_by_the_running_service(tmp_path: Path) -> None:
    """Repeated sig/exp and an unknown key: 400 before any body byte, the reason logged."""
    cfg_path = write_config(tmp_path, {"url": f"file://{tmp_path}/repo"}, {})
    async with service(cfg_path) as svc:
        slot = make_slot(svc.cfg, 10)
        cases = {
            f"{slot.put_url}&sig=forged": "'sig' repeated",
            slot.put_url.replace("sig=", "sig=forged&sig="): "'sig' repeated",
            f"{slot.put_url}&exp=9999999999": "'exp' repeated",
            f"{slot.put_url}&x-debug=1": "unknown query key 'x-debug'",
        }
        for target, reason in cases.items():
            for expect in ("", "Expect: 100-continue\r\n"):
                reader, writer = await asyncio.open_connection("127.0.0.1", svc.port)
                head = f"PUT {target} HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n{expect}"
                writer.write(head.encode() + b"\r\n")  # the body is never sent
                try:
                    status = await asyncio.wait_for(reader.readline(), 10)
                    body = await asyncio.wait_for(reader.read(4096), 10)
                finally:
                    writer.close()
                assert status.split()[1] == b"400", (target, status)
                assert reason.encode() in body
        log_path = tmp_path / "mft.log"
        await until(lambda: log_path.read_text().count("repeated") >= 6, 30, "6 refusals logged")
        log = log_path.read_text()
    assert "unknown query key 'x-debug'" in log and slot.query["sig"] not in log
    assert not list((tmp_path / "repo").rglob("*.part"))


async def test_tiny_budget_bounds_and_never_deadlocks(
    kind: str, tmp_path: Path, config_factory: ConfigFactory, request: pytest.FixtureRequest
) -> None:
    """A 1 MiB budget under 30 concurrent 1 MiB stores and reads: all complete, correct,
    and the bytes held at once never pass the budget."""
    sshd = request.getfixturevalue("sshd") if kind == "sftp" else None
    cfg = config_factory(repository=_repository(kind, tmp_path, sshd))
    budget = MemoryBudget(MIB, on_idle=None)
    repo = open_repository(cfg, budget)
    await repo.open()
    try:
        bodies = {f"files/im/20240101/10/{'R' * 21}{i:x}": os.urandom(MIB) for i in range(30)}

        async def chunks(data: bytes) -> AsyncIterator[bytes]:
            for at in range(0, len(data), 64 * 1024):
                yield data[at : at + 64 * 1024]

        async def read(path: str) -> bytes:
            return b"".join([block async for block in repo.read(path)])

        async with asyncio.timeout(120):
            await asyncio.gather(*(repo.store(p, chunks(b), len(b)) for p, b in bodies.items()))
            assert budget.in_use == 0 and 0 < budget.peak <= MIB
            budget.peak = 0
            got = await asyncio.gather(*(read(p) for p in bodies))
        assert got == list(bodies.values())
        assert budget.in_use == 0 and 0 < budget.peak <= MIB
    finally:
        await repo.close()


async def test_stalled_readers_cannot_hoard_the_budget(
    kind: str, tmp_path: Path, config_factory: ConfigFactory, request: pytest.FixtureRequest
) -> None:
    """Downloads whose clients stopped reading hold their blocks, yet a new download of
    the same budget still runs to its end (read-ahead leaves half the budget free)."""
    sshd = request.getfixturevalue("sshd") if kind == "sftp" else None
    cfg = config_factory(repository=_repository(kind, tmp_path, sshd))
    budget = MemoryBudget(4 * MIB, on_idle=None)
    repo = open_repository(cfg, budget)
    await repo.open()
    path, data = f"files/im/20240101/10/{'S' * 22}", os.urandom(8 * MIB)

    async def chunks() -> AsyncIterator[bytes]:
        for at in range(0, len(data), 256 * 1024):
            yield data[at : at + 256 * 1024]

    stalled = [repo.read(path) for _ in range(6)]
    try:
        await repo.store(path, chunks(), len(data))
        for reader in stalled:  # one block each, then the "client" stops reading
            async with asyncio.timeout(30):
                await anext(reader)
        assert budget.in_use > 0
        async with asyncio.timeout(60):
            got = b"".join([block async for block in repo.read(path)])
        assert got == data
    finally:
        for reader in stalled:
            await reader.aclose()
        await repo.close()
    assert budget.in_use == 0
