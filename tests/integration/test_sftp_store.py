"""SftpRepository against a real OpenSSH sshd: publish rules, ranges, keys, outages."""

from __future__ import annotations

import asyncio
import hashlib
import os
import posixpath
import secrets
import shutil
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncssh
import pytest

from component.config import Config
from component.errors import (
    AlreadyUploaded,
    AuthRefused,
    ConfigError,
    FileServerUnreachable,
    HostKeyMismatch,
    HostKeyNotPinned,
    HostKeyTypeMissing,
    NodeKeyUnusable,
    NotFound,
    PathNotWritable,
    SizeMismatch,
    StorageUnavailable,
)
from httpd.repository.sftp import SftpRepository
from httpd.repository.sshkeys import fingerprint, public_line
from tests.fixtures.config import ConfigFactory
from tests.fixtures.sshd import SshServer
from tests.integration.bodies import MiB, PausingBody, stream

pytestmark = pytest.mark.integration


def slot(name: str | None = None, hour: str = "10") -> str:
    """A repository path shaped like SlotPath.repo_path."""
    return f"files/im/20260101/{hour}/{name or secrets.token_urlsafe(18)}"


def repo_for(cfg: Config) -> SftpRepository:
    return SftpRepository(cfg.repository)


@pytest.fixture
async def repo(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> AsyncIterator[SftpRepository]:
    """An open repository on the session sshd, in a fresh node directory."""
    r = repo_for(config_factory(repository=sshd.repository(node_dir)))
    await r.open()
    try:
        yield r
    finally:
        await r.close()


async def listing(r: SftpRepository) -> list[str]:
    return sorted([f.path async for f in r.walk()])


async def read_all(
    r: SftpRepository, path: str, offset: int = 0, length: int | None = None
) -> bytes:
    return b"".join([b async for b in r.read(path, offset, length)])


async def test_store_read_walk_delete_round_trip(repo: SftpRepository, node_dir: Path) -> None:
    """Bytes come back identical; the file sits in the seed's layout; delete and prune work."""
    data = os.urandom(3 * MiB + 12_345)
    path = slot()
    await repo.store(path, stream(data), len(data))
    assert (node_dir / path).read_bytes() == data
    assert await repo.size(path) == len(data)
    assert await read_all(repo, path) == data
    [found] = [f async for f in repo.walk()]
    assert (found.path, found.size) == (path, len(data))
    assert repo.file_server == "127.0.0.1"
    await repo.delete(path)
    await repo.delete(path)  # already gone: no error
    assert await listing(repo) == []
    assert await repo.remove_empty_dirs() == 3  # im, 20260101 and 10 below files
    assert os.listdir(node_dir) == ["files"]


async def test_empty_and_exact_block_sizes(repo: SftpRepository) -> None:
    """Zero bytes and sizes on block boundaries are stored exactly."""
    block = repo._write_len
    for size in (0, 1, block, 2 * block, 16 * block + 1):
        data = os.urandom(size)
        path = slot()
        await repo.store(path, stream(data, block), size)
        assert await read_all(repo, path) == data


async def test_second_store_never_overwrites(repo: SftpRepository) -> None:
    """A second upload to the same path is AlreadyUploaded and the first stays."""
    path = slot()
    await repo.store(path, stream(b"first"), 5)
    with pytest.raises(AlreadyUploaded):
        await repo.store(path, stream(b"other"), 5)
    assert await read_all(repo, path) == b"first"
    assert await listing(repo) == [path]


async def test_concurrent_stores_to_one_slot_publish_one(repo: SftpRepository) -> None:
    """Two racing uploads: one publishes, the other gets AlreadyUploaded, no part file left."""
    path = slot()
    a, b = os.urandom(2 * MiB), os.urandom(2 * MiB)
    results = await asyncio.gather(
        repo.store(path, stream(a), len(a)),
        repo.store(path, stream(b), len(b)),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1
    assert sum(isinstance(r, AlreadyUploaded) for r in results) == 1
    assert await read_all(repo, path) in (a, b)
    assert await listing(repo) == [path]


def dirs_below(top: Path) -> list[str]:
    """Every directory below ``top``, relative and sorted (what a failure may leave)."""
    return sorted(str(d.relative_to(top)) for d in top.rglob("*") if d.is_dir())


@pytest.mark.parametrize(("sent", "declared"), [(1000, 999), (999, 1000), (0, 1)])
async def test_wrong_size_leaves_nothing(
    repo: SftpRepository, node_dir: Path, sent: int, declared: int
) -> None:
    """More or fewer bytes than declared: SizeMismatch, no file, no part, no fresh directory."""
    with pytest.raises(SizeMismatch) as info:
        await repo.store(slot(), stream(os.urandom(sent), 100), declared)
    assert info.value.larger is (sent > declared)
    assert await listing(repo) == []
    assert dirs_below(node_dir) == ["files"]  # no files/im/<date>/<hour> for nothing


async def test_failure_beside_a_success_keeps_the_hour(
    repo: SftpRepository, node_dir: Path
) -> None:
    """A store failing while another publishes in the same new hour (either one making the
    directory) keeps the directory and the good file; nothing else is left."""
    good: list[str] = []
    for hour, failing_first in (("12", True), ("13", False)):
        first, second = PausingBody(half_mib=1), PausingBody(half_mib=1)
        bad_path, good_path = slot(hour=hour), slot(hour=hour)
        if failing_first:  # the failing store makes the hour, then fails after the good one
            bad = asyncio.create_task(repo.store(bad_path, aiter(first), first.size + 1))
            async with asyncio.timeout(10):
                await first.half.wait()
                await repo.store(good_path, stream(b"good"), 4)
            first.resume.set()
            with pytest.raises(SizeMismatch):
                await bad
        else:  # the good store makes the hour; the failure comes while its part is there
            task = asyncio.create_task(repo.store(good_path, aiter(second), second.size))
            async with asyncio.timeout(10):
                await second.half.wait()
            with pytest.raises(SizeMismatch):
                await repo.store(bad_path, stream(b"bad"), 4)
            second.resume.set()
            async with asyncio.timeout(10):
                await task
        good.append(good_path)
        assert os.listdir(node_dir / posixpath.dirname(good_path)) == [
            posixpath.basename(good_path)
        ]
    assert await listing(repo) == sorted(good)


async def test_concurrent_failures_clear_a_new_hour(repo: SftpRepository, node_dir: Path) -> None:
    """Many stores racing in one new hour: the good ones publish (directories removed under
    a racing store are made again); when all fail, no directory is left for the hour."""

    async def store(path: str, fail: bool) -> bool:
        try:
            await repo.store(path, stream(b"0123456789", 3), 10 + fail)
        except SizeMismatch:
            return False
        return True

    paths = [slot(hour="14") for _ in range(20)]
    outcomes = await asyncio.gather(*(store(p, i % 2 == 1) for i, p in enumerate(paths)))
    assert outcomes == [i % 2 == 0 for i in range(20)]
    assert await listing(repo) == sorted(paths[::2])
    assert not any(await asyncio.gather(*(store(slot(hour="15"), True) for _ in range(10))))
    assert not any(await asyncio.gather(*(store(slot("x", f"{h:02}"), True) for h in range(8))))
    assert dirs_below(node_dir) == [
        "files",
        "files/im",
        "files/im/20260101",
        "files/im/20260101/14",
    ]


async def test_cancelled_store_removes_part(repo: SftpRepository, node_dir: Path) -> None:
    """A PUT cancelled mid-body (client went away) leaves nothing behind, no directory either."""
    started = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield os.urandom(MiB)
        started.set()
        await asyncio.Event().wait()  # a client that stopped sending
        yield b""

    task = asyncio.create_task(repo.store(slot(), stalls(), 10 * MiB))
    async with asyncio.timeout(10):
        await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await listing(repo) == []
    assert dirs_below(node_dir) == ["files"]


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, None), (0, 1), (1, 10), (261_119, 2), (261_120, 261_120), (700_000, None), (0, 10**9)],
)
async def test_range_reads(repo: SftpRepository, offset: int, length: int | None) -> None:
    """Byte ranges, across block boundaries and past the end, match the slice."""
    data = os.urandom(MiB + 17)
    path = slot()
    await repo.store(path, stream(data), len(data))
    end = None if length is None else offset + length
    assert await read_all(repo, path, offset, length) == data[offset:end]


