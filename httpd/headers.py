"""Pure HTTP header logic for downloads and CORS: Range, Content-Type, Content-Disposition.

No aiohttp import: these functions take and return plain strings and numbers so the
rules (which status, which header) can be tested on their own.
"""

from __future__ import annotations

import mimetypes
import re
from dataclasses import dataclass
from urllib.parse import quote

DEFAULT_TYPE = "application/octet-stream"

# Types a browser shows without running anything; every other type is served as an
# attachment (as Prosody's mod_http_file_share does), so HTML, SVG, XML, JavaScript and
# anything unknown never execute in the origin of the upload service.
INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "image/heic",
        "image/heif",
        "text/plain",
    }
)
INLINE_PREFIXES = ("audio/", "video/")

# Cross-origin web clients (converse.js, Movim) upload and download with fetch/XHR.
CORS_ALLOW_METHODS = "PUT, GET, HEAD, OPTIONS"
CORS_ALLOW_HEADERS = "Content-Type, Content-Length, Authorization, Range"
CORS_EXPOSE_HEADERS = "Content-Length, Content-Range, Content-Disposition"
# On /healthz: which node answered (`mft check` compares it with [node] id).
NODE_HEADER = "X-MFT-Node"
# On /healthz: when this HTTP server started (ISO 8601 UTC); `mft check` asks AFT_LOG
# whether a share report arrived since.
STARTED_HEADER = "X-MFT-Started"
CORS_MAX_AGE = "86400"
# Even an inline image must not load scripts or be framed by another site.
CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"

_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(Exception):
    """A syntactically valid single range that lies outside the file (HTTP 416)."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A satisfiable byte range: ``length`` bytes from ``start``."""

    start: int
    length: int

    @property
    def end(self) -> int:
        """The last byte's offset (inclusive, as in ``Content-Range``)."""
        return self.start + self.length - 1

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` header value for a file of ``size`` bytes."""
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single byte range a ``Range`` header asks for, or ``None`` for the whole file.

    RFC 9110 §14.2 lets a server ignore a Range it does not support: several ranges,
    other units and malformed values get the whole file (200), not an error.

    :raises RangeNotSatisfiable: the range starts at or beyond the end of the file, or
        is an empty suffix (``bytes=-0``).
    """
    if not header:
        return None
    m = _RANGE_RE.match(header.strip().replace(" ", ""))
    if not m:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable()
        start = max(0, size - suffix)
        return ByteRange(start, size - start)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid range: ignore it, as RFC 9110 allows
    if start >= size:
        raise RangeNotSatisfiable()
    end = min(end, size - 1)
    return ByteRange(start, end - start + 1)


def content_type_for(filename: str) -> str:
    """The Content-Type guessed from the file name's extension (octet-stream if unknown)."""
    guessed, _encoding = mimetypes.guess_type(filename, strict=False)
    return guessed or DEFAULT_TYPE


def is_inline(content_type: str) -> bool:
    """Whether a browser may show ``content_type`` in place (nothing in it can run)."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    return ctype in INLINE_TYPES or ctype.startswith(INLINE_PREFIXES)


def content_disposition(filename: str, content_type: str) -> str:
    """``inline`` or ``attachment`` with the file name per RFC 6266 / RFC 8187.

    A plain-ASCII ``filename=`` fallback (quotes, backslashes and non-ASCII replaced)
    is given for old clients, and ``filename*=UTF-8''...`` carries the real name.
    """
    kind = "inline" if is_inline(content_type) else "attachment"
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\;%' else "_" for c in filename)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
