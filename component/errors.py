"""Typed errors of xmpp-mft; each class carries its XMPP and HTTP rendering.

Pure data: no slixmpp or aiohttp import, so both halves can share it. They are
rendered in two places only: ``component.xmpp.service`` (IQ errors) and
``httpd.middleware`` (HTTP statuses)::

    Exception
     +-- ConfigError                       bad or missing configuration key
     +-- UploadError                       condition / type / HTTP status
          +-- InvalidRequest               bad-request          modify  400
          +-- FileTooLarge                 not-acceptable       modify  413  <file-too-large>
          +-- QuotaExceeded                resource-constraint  wait    429  <retry stamp>
          +-- NotAllowed                   not-allowed          cancel  403
          +-- InvalidToken                 not-authorized       auth    401 missing / 403 bad
          +-- SizeMismatch                 bad-request          modify  413 larger / 400 shorter
          +-- AlreadyUploaded              conflict             cancel  409
          +-- NotFound                     item-not-found       cancel  404
          +-- Gone                         item-not-found       cancel  410  (purged by retention)
          +-- StorageUnavailable           internal-server-error wait   503
          |    +-- FileServerUnreachable   no TCP connection, or no answer in time
          |    +-- HostKeyMismatch         another host key than the pinned one (MITM?)
          |    +-- HostKeyTypeMissing      the server has no host key of the pinned type
          |    +-- HostKeyNotPinned        [repository] host_key is empty
          |    +-- AuthRefused             the file server refused the node key
          |    +-- NodeKeyUnusable         [repository] client_key missing or unreadable
          |    +-- PathNotWritable         the node directory cannot be made or written
          +-- AuditUnavailable             internal-server-error wait   503
          +-- Infected                     not-acceptable       modify  422  (names the signature)
          +-- TooLargeToScan               not-acceptable       modify  413  (past clamd's limit)
          +-- ScanUnavailable              internal-server-error wait   503  (clamd failed)
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

Condition = Literal[
    "bad-request",
    "conflict",
    "forbidden",
    "internal-server-error",
    "item-not-found",
    "not-acceptable",
    "not-allowed",
    "not-authorized",
    "resource-constraint",
    "service-unavailable",
    "undefined-condition",
]
ErrorType = Literal["auth", "cancel", "continue", "modify", "wait"]


class ConfigError(Exception):
    """The configuration file is missing, unreadable, or has a bad key or value."""


class UploadError(Exception):
    """Base of every error a peer may see; subclasses fix condition, type and status."""

    condition: ClassVar[Condition] = "undefined-condition"
    etype: ClassVar[ErrorType] = "cancel"
    http_status: ClassVar[int] = 500
    default_text: ClassVar[str] = "Internal error"

    def __init__(self, text: str | None = None) -> None:
        self.text = text or self.default_text
        super().__init__(self.text)

    @property
    def status(self) -> int:
        """The HTTP status this error is answered with (log this one, not the class's)."""
        return self.http_status


class InvalidRequest(UploadError):
    """The slot request or HTTP request is malformed (bad file name, size, path)."""

    condition = "bad-request"
    etype = "modify"
    http_status = 400
    default_text = "Invalid request"


class FileTooLarge(UploadError):
    """The file is larger than ``max_file_size``; rendered with ``<max-file-size>``."""

    condition = "not-acceptable"
    etype = "modify"
    http_status = 413

    def __init__(self, size: int, max_size: int) -> None:
        self.size = size
        self.max_size = max_size
        super().__init__(f"File too large. The maximum file size is {max_size} bytes")


class QuotaExceeded(UploadError):
    """A per-user quota is used up; the user may retry at ``retry_at`` (UTC)."""

    condition = "resource-constraint"
    etype = "wait"
    http_status = 429

    def __init__(self, retry_at: datetime, text: str | None = None) -> None:
        self.retry_at = retry_at
        super().__init__(text or "Quota reached. You may retry later")


class NotAllowed(UploadError):
    """Uploads are disabled, or this user or domain may not upload."""

    condition = "not-allowed"
    etype = "cancel"
    http_status = 403
    default_text = "File upload is not allowed"


class InvalidToken(UploadError):
    """The PUT token or download ticket is missing, expired, forged, or for another path."""

    condition = "not-authorized"
    etype = "auth"
    http_status = 403
    default_text = "Invalid or expired token"

    def __init__(self, text: str | None = None, *, missing: bool = False) -> None:
        self.missing = missing
        super().__init__(text or ("Token missing" if missing else None))

    @property
    def status(self) -> int:
        """401 when there is no token at all (RFC 9110: authenticate), 403 when it is bad."""
        return 401 if self.missing else 403


class SizeMismatch(UploadError):
    """The body is not exactly the slot's size (XEP-0363: MUST reject)."""

    condition = "bad-request"
    etype = "modify"
    http_status = 400

    def __init__(self, expected: int, actual: int, *, larger: bool | None = None) -> None:
        self.expected = expected
        self.actual = actual
        self.larger = actual > expected if larger is None else larger
        super().__init__(f"Body size {actual} does not match the slot size {expected}")

    @property
    def status(self) -> int:
        """413 for a body larger than the slot, 400 for a shorter one."""
        return 413 if self.larger else 400


class AlreadyUploaded(UploadError):
    """A file was already stored for this slot; a slot is never overwritten."""

    condition = "conflict"
    etype = "cancel"
    http_status = 409
    default_text = "A file was already uploaded to this slot"


class NotFound(UploadError):
    """No such file (never uploaded, or an unknown slot)."""

    condition = "item-not-found"
    etype = "cancel"
    http_status = 404
    default_text = "Not found"


class Gone(UploadError):
    """The file existed but retention has purged it; the audit rows remain."""

    condition = "item-not-found"
    etype = "cancel"
    http_status = 410
    default_text = "The file was removed by the retention policy"


class StorageUnavailable(UploadError):
    """The repository (file server) cannot be reached or refused the operation."""

    condition = "internal-server-error"
    etype = "wait"
    http_status = 503
    default_text = "The file repository is unavailable, try again later"


class FileServerUnreachable(StorageUnavailable):
    """No TCP connection to the file server, or no SSH answer within the timeout."""


class HostKeyMismatch(StorageUnavailable):
    """The file server presented another host key than the pinned one; nothing was sent."""


class HostKeyTypeMissing(StorageUnavailable):
    """The file server has no host key of the pinned type (it hangs up the handshake)."""


class HostKeyNotPinned(StorageUnavailable):
    """``[repository] host_key`` is empty: no key to trust, so no connection is made."""


class AuthRefused(StorageUnavailable):
    """The file server refused the node key (not in the user's ``authorized_keys``)."""


class NodeKeyUnusable(StorageUnavailable):
    """``[repository] client_key`` is missing, unreadable or passphrase-protected."""


class PathNotWritable(StorageUnavailable):
    """The node directory cannot be created, or a probe file cannot be written in it."""


class AuditUnavailable(UploadError):
    """Neither the audit database nor its local spool can take the row."""

    condition = "internal-server-error"
    etype = "wait"
    http_status = 503
    default_text = "The audit log is unavailable, try again later"


class Infected(UploadError):
    """The malware scanner found ``signature`` in the upload; nothing was published."""

    condition = "not-acceptable"
    etype = "modify"
    http_status = 422

    def __init__(self, signature: str) -> None:
        self.signature = signature
        super().__init__(f"File rejected: the malware scanner found {signature}")


class TooLargeToScan(UploadError):
    """clamd refused the upload as larger than its ``StreamMaxLength``; nothing was published."""

    condition = "not-acceptable"
    etype = "modify"
    http_status = 413
    default_text = "File too large for the malware scanner"


class ScanUnavailable(UploadError):
    """clamd cannot be reached, timed out or answered an error (fail closed: 503)."""

    condition = "internal-server-error"
    etype = "wait"
    http_status = 503
    default_text = "The malware scanner is unavailable, try again later"


def http_status_of(exc: UploadError) -> int:
    """HTTP status for ``exc`` (:attr:`UploadError.status`: refined where it depends on
    the case)."""
    return exc.status
