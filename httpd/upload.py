"""PUT: check the slot token and size, stream the body into the repository, log POST.

The checks run once per request, before the body: in :func:`expect_upload` for a client
that sends ``Expect: 100-continue`` (so a bad token or size is refused before any body
byte is sent, and :func:`put_upload` reuses the result), else in :func:`put_upload`.
One repository request (is the slot free?) is all a PUT costs before its first byte;
none for a small body on ``file://`` sent without ``Expect`` (publishing refuses a
taken slot with the same 409).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from aiohttp import ClientPayloadError, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from component.audit import AuditLog, AuditRecord
from component.errors import (
    AlreadyUploaded,
    AuditUnavailable,
    FileTooLarge,
    Infected,
    InvalidRequest,
    NotFound,
    SizeMismatch,
    UploadError,
)
from component.layout import SlotPath, file_type, real_filename
from component.tokens import UploadGrant, strict_upload_query, verify_upload
from httpd.appkeys import AUDIT, CONFIG, METRICS, REPOSITORY, SCANNER
from httpd.clientip import client_ip
from httpd.middleware import answer_and_close, error_response, http_exception_response
from httpd.repository import Repository
from httpd.repository.base import receiver_of
from httpd.routing import redirect_to_owner, slot_path

log = logging.getLogger(__name__)

# Read size; the repository re-blocks as it needs. aiohttp buffers up to twice this per
# connection before it stops reading the socket (outside the memory budget); 64 or 128
# KiB saved ~15% peak RSS at 100 concurrent uploads but cost file:// PUTs a third of
# their speed (benchmarks/load_memory.py).
CHUNK = 256 * 1024
# A body larger than this whose rest has not arrived with its headers is received from
# the socket itself (:class:`SocketBody`; the connection then closes after the
# response). Smaller ones are read through aiohttp, so their connection stays open for
# the next request (a chat client's many small uploads).
SOCKET_BODY_MIN = 1024 * 1024
# The most a socket-read body waits to have queued before the loop is woken for it.
RCVLOWAT = 256 * 1024
# Where the expect handler leaves its checked (path, grant) for the PUT handler: aiohttp
# passes both the same request.
CHECKED = web.RequestKey("checked_upload", tuple[SlotPath, UploadGrant])


class BodyStalled(Exception):
    """No body byte arrived for ``[http] body_timeout`` seconds (answered 408)."""


async def check_upload(request: web.Request) -> tuple[SlotPath, UploadGrant]:
    """Everything that can refuse a PUT before its body is read, once per request.

    :raises InvalidRequest: malformed path (400) or Content-Length (400); a query key
        repeated or unknown to the token (400).
    :raises InvalidToken: token missing (401), forged, for another path or expired (403).
    :raises FileTooLarge: Content-Length or the slot over ``[upload] max_file_size`` (413).
    :raises SizeMismatch: Content-Length not the slot's size (413 larger, 400 shorter).
    :raises AlreadyUploaded: the slot already holds a file (409); see the module doc.
    :raises aiohttp.web.HTTPLengthRequired: no Content-Length (a chunked body) (411).
    :raises aiohttp.web.HTTPTemporaryRedirect: the slot belongs to another node (307).
    """
    if CHECKED in request:
        return request[CHECKED]
    cfg = request.app[CONFIG]
    path = slot_path(request)
    redirect_to_owner(request, path)
    # A repeated or unknown key is refused before the token is even read.
    query = strict_upload_query(request.query.items())
    grant = verify_upload(cfg.http.secret, path, query)
    length = request.content_length
    if length is None:
        # XEP-0363 binds the slot to a size; without Content-Length it cannot be checked
        # before the body arrives.
        raise web.HTTPLengthRequired(text="Content-Length is required")
    limit = cfg.upload.max_file_size
    if length > limit or grant.size > limit:
        # The limit holds whatever the slot said: it may predate a lowered limit.
        raise FileTooLarge(max(length, grant.size), limit)
    if length != grant.size:
        # XEP-0363 §Upload: MUST reject a PUT whose Content-Length differs from the slot.
        raise SizeMismatch(grant.size, length)
    repo = request.app[REPOSITORY]
    if (
        length < SOCKET_BODY_MIN
        and hdrs.EXPECT not in request.headers
        and receiver_of(repo) is not None
    ):
        # The body is on its way anyway, and publishing refuses an existing name with
        # the same 409: a small upload saves the worker-thread hop of asking first.
        request[CHECKED] = (path, grant)
        return path, grant
    try:
        await repo.size(path.repo_path)
    except NotFound:
        request[CHECKED] = (path, grant)
        return path, grant
    raise AlreadyUploaded()


async def expect_upload(request: web.Request) -> web.StreamResponse | None:
    """Route ``expect_handler``: refuse early, or send ``100 Continue``."""
    try:
        await check_upload(request)
        await request.app[SCANNER].ready()  # clamd down: 503 before the body is sent
    except UploadError as exc:
        log.info("PUT %s refused before the body: %d %s", request.path, exc.status, exc.text)
        return error_response(exc)
    except web.HTTPException as exc:
        return http_exception_response(exc)
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version >= (1, 1):
        if expect.lower() != "100-continue":
            return http_exception_response(web.HTTPExpectationFailed())
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the response proper has not started
    return None


async def body_chunks(request: web.Request, idle_timeout: float) -> AsyncIterator[bytes]:
    """The request body in chunks as they arrive, never the whole body in memory.

    :raises BodyStalled: no byte arrived for ``idle_timeout`` seconds.
    :raises InvalidRequest: the connection ended before the declared length.
    """
    chunks = request.content.iter_chunked(CHUNK)
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError as exc:
            raise BodyStalled() from exc
        except (ConnectionError, ClientPayloadError, HttpProcessingError) as exc:
            raise InvalidRequest("Upload interrupted before the end of the body") from exc
        yield chunk


_BODY_ERRORS = (ConnectionError, ClientPayloadError, HttpProcessingError)


def _interrupted() -> InvalidRequest:
    return InvalidRequest("Upload interrupted before the end of the body")


class _PrefixedBody:
    """Body bytes already taken out of aiohttp's stream, handed out before the rest."""

    def __init__(self, prefix: bytes) -> None:
        self._prefix = memoryview(prefix)

    def whole(self, size: int) -> memoryview | None:
        """All ``size`` bytes of the body, if they are in already, taken: the repository
        then writes them from here, not through a buffer of its own (no copy)."""
        if len(self._prefix) != size:
            return None
        whole, self._prefix = self._prefix, memoryview(b"")
        return whole

    async def readinto(self, buf: memoryview) -> int:
        """Copy or receive the next bytes into ``buf``: the prefix first, then the rest.

        :raises BodyStalled: nothing for ``idle_timeout`` seconds.
        :raises InvalidRequest: the connection ended before the declared length.
        """
        if not self._prefix:
            return await self._read_more(buf)
        n = min(len(buf), len(self._prefix))
        buf[:n] = self._prefix[:n]
        # An empty slice would still hold the whole prefix for the rest of the upload.
        self._prefix = self._prefix[n:] if n < len(self._prefix) else memoryview(b"")
        return n

    async def _read_more(self, buf: memoryview) -> int:
        """The next bytes after the prefix, into ``buf`` (as :meth:`readinto`)."""
        raise NotImplementedError


