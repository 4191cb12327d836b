"""The sftp:// transfer path against real sshd servers: cipher choice, write-behind, outages."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from component.errors import SizeMismatch, StorageUnavailable
from httpd.repository.base import ChunkBody
from httpd.repository.sftp import SftpRepository
from httpd.repository.sftp_write import FLUSH_STEP, WriteBehind
from tests.fixtures.config import ConfigFactory
from tests.fixtures.sshd import SshServer, _descendants
from tests.integration.bodies import MiB, PausingBody, stream

pytestmark = pytest.mark.integration


def slot() -> str:
    """A repository path shaped like SlotPath.repo_path."""
    return f"files/im/20260101/10/{secrets.token_urlsafe(18)}"


@contextlib.contextmanager
def configured_sshd(base: Path, extra: str) -> Iterator[SshServer]:
    """A private sshd with ``extra`` lines appended to the fixture's sshd_config."""
    server = SshServer(base)
    server.config.write_text(server.config.read_text() + extra)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def opened(repo: SftpRepository) -> AsyncIterator[SftpRepository]:
    await repo.open()
    try:
        yield repo
    finally:
        await repo.close()


async def read_all(r: SftpRepository, path: str) -> bytes:
    return b"".join([b async for b in r.read(path)])


def negotiated(r: SftpRepository) -> tuple[str, str]:
    """The (send, receive) ciphers of the repository's connection."""
    assert r._conn is not None
    return r._conn.get_extra_info("send_cipher"), r._conn.get_extra_info("recv_cipher")


def spy_write_behind(r: SftpRepository, monkeypatch: pytest.MonkeyPatch) -> list[WriteBehind]:
    """Collect the WriteBehind objects the repository makes (None when it makes none)."""
    made: list[WriteBehind] = []
    original = r._write_behind

    def recording(part: str, size: int) -> WriteBehind | None:
        wb = original(part, size)
        if wb is not None:
            made.append(wb)
        return wb

    monkeypatch.setattr(r, "_write_behind", recording)
    return made


def open_in_server(server: SshServer, name: str) -> list[str]:
    """Files whose name contains ``name`` held open by the server's session processes."""
    assert server.process is not None and server.process.proc is not None
    found = []
    for pid in _descendants(server.process.proc.pid):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if name in target:
                        found.append(target)
    return found