async def test_range_beyond_end_is_empty(repo: SftpRepository) -> None:
    """An offset past the end yields no bytes (the HTTP layer answers 416 before)."""
    path = slot()
    await repo.store(path, stream(b"abc"), 3)
    assert await read_all(repo, path, 10) == b""


async def test_missing_file_is_not_found(repo: SftpRepository) -> None:
    """read and size of an unknown path raise NotFound; path tricks too."""
    with pytest.raises(NotFound):
        await repo.size(slot())
    with pytest.raises(NotFound):
        await read_all(repo, slot())
    for bad in ("../etc/passwd", "/etc/passwd", "files/../../x"):
        with pytest.raises(NotFound):
            await repo.size(bad)


async def test_disk_usage_from_statvfs(repo: SftpRepository) -> None:
    """statvfs@openssh.com reports the file system of the node directory."""
    usage = await repo.disk_usage()
    local = os.statvfs(repo._root)
    assert usage.total == local.f_blocks * local.f_frsize
    assert 0 < usage.free <= usage.total


async def test_directories_made_on_first_use_after_prune(repo: SftpRepository) -> None:
    """A store after remove_empty_dirs pruned its hour directory recreates it."""
    first = slot(hour="11")
    await repo.store(first, stream(b"x"), 1)
    await repo.delete(first)
    assert await repo.remove_empty_dirs() >= 1
    second = slot(hour="11")
    await repo.store(second, stream(b"y"), 1)
    assert await listing(repo) == [second]


