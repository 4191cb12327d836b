"""The SSH side of the ``sftp://`` repository: one long-lived, supervised connection.

One connection per node, pinned host key, node key only. When the connection drops,
a supervisor reconnects with backoff; requests arriving meanwhile wait at most
``[repository] connect_timeout`` and then fail with :class:`StorageUnavailable` (503).

Library errors are translated here: ``SFTPNoSuchFile`` becomes :class:`NotFound`,
every other ``asyncssh.Error``/``OSError``/timeout :class:`StorageUnavailable`; a
connection that cannot be made raises the subclass naming why (unreachable, host key
mismatch or missing type, node key refused, node directory not writable), which
``mft check`` and ``mft run`` turn into a hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar, cast

import asyncssh

from component.backoff import Backoff
from component.config import RepositoryConfig
from component.errors import (
    AuthRefused,
    ConfigError,
    FileServerUnreachable,
    HostKeyMismatch,
    HostKeyNotPinned,
    HostKeyTypeMissing,
    NodeKeyUnusable,
    NotFound,
    PathNotWritable,
    StorageUnavailable,
)
from httpd.repository import sftp_fastpath
from httpd.repository.sftp_write import FLUSH_STEP, WriteBehind
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
# A connection, its SFTP session, and the write-behind session if it could be started.
Session = tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient, asyncssh.SFTPClient | None]

# OpenSSH announces 261,120 (limits@openssh.com); 262,144 kills the session because
# the 256 KiB packet limit includes the headers. Used when the server has no limits.
FALLBACK_BLOCK = 255 * 1024
# Ciphers, most preferred first: AES-GCM runs in OpenSSL (cryptography) with AES-NI and
# carries its own MAC; chacha20-poly1305, which asyncssh would try first, costs 1.5-1.9x
# the CPU here. A server that offers only chacha20 (or only CTR) still connects.
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


class SftpSession:
    """One supervised SSH connection and SFTP session to the file server.

    Opens with the pinned host key and the node key, reconnects with backoff when the
    session drops, and translates library errors (:meth:`_errors`). The file operations
    live in :class:`~httpd.repository.sftp.SftpRepository`, which extends this class.
    """

    def __init__(self, repo_cfg: RepositoryConfig) -> None:
        self._cfg = repo_cfg
        self._root = repo_cfg.path
        self._where = f"{repo_cfg.username}@{repo_cfg.host}:{repo_cfg.port}"
        self._pinned: HostKeyLine | None = None
        self._client_key: asyncssh.SSHKey | None = None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        # The second session, for write-behind fsyncs only (None: not available).
        self._flusher: asyncssh.SFTPClient | None = None
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
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

        :raises HostKeyNotPinned: ``host_key`` is empty (or unreadable).
        :raises NodeKeyUnusable: the node key is missing or unreadable.
        :raises FileServerUnreachable: no connection, or no answer in time.
        :raises HostKeyMismatch: another key was presented (man-in-the-middle warning with
            both fingerprints).
        :raises HostKeyTypeMissing: the server has no host key of the pinned type.
        :raises AuthRefused: the node key was refused.
        :raises PathNotWritable: the node directory cannot be made or written.
        :raises StorageUnavailable: any other SSH failure, with its reason.
        """
        try:
            self._pinned = pinned_host_key(self._cfg)
        except ConfigError as exc:
            raise HostKeyNotPinned(str(exc)) from exc
        try:
            self._client_key = load_client_key(self._cfg.client_key)
        except ConfigError as exc:
            raise NodeKeyUnusable(str(exc)) from exc
        self._closing = False
        session = await self._connect()
        conn = session[0]
        try:
            await self._probe(session[1])
        except BaseException:
            conn.abort()
            await conn.wait_closed()
            raise
        self._install(session)
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
        conn, self._conn, self._sftp, self._flusher = self._conn, None, None, None
        self._ready.clear()
        if conn is not None:
            conn.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._cfg.connect_timeout):
                    await conn.wait_closed()

    async def _connect(self) -> Session:
        """One SSH connection plus its SFTP session (and the write-behind session).

        :raises StorageUnavailable: the subclass naming why (see :meth:`open`), with the
            reason in words, for logs and start-up messages.
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
                    # asyncssh's 2 MiB receive window stays: 8 MiB (all 16 read-aheads on
                    # the wire) cost 10-20% more CPU per download when asyncssh sliced
                    # each socket read per packet; with sftp_fastpath's receive path it
                    # made no difference that the noise here could show.
                    keepalive_interval=KEEPALIVE_INTERVAL,
                    keepalive_count_max=3,
                )
                handshake = False
                try:
                    sftp_fastpath.install(conn)
                    sftp = await conn.start_sftp_client()
                    sftp_fastpath.install_sftp(sftp)
                    flusher = await self._start_flusher(conn)
                except BaseException:
                    conn.abort()
                    raise
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            failure = self._failure(exc, presented)
            if handshake and isinstance(
                exc, (asyncssh.KeyExchangeFailed, asyncssh.ConnectionLost, ConnectionResetError)
            ):
                # OpenSSH hangs up when it has no host key of the asked type; depending on
                # timing that shows as a reset, a lost connection or a failed key exchange.
                failure = await self._missing_key_type() or failure
            raise failure from exc
        return conn, sftp, flusher

    async def _start_flusher(
        self, conn: asyncssh.SSHClientConnection
    ) -> asyncssh.SFTPClient | None:
        """A second SFTP session for write-behind, or ``None`` (uploads then fsync once).

        A server refusing a second session (``MaxSessions 1``) is no failure.
        """
        try:
            return await conn.start_sftp_client()
        except asyncssh.Error as exc:
            log.info("file server %s: no write-behind session: %s", self._where, exc)
            return None

    def _failure(self, exc: BaseException, presented: list[asyncssh.SSHKey]) -> StorageUnavailable:
        """What a connection attempt's failure means, typed, in words for an administrator."""
        assert self._pinned is not None and self._client_key is not None
        cfg, pinned = self._cfg, self._pinned.key
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            seen = fingerprint(presented[-1]) if presented else "(a certificate or unknown key)"
            return HostKeyMismatch(
                f"WARNING: POSSIBLE MAN-IN-THE-MIDDLE ATTACK: the file server {cfg.host}:"
                f"{cfg.port} presented host key {seen}, but the pinned [repository] host_key "
                f"is {fingerprint(pinned)}; refusing to connect (no credentials or data were "
                f"sent). If the server's key was changed on purpose, pin the line printed by "
                f"'mft keyscan {cfg.host} -p {cfg.port}'"
            )
        if isinstance(exc, asyncssh.PermissionDenied):
            return AuthRefused(
                f"file server {self._where} refused the node key "
                f"{fingerprint(self._client_key)} ({cfg.client_key}): add the line printed "
                f"by 'mft keygen --show' to the user's ~/.ssh/authorized_keys"
            )
        if isinstance(exc, asyncssh.KeyExchangeFailed):
            return StorageUnavailable(
                f"SSH key exchange with {cfg.host}:{cfg.port} failed: {exc.reason} (does the "
                f"server have a {key_type(pinned)} host key, as pinned?)"
            )
        if isinstance(exc, asyncssh.Error):
            return StorageUnavailable(f"SSH session with {self._where} failed: {exc.reason}")
        if isinstance(exc, TimeoutError):
            return FileServerUnreachable(
                f"file server {cfg.host}:{cfg.port} did not answer within {cfg.connect_timeout:g}s"
            )
        assert isinstance(exc, OSError)
        return FileServerUnreachable(
            f"file server {cfg.host}:{cfg.port} is unreachable: {exc.strerror or exc}"
        )

    async def _missing_key_type(self) -> HostKeyTypeMissing | None:
        """Why a handshake was dropped if the server has no host key of the pinned type
        (asked with ``mft keyscan``'s probes), else ``None``."""
        assert self._pinned is not None
        cfg = self._cfg
        pinned = key_type(self._pinned.key)
        offered = await offered_key_types(cfg.host, cfg.port, cfg.connect_timeout)
        if not offered or pinned in offered:
            return None  # not the reason, or the server is going away: say what we saw
        return HostKeyTypeMissing(
            f"the file server {cfg.host}:{cfg.port} offers no {pinned} host key (it has "
            f"{', '.join(offered)}); the pinned [repository] host_key is {pinned}: run "
            f"'mft keyscan {cfg.host} -p {cfg.port}' and pin a key it has"
        )

    def _install(self, session: Session) -> None:
        conn, sftp, self._flusher = session
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
            raise PathNotWritable(
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
            self._conn = self._sftp = self._flusher = None
            if self._closing:
                return
            log.warning("lost the connection to the file server %s; reconnecting", self._where)
            # A request waiting for the connection (_client) cuts a wait short.
            backoff = Backoff(
                RECONNECT_FIRST_DELAY, RECONNECT_MAX_DELAY, min_wait=RECONNECT_MIN_GAP
            )
            while not self._closing:
                try:
                    session = await self._connect()
                except StorageUnavailable as exc:
                    self._last_error = exc.text
                    log.error("file server %s: %s", self._where, exc.text)
                    await backoff.wait(self._wake)
                    self._wake.clear()
                    continue
                log.info("reconnected to the file server %s", self._where)
                try:
                    # Before requests use the session: whoever asks next sees no leftovers.
                    await self._on_reconnect(session[1])
                except BaseException:
                    session[0].abort()  # closing: the session is not installed, so not closed
                    raise
                self._install(session)
                break

    async def _on_reconnect(self, sftp: asyncssh.SFTPClient) -> None:
        """Called with a new session before it is installed (subclasses clean up here)."""

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
        self._sftp = self._flusher = None
        self._ready.clear()
        if self._conn is not None:
            self._conn.abort()

    def _spawn(self, aw: Awaitable[T]) -> asyncio.Future[T]:
        """Run ``aw`` in the background; :meth:`close` waits for it."""
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _write_behind(self, part: str, size: int) -> WriteBehind | None:
        """Write-behind for an upload of ``size`` bytes into ``part``, if worth it."""
        if self._flusher is None or size < 2 * FLUSH_STEP:
            return None
        return WriteBehind(self._flusher, part, self._cfg.io_timeout)

    async def _timed(self, aw: Awaitable[T]) -> T:
        async with asyncio.timeout(self._cfg.io_timeout):
            return await aw

    async def _read_block(self, f: asyncssh.SFTPClientFile, n: int, offset: int) -> bytes:
        """One SFTP read request (the file was opened in binary mode)."""
        return cast(bytes, await self._timed(f.read(n, offset)))

    async def _write_block(self, f: asyncssh.SFTPClientFile, data: memoryview, offset: int) -> None:
        """One SFTP write request; made inside the task, so a task cancelled before it ran
        leaves no never-awaited ``write`` coroutine behind. The fast path queues the
        request's header and a view of ``data`` (no copy); asyncssh's own ``write``
        (another asyncssh version) frames it with ``bytes + data``, which takes a
        memoryview as it is."""
        if sftp_fastpath.ENABLED:
            await self._timed(sftp_fastpath.write(f, data, offset))
        else:
            await self._timed(f.write(cast(bytes, data), offset))

    def _abs(self, path: str) -> str:
        if not path or path.startswith("/") or ".." in path.split("/"):
            raise NotFound()  # only SlotPath-made paths get here; refuse anything else
        return f"{self._root}/{path}"