async def test_aes_gcm_is_negotiated_with_openssh(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """OpenSSH offers AES-GCM: both directions use it (not asyncssh's chacha20 default)."""
    r = SftpRepository(config_factory(repository=sshd.repository(node_dir)).repository)
    async with opened(r):
        assert negotiated(r) == ("aes128-gcm@openssh.com", "aes128-gcm@openssh.com")


async def test_server_with_only_chacha20_still_works(
    tmp_path: Path, config_factory: ConfigFactory
) -> None:
    """A server that offers only chacha20-poly1305: the session uses it, bytes round-trip."""
    with configured_sshd(tmp_path / "sshd", "Ciphers chacha20-poly1305@openssh.com\n") as server:
        node = server.store / "node_1"
        r = SftpRepository(config_factory(repository=server.repository(node)).repository)
        async with opened(r):
            assert negotiated(r) == ("chacha20-poly1305@openssh.com",) * 2
            data = os.urandom(MiB + 17)
            path = slot()
            await r.store(path, stream(data), len(data))
            assert await read_all(r, path) == data


async def test_blocks_cut_from_chunks_of_every_size(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """Chunks smaller than, equal to and several times a write block store exactly."""
    r = SftpRepository(config_factory(repository=sshd.repository(node_dir)).repository)
    async with opened(r):
        block = r._write_len
        for chunk in (1, block - 1, block, block + 1, 3 * block + 7):
            data = os.urandom(4 * block + 5)
            path = slot()
            await r.store(path, stream(data, chunk), len(data))
            assert (node_dir / path).read_bytes() == data


async def test_large_upload_flushes_behind_and_closes_its_second_handle(
    sshd: SshServer,
    node_dir: Path,
    config_factory: ConfigFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upload over two flush steps is fsync'd early through the second session, whose
    handle is closed afterwards; a small upload makes no write-behind at all."""
    r = SftpRepository(config_factory(repository=sshd.repository(node_dir)).repository)
    async with opened(r):
        made = spy_write_behind(r, monkeypatch)
        small = slot()
        await r.store(small, stream(b"x" * MiB), MiB)
        assert made == []

        data = os.urandom(2 * FLUSH_STEP + 3 * MiB)
        path = slot()
        await r.store(path, stream(data, MiB), len(data))
        [wb] = made
        assert wb.flushed >= FLUSH_STEP  # at least one early fsync went through
        assert (node_dir / path).read_bytes() == data
        name = path.rsplit("/", 1)[1]
        async with asyncio.timeout(10):
            while True:
                if not open_in_server(sshd, name):
                    break
                await asyncio.sleep(0.05)  # polling the server's open files until closed


async def test_server_refusing_a_second_session_stores_without_write_behind(
    tmp_path: Path, config_factory: ConfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``MaxSessions 1``: no write-behind session, and large uploads still publish."""
    with configured_sshd(tmp_path / "sshd", "MaxSessions 1\n") as server:
        node = server.store / "node_1"
        r = SftpRepository(config_factory(repository=server.repository(node)).repository)
        async with opened(r):
            assert r._flusher is None
            made = spy_write_behind(r, monkeypatch)
            data = os.urandom(2 * FLUSH_STEP + 1)
            path = slot()
            await r.store(path, stream(data, MiB), len(data))
            assert made == []
            assert (node / path).read_bytes() == data


async def test_sshd_killed_during_write_behind_leaves_no_file(
    sshd_factory: Callable[[], SshServer],
    config_factory: ConfigFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """sshd dies mid-upload after an early fsync: 503 with the failure logged, nothing
    published, and after the restart no part file or directory of it remains."""
    server = sshd_factory()
    node = server.store / "node_1"
    r = SftpRepository(
        config_factory(repository=server.repository(node, connect_timeout=3.0)).repository
    )
    async with opened(r):
        made = spy_write_behind(r, monkeypatch)
        body = PausingBody(half_mib=FLUSH_STEP // MiB + 4)
        path = slot()
        task = asyncio.create_task(r.store(path, aiter(body), body.size))
        async with asyncio.timeout(30):
            await body.half.wait()
            [wb] = made
            while True:
                if wb.flushed:
                    break
                await asyncio.sleep(0.05)  # polling until the early fsync has gone through
        caplog.set_level(logging.ERROR, logger="httpd.repository")
        server.kill()
        body.resume.set()
        with pytest.raises(StorageUnavailable):
            async with asyncio.timeout(20):
                await task
        assert any(path in rec.getMessage() for rec in caplog.records)
        assert not (node / path).exists()
        server.start()
        async with asyncio.timeout(20):
            assert [f.path async for f in r.walk()] == []
        assert sorted(p.name for p in node.rglob("*") if p.is_file()) == []


async def test_receive_hashes_every_byte_beside_the_writes(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """receive() (the PUT path) feeds the SHA-256 with every byte in order, in batches
    off the event loop, and stores the same bytes; the budget is whole again after."""
    r = SftpRepository(config_factory(repository=sshd.repository(node_dir)).repository)
    async with opened(r):
        for size in (0, 1, r._write_len, 7 * r._write_len + 3):
            data = os.urandom(size)
            sha = hashlib.sha256()
            path = slot()
            await r.receive(path, ChunkBody(stream(data, 100_003), size), size, sha)
            assert sha.hexdigest() == hashlib.sha256(data).hexdigest()
            assert (node_dir / path).read_bytes() == data
            assert r.budget.in_use == 0


class ThreadRecordingSha:
    """A SHA-256 that notes which thread fed it, and fails at its ``fail_at``-th update."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.sha = hashlib.sha256()
        self.threads: set[int] = set()
        self.updates = 0
        self._fail_at = fail_at

    def update(self, data: memoryview, /) -> None:
        self.updates += 1
        if self.updates == self._fail_at:
            raise ValueError("hash failed")
        self.threads.add(threading.get_ident())
        self.sha.update(data)


@pytest.mark.parametrize("on_loop", [True, False], ids=["on-loop", "in-a-thread"])
async def test_receive_hashes_on_the_loop_or_in_a_thread_as_asked(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory, on_loop: bool
) -> None:
    """hash_on_loop (a pinned worker): every block is hashed on the event loop's own
    thread; otherwise never there. Both give the same digest and the same stored bytes."""
    cfg = config_factory(repository=sshd.repository(node_dir)).repository
    r = SftpRepository(cfg, hash_on_loop=on_loop)
    async with opened(r):
        size = 9 * r._write_len + 17
        data = os.urandom(size)
        sha = ThreadRecordingSha()
        path = slot()
        await r.receive(path, ChunkBody(stream(data, 65_536), size), size, sha)
        assert sha.sha.hexdigest() == hashlib.sha256(data).hexdigest()
        assert sha.updates == 10
        loop_thread = threading.get_ident()
        assert (sha.threads == {loop_thread}) is on_loop
        assert (loop_thread in sha.threads) is on_loop
        assert (node_dir / path).read_bytes() == data
        assert r.budget.in_use == 0


@pytest.mark.parametrize("on_loop", [True, False], ids=["on-loop", "in-a-thread"])
async def test_a_failing_hash_publishes_nothing(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory, on_loop: bool
) -> None:
    """The hash raising half way: the upload fails with it, no file and no part file are
    left, and every block's budget is paid back, wherever the hash ran."""
    cfg = config_factory(repository=sshd.repository(node_dir)).repository
    r = SftpRepository(cfg, hash_on_loop=on_loop)
    async with opened(r):
        size = 6 * r._write_len
        path = slot()
        with pytest.raises(ValueError, match="hash failed"):
            body = ChunkBody(stream(os.urandom(size), 100_003), size)
            await r.receive(path, body, size, ThreadRecordingSha(fail_at=3))
        assert [f.path async for f in r.walk()] == []
        assert r.budget.in_use == 0
        # The connection is still good for the next upload.
        data = os.urandom(r._write_len + 1)
        await r.receive(path, ChunkBody(stream(data), len(data)), len(data), hashlib.sha256())
        assert (node_dir / path).read_bytes() == data


async def test_receive_of_a_short_body_publishes_nothing(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """A body that ends before its size: SizeMismatch, no file, no part file, budget free."""
    r = SftpRepository(config_factory(repository=sshd.repository(node_dir)).repository)
    async with opened(r):
        size = 5 * r._write_len
        path = slot()
        with pytest.raises(SizeMismatch):
            body = ChunkBody(stream(os.urandom(size - 1)), size)
            await r.receive(path, body, size, hashlib.sha256())
        assert [f.path async for f in r.walk()] == []
        assert r.budget.in_use == 0
