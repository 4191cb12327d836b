"""A throwaway Prosody 0.12 on loopback: config in a temp dir, users, child process.

Used by ``mft sandbox`` and by the test fixtures. Settings follow FIELD-NOTES.md: run
unprivileged-style from the directory (own pid file and data path), ``daemonize =
false``, every port a free one on 127.0.0.1, plain c2s allowed (optionally TLS with a
self-signed certificate), one external ``Component`` entry for the upload service (more
on request, for a cluster) and an optional MUC component.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from component.servers.childproc import die_with_parent, free_port
from component.servers.deploykit import prosody_component, prosody_snippet

log = logging.getLogger(__name__)

MODULES = ("roster", "saslauth", "tls", "disco", "ping", "posix", "version", "time")


class ProsodyError(RuntimeError):
    """Prosody could not be configured, started or stopped; the message holds its log tail."""


def lua(value: object) -> str:
    """Render a Python value as a Lua literal for the config file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"[{lua(k)}] = {lua(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "{ " + ", ".join(lua(v) for v in value) + " }"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


async def _port_open(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def _run(what: str, *argv: str) -> None:
    """Run a helper command to completion.

    :raises ProsodyError: it exited non-zero (its output in the message).
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise ProsodyError(f"{what} failed: {out.decode(errors='replace').strip()}")


class ProsodyInstance:
    """One Prosody process with its own config, data and ports.

    Use as ``async with ProsodyInstance(tmpdir, users={"alice": "pw"}) as p:``; leaving
    the block terminates and reaps the process. :meth:`stop`, :meth:`start` and
    :meth:`restart` keep ports and data, for outage tests.

    :param directory: where config, data, certificate, pid file and log go (created).
    :param domain: the VirtualHost.
    :param component_jid: the external component's JID (``upload.<domain>`` by default).
    :param component_secret: its XEP-0114 secret.
    :param muc_domain: a ``muc`` component's domain, or ``None`` for none.
    :param extra_components: more external components on the same component port, JID ->
        secret (e.g. the other nodes of a cluster, each with its own JID).
    :param users: user name -> password, registered with ``prosodyctl`` before start.
    :param tls: make a self-signed certificate so TLS clients can connect as well.
    :param tls_files: with ``tls``, use this ``(key, certificate)`` pair instead (e.g. one
        the sandbox's local CA signed).
    :param extra_config: raw config lines appended at the end (e.g. more components).
    :param plugin_paths: directories of extra Prosody modules (e.g. deploy/prosody).
    :param start_timeout: seconds to wait for the ports to listen.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        domain: str = "localhost",
        component_jid: str | None = None,
        component_secret: str = "component-secret",
        muc_domain: str | None = None,
        extra_components: Mapping[str, str] | None = None,
        users: Mapping[str, str] | None = None,
        tls: bool = False,
        tls_files: tuple[Path, Path] | None = None,
        extra_config: str | Sequence[str] = (),
        plugin_paths: Sequence[str] = (),
        c2s_port: int | None = None,
        component_port: int | None = None,
        http_port: int | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.domain = domain
        self.component_jid = component_jid or f"upload.{domain}"
        self.component_secret = component_secret
        self.muc_domain = muc_domain
        self.extra_components: dict[str, str] = dict(extra_components or {})
        self.users: dict[str, str] = dict(users or {})
        self.tls = tls
        self.tls_key, self.tls_cert = tls_files or (
            self.directory / "tls.key",
            self.directory / "tls.crt",
        )
        self.extra_config = [extra_config] if isinstance(extra_config, str) else list(extra_config)
        self.plugin_paths = list(plugin_paths)
        self.c2s_port = c2s_port or free_port()
        self.component_port = component_port or free_port()
        self.http_port = http_port or free_port()
        self.start_timeout = start_timeout
        self.config_path = self.directory / "prosody.cfg.lua"
        self.data_path = self.directory / "data"
        self.log_path = self.directory / "prosody.log"
        self.pid_path = self.directory / "prosody.pid"
        self._proc: asyncio.subprocess.Process | None = None
        self._prosody = shutil.which("prosody") or "/usr/bin/prosody"
        self._prosodyctl = shutil.which("prosodyctl") or "/usr/bin/prosodyctl"

    # -- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> ProsodyInstance:
        await self.setup()
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def setup(self) -> None:
        """Write the config (and certificate) and register :attr:`users`.

        :raises ProsodyError: a binary is missing or ``prosodyctl``/``openssl`` failed.
        """
        for binary in (self._prosody, self._prosodyctl):
            if not os.access(binary, os.X_OK):
                raise ProsodyError(f"{binary} not found: install the prosody package")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data_path.mkdir(exist_ok=True)
        if self.tls:
            await self._make_certificate()
        self.config_path.write_text(self.render_config())
        for user, password in self.users.items():
            await self._register(user, password)

    @property
    def running(self) -> bool:
        """Whether the Prosody process is alive."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        return self._proc.pid if self.running and self._proc else None

    async def start(self) -> None:
        """Start ``prosody --config FILE`` and wait until c2s and component ports listen.

        :raises ProsodyError: it exited or did not listen within ``start_timeout``.
        """
        if self.running:
            return
        logf = self.log_path.open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self._prosody,
                "-F",  # foreground; the `daemonize` option is deprecated in 0.12
                "--config",
                str(self.config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,  # a Ctrl-C in `mft sandbox` reaches us, not prosody
                preexec_fn=die_with_parent(),  # and if we are killed, prosody goes too
            )
        finally:
            logf.close()
        deadline = time.monotonic() + self.start_timeout
        ports = [self.c2s_port, self.component_port]
        while ports:
            if self._proc.returncode is not None:
                raise ProsodyError(
                    f"prosody exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                await self.stop()
                raise ProsodyError(f"prosody did not listen on {ports}:\n{self.log_tail()}")
            if await _port_open(ports[0]):
                ports.pop(0)
                continue
            # Polling a port while the child starts up; its exit is checked above.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._proc.wait()), 0.05)
        log.info(
            "prosody %s: c2s %d, component %d", self.domain, self.c2s_port, self.component_port
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Terminate Prosody (SIGKILL after ``grace`` seconds) and reap it; no-op if stopped."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def kill(self) -> None:
        """SIGKILL Prosody and reap it (a crash, for outage tests)."""
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        await self.stop()

    async def restart(self) -> None:
        """Stop and start again on the same ports and data."""
        await self.stop()
        await self.start()

    # -- users -----------------------------------------------------------------------

    async def register(self, user: str, password: str) -> str:
        """Create (or reset) an account; works while Prosody runs. Returns the bare JID.

        :raises ProsodyError: ``prosodyctl register`` failed.
        """
        await self._register(user, password)
        self.users[user] = password
        return f"{user}@{self.domain}"

    async def _register(self, user: str, password: str) -> None:
        await _run(
            f"prosodyctl register {user}",
            self._prosodyctl,
            "--config",
            str(self.config_path),
            "register",
            user,
            self.domain,
            password,
        )

    # -- config ----------------------------------------------------------------------

    def render_config(self) -> str:
        """The Prosody config file text."""
        lines = [
            "-- written by xmpp-mft (component/prosody.py); throwaway instance",
            f"run_as_root = {lua(True)}",
            f"pidfile = {lua(str(self.pid_path))}",
            f"data_path = {lua(str(self.data_path))}",
            f"certificates = {lua(str(self.directory))}",
            f"plugin_paths = {lua(self.plugin_paths)}",
            'log = { info = "*console" }',
            f"modules_enabled = {lua(MODULES)}",
            'authentication = "internal_hashed"',
            'storage = "internal"',
            "c2s_require_encryption = false",
            "allow_unencrypted_plain_auth = true",
            "s2s_ports = {}",
            "https_ports = {}",
            'interfaces = { "127.0.0.1" }',
            f"c2s_ports = {{ {self.c2s_port} }}",
            'c2s_interfaces = { "127.0.0.1" }',
            f"http_ports = {{ {self.http_port} }}",
            'http_interfaces = { "127.0.0.1" }',
        ]
        if self.tls:
            lines.append(
                f"ssl = {{ key = {lua(str(self.tls_key))}, "
                f"certificate = {lua(str(self.tls_cert))} }}"
            )
        lines += [
            "",
            f"VirtualHost {lua(self.domain)}",
            "",
            # The component entry admins install (deploy/prosody/mft.cfg.lua), verbatim;
            # it sets component_ports and component_interface (set twice, Prosody warns).
            prosody_snippet(self.component_jid, self.component_secret, self.component_port),
        ]
        lines += [prosody_component(jid, secret) for jid, secret in self.extra_components.items()]
        if self.muc_domain:
            lines += [
                "",
                f"Component {lua(self.muc_domain)} {lua('muc')}",
                "    restrict_room_creation = false",
            ]
        if self.extra_config:
            lines += ["", "-- extra configuration", *self.extra_config]
        return "\n".join(lines) + "\n"

    async def _make_certificate(self) -> None:
        openssl = shutil.which("openssl")
        if openssl is None:
            raise ProsodyError("openssl not found: needed for the TLS certificate")
        key, crt = self.tls_key, self.tls_cert
        if key.exists() and crt.exists():
            return
        await _run(
            "openssl req",
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "365",
            "-subj",
            f"/CN={self.domain}",
            "-addext",
            f"subjectAltName=DNS:{self.domain},DNS:*.{self.domain}",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        )
        key.chmod(0o600)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of Prosody's log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
