"""The ``sftp://`` repository: an SSH file server over one long-lived asyncssh connection.

One connection per node, pinned host key, node key only. When the connection drops,
a supervisor reconnects with backoff; requests arriving meanwhile wait at most
``[repository] connect_timeout`` and then fail with :class:`StorageUnavailable` (503).
Transfers are pipelined (FIELD-NOTES "SFTP speed"): fixed blocks of the server's
``max_write_len`` written at explicit offsets with :data:`IN_FLIGHT` requests
outstanding, ordered read-ahead of as many blocks for downloads. Memory stays
``IN_FLIGHT`` blocks per transfer whatever the file size.

Library errors are translated here: ``SFTPNoSuchFile`` becomes :class:`NotFound`,
every other ``asyncssh.Error``/``OSError``/timeout :class:`StorageUnavailable`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import posixpath
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any, TypeVar, cast

import asyncssh

from component.config import RepositoryConfig
from component.errors import (
    AlreadyUploaded,
    ConfigError,
    NotFound,
    SizeMismatch,
    StorageUnavailable,
)
from httpd.repository.base import DiskUsage, FreshDirs, StoredFile, part_name, store_dirs
from httpd.repository.sshkeys import (
    HostKeyLine,
    fingerprint,
    key_type,
    load_client_key,
    offered_key_types,
    pinned_host_key,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Requests in flight per transfer: 16 reach full speed here; more only add memory.
IN_FLIGHT = 16
# OpenSSH announces 261,120 (limits@openssh.com); 262,144 kills the session because
# the 256 KiB packet limit includes the headers. Used when the server has no limits.
FALLBACK_BLOCK = 255 * 1024
# aes128-gcm costs 1.5-1.9x less CPU than chacha20, which asyncssh would try first.
ENCRYPTION_ALGS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
RECONNECT_FIRST_DELAY = 0.5
RECONNECT_MAX_DELAY = 30.0
# A request for the connection may cut a backoff short, but not more often than this.
RECONNECT_MIN_GAP = 0.5
KEEPALIVE_INTERVAL = 15.0


class _PinnedHostClient(asyncssh.SSHClient):
    """Records the key a server presents when it is not the pinned one (to name it)."""

    def __init__(self, presented: list[asyncssh.SSHKey]) -> None:
        self._presented = presented

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        """Called by asyncssh only for a key that is not pinned: refuse it."""
        self._presented.append(key)
        return False


class SftpRepository:
    """A node directory on an SSH file server (``sftp://user@host:port/path``)."""

    def __init__(self, repo_cfg: RepositoryConfig) -> None:
        self._cfg = repo_cfg
        self._root = repo_cfg.path
        self._where = f"{repo_cfg.username}@{repo_cfg.host}:{repo_cfg.port}"
        self._pinned: HostKeyLine | None = None
        self._client_key: asyncssh.SSHKey | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # Failed stores whose part file (and fresh directories) are still to remove,
        # part file -> slot path: at once, or once reconnected.
        self._orphans: dict[str, str] = {}
        self._fresh = FreshDirs()
        self._last_error = "not connected"
        self._write_len = FALLBACK_BLOCK
        self._read_len = FALLBACK_BLOCK

    # ------------------------------------------------------------------ connection

    @property
    def file_server(self) -> str:
        """The file server's host, AFT_LOG's FILE_SERVER."""
        return self._cfg.host

    @property
    def connected(self) -> bool:
        """Whether a session is up right now."""
        return self._sftp is not None and self._conn is not None and not self._conn.is_closed()

    async def open(self) -> None:
        """Connect, verify the pinned host key, authenticate, and probe the node directory.

        :raises StorageUnavailable: naming the reason: bad ``host_key`` line, missing node
            key, file server unreachable, host key mismatch (man-in-the-middle warning
            with both fingerprints), authentication refused, or directory not writable.
        """
        try:
            self._pinned = pinned_host_key(self._cfg)
            self._client_key = load_client_key(self._cfg.client_key)
        except ConfigError as exc:
            raise StorageUnavailable(str(exc)) from exc
        self._closing = False
        conn, sftp = await self._connect()
        try:
            await self._probe(sftp)
        except BaseException:
            conn.abort()
            await conn.wait_closed()
            raise
        self._install(conn, sftp)
        self._supervisor = asyncio.create_task(self._supervise(), name="sftp-supervisor")
        log.info("repository sftp://%s%s open", self._where, self._root)

    async def close(self) -> None:
        """Stop reconnecting, finish clean-ups in progress, and close the connection."""
        self._closing = True
        self._wake.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self._cfg.io_timeout)
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        conn, self._conn, self._sftp = self._conn, None, None
        self._ready.clear()
        if conn is not None:
            conn.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._cfg.connect_timeout):
                    await conn.wait_closed()

    async def _connect(self) -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
        """One SSH connection plus its SFTP session.

        :raises StorageUnavailable: with the reason, for logs and start-up messages.
        """
        assert self._pinned is not None and self._client_key is not None
        cfg = self._cfg
        presented: list[asyncssh.SSHKey] = []
        pinned = self._pinned.key
        handshake = True  # until the session is authenticated
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                conn = await asyncssh.connect(
                    cfg.host,
                    cfg.port,
                    username=cfg.username,
                    client_factory=lambda: _PinnedHostClient(presented),
                    # Only the pinned key is trusted; asyncssh then asks the server for
                    # that key type and checks it during key exchange, before any
                    # authentication is attempted.
                    known_hosts=([pinned], [], []),
                    server_host_key_algs=[a.decode() for a in pinned.sig_algorithms],
                    x509_trusted_certs=None,
                    client_keys=[self._client_key],
                    preferred_auth=["publickey"],
                    agent_path=None,
                    password=None,
                    config=[],
                    encryption_algs=list(ENCRYPTION_ALGS),
                    compression_algs=None,
                    keepalive_interval=KEEPALIVE_INTERVAL,
                    keepalive_count_max=3,
                )
                handshake = False
                try:
                    sftp = await conn.start_sftp_client()
                except BaseException:
                    conn.abort()
                    raise
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            reason = self._failure(exc, presented)
            if handshake and isinstance(
                exc, (asyncssh.KeyExchangeFailed, asyncssh.ConnectionLost, ConnectionResetError)
            ):
                # OpenSSH hangs up when it has no host key of the asked type; depending on
                # timing that shows as a reset, a lost connection or a failed key exchange.
                reason = await self._missing_key_type() or reason
            raise StorageUnavailable(reason) from exc
        return conn, sftp

    def _failure(self, exc: BaseException, presented: list[asyncssh.SSHKey]) -> str:
        """The reason a connection attempt failed, in words for an administrator."""
        assert self._pinned is not None and self._client_key is not None
        cfg, pinned = self._cfg, self._pinned.key
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            seen = fingerprint(presented[-1]) if presented else "(a certificate or unknown key)"
            return (
                f"WARNING: POSSIBLE MAN-IN-THE-MIDDLE ATTACK: the file server {cfg.host}:"
                f"{cfg.port} presented host key {seen}, but the pinned [repository] host_key "
                f"is {fingerprint(pinned)}; refusing to connect (no credentials or data were "
                f"sent). If the server's key was changed on purpose, pin the line printed by "
                f"'mft keyscan {cfg.host} -p {cfg.port}'"
            )
        if isinstance(exc, asyncssh.PermissionDenied):
            return (
                f"file server {self._where} refused the node key "
                f"{fingerprint(self._client_key)} ({cfg.client_key}): add the line printed "
                f"by 'mft keygen --show' to the user's ~/.ssh/authorized_keys"
            )
        if isinstance(exc, asyncssh.KeyExchangeFailed):
            return (
                f"SSH key exchange with {cfg.host}:{cfg.port} failed: {exc.reason} (does the "
                f"server have a {key_type(pinned)} host key, as pinned?)"
            )
        if isinstance(exc, asyncssh.Error):
            return f"SSH session with {self._where} failed: {exc.reason}"
        if isinstance(exc, TimeoutError):
            return (
                f"file server {cfg.host}:{cfg.port} did not answer within {cfg.connect_timeout:g}s"
            )
        assert isinstance(exc, OSError)
        return f"file server {cfg.host}:{cfg.port} is unreachable: {exc.strerror or exc}"

    async def _missing_key_type(self) -> str | None:
        """The reason a handshake was dropped if the server has no host key of the pinned
        type (asked with ``mft keyscan``'s probes), else ``None``."""
        assert self._pinned is not None
        cfg = self._cfg
        pinned = key_type(self._pinned.key)
        offered = await offered_key_types(cfg.host, cfg.port, cfg.connect_timeout)
        if not offered or pinned in offered:
            return None  # not the reason, or the server is going away: say what we saw
        return (
            f"the file server {cfg.host}:{cfg.port} offers no {pinned} host key (it has "
            f"{', '.join(offered)}); the pinned [repository] host_key is {pinned}: run "
            f"'mft keyscan {cfg.host} -p {cfg.port}' and pin a key it has"
        )

    def _install(self, conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient) -> None:
        limits = sftp.limits
        self._write_len = min(limits.max_write_len or FALLBACK_BLOCK, FALLBACK_BLOCK)
        self._read_len = min(limits.max_read_len or FALLBACK_BLOCK, FALLBACK_BLOCK)
        self._conn, self._sftp = conn, sftp
        self._last_error = ""
        self._ready.set()

    async def _probe(self, sftp: asyncssh.SFTPClient) -> None:
        """Create the node directory if needed, then write and delete a probe file."""
        probe = f"{self._root}/.probe-{secrets.token_hex(4)}"
        try:
            async with asyncio.timeout(self._cfg.io_timeout):
                await sftp.makedirs(self._root, exist_ok=True)
                async with sftp.open(probe, "xb") as f:
                    await f.write(b"ok")
                await sftp.remove(probe)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
            raise StorageUnavailable(
                f"node directory {self._root} on {self._where} is not writable: {reason}"
            ) from exc

    async def _supervise(self) -> None:
        """Watch the session; when it ends, reconnect with backoff until closed."""
        while not self._closing:
            sftp, conn = self._sftp, self._conn
            if sftp is not None and conn is not None:
                await sftp.wait_closed()
                conn.abort()  # the SFTP channel may die alone; start afresh either way
            self._ready.clear()
            self._conn = self._sftp = None
            if self._closing:
                return
            log.warning("lost the connection to the file server %s; reconnecting", self._where)
            delay = RECONNECT_FIRST_DELAY
            while not self._closing:
                attempted = time.monotonic()
                try:
                    conn, sftp = await self._connect()
                except StorageUnavailable as exc:
                    self._last_error = exc.text
                    log.error("file server %s: %s", self._where, exc.text)
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    gap = attempted + RECONNECT_MIN_GAP - time.monotonic()
                    if gap > 0:
                        await asyncio.sleep(gap)  # rate limit, not synchronisation
                    delay = min(delay * 2, RECONNECT_MAX_DELAY)
                    continue
                log.info("reconnected to the file server %s", self._where)
                try:
                    # Before requests use the session: whoever asks next sees no leftovers.
                    await self._remove_orphans(sftp)
                except BaseException:
                    conn.abort()  # closing: the session is not installed, so not closed
                    raise
                self._install(conn, sftp)
                break

    async def _client(self) -> asyncssh.SFTPClient:
        """The live SFTP session, waiting (bounded) while a reconnect is under way.

        :raises StorageUnavailable: not open, or no session within ``connect_timeout``.
        """
        if self._sftp is not None and self._conn is not None and not self._conn.is_closed():
            return self._sftp
        if self._supervisor is None or self._closing:
            raise StorageUnavailable()
        self._wake.set()
        try:
            async with asyncio.timeout(self._cfg.connect_timeout):
                while self._sftp is None or self._conn is None or self._conn.is_closed():
                    # A session that just dropped may still be marked ready: the
                    # supervisor sets _ready again once the new session is installed.
                    self._ready.clear()
                    await self._ready.wait()
        except TimeoutError:
            log.warning(
                "file server %s unavailable for %gs: %s",
                self._where,
                self._cfg.connect_timeout,
                self._last_error or "reconnecting",
            )
            raise StorageUnavailable() from None
        return self._sftp

    @contextlib.contextmanager
    def _errors(self, what: str, path: str) -> Iterator[None]:
        """Translate library errors at the boundary (and drop a wedged connection)."""
        try:
            yield
        except asyncssh.SFTPNoSuchFile as exc:
            raise NotFound() from exc
        except TimeoutError as exc:
            log.error("repository %s of %s: no answer within %gs", what, path, self._cfg.io_timeout)
            self._drop()  # a session that stopped answering is replaced
            raise StorageUnavailable() from exc
        except (asyncssh.Error, OSError, EOFError) as exc:
            log.error("repository %s of %s failed: %s", what, path, exc)
            raise StorageUnavailable() from exc

    def _drop(self) -> None:
        """Abandon the current session at once; the supervisor reconnects."""
        self._sftp = None
        self._ready.clear()
        if self._conn is not None:
            self._conn.abort()

    async def _timed(self, aw: Awaitable[T]) -> T:
        async with asyncio.timeout(self._cfg.io_timeout):
            return await aw

    async def _read_block(self, f: asyncssh.SFTPClientFile, n: int, offset: int) -> bytes:
        """One SFTP read request (the file was opened in binary mode)."""
        return cast(bytes, await self._timed(f.read(n, offset)))

    async def _write_block(self, f: asyncssh.SFTPClientFile, data: bytes, offset: int) -> None:
        """One SFTP write request; made inside the task, so a task cancelled before it ran
        leaves no never-awaited ``write`` coroutine behind."""
        await self._timed(f.write(data, offset))

    def _abs(self, path: str) -> str:
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise NotFound()  # only SlotPath-made paths get here; refuse anything else
        return f"{self._root}/{path}"

    # ------------------------------------------------------------------ store

    async def store(self, path: str, chunks: AsyncIterator[bytes], size: int) -> None:
        """Stream ``chunks`` into a ``.part`` file, check the size, rename into place.

        :raises AlreadyUploaded: ``path`` exists (before or after the bytes were written).
        :raises SizeMismatch: ``chunks`` gave more or fewer than ``size`` bytes.
        :raises StorageUnavailable: the file server failed or went away; the part file
            and the directories made for it are removed (at once, or after the reconnect).
        """
        final, part = self._abs(path), self._abs(part_name(path))
        sftp = await self._client()
        with self._errors("store", path):
            if await self._timed(sftp.exists(final)):
                raise AlreadyUploaded()
        try:
            with self._errors("store", path):
                f = await self._open_part(sftp, part, path)
            try:
                await self._write_blocks(f, chunks, size, path)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._timed(f.close())
                raise
            with self._errors("close", path):
                await self._timed(f.close())
            with self._errors("rename", path):
                try:
                    # SFTPv3 rename refuses an existing target on OpenSSH (link + unlink):
                    # a slot is never overwritten. Not posix-rename, which would replace.
                    await self._timed(sftp.rename(part, final))
                except asyncssh.SFTPFailure:
                    if await self._timed(sftp.exists(final)):
                        raise AlreadyUploaded() from None
                    raise
        except BaseException:
            task = asyncio.ensure_future(self._discard(part, path))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            # Shielded: a cancelled PUT still gets its part file removed.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(task)
            raise
        self._fresh.published(path)

    async def _open_part(
        self, sftp: asyncssh.SFTPClient, part: str, path: str
    ) -> asyncssh.SFTPClientFile:
        """Open ``part`` exclusively, making the directories of ``path`` on first use.

        A failed store beside this one may remove the (then empty) directories between
        ``mkdir`` and ``open``: the open then finds no directory, and we make them again.
        """
        for _attempt in range(3):
            try:
                # block_size=0: each write()/read() is exactly one SFTP request; the
                # pipelining is ours.
                return await self._timed(sftp.open(part, "xb", block_size=0))
            except asyncssh.SFTPNoSuchFile:
                await self._makedirs(sftp, store_dirs(path))
        raise asyncssh.SFTPFailure(f"cannot create {posixpath.dirname(part)}")

    async def _makedirs(self, sftp: asyncssh.SFTPClient, dirs: list[str]) -> None:
        """``mkdir -p`` of ``dirs`` (shallowest first, below the node directory), deepest
        first, so a new hour costs one request; records what it made in :class:`FreshDirs`.
        """
        if not dirs:
            raise asyncssh.SFTPFailure("the node directory is gone")
        i = len(dirs) - 1
        for _step in range(4 * len(dirs)):  # bounded, should a purge race us up and down
            if i == len(dirs):
                return
            try:
                await self._timed(sftp.mkdir(self._abs(dirs[i])))
                self._fresh.made([dirs[i]])
            except asyncssh.SFTPNoSuchFile as exc:
                if i == 0:
                    # The node directory itself is gone: a repository failure, not a 404.
                    raise asyncssh.SFTPFailure(f"cannot create directories: {exc.reason}") from exc
                i -= 1
                continue
            except (asyncssh.SFTPFailure, asyncssh.SFTPFileAlreadyExists):
                if not await self._timed(sftp.isdir(self._abs(dirs[i]))):
                    raise
            i += 1
        raise asyncssh.SFTPFailure(f"cannot create {dirs[-1]}")

    async def _write_blocks(
        self, f: asyncssh.SFTPClientFile, chunks: AsyncIterator[bytes], size: int, path: str
    ) -> None:
        """Re-block ``chunks`` and write them at explicit offsets, IN_FLIGHT at a time."""
        block = self._write_len
        pending: set[asyncio.Task[None]] = set()
        buf = bytearray()
        offset = received = 0

        async def submit(data: bytes) -> None:
            nonlocal offset
            while len(pending) >= IN_FLIGHT:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                reap(done)
            reap([t for t in pending if t.done()])
            pending.add(asyncio.ensure_future(self._write_block(f, data, offset)))
            offset += len(data)

        def reap(done: Any) -> None:
            for task in done:
                pending.discard(task)
                with self._errors("write", path):
                    task.result()

        try:
            async for chunk in chunks:
                received += len(chunk)
                if received > size:
                    raise SizeMismatch(size, received, larger=True)
                if not buf and len(chunk) == block:
                    await submit(chunk)
                    continue
                buf += chunk
                while len(buf) >= block:
                    with memoryview(buf) as view:
                        data = bytes(view[:block])
                    del buf[:block]
                    await submit(data)
            if received != size:
                raise SizeMismatch(size, received)
            if buf:
                await submit(bytes(buf))
            while pending:
                done, _ = await asyncio.wait(pending)
                reap(done)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                for task in pending:  # retrieve, so nothing is logged as unretrieved
                    if not task.cancelled():
                        task.exception()

    async def _discard(self, part: str, path: str) -> None:
        """Clean up after a failed store now, or remember it for after the reconnect."""
        self._orphans[part] = path
        if self._sftp is not None:
            await self._clean_up(self._sftp, part)

    async def _remove_orphans(self, sftp: asyncssh.SFTPClient) -> None:
        """Clean up after every remembered failed store, until the session fails."""
        tried: set[str] = set()
        # Stores failing meanwhile add orphans (no session is installed yet): take them too.
        while todo := [part for part in self._orphans if part not in tried]:
            for part in todo:
                tried.add(part)
                if not await self._clean_up(sftp, part):
                    return  # the next session tries again

    async def _clean_up(self, sftp: asyncssh.SFTPClient, part: str) -> bool:
        """Remove one remembered part file, then the fresh directories of its slot (see
        :class:`FreshDirs`); it stays remembered if the session fails meanwhile.

        :returns: whether the session still works.
        """
        path = self._orphans.get(part)
        if path is None:
            return True  # done by a concurrent clean-up
        try:
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await self._timed(sftp.remove(part))
            for directory in self._fresh.removable(path):
                try:
                    await self._timed(sftp.rmdir(self._abs(directory)))
                except (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection):
                    raise
                except asyncssh.SFTPNoSuchFile:
                    pass
                except asyncssh.SFTPError:
                    break  # not empty: a concurrent store's file is in it
                self._fresh.removed(directory)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            log.warning("could not clean up after the failed store of %s yet: %s", path, exc)
            return False
        self._orphans.pop(part, None)
        return True

    # ------------------------------------------------------------------ read

    async def size(self, path: str) -> int:
        """Size of the published file at ``path``.

        :raises NotFound: no such file.
        :raises StorageUnavailable: the file server failed.
        """
        full = self._abs(path)
        sftp = await self._client()
        with self._errors("stat", path):
            attrs = await self._timed(sftp.stat(full))
        return int(attrs.size or 0)

    async def read(
        self, path: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes (to the end if ``None``) from ``offset``, in order,
        with IN_FLIGHT block reads ahead of the consumer.

        :raises NotFound: no such file.
        :raises StorageUnavailable: the file server failed.
        """
        full = self._abs(path)
        sftp = await self._client()
        with self._errors("read", path):
            f = await self._timed(sftp.open(full, "rb", block_size=0))
        ahead: collections.deque[tuple[int, int, asyncio.Task[bytes]]] = collections.deque()
        try:
            with self._errors("read", path):
                end = int((await self._timed(f.stat())).size or 0)
            if length is not None:
                end = min(end, offset + length)
            block = self._read_len
            next_offset = offset

            def top_up() -> None:
                nonlocal next_offset
                while len(ahead) < IN_FLIGHT and next_offset < end:
                    n = min(block, end - next_offset)
                    task = asyncio.ensure_future(self._read_block(f, n, next_offset))
                    ahead.append((next_offset, n, task))
                    next_offset += n

            top_up()
            while ahead:
                at, n, task = ahead.popleft()
                with self._errors("read", path):
                    data = await task
                    while 0 < len(data) < n:  # a short read: fetch the rest in order
                        more = await self._read_block(f, n - len(data), at + len(data))
                        if not more:
                            break
                        data += more
                if len(data) < n:
                    break  # the file shrank under us: stop at what exists
                top_up()
                yield data
        finally:
            for _at, _n, task in ahead:
                task.cancel()
            if ahead:
                await asyncio.wait([t for _a, _n, t in ahead])
                for _a, _n, task in ahead:
                    if not task.cancelled():
                        task.exception()
            with contextlib.suppress(asyncssh.Error, OSError, TimeoutError):
                await self._timed(f.close())

    # ------------------------------------------------------------------ housekeeping

    async def delete(self, path: str) -> None:
        """Remove the file at ``path`` (no error if it is already gone).

        :raises StorageUnavailable: the file server failed.
        """
        full = self._abs(path)
        sftp = await self._client()
        with contextlib.suppress(NotFound), self._errors("delete", path):
            await self._timed(sftp.remove(full))

    async def disk_usage(self) -> DiskUsage:
        """``statvfs@openssh.com`` of the node directory (zeros if unsupported).

        :raises StorageUnavailable: the file server failed.
        """
        sftp = await self._client()
        try:
            with self._errors("statvfs", self._root):
                vfs = await self._timed(sftp.statvfs(self._root))
        except StorageUnavailable as exc:
            if isinstance(exc.__cause__, asyncssh.SFTPOpUnsupported):
                return DiskUsage(total=0, free=0)
            raise
        return DiskUsage(total=vfs.blocks * vfs.frsize, free=vfs.bavail * vfs.frsize)

    async def _listdir(
        self, sftp: asyncssh.SFTPClient, directory: str
    ) -> list[tuple[str, asyncssh.SFTPAttrs]]:
        """Names (sorted) and attributes in ``directory``, without ``.`` and ``..``."""
        with self._errors("list", directory):
            names = await self._timed(sftp.readdir(directory))
        found = [
            (n.filename.decode() if isinstance(n.filename, bytes) else n.filename, n.attrs)
            for n in names
        ]
        return sorted((name, attrs) for name, attrs in found if name not in (".", ".."))

    async def walk(self, prefix: str = "files") -> AsyncIterator[StoredFile]:
        """Every regular file below ``prefix`` (``.part`` files included); symlinks skipped.

        :raises StorageUnavailable: the file server failed.
        """
        sftp = await self._client()
        todo = [prefix]
        while todo:
            rel = todo.pop()
            try:
                names = await self._listdir(sftp, self._abs(rel))
            except NotFound:
                continue  # absent prefix, or removed by a concurrent purge
            for name, attrs in names:
                child = f"{rel}/{name}"
                if attrs.type == asyncssh.FILEXFER_TYPE_DIRECTORY:
                    todo.append(child)
                elif attrs.type == asyncssh.FILEXFER_TYPE_REGULAR:
                    yield StoredFile(child, int(attrs.size or 0), float(attrs.mtime or 0))

    async def remove_empty_dirs(self, prefix: str = "files") -> int:
        """Remove empty directories below ``prefix`` (not ``prefix`` itself).

        :returns: how many were removed.
        :raises StorageUnavailable: the file server failed.
        """
        sftp = await self._client()

        async def prune(directory: str) -> tuple[int, bool]:
            try:
                names = await self._listdir(sftp, directory)
            except NotFound:
                return 0, False
            removed, keep = 0, False
            for name, attrs in names:
                if attrs.type != asyncssh.FILEXFER_TYPE_DIRECTORY:
                    keep = True
                    continue
                n, empty = await prune(f"{directory}/{name}")
                removed += n
                if empty:
                    try:
                        await self._timed(sftp.rmdir(f"{directory}/{name}"))
                        removed += 1
                    except (asyncssh.SFTPFailure, asyncssh.SFTPNoSuchFile):
                        keep = True  # an upload just made a file in it
                else:
                    keep = True
            return removed, not keep

        with self._errors("prune", prefix):
            removed, _ = await prune(self._abs(prefix))
        return removed