class StreamBody(_PrefixedBody):
    """A :class:`~httpd.repository.base.BodySource` reading through aiohttp's stream.

    ``prefix``: body bytes already taken out of the stream (see :func:`body_source`).
    """

    def __init__(self, request: web.Request, prefix: bytes, idle_timeout: float) -> None:
        super().__init__(prefix)
        self._content = request.content
        self._idle = idle_timeout

    async def _read_more(self, buf: memoryview) -> int:
        """Copy the next bytes of aiohttp's stream into ``buf``."""
        try:
            data = self._content.read_nowait(len(buf))
            if not data:
                async with asyncio.timeout(self._idle):
                    data = await self._content.read(min(len(buf), CHUNK))
        except TimeoutError as exc:
            raise BodyStalled() from exc
        except _BODY_ERRORS as exc:
            raise _interrupted() from exc
        if not data:
            raise _interrupted()
        buf[: len(data)] = data
        return len(data)

    async def end(self) -> None:
        """aiohttp's parser stops at Content-Length: nothing can follow."""


class SocketBody(_PrefixedBody):
    """A :class:`~httpd.repository.base.BodySource` reading the connection's socket itself.

    aiohttp's parser and stream are left behind (see :func:`body_source`): the rest of
    the body is received with ``recv_into`` straight into the repository's buffer, no
    bytes object per piece, no Python copy. The socket is a duplicate descriptor, so
    aiohttp closing its own (shutdown) cannot hand the number to another file under us.
    """

    def __init__(self, sock: socket.socket, prefix: bytes, idle_timeout: float) -> None:
        super().__init__(prefix)
        self._sock = sock
        self._idle = idle_timeout
        self._loop = asyncio.get_running_loop()
        self._lowat = 1

    def _wake_at(self, n: int) -> None:
        """Be woken only once ``n`` bytes are in (SO_RCVLOWAT; the end of the stream
        wakes too): a few large receives per buffer instead of one per TCP segment."""
        n = max(1, min(n, RCVLOWAT))
        if n != self._lowat:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, n)
            self._lowat = n

    async def _read_more(self, buf: memoryview) -> int:
        """Receive the next bytes from the socket into ``buf``."""
        try:
            try:
                n = self._sock.recv_into(buf)
            except BlockingIOError:
                self._wake_at(len(buf))
                try:
                    async with asyncio.timeout(self._idle):
                        n = await self._loop.sock_recv_into(self._sock, buf)
                except TimeoutError as exc:
                    try:  # fewer than the wake-up mark may have come: progress all the same
                        n = self._sock.recv_into(buf)
                    except BlockingIOError:
                        raise BodyStalled() from exc
        except OSError as exc:
            raise _interrupted() from exc
        if not n:
            raise _interrupted()
        return n

    async def end(self) -> None:
        """Bytes past Content-Length are never read: the connection closes after the
        response, so they cannot pass for a next request."""

    def close(self) -> None:
        """Close the duplicate descriptor."""
        self._sock.close()


