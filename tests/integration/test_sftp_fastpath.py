"""The asyncssh fast path (httpd/repository/sftp_fastpath.py) against a real sshd: the
bytes that arrive, rekeying in the middle of a transfer, other ciphers, tampering."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest

from httpd.repository import sftp_fastpath
from httpd.repository.sftp import SftpRepository
from tests.fixtures.config import ConfigFactory
from tests.fixtures.sshd import SshServer
from tests.integration.bodies import MiB, stream

pytestmark = pytest.mark.integration


async def connect(sshd: SshServer, **options: object) -> asyncssh.SSHClientConnection:
    """A client connection to ``sshd`` with the fast path installed."""
    conn = await asyncssh.connect(
        "127.0.0.1",
        sshd.port,
        username=sshd.user,
        client_keys=[str(sshd.client_key)],
        known_hosts=None,
        config=[],
        agent_path=None,
        **options,  # type: ignore[arg-type]
    )
    assert sftp_fastpath.install(conn)
    return conn


@pytest.fixture
async def repo(
    sshd: SshServer, node_dir: Path, config_factory: ConfigFactory
) -> AsyncIterator[SftpRepository]:
    r = SftpRepository(config_factory(repository=sshd.repository(node_dir)).repository)
    await r.open()
    try:
        yield r
    finally:
        await r.close()


def test_pinned_version_is_the_installed_one() -> None:
    assert sftp_fastpath.PINNED_ASYNCSSH == asyncssh.__version__
    assert sftp_fastpath.ENABLED


async def test_the_repository_takes_the_fast_path(repo: SftpRepository, node_dir: Path) -> None:
    """Our connection and channel are the fast ones, with AES-GCM; odd sizes (not whole
    packets, blocks or pad lengths) arrive intact both ways."""
    assert type(repo._conn) is sftp_fastpath._FastConnection
    assert repo._conn.get_extra_info("send_cipher") == "aes128-gcm@openssh.com"
    assert repo._sftp is not None
    chan = repo._sftp._handler._writer.channel  # type: ignore[union-attr]
    assert type(chan) is sftp_fastpath._FastChannel
    seq = repo._conn._send_seq
    for size in (0, 1, 32 * 1024 - 7, 3 * MiB + 12345):
        data = os.urandom(size)
        path = f"files/im/20260101/10/fast-{size}"
        await repo.store(path, stream(data, 100_000), size)
        assert (node_dir / path).read_bytes() == data
        got = b"".join([block async for block in repo.read(path)])
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    # One packet per 32 KiB window slice, no IGNORE packet before each (asyncssh's own
    # send_packet sends two per data packet).
    assert repo._conn._send_seq - seq < 2 * (3 * MiB) // (32 * 1024)


async def test_a_rekey_in_the_middle_of_transfers(sshd: SshServer, tmp_path: Path) -> None:
    """With a rekey every 256 KiB, writes and reads cross several key exchanges (the fast
    path steps aside while one runs and picks up the new keys)."""
    conn = await connect(sshd, rekey_bytes=256 * 1024)
    try:
        sftp = await conn.start_sftp_client()
        assert sftp_fastpath.install_sftp(sftp)
        before, before_recv = conn._send_encryption, conn._recv_encryption
        local = sshd.store / f"rekey-{os.getpid()}"
        remote = str(local)
        data = os.urandom(2 * MiB + 333)
        async with sftp.open(remote, "wb", block_size=0) as f:
            for at in range(0, len(data), 100_000):
                await sftp_fastpath.write(f, memoryview(data)[at : at + 100_000], at)
        # New keys were taken both ways.
        assert conn._send_encryption is not before
        assert conn._recv_encryption is not before_recv
        assert local.read_bytes() == data
        async with sftp.open(remote, "rb", block_size=0) as f:
            got = b"".join([await f.read(100_000, at) for at in range(0, len(data), 100_000)])
        assert got == data
        local.unlink()
    finally:
        conn.close()
        await conn.wait_closed()


async def test_queued_writes_cross_rekeys_intact(sshd: SshServer) -> None:
    """Many writes in flight at once, queued as views of their blocks, while a rekey
    every 256 KiB makes the fast flush hand the queue to asyncssh's own (which gets
    bytearrays): every byte lands where it belongs, and the blocks are left as they were."""
    conn = await connect(sshd, rekey_bytes=256 * 1024)
    try:
        sftp = await conn.start_sftp_client()
        assert sftp_fastpath.install_sftp(sftp)
        before = conn._send_encryption
        local = sshd.store / f"queued-{os.getpid()}"
        data = os.urandom(4 * MiB + 4321)
        blocks = [bytearray(data[at : at + 100_003]) for at in range(0, len(data), 100_003)]
        async with sftp.open(str(local), "wb", block_size=0) as f:
            await asyncio.gather(
                *(
                    sftp_fastpath.write(f, memoryview(block), i * 100_003)
                    for i, block in enumerate(blocks)
                )
            )
        assert conn._send_encryption is not before
        assert local.read_bytes() == data
        assert b"".join(blocks) == data
        local.unlink()
    finally:
        conn.close()
        await conn.wait_closed()


async def test_write_without_the_fast_channel(sshd: SshServer) -> None:
    """write() on a channel that kept asyncssh's own flush (install_sftp not applied)
    queues one bytearray, as that flush needs."""
    conn = await connect(sshd)
    try:
        sftp = await conn.start_sftp_client()
        chan = sftp._handler._writer.channel  # type: ignore[union-attr]
        assert type(chan) is not sftp_fastpath._FastChannel
        local = sshd.store / f"plain-{os.getpid()}"
        data = os.urandom(MiB + 77)
        async with sftp.open(str(local), "wb", block_size=0) as f:
            await asyncio.gather(
                *(
                    sftp_fastpath.write(f, memoryview(data)[at : at + 65_536], at)
                    for at in range(0, len(data), 65_536)
                )
            )
        assert local.read_bytes() == data
        local.unlink()
    finally:
        conn.close()
        await conn.wait_closed()


async def test_another_cipher_goes_asyncsshs_way(sshd: SshServer) -> None:
    """Under AES-CTR (no AEAD) every packet is asyncssh's own, and still arrives."""
    conn = await connect(sshd, encryption_algs=["aes128-ctr"])
    try:
        assert conn.get_extra_info("send_cipher") == "aes128-ctr"
        assert isinstance(conn, sftp_fastpath._FastConnection)
        assert conn.mft_cipher() is None
        sftp = await conn.start_sftp_client()
        sftp_fastpath.install_sftp(sftp)
        local = sshd.store / f"ctr-{os.getpid()}"
        remote = str(local)
        data = os.urandom(MiB + 5)
        async with sftp.open(remote, "wb", block_size=0) as f:
            for at in range(0, len(data), 100_000):
                await sftp_fastpath.write(f, data[at : at + 100_000], at)
        assert local.read_bytes() == data
        async with sftp.open(remote, "rb") as f:
            assert await f.read() == data
        local.unlink()
    finally:
        conn.close()
        await conn.wait_closed()


async def test_a_tampered_packet_ends_the_connection(sshd: SshServer) -> None:
    """A packet that does not verify under AES-GCM is a MAC error: the connection is
    closed, nothing is delivered."""
    conn = await connect(sshd)
    sftp = await conn.start_sftp_client()
    assert sftp_fastpath.install_sftp(sftp)
    pktlen = 48
    conn.data_received(pktlen.to_bytes(4, "big") + os.urandom(pktlen + 16))
    await conn.wait_closed()
    with pytest.raises((asyncssh.SFTPError, OSError, asyncssh.Error)):
        await sftp.stat("/")
