"""Where errors become HTTP responses, and the CORS headers every response carries.

:class:`~component.errors.UploadError` subclasses map to their status through
:func:`component.errors.http_status_of` with a short text body. Anything unexpected is a
``500`` with a generic text; the details go to the log, never to the peer. A broken
connection or a cancelled handler is left to aiohttp (there is nobody to answer).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from component.errors import StorageUnavailable, UploadError, http_status_of
from component.metrics import Metrics
from httpd.appkeys import IN_FLIGHT, METRICS
from httpd.headers import CORS_EXPOSE_HEADERS

log = logging.getLogger(__name__)


def count_failure(metrics: Metrics, exc: BaseException) -> None:
    """Count a repository failure in the metrics.

    Database failures are not counted here: the audit back-end that met the library
    error counts it (``database_errors``), once, wherever the operation came from.
    """
    if isinstance(exc, StorageUnavailable):
        metrics.inc("repository_errors")


def error_response(exc: UploadError) -> web.Response:
    """The response for ``exc``: its status and a short text.

    A 4xx carries the error's own text (it describes the client's request); a 5xx only
    its class's generic text, since the details (paths, database) are for the log.
    """
    status = http_status_of(exc)
    text = exc.text if status < 500 else type(exc).default_text
    resp = web.Response(status=status, text=text + "\n")
    if status == 401:
        # RFC 9110 §11.6.1; the credential is the signed URL, not a header scheme.
        resp.headers["WWW-Authenticate"] = 'Bearer realm="xmpp-mft"'
    # The body of a refused upload may still be on its way; do not reuse the connection.
    resp.force_close()
    return resp


def http_exception_response(exc: web.HTTPException) -> web.Response:
    """A plain response copying an :class:`aiohttp.web.HTTPException` (for expect handlers)."""
    resp = web.Response(status=exc.status, text=(exc.text or exc.reason) + "\n")
    for name in ("Location", "Allow"):
        if name in exc.headers:
            resp.headers[name] = exc.headers[name]
    resp.force_close()
    return resp


async def answer_and_close(request: web.Request, resp: web.Response) -> web.Response:
    """Send ``resp`` now and close the connection behind it.

    For a client that stopped sending its body: aiohttp would otherwise linger for the
    rest of a body that is not coming before it closes the connection.
    """
    resp.force_close()
    await resp.prepare(request)
    await resp.write_eof()
    request.protocol.force_close()
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render typed errors; hide unexpected ones behind a generic 500."""
    try:
        return await handler(request)
    except (web.HTTPException, ConnectionError, asyncio.CancelledError):
        raise
    except UploadError as exc:
        count_failure(request.app[METRICS], exc)
        status = http_status_of(exc)
        level = logging.ERROR if status >= 500 else logging.INFO
        log.log(level, "%s %s -> %d %s", request.method, request.path, status, exc.text)
        return error_response(exc)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        resp = web.Response(status=500, text="Internal server error\n")
        resp.force_close()
        return resp


@web.middleware
async def in_flight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the request while it runs (see :func:`httpd.app.serve_http`)."""
    with request.app[IN_FLIGHT].track():
        return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: let web clients of any origin read every answer."""
    response.headers.setdefault("Access-Control-Allow-Origin", "*")
    response.headers.setdefault("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)
