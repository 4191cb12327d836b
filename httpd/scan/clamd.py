"""A clamd (ClamAV daemon) client: INSTREAM, PING and VERSION over a unix or TCP socket.

The protocol (clamd(8)): a command is ``z<NAME>\\0`` and its reply ends in NUL. INSTREAM
takes the data as chunks, each a 4-byte big-endian length and that many bytes, ended by
a zero length; the reply is ``stream: OK``, ``stream: <signature> FOUND`` or
``<reason> ERROR``. Past its ``StreamMaxLength`` clamd replies ``INSTREAM size limit
exceeded. ERROR`` and closes at once, so the sender sees a broken pipe mid-stream.

.. note:: This client uses the loop's socket methods rather than asyncio streams: after
   a broken pipe a :class:`asyncio.StreamReader` discards what clamd sent before it
   closed, and that reply is what tells "too large" from "clamd went away".

Library errors are translated here: :class:`~component.errors.ScanUnavailable` for an
unreachable, silent or failing clamd, :class:`~component.errors.TooLargeToScan` for
its size limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from component.config import ScanConfig
from component.errors import ScanUnavailable, TooLargeToScan

log = logging.getLogger(__name__)

MAX_REPLY = 64 * 1024  # a reply is one line; anything longer is not clamd
SIZE_LIMIT = "size limit exceeded"
# After a failed write: how long to wait for the reply clamd may have sent before closing.
REASON_WAIT = 1.0
END_OF_STREAM = b"\0\0\0\0"


@dataclass(frozen=True, slots=True)
class Verdict:
    """clamd's answer for one stream: ``signature`` is empty for a clean one."""

    signature: str = ""

    @property
    def infected(self) -> bool:
        """Whether clamd found something."""
        return bool(self.signature)


@dataclass(frozen=True, slots=True)
class ClamdVersion:
    """The answer to VERSION: ``ClamAV 1.4.6/27470/Tue Dec  1 09:27:05 2026``.

    ``database`` and ``signatures_date`` are empty/``None`` when clamd runs on local
    signature files only (no official ``daily`` database).
    """

    engine: str
    database: str = ""
    signatures_date: datetime | None = None


def parse_verdict(reply: str) -> Verdict:
    """The verdict in an INSTREAM reply.

    :raises TooLargeToScan: clamd's StreamMaxLength was exceeded.
    :raises ScanUnavailable: clamd answered an error or something unexpected.
    """
    if reply.endswith(" ERROR"):
        if SIZE_LIMIT in reply:
            raise TooLargeToScan()
        raise ScanUnavailable(f"clamd answered an error: {reply}")
    _label, sep, result = reply.partition(": ")
    if sep and result == "OK":
        return Verdict()
    if sep and result.endswith(" FOUND") and result[: -len(" FOUND")].strip():
        return Verdict(result[: -len(" FOUND")].strip())
    raise ScanUnavailable(f"unexpected answer from clamd: {reply[:200]!r}")


