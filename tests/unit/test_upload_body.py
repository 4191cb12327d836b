"""PUT bodies pulled by the file:// repository: from aiohttp's stream (small bodies, the
connection kept) or from the socket itself (large ones, the connection closed after);
wrong sizes, clients going away, stalls, and a full memory budget."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from component.errors import InvalidRequest, SizeMismatch
from httpd.budget import MemoryBudget
from httpd.repository import FileRepository
from httpd.repository.base import (
    ChunkBody,
    ReceivesBodies,
    SendsFiles,
    already_in,
    file_sender_of,
    receiver_of,
)
from httpd.repository.local import LARGE_BLOCK, RECV_BLOCK
from httpd.upload import SOCKET_BODY_MIN
from tests.fixtures.config import ConfigFactory
from tests.unit.httpd_harness import HttpdEnv, httpd_env

BIG = SOCKET_BODY_MIN + 3 * RECV_BLOCK + 12_345  # several blocks, not a multiple of one
HOUR = "files/im/20240101/10"
T = TypeVar("T")


@pytest.fixture
async def env(config_factory: ConfigFactory) -> AsyncIterator[HttpdEnv]:
    """The app with room for large bodies and a short body timeout."""
    cfg = config_factory(upload={"max_file_size": 8 * BIG}, http={"body_timeout": 0.5})
    async with httpd_env(cfg) as e:
        yield e


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and the body of one HTTP/1.1 response."""
    status = int((await asyncio.wait_for(reader.readline(), 10)).split()[1])
    headers = {}
    while (line := await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), 10)
    return status, headers, body


def _head(put_url: str, length: int) -> str:
    return f"PUT {put_url} HTTP/1.1\nHost: t\nContent-Length: {length}\n"


async def test_large_body_from_the_socket_is_stored_hashed_and_closes(env: HttpdEnv) -> None:
    """A large body sent slowly (after the headers) is stored byte for byte, its SHA-256
    logged, and the connection closed after the 201 (Connection: close)."""
    body = os.urandom(BIG)
    slot = env.slot(len(body), "big.bin")
    reader, writer = await env.raw(_head(slot.put_url, len(body)))
    for at in range(0, len(body), 100_000):  # pieces of every alignment
        writer.write(body[at : at + 100_000])
        await writer.drain()
    status, headers, _ = await _response(reader)
    assert (status, headers.get("connection")) == (201, "close")
    assert await asyncio.wait_for(reader.read(), 10) == b""  # the server closed it
    writer.close()
    assert (env.repo.root / slot.path.repo_path).read_bytes() == body
    (row,) = await env.rows()
    assert row.file_sha256 == hashlib.sha256(body).hexdigest()


