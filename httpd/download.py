"""GET and HEAD: identity ticket, 410 for purged files, Range, safe headers, AFT_LOG rows.

A GET writes exactly one row: ``GET`` when the whole response body was handed to the
connection, ``GET_INCOMPLETE`` when the client went away or the repository failed
half-way, ``GET_REFUSED`` when the identity ticket was missing (required) or invalid,
``GET_GONE`` when retention purged the file. HEAD reads the same headers and logs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from typing import BinaryIO, cast

from aiohttp import hdrs, web

from component.audit import AuditRecord, Method, upload_and_share_finder_of
from component.errors import AuditUnavailable, Gone, InvalidToken, NotFound, UploadError
from component.layout import SlotPath, file_type, real_filename
from component.tokens import DownloadTicket, verify_ticket
from httpd.appkeys import AUDIT, CONFIG, IN_FLIGHT, METRICS, REPOSITORY
from httpd.clientip import client_ip
from httpd.headers import (
    CONTENT_SECURITY_POLICY,
    ByteRange,
    RangeNotSatisfiable,
    content_disposition,
    content_type_for,
    parse_range,
)
from httpd.middleware import count_failure
from httpd.repository.base import file_sender_of
from httpd.routing import redirect_to_owner, slot_path

log = logging.getLogger(__name__)


class _Download:
    """One GET or HEAD request and what it needs to write its AFT_LOG row."""

    def __init__(self, request: web.Request, path: SlotPath) -> None:
        self.request = request
        self.path = path
        self.app = request.app
        self.head = request.method == hdrs.METH_HEAD
        self.ticket: DownloadTicket | None = None
        self._upload: AuditRecord | None = None
        self._looked_up = False
        # The first SHARE row, if the back-end found it with the upload's row.
        self._share: AuditRecord | None = None
        self._share_known = False
        # file://: the file, opened with its size in one hop, for the kernel to send.
        self.opened: BinaryIO | None = None

    async def upload_row(self) -> AuditRecord | None:
        """The upload's POST row (once per request); ``None`` if unknown or unreachable."""
        if not self._looked_up:
            self._looked_up = True
            audit = self.app[AUDIT]
            both = upload_and_share_finder_of(audit)
            try:
                if both is not None:  # both lookups in one hop or one statement
                    self._upload, self._share = await both.find_upload_and_share(self.path.resource)
                    self._share_known = True
                else:
                    self._upload = await audit.find_upload(self.path.resource)
            except AuditUnavailable as exc:
                count_failure(self.app[METRICS], exc)
                log.warning(
                    "AFT_LOG lookup failed for %s; logging from the URL", self.path.resource
                )
        return self._upload

    async def recipient(self, up: AuditRecord | None) -> tuple[str, str]:
        """TO_JID and CHAT_TYPE for this request's row.

        The upload's own, unless it had no recipient (a client that does not send
        ``<recipient>``): then those of the file's first SHARE row, if the XMPP server
        reported one (DESIGN.md "Recipients for every client").
        """
        if up is None:
            return "", self.path.chat_type
        if up.to_jid:
            return up.to_jid, up.chat_type
        share = self._share
        try:
            if not self._share_known:
                share = await self.app[AUDIT].find_first_share(self.path.resource)
        except AuditUnavailable as exc:
            count_failure(self.app[METRICS], exc)
            log.warning("AFT_LOG share lookup failed for %s", self.path.resource)
            share = None
        return (share.to_jid, share.chat_type) if share else (up.to_jid, up.chat_type)

    async def log(self, method: Method, size: int = 0) -> None:
        """Write this request's row; a failure is logged, the response stands."""
        if self.head:
            return
        up = await self.upload_row()
        cfg = self.app[CONFIG]
        to_jid, chat_type = await self.recipient(up)
        rec = AuditRecord(
            jid=self.ticket.jid if self.ticket else "",
            to_jid=to_jid,
            method=method,
            filename=self.path.resource,
            real_filename=up.real_filename if up else real_filename(self.path.filename),
            file_type=up.file_type if up else file_type(self.path.filename),
            chat_type=chat_type,
            file_server=self.app[REPOSITORY].file_server,
            file_size=up.file_size if up else size,
            node_id=cfg.node.id,
            client_ip=client_ip(self.request),
            file_sha256=up.file_sha256 if up else "",
        )
        try:
            await self.app[AUDIT].record(rec)
        except AuditUnavailable as exc:
            count_failure(self.app[METRICS], exc)
            log.error("could not record the %s row for %s", method, self.path.resource)

    async def check_identity(self) -> None:
        """Read the download ticket; refuse (and log) a bad one or a required missing one.

        :raises InvalidToken: 403 for a forged, expired or malformed ticket; 401 when
            ``[download] require_identity`` is on and there is no ticket.
        """
        cfg = self.app[CONFIG]
        try:
            self.ticket = verify_ticket(cfg.http.secret, self.path, self.request.query)
        except InvalidToken:
            await self.log("GET_REFUSED")
            raise
        if self.ticket is None and cfg.download.require_identity:
            await self.log("GET_REFUSED")
            raise InvalidToken("A personal download link is required", missing=True)

    async def size(self) -> int:
        """The stored file's size.

        :raises Gone: the file was uploaded (AFT_LOG has its POST row) but is gone (410).
        :raises NotFound: never uploaded here (404).
        """
        repo = self.app[REPOSITORY]
        try:
            sender = file_sender_of(repo)
            if sender is None:
                return await repo.size(self.path.repo_path)
            self.opened, size = await sender.open_to_send(self.path.repo_path)
            return size
        except NotFound:
            if await self.upload_row() is None:
                raise
        await self.log("GET_GONE")
        raise Gone()

    def headers(self, resp: web.StreamResponse, size: int, rng: ByteRange | None) -> None:
        """Length, range and the headers that keep a browser from running the file."""
        ctype = content_type_for(self.path.filename)
        resp.content_type = ctype
        resp.content_length = rng.length if rng else size
        resp.headers[hdrs.ACCEPT_RANGES] = "bytes"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers[hdrs.CONTENT_DISPOSITION] = content_disposition(self.path.filename, ctype)
        resp.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        if rng:
            resp.headers[hdrs.CONTENT_RANGE] = rng.content_range(size)

    async def stream(self, resp: web.StreamResponse, size: int, rng: ByteRange | None) -> None:
        """Send the body from the repository and write the GET or GET_INCOMPLETE row."""
        offset, length = (rng.start, rng.length) if rng else (0, size)
        started, sent = time.monotonic(), 0
        repo, transport = self.app[REPOSITORY], self.request.transport
        try:
            sender = file_sender_of(repo)
            if sender is not None and self.opened is not None and transport is not None:
                # Headers are out (prepare() sent them); the body bypasses the writer.
                sent = await sender.sendfile(self.opened, transport, offset, length)
                resp_writer = self.request.writer
                resp_writer.output_size += sent  # the access log's byte count
            else:
                # aclosing: a client gone mid-body frees the file and budget at once.
                blocks = repo.read(self.path.repo_path, offset, length)
                async with contextlib.aclosing(blocks):
                    async for block in blocks:
                        await resp.write(block)
                        sent += len(block)
            if sent != length:
                raise NotFound("The file changed while it was read")
            await resp.write_eof()
        except UploadError as exc:
            # The headers are out: the only honest signal left is to cut the connection,
            # so the client sees fewer bytes than Content-Length.
            count_failure(self.app[METRICS], exc)
            log.error("download of %s failed after %d bytes: %s", self.path.resource, sent, exc)
            self.request.protocol.force_close()
            await self.log("GET_INCOMPLETE", size)
            return
        except BaseException:
            # ConnectionError: the client went away; CancelledError: shutdown grace over.
            log.info(
                "download of %s cut off after %d of %d bytes", self.path.resource, sent, length
            )
            await self.log("GET_INCOMPLETE", size)
            raise
        metrics, labels = self.app[METRICS], {"chat_type": self.path.chat_type}
        metrics.inc("downloads", labels=labels)
        metrics.inc("download_bytes", labels=labels, value=sent)
        metrics.observe("download_seconds", value=time.monotonic() - started, labels=labels)
        # The body is out: the row (and its COMMIT) need not hold the connection's next
        # request back. A stop waits for it like for a request (InFlight).
        self.app[IN_FLIGHT].detach(self.log("GET", size), f"GET row of {self.path.resource}")