async def test_node_directory_removed_under_us_is_unavailable(
    repo: SftpRepository, node_dir: Path
) -> None:
    """The node directory vanished after open(): a PUT gets 503, not 404."""
    shutil.rmtree(node_dir)
    with pytest.raises(StorageUnavailable):
        await repo.store(slot(), stream(b"x"), 1)
    os.mkdir(node_dir)


async def test_open_creates_the_node_directory(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """A node directory that does not exist yet is made by open()."""
    target = node_dir / "new" / "node_9"
    r = repo_for(config_factory(repository=sshd.repository(target)))
    await r.open()
    await r.close()
    assert target.is_dir() and list(target.iterdir()) == []


# -------------------------------------------------------------- keys and start-up


def log_since(server: SshServer, mark: int) -> str:
    return (server.dir / "sshd.log").read_bytes()[mark:].decode(errors="replace")


async def test_wrong_host_key_is_refused_before_auth(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """Another pinned key: MITM warning with both fingerprints; nothing sent or written."""
    impostor = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    pinned = f"[127.0.0.1]:{sshd.port} {public_line(impostor)}"
    target = node_dir / "node_1"
    mark = (sshd.dir / "sshd.log").stat().st_size
    r = repo_for(config_factory(repository=sshd.repository(target, host_key=pinned)))
    with pytest.raises(HostKeyMismatch) as info:
        await r.open()
    text = str(info.value)
    served = asyncssh.read_public_key(f"{sshd.host_key}.pub")
    assert "MAN-IN-THE-MIDDLE" in text
    assert fingerprint(served) in text and fingerprint(impostor) in text
    assert not target.exists()
    log = log_since(sshd, mark)
    assert "publickey" not in log and "Accepted" not in log  # no authentication attempt


async def test_pinned_key_type_the_server_lacks_is_named(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """An ed25519 line pinned for an RSA-only sshd: the reason names both types and keyscan."""
    other = asyncssh.generate_private_key("ssh-ed25519")
    pinned = f"[127.0.0.1]:{sshd.port} {public_line(other)}"
    target = node_dir / "node_1"
    r = repo_for(config_factory(repository=sshd.repository(target, host_key=pinned)))
    with pytest.raises(HostKeyTypeMissing) as info:
        await r.open()
    text = str(info.value)
    assert f"file server 127.0.0.1:{sshd.port} offers no ed25519 host key (it has rsa)" in text
    assert "the pinned [repository] host_key is ed25519" in text
    assert f"'mft keyscan 127.0.0.1 -p {sshd.port}' and pin a key it has" in text
    assert not target.exists()


async def test_host_key_for_another_host_is_refused(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """A host_key line for another host is a configuration error naming the URL's host."""
    line = sshd.host_key_line.replace("[127.0.0.1]", "[files.example.com]")
    with pytest.raises(ConfigError, match=r"not the url's host '\[127\.0\.0\.1\]"):
        config_factory(repository=sshd.repository(node_dir, host_key=line))


async def test_unknown_node_key_is_refused(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory, tmp_path: Path
) -> None:
    """A node key missing from authorized_keys: clear refusal naming its fingerprint."""
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    stranger.write_private_key(tmp_path / "stranger")
    r = repo_for(
        config_factory(repository=sshd.repository(node_dir, client_key=str(tmp_path / "stranger")))
    )
    with pytest.raises(AuthRefused, match="refused the node key") as info:
        await r.open()
    assert fingerprint(stranger) in str(info.value)
    assert os.listdir(node_dir) == []


async def test_unreachable_server_is_refused(
    sshd: SshServer, config_factory: ConfigFactory, tmp_path: Path
) -> None:
    """Nothing listening: open() names the host and port as unreachable."""
    from tests.fixtures.common import free_port

    port = free_port()
    section = sshd.repository(tmp_path / "n")
    section["url"] = section["url"].replace(f":{sshd.port}/", f":{port}/")
    section["host_key"] = sshd.host_key_line.replace(str(sshd.port), str(port))
    r = repo_for(config_factory(repository=section))
    with pytest.raises(FileServerUnreachable, match=f"127.0.0.1:{port} is unreachable"):
        await r.open()


async def test_unwritable_directory_is_refused(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """A node directory that cannot be made (a file is in the way) fails open()."""
    (node_dir / "plain-file").write_text("x")
    r = repo_for(config_factory(repository=sshd.repository(node_dir / "plain-file" / "node_1")))
    with pytest.raises(PathNotWritable, match="is not writable"):
        await r.open()


async def test_missing_client_key_is_refused(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory, tmp_path: Path
) -> None:
    """No node key yet: the message says to run mft keygen."""
    r = repo_for(
        config_factory(repository=sshd.repository(node_dir, client_key=str(tmp_path / "none")))
    )
    with pytest.raises(NodeKeyUnusable, match="mft keygen"):
        await r.open()


async def test_empty_host_key_is_refused_before_connecting(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """No pinned key: HostKeyNotPinned naming mft keyscan; sshd sees no connection."""
    mark = (sshd.dir / "sshd.log").stat().st_size
    r = repo_for(config_factory(repository=sshd.repository(node_dir, host_key="")))
    with pytest.raises(HostKeyNotPinned, match="mft keyscan"):
        await r.open()
    assert "Connection from" not in log_since(sshd, mark)


# -------------------------------------------------------------- outages


async def test_sshd_killed_mid_upload_then_recovers(
    sshd_factory: Callable[[], SshServer], config_factory: ConfigFactory
) -> None:
    """sshd dies mid-upload: StorageUnavailable, nothing published; once it is back, neither
    part file nor directory of that upload remains, and stores work."""
    server = sshd_factory()
    node = server.store / "node_1"
    r = repo_for(config_factory(repository=server.repository(node, connect_timeout=3.0)))
    await r.open()
    try:
        body = PausingBody()
        path = slot()
        task = asyncio.create_task(r.store(path, aiter(body), body.size))
        async with asyncio.timeout(20):
            await body.half.wait()
        server.kill()
        body.resume.set()
        with pytest.raises(StorageUnavailable):
            async with asyncio.timeout(20):
                await task
        assert not (node / path).exists()

        # While it is down, requests wait at most connect_timeout, then 503.
        with pytest.raises(StorageUnavailable):
            async with asyncio.timeout(10):
                await r.size(path)

        server.start()
        # The first request after the restart waits (bounded) for the new session, which
        # has cleaned up first: the killed upload's part file and the hour made for it.
        async with asyncio.timeout(20):
            assert await listing(r) == []
        assert dirs_below(node) == ["files"]
        again = slot()
        async with asyncio.timeout(20):
            await r.store(again, stream(b"after the outage"), 16)
        assert (node / again).read_bytes() == b"after the outage"
        assert await listing(r) == [again]
    finally:
        await r.close()


async def test_hung_server_times_out_and_reconnects(
    sshd_factory: Callable[[], SshServer], config_factory: ConfigFactory
) -> None:
    """A file server that stops answering: io_timeout gives 503, then a fresh session works."""
    server = sshd_factory()
    node = server.store / "node_1"
    section = server.repository(node, connect_timeout=2.0, io_timeout=1.0)
    r = repo_for(config_factory(repository=section))
    await r.open()
    try:
        path = slot()
        await r.store(path, stream(b"kept"), 4)
        server.signal_all(signal.SIGSTOP)
        try:
            with pytest.raises(StorageUnavailable):
                async with asyncio.timeout(10):
                    await r.size(path)
        finally:
            server.signal_all(signal.SIGCONT)
        async with asyncio.timeout(20):
            assert await read_all(r, path) == b"kept"
    finally:
        await r.close()


async def test_closed_repository_refuses_quickly(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> None:
    """After close(), requests fail with StorageUnavailable instead of hanging."""
    r = repo_for(config_factory(repository=sshd.repository(node_dir)))
    await r.open()
    await r.close()
    with pytest.raises(StorageUnavailable):
        async with asyncio.timeout(5):
            await r.size(slot())


# -------------------------------------------------------------- large files


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")  # pragma: no cover


async def test_large_file_constant_memory(repo: SftpRepository) -> None:
    """256 MiB up and down, generated on the fly: identical digest, RSS growth < 64 MiB."""
    size = 256 * MiB
    pattern = os.urandom(MiB + 7)  # odd period: every block differs from its neighbours
    path = slot()
    await repo.store(slot(), stream(b"warm-up"), 7)  # first-use allocations out of the way
    base = rss_bytes()
    peak = base
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        nonlocal peak
        left, i = size, 0
        while left:
            chunk = pattern[: min(len(pattern), left)]
            sent.update(chunk)
            left -= len(chunk)
            i += 1
            if i % 16 == 0:
                peak = max(peak, rss_bytes())
            yield chunk

    await repo.store(path, body(), size)
    got = hashlib.sha256()
    n = 0
    async for block in repo.read(path):
        got.update(block)
        n += 1
        if n % 64 == 0:
            peak = max(peak, rss_bytes())
    assert got.digest() == sent.digest()
    assert peak - base < 64 * MiB, f"RSS grew by {(peak - base) / MiB:.1f} MiB"
    await repo.delete(path)