def _socket_of(request: web.Request) -> socket.socket | None:
    """A duplicate of the connection's socket, if the body may be read from it: plain
    TCP (not TLS), a body as sent (no Content-Encoding or Transfer-Encoding for aiohttp
    to undo)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return None
    if transport.get_extra_info("sslcontext") is not None:
        return None
    if hdrs.CONTENT_ENCODING in request.headers or hdrs.TRANSFER_ENCODING in request.headers:
        return None
    raw = transport.get_extra_info("socket")
    if raw is None:
        return None
    sock = socket.socket(fileno=os.dup(raw.fileno()))
    sock.setblocking(False)
    return sock


def body_source(request: web.Request, size: int, idle_timeout: float) -> StreamBody | SocketBody:
    """The body of a checked PUT of ``size`` bytes, as a source the repository reads.

    What aiohttp has buffered already is taken first, all in one go with no await in
    between: taking it may let aiohttp parse more it had held back, which is taken too.
    A large body with more to come is then read from the socket (:class:`SocketBody`):
    aiohttp's transport stops reading, its stream is ended, and the connection is
    marked to close once the response is out (aiohttp's parser still expects the rest
    of the body, so it could not read a next request behind it).

    :raises InvalidRequest: the body already failed (aiohttp's payload error).
    """
    content = request.content
    parts = []
    try:
        while piece := content.read_nowait(-1):
            parts.append(piece)
    except _BODY_ERRORS as exc:
        raise _interrupted() from exc
    prefix = b"".join(parts) if len(parts) != 1 else parts[0]
    if len(prefix) >= size or size < SOCKET_BODY_MIN:
        return StreamBody(request, prefix, idle_timeout)
    sock = _socket_of(request)
    if sock is None:
        return StreamBody(request, prefix, idle_timeout)
    assert request.transport is not None  # _socket_of checked it
    content.feed_eof()  # nobody reads it again; aiohttp must not linger for the rest
    request.protocol.close()
    # Last: ending the stream above resumes the transport's reading.
    request.transport.pause_reading()
    return SocketBody(sock, prefix, idle_timeout)


class StreamDigest:
    """SHA-256 of an upload, fed while it streams (FILE_SHA256; the file is never re-read).

    Each chunk is hashed on the event loop as it passes (a 256 KiB chunk takes ~0.15 ms
    with SHA-NI). Measured side by side (benchmarks/transfer.py --hash-cost), this costs
    the upload only the hash itself: handing batches to a worker thread cost 2.5 times
    the CPU (a thread hop per batch) and held up to two batches per upload in memory.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    @property
    def sha(self) -> hashlib._Hash:
        """The hash object, for a repository that feeds it itself (in its writer thread)."""
        return self._sha

    async def feed(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks`` unchanged, each hashed on its way."""
        async for chunk in chunks:
            self._sha.update(chunk)
            yield chunk

    async def hexdigest(self) -> str:
        """The 64 lower-case hex digits of everything fed so far."""
        return self._sha.hexdigest()


async def _record_or_discard(
    audit: AuditLog, repo: Repository, rec: AuditRecord, repo_path: str
) -> None:
    """Log the POST row; if that fails, delete the stored file (never an unlogged file).

    Runs to its end even if the handler is cancelled (server shutdown), so the file and
    its row always agree.

    :raises AuditUnavailable: the row could not be recorded; the file is gone again.
    """

    async def commit() -> None:
        try:
            await audit.record(rec)
        except BaseException:
            await repo.delete(repo_path)
            raise

    task = asyncio.create_task(commit())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


async def _refuse_infected(audit: AuditLog, rec: AuditRecord, exc: Infected) -> None:
    """Log who uploaded which file with which signature (nothing was published).

    The ``POST_INFECTED`` row is best effort: the upload is refused (422) either way.
    """
    try:
        await audit.record(replace(rec, method="POST_INFECTED"))
    except AuditUnavailable:
        log.error("POST_INFECTED row of %s not recorded", rec.filename, exc_info=True)
    log.warning(
        "infected upload refused: %s uploaded %r (resource %s, %d bytes), signature %s",
        rec.jid,
        rec.real_filename,
        rec.filename,
        rec.file_size,
        exc.signature,
    )


async def put_upload(request: web.Request) -> web.StreamResponse:
    """Store one upload and answer 201 once the file is published and logged.

    :raises UploadError: see :func:`check_upload`; ``SizeMismatch``/``InvalidRequest``
        when the body ends early; ``StorageUnavailable``/``AuditUnavailable`` (503);
        ``Infected`` (422), ``TooLargeToScan`` (413), ``ScanUnavailable`` (503) from the
        malware scan.
    """
    cfg, repo = request.app[CONFIG], request.app[REPOSITORY]
    path, grant = await check_upload(request)
    started = time.monotonic()
    digest = StreamDigest()
    infected: Infected | None = None
    scanner = request.app[SCANNER]
    # One pass over the body: hashed (FILE_SHA256) and streamed to clamd as it is
    # stored; the scan's verdict comes before the rename.
    async with scanner.scan(grant.size) as scan:
        source: StreamBody | SocketBody | None = None
        try:
            receiver = receiver_of(repo)
            if receiver is not None and not scanner.enabled:
                # No scan to feed: the repository pulls the body into its own buffers
                # and hashes it in the thread that writes it.
                source = body_source(request, grant.size, cfg.http.body_timeout)
                await receiver.receive(path.repo_path, source, grant.size, digest.sha)
            else:
                body = scan.wrap(digest.feed(body_chunks(request, cfg.http.body_timeout)))
                await repo.store(path.repo_path, body, grant.size)
        except BodyStalled:
            log.info("PUT %s abandoned: no data for %gs", request.path, cfg.http.body_timeout)
            return await answer_and_close(
                request, web.Response(status=408, text="Upload stalled\n")
            )
        except Infected as exc:
            infected = exc  # nothing was published; the row below says why
        finally:
            if isinstance(source, SocketBody):
                source.close()
    rec = AuditRecord(
        jid=grant.uploader.partition("/")[0],
        to_jid=grant.recipient,
        method="POST",
        filename=path.resource,
        real_filename=real_filename(path.filename),
        file_type=file_type(path.filename),
        chat_type=path.chat_type,
        file_server=repo.file_server,
        file_size=grant.size,
        node_id=cfg.node.id,
        client_ip=client_ip(request),
        file_sha256=await digest.hexdigest(),
        scan_result=infected.signature if infected is not None else scan.result,
    )
    if infected is not None:
        await _refuse_infected(request.app[AUDIT], rec, infected)
        raise infected
    await _record_or_discard(request.app[AUDIT], repo, rec, path.repo_path)
    elapsed = time.monotonic() - started
    metrics, labels = request.app[METRICS], {"chat_type": path.chat_type}
    metrics.inc("uploads", labels=labels)
    metrics.inc("upload_bytes", labels=labels, value=grant.size)
    metrics.observe("upload_seconds", value=elapsed, labels=labels)
    log.info(
        "upload stored: %s %s/%s %d bytes in %.2fs from %s (Content-Type %r)",
        path.chat_type,
        path.hour_dir,
        path.resource,
        grant.size,
        elapsed,
        rec.jid,
        request.headers.get(hdrs.CONTENT_TYPE, ""),
    )
    resp = web.Response(status=201)
    if isinstance(source, SocketBody):
        resp.force_close()  # body_source closes the connection after it: say so
    return resp