async def get_download(request: web.Request) -> web.StreamResponse:
    """GET or HEAD of a stored file.

    :raises InvalidRequest: malformed path (400).
    :raises InvalidToken: ticket refused (401/403), see :meth:`_Download.check_identity`.
    :raises NotFound: unknown file or node (404); :raises Gone: purged file (410).
    :raises aiohttp.web.HTTPTemporaryRedirect: the file belongs to another node (307).
    """
    path = slot_path(request)
    redirect_to_owner(request, path)
    dl = _Download(request, path)
    await dl.check_identity()
    size = await dl.size()
    try:
        return await _respond(request, dl, size)
    finally:
        if dl.opened is not None:
            dl.opened.close()


async def _respond(request: web.Request, dl: _Download, size: int) -> web.StreamResponse:
    """The response to a GET or HEAD of a file of ``size`` bytes (found and allowed)."""
    try:
        rng = parse_range(request.headers.get(hdrs.RANGE), size)
    except RangeNotSatisfiable:
        return web.Response(
            status=416, text="Range not satisfiable\n", headers={"Content-Range": f"bytes */{size}"}
        )
    resp = web.StreamResponse(status=206 if rng else 200)
    dl.headers(resp, size, rng)
    corked = None if dl.head or dl.opened is None else _cork(request)
    try:
        await resp.prepare(request)
        if dl.head:
            await resp.write_eof()
            return resp
        try:
            await dl.stream(resp, size, rng)
        except ConnectionError:
            pass  # logged as GET_INCOMPLETE; aiohttp drops the connection quietly
    finally:
        if corked is not None:
            with contextlib.suppress(OSError):
                corked.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    return resp


def _cork(request: web.Request) -> socket.socket | None:
    """Hold the headers back (TCP_CORK) until the kernel sends the body behind them: one
    transmission fewer per download, the headers in the body's first segment. Plain TCP
    only (``None`` otherwise); uncorking sends whatever is left."""
    transport = request.transport
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    except OSError:
        return None
    return cast(socket.socket, sock)