async def test_small_bodies_keep_the_connection(env: HttpdEnv) -> None:
    """Two small PUTs on one connection: both stored, the second on the same socket."""
    reader, writer = await env.raw("")
    bodies = [os.urandom(100_000), os.urandom(7)]
    try:
        for body in bodies:
            slot = env.slot(len(body))
            writer.write(_head(slot.put_url, len(body)).replace("\n", "\r\n").encode() + b"\r\n")
            writer.write(body)
            status, headers, _ = await _response(reader)
            assert status == 201 and headers.get("connection") != "close"
            assert (env.repo.root / slot.path.repo_path).read_bytes() == body
    finally:
        writer.close()
    assert [r.file_sha256 for r in await env.rows()] == [
        hashlib.sha256(b).hexdigest() for b in bodies
    ]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_large_body_cut_off_leaves_nothing(env: HttpdEnv) -> None:
    """A client that closes half-way through a socket-read body: 400, no file, no row,
    and no descriptor left open (the duplicate socket is closed)."""
    before = _open_fds()
    for _ in range(3):
        slot = env.slot(BIG, "big.bin")
        _reader, writer = await env.raw(_head(slot.put_url, BIG))
        await asyncio.wait_for(env.repo.started.get(), 10)
        writer.write(os.urandom(BIG // 2))
        await writer.drain()
        writer.close()
        assert isinstance(await asyncio.wait_for(env.repo.stores.get(), 10), InvalidRequest)
    assert env.repo.files() == []
    assert await env.rows() == []
    assert env.repo.budget.in_use == 0
    async with asyncio.timeout(10):
        while _open_fds() > before:  # noqa: ASYNC110 (aiohttp closes its side after)
            await asyncio.sleep(0.01)


async def test_large_body_cancelled_at_shutdown_leaves_nothing(
    config_factory: ConfigFactory,
) -> None:
    """A socket-read upload still waiting for its body when the server stops is
    cancelled after the grace: no file, no row, the budget given back."""
    cfg = config_factory(upload={"max_file_size": 8 * BIG}, http={"shutdown_grace": 0.2})
    async with httpd_env(cfg) as env:
        slot = env.slot(BIG, "big.bin")
        _reader, writer = await env.raw(_head(slot.put_url, BIG), os.urandom(BIG // 3))
        await asyncio.wait_for(env.repo.started.get(), 10)
        repo = env.repo
    outcome = await asyncio.wait_for(repo.stores.get(), 10)
    writer.close()
    assert isinstance(outcome, asyncio.CancelledError)
    assert repo.files() == []
    assert repo.budget.in_use == 0


async def test_large_body_stalled_is_408(env: HttpdEnv) -> None:
    """A socket-read body that stops arriving: 408 after body_timeout, nothing stored."""
    slot = env.slot(BIG, "big.bin")
    reader, writer = await env.raw(_head(slot.put_url, BIG))
    writer.write(os.urandom(SOCKET_BODY_MIN // 2))
    try:
        status, _, _ = await _response(reader)
    finally:
        writer.close()
    assert status == 408
    assert env.repo.files() == []
    assert await env.rows() == []


async def test_bytes_past_the_length_are_not_stored(env: HttpdEnv) -> None:
    """Bytes after Content-Length are no part of the body: the file holds the declared
    bytes only, and they are not served as a next request (the connection closes)."""
    body = os.urandom(BIG)
    slot = env.slot(len(body), "big.bin")
    reader, writer = await env.raw(_head(slot.put_url, len(body)))
    writer.write(body + b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert await asyncio.wait_for(env.repo.stores.get(), 10) is None
    # Closing with those bytes unread may reset the connection before the 201 is read.
    with contextlib.suppress(ConnectionError):
        got = await asyncio.wait_for(reader.read(), 10)
        assert got.startswith(b"HTTP/1.1 201") and got.count(b"HTTP/1.1") == 1
    writer.close()
    assert (env.repo.root / slot.path.repo_path).read_bytes() == body


async def _pieces(data: bytes, size: int = 70_000) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


@pytest.mark.parametrize(
    ("sent", "status"), [(BIG - 1, 400), (BIG + 1, 413), (0, 400)], ids=["short", "long", "none"]
)
async def test_chunk_body_of_the_wrong_size_is_refused(
    tmp_path: Path, sent: int, status: int
) -> None:
    """store() with fewer or more bytes than declared: SizeMismatch, nothing left."""
    repo = FileRepository(tmp_path, budget=MemoryBudget(4 * RECV_BLOCK, on_idle=None))
    with pytest.raises(SizeMismatch) as err:
        await repo.store(f"{HOUR}/{'W' * 22}", _pieces(os.urandom(sent)), BIG)
    assert err.value.status == status
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # noqa: ASYNC240
    assert repo.budget.in_use == 0


async def test_chunk_body_reads_to_its_end() -> None:
    """ChunkBody hands out the bytes across chunk and buffer edges, then ends cleanly."""
    data = os.urandom(250_001)
    body = ChunkBody(_pieces(data, 999), len(data))
    out, buf = bytearray(), memoryview(bytearray(4096))
    while len(out) < len(data):
        n = await body.readinto(buf[: min(4096, len(data) - len(out))])
        out += buf[:n]
    await body.end()
    assert bytes(out) == data


class _Gate:
    """A body source that hands out ``data`` once :attr:`opened` is set."""

    def __init__(self, data: bytes) -> None:
        self.rest = memoryview(data)
        self.opened = asyncio.Event()
        self.read = 0

    async def readinto(self, buf: memoryview) -> int:
        await self.opened.wait()
        n = min(len(buf), len(self.rest))
        buf[:n] = self.rest[:n]
        self.rest = self.rest[n:]
        self.read += n
        return n

    async def end(self) -> None:
        assert not self.rest


async def test_full_budget_waits_in_line_without_reading(tmp_path: Path) -> None:
    """With the budget spent by stalled uploads, the next one waits without reading its
    body; once they end it runs to the end. Held bytes never pass the budget."""
    budget = MemoryBudget(2 * RECV_BLOCK, on_idle=None)
    repo = FileRepository(tmp_path, budget=budget)
    stalled = [_Gate(os.urandom(4 * RECV_BLOCK)) for _ in range(3)]
    tasks = [
        asyncio.create_task(repo.receive(f"{HOUR}/{'S' * 21}{i}", g, 4 * RECV_BLOCK, None))
        for i, g in enumerate(stalled)
    ]
    data = os.urandom(3 * RECV_BLOCK)
    late, sha = _Gate(data), hashlib.sha256()
    late.opened.set()
    waiting = asyncio.create_task(repo.receive(f"{HOUR}/{'L' * 22}", late, len(data), sha))
    async with asyncio.timeout(10):
        while budget.waiting < 2:  # noqa: ASYNC110 (the third stalled store, then the late)
            await asyncio.sleep(0)
    assert late.read == 0 and budget.in_use <= budget.total
    for task in tasks:
        task.cancel()
    async with asyncio.timeout(30):
        await waiting
        await asyncio.gather(*tasks, return_exceptions=True)
    assert (tmp_path / HOUR / ("L" * 22)).read_bytes() == data
    assert sha.hexdigest() == hashlib.sha256(data).hexdigest()
    assert budget.in_use == 0 and budget.peak <= budget.total
    assert sorted(p.name for p in (tmp_path / HOUR).iterdir()) == ["L" * 22]


async def test_large_bodies_get_large_blocks_while_the_budget_is_plentiful(
    tmp_path: Path,
) -> None:
    """Large bodies are received into two LARGE_BLOCKs each while three quarters of the
    budget stay free: the first two of three at once in 64 MiB; the third gets two
    RECV_BLOCKs. All three are stored and hashed right, and the budget is paid back."""
    budget = MemoryBudget(64 * 1024 * 1024, on_idle=None)
    repo = FileRepository(tmp_path, budget=budget)
    datas = [os.urandom(2 * LARGE_BLOCK + 12_345 + i) for i in range(3)]
    gates, shas = [_Gate(d) for d in datas], [hashlib.sha256() for _ in datas]
    tasks = [
        asyncio.create_task(repo.receive(f"{HOUR}/{'G' * 21}{i}", gate, len(data), sha))
        for i, (gate, data, sha) in enumerate(zip(gates, datas, shas, strict=True))
    ]
    expected = 2 * (2 * LARGE_BLOCK) + 2 * RECV_BLOCK
    async with asyncio.timeout(10):
        while budget.in_use < expected:  # noqa: ASYNC110 (all three hold their buffers)
            await asyncio.sleep(0)
    assert budget.in_use == expected
    for gate in gates:
        gate.opened.set()
    async with asyncio.timeout(30):
        await asyncio.gather(*tasks)
    for i, (data, sha) in enumerate(zip(datas, shas, strict=True)):
        assert (tmp_path / HOUR / f"{'G' * 21}{i}").read_bytes() == data
        assert sha.hexdigest() == hashlib.sha256(data).hexdigest()
    assert budget.in_use == 0 and budget.peak == expected


async def test_empty_body_is_published(tmp_path: Path) -> None:
    """A zero-byte upload is one hop: created, fsync'd and linked."""
    repo = FileRepository(tmp_path)
    sha = hashlib.sha256()
    await repo.receive(f"{HOUR}/{'E' * 22}", _Gate(b""), 0, sha)
    assert (tmp_path / HOUR / ("E" * 22)).read_bytes() == b""
    assert sha.hexdigest() == hashlib.sha256(b"").hexdigest()


def test_capability_checks_match_the_protocols(tmp_path: Path) -> None:
    """receiver_of/file_sender_of find file://'s methods and nothing on other objects."""
    repo = FileRepository(tmp_path)
    assert receiver_of(repo) is repo and file_sender_of(repo) is repo
    assert isinstance(repo, ReceivesBodies) and isinstance(repo, SendsFiles)
    assert receiver_of(object()) is None and file_sender_of(object()) is None


class _Whole(_Gate):
    """A body that has every byte in already (as a small PUT's usually has)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.opened.set()
        self.taken = False

    def whole(self, size: int) -> memoryview | None:
        if len(self.rest) != size:
            return None
        self.taken = True
        whole, self.rest = self.rest, memoryview(b"")
        return whole


async def test_body_already_in_is_written_from_where_it_is(tmp_path: Path) -> None:
    """A body with all its bytes in is handed over whole (never read through a buffer),
    stored, hashed and paid for; one still arriving is read as before."""
    budget = MemoryBudget(4 * RECV_BLOCK, on_idle=None)
    repo = FileRepository(tmp_path, budget=budget)
    data = os.urandom(100_000)
    body, sha = _Whole(data), hashlib.sha256()
    await repo.receive(f"{HOUR}/{'W' * 22}", body, len(data), sha)
    assert body.taken and body.read == 0
    assert (tmp_path / HOUR / ("W" * 22)).read_bytes() == data
    assert sha.hexdigest() == hashlib.sha256(data).hexdigest()
    assert budget.in_use == 0 and budget.peak > 0
    assert already_in(body, 1) is None  # nothing left to hand over
    partial = _Whole(data[:60_000])  # 60 KB of a 100 KB body: read through a buffer
    with pytest.raises(SizeMismatch):
        await repo.receive(
            f"{HOUR}/{'P' * 22}", ChunkBody(_pieces(data[:60_000]), 100_000), 100_000, None
        )
    assert already_in(partial, 100_000) is None and not partial.taken
    assert already_in(ChunkBody(_pieces(data), len(data)), len(data)) is None
    assert sorted(p.name for p in (tmp_path / HOUR).iterdir()) == ["W" * 22]


class _Counting(ThreadPoolExecutor):
    """An executor that counts the jobs handed to it."""

    def __init__(self) -> None:
        super().__init__(1)
        self.jobs = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


async def test_small_jobs_run_where_the_repository_was_told(tmp_path: Path) -> None:
    """A pinned worker's small-file executor (httpd.ops.placement) gets a small upload's
    one job, whether its body was in already or read into a buffer; a large upload's
    blocks stay in the default executor, hashed and written beside the loop."""
    with _Counting() as small:
        repo = FileRepository(tmp_path, small_jobs=small)
        data = os.urandom(100_000)
        await repo.receive(f"{HOUR}/{'A' * 22}", _Whole(data), len(data), hashlib.sha256())
        gate = _Gate(data)
        gate.opened.set()
        await repo.receive(f"{HOUR}/{'B' * 22}", gate, len(data), hashlib.sha256())
        assert small.jobs == 2
        big = os.urandom(3 * RECV_BLOCK + 1)
        gate = _Gate(big)
        gate.opened.set()
        sha = hashlib.sha256()
        await repo.receive(f"{HOUR}/{'C' * 22}", gate, len(big), sha)
        assert small.jobs == 2
        assert (tmp_path / HOUR / ("C" * 22)).read_bytes() == big
        assert sha.hexdigest() == hashlib.sha256(big).hexdigest()