def parse_version(reply: str) -> ClamdVersion:
    """Split a VERSION reply into engine, database version and signature date."""
    engine, _, rest = reply.partition("/")
    database, _, stamp = rest.partition("/")
    try:
        date = datetime.strptime(" ".join(stamp.split()), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        date = None
    return ClamdVersion(engine.strip(), database.strip(), date)


class ClamdConnection:
    """One connection to clamd; every await is bounded by the ``[scan]`` timeouts."""

    def __init__(self, cfg: ScanConfig, sock: socket.socket) -> None:
        self._cfg = cfg
        self._sock = sock
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, cfg: ScanConfig) -> ClamdConnection:
        """Connect to ``[scan] clamd``.

        :raises ScanUnavailable: no connection within ``connect_timeout``, or refused.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(cfg.connect_timeout):
                targets: list[tuple[int, Any]]
                if cfg.socket_path:
                    targets = [(socket.AF_UNIX, cfg.socket_path)]
                else:
                    infos = await loop.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM)
                    targets = [(family, addr) for family, _t, _p, _c, addr in infos]
                error: OSError = OSError("no address")
                for family, address in targets:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    try:
                        await loop.sock_connect(sock, address)
                    except OSError as exc:
                        sock.close()
                        error = exc
                        continue
                    except BaseException:
                        sock.close()
                        raise
                    return cls(cfg, sock)
                raise error
        except TimeoutError:
            raise ScanUnavailable(
                f"clamd {cfg.clamd}: no connection within {cfg.connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise ScanUnavailable(
                f"clamd {cfg.clamd}: cannot connect: {exc.strerror or exc}"
            ) from exc

    async def send(self, data: bytes | memoryview) -> None:
        """Write ``data`` within ``io_timeout``.

        :raises ScanUnavailable: the write failed or timed out.
        :raises TooLargeToScan: clamd closed the stream at its StreamMaxLength.
        """
        try:
            async with asyncio.timeout(self._cfg.io_timeout):
                await self._loop.sock_sendall(self._sock, data)
        except TimeoutError:
            raise ScanUnavailable(
                f"clamd {self._cfg.clamd}: a write took more than {self._cfg.io_timeout:g}s"
            ) from None
        except OSError as exc:
            raise await self._why(exc) from exc

    async def _why(self, exc: OSError) -> ScanUnavailable | TooLargeToScan:
        """What a failed write means: clamd's reply if it sent one before it closed."""
        reply = ""
        with contextlib.suppress(OSError, TimeoutError, ScanUnavailable):
            async with asyncio.timeout(REASON_WAIT):
                reply = await self.reply()
        if SIZE_LIMIT in reply:
            return TooLargeToScan()
        detail = f": {reply}" if reply else ""
        return ScanUnavailable(
            f"clamd {self._cfg.clamd}: connection lost ({exc.strerror or exc}){detail}"
        )

    async def reply(self) -> str:
        """Read one NUL-terminated reply (or up to the end of the connection).

        :raises ScanUnavailable: nothing within ``io_timeout``, or the connection failed.
        """
        buf = bytearray()
        try:
            async with asyncio.timeout(self._cfg.io_timeout):
                while b"\0" not in buf and len(buf) < MAX_REPLY:
                    data = await self._loop.sock_recv(self._sock, 4096)
                    if not data:
                        break
                    buf += data
        except TimeoutError:
            raise ScanUnavailable(
                f"clamd {self._cfg.clamd}: no answer within {self._cfg.io_timeout:g}s"
            ) from None
        except OSError as exc:
            raise ScanUnavailable(
                f"clamd {self._cfg.clamd}: connection lost ({exc.strerror or exc})"
            ) from exc
        if not buf:
            raise ScanUnavailable(f"clamd {self._cfg.clamd}: closed without an answer")
        return bytes(buf).partition(b"\0")[0].decode("utf-8", "replace").strip()

    def close(self) -> None:
        """Close the socket (mid-INSTREAM: clamd drops the stream)."""
        self._sock.close()


class Instream:
    """One INSTREAM scan: :meth:`open`, :meth:`send` the chunks, then :meth:`verdict`."""

    def __init__(self, conn: ClamdConnection) -> None:
        self._conn = conn

    @classmethod
    async def open(cls, cfg: ScanConfig) -> Instream:
        """Connect and start INSTREAM.

        :raises ScanUnavailable: clamd cannot be reached.
        """
        conn = await ClamdConnection.open(cfg)
        try:
            await conn.send(b"zINSTREAM\0")
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    async def send(self, chunk: bytes) -> None:
        """Stream one chunk (empty chunks are skipped: a zero length ends the stream).

        :raises ScanUnavailable: clamd failed or timed out.
        :raises TooLargeToScan: past clamd's StreamMaxLength.
        """
        if chunk:
            await self._conn.send(struct.pack(">I", len(chunk)))
            await self._conn.send(chunk)

    async def verdict(self) -> Verdict:
        """End the stream and wait for clamd's verdict (within ``io_timeout``).

        :raises ScanUnavailable: clamd failed, timed out or answered an error.
        :raises TooLargeToScan: past clamd's StreamMaxLength.
        """
        await self._conn.send(END_OF_STREAM)
        return parse_verdict(await self._conn.reply())

    def close(self) -> None:
        """Release the connection (abandons the scan if no verdict was read)."""
        self._conn.close()


async def command(cfg: ScanConfig, name: str) -> str:
    """Send ``z<name>`` (``PING``, ``VERSION``) on a fresh connection; clamd's reply.

    :raises ScanUnavailable: clamd cannot be reached or did not answer.
    """
    conn = await ClamdConnection.open(cfg)
    try:
        await conn.send(f"z{name}\0".encode())
        return await conn.reply()
    finally:
        conn.close()


async def ping(cfg: ScanConfig) -> None:
    """Check that clamd answers PING with PONG.

    :raises ScanUnavailable: it does not.
    """
    answer = await command(cfg, "PING")
    if answer != "PONG":
        raise ScanUnavailable(f"clamd {cfg.clamd}: PING answered {answer[:100]!r}")


async def version(cfg: ScanConfig) -> ClamdVersion:
    """clamd's engine version and signature database date.

    :raises ScanUnavailable: clamd cannot be reached or did not answer.
    """
    return parse_version(await command(cfg, "VERSION"))
