"""AFT_LOG rows, queries and the interface of every audit back-end.

One row per completed transfer (``POST`` for an upload, ``GET`` for a download), with
the columns of DESIGN.md; the :class:`AuditLog` protocol every back-end implements.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, cast

from component.errors import AuditUnavailable

# POST: upload completed; GET: download completed. A download that did not complete is
# never logged as GET: GET_INCOMPLETE (cut off half-way), GET_REFUSED (no valid identity
# ticket when one is required), GET_GONE (file purged by retention). SHARE: the XMPP
# server reported the file's URL sent to TO_JID (mod_mft_share). POST_INFECTED: an
# upload the malware scan refused (nothing stored; SCAN_RESULT names the signature).
Method = Literal[
    "POST", "GET", "GET_INCOMPLETE", "GET_REFUSED", "GET_GONE", "SHARE", "POST_INFECTED"
]
METHODS: tuple[Method, ...] = (
    "POST",
    "GET",
    "GET_INCOMPLETE",
    "GET_REFUSED",
    "GET_GONE",
    "SHARE",
    "POST_INFECTED",
)

# Column names and sizes, as Cisco's AFT_LOG plus NODE_ID and CLIENT_IP, then (schema
# version 2, DESIGN.md "Compliance records") FILE_SHA256 and SCAN_RESULT.
COLUMNS = (
    "AFT_INDEX",
    "JID",
    "TO_JID",
    "METHOD",
    "FILENAME",
    "REAL_FILENAME",
    "FILE_TYPE",
    "CHAT_TYPE",
    "FILE_SERVER",
    "FILE_SIZE",
    "DATE_TIME",
    "NODE_ID",
    "CLIENT_IP",
    "FILE_SHA256",
    "SCAN_RESULT",
)
TEXT_LIMITS = {
    "JID": 3071,
    "TO_JID": 3071,
    "METHOD": 63,
    "FILENAME": 511,
    "REAL_FILENAME": 511,
    "FILE_TYPE": 10,
    "CHAT_TYPE": 10,
    "FILE_SERVER": 511,
    "NODE_ID": 128,
    "CLIENT_IP": 64,
    "FILE_SHA256": 64,
    "SCAN_RESULT": 255,
}


def field_of(column: str) -> str:
    """The :class:`AuditRecord` attribute that holds ``column``: its name in lower case,
    ``index`` for AFT_INDEX (so :data:`COLUMNS` stays the one list of columns)."""
    return "index" if column == "AFT_INDEX" else column.lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One AFT_LOG row. ``index`` is set by the database (``None`` before insert)."""

    jid: str
    to_jid: str
    method: Method
    filename: str
    real_filename: str
    file_type: str
    chat_type: str
    file_server: str
    file_size: int
    date_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    node_id: str = ""
    client_ip: str = ""
    # SHA-256 of the stored bytes, 64 lower-case hex digits (POST and that file's GET
    # rows); empty for rows written before schema version 2 or when unknown.
    file_sha256: str = ""
    # Malware scan verdict: "clean", the signature name, or empty when scanning is off.
    scan_result: str = ""
    index: int | None = None

    def clipped(self) -> AuditRecord:
        """The same row with every text cut to its column size."""
        values: dict[str, Any] = {
            field_of(c): getattr(self, field_of(c))[:limit] for c, limit in TEXT_LIMITS.items()
        }
        return replace(self, **values)

    def as_row(self) -> dict[str, object]:
        """Column name -> value (DATE_TIME as naive UTC, as the databases store it)."""
        row = {c: getattr(self, field_of(c)) for c in COLUMNS}
        row["DATE_TIME"] = naive_utc(self.date_time)
        return row


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditQuery:
    """Filters for :meth:`AuditLog.query` (all optional; dates are UTC)."""

    jid: str | None = None
    to_jid: str | None = None
    method: Method | None = None
    chat_type: str | None = None
    filename: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # Only rows with AFT_INDEX above this (keyset paging: read a large table in pages).
    after_index: int | None = None
    limit: int | None = None


# The AFT_LOG column a hold matches: the uploader (JID) or the recipient (TO_JID).
HoldColumn = Literal["JID", "TO_JID"]
HOLD_COLUMNS: tuple[HoldColumn, ...] = ("JID", "TO_JID")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """One legal hold. ``hold_id`` is set by the database (``None`` before insert)."""

    column: HoldColumn
    jid: str
    reason: str = ""
    created_by: str = ""
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    released_at: datetime | None = None
    released_by: str = ""
    release_reason: str = ""
    hold_id: int | None = None

    @property
    def active(self) -> bool:
        """Whether the hold still stops purges."""
        return self.released_at is None


@dataclass(frozen=True, slots=True)
class HeldJids:
    """The bare JIDs under an active hold, as uploaders and as recipients."""

    uploaders: frozenset[str] = frozenset()
    recipients: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.uploaders or self.recipients)

    def holds_upload(self, uploader: str, recipients: Iterable[str]) -> bool:
        """Whether a file uploaded by ``uploader`` and sent to ``recipients`` is held."""
        if bare_jid(uploader) in self.uploaders:
            return True
        return any(bare_jid(r) in self.recipients for r in recipients if r)


def held_jids(holds: Iterable[Hold]) -> HeldJids:
    """The JIDs the active ``holds`` protect."""
    active = [h for h in holds if h.active]
    return HeldJids(
        uploaders=frozenset(h.jid for h in active if h.column == "JID"),
        recipients=frozenset(h.jid for h in active if h.column == "TO_JID"),
    )


class AuditLog(Protocol):
    """The audit log interface both back-ends implement."""

    async def open(self) -> None:
        """Connect and create the table if missing.

        :raises AuditUnavailable: the database cannot be reached at start-up.
        """

    async def close(self) -> None:
        """Flush what can be flushed and release connections."""

    async def ping(self) -> None:
        """Check the database answers (for /healthz and ``mft check``).

        :raises AuditUnavailable: it does not.
        """

    async def server_version(self) -> str:
        """The database product and version :meth:`open` reached (for ``mft check``)."""

    async def record(self, rec: AuditRecord) -> None:
        """Store one row durably (in the database, or in the spool while it is down).

        :raises AuditUnavailable: neither the database nor the spool took the row.
        """

    async def find_upload(self, resource: str) -> AuditRecord | None:
        """The POST row of ``resource`` (for GET rows after a restart), if known."""

    async def find_first_share(self, resource: str) -> AuditRecord | None:
        """The oldest SHARE row of ``resource`` (its recipient for GET rows), if any.

        :raises AuditUnavailable: the database did not answer.
        """

    async def query(self, q: AuditQuery) -> Sequence[AuditRecord]:
        """Rows matching ``q``, oldest first."""

    async def count_uploads(self, jid: str, since: datetime) -> tuple[int, int]:
        """``(files, bytes)`` uploaded by bare ``jid`` since ``since`` (for quotas)."""

    async def uploaded_among(self, resources: Sequence[str]) -> set[str]:
        """Which of ``resources`` have a POST row: one query however many (for quotas,
        which settle a user's pending slots under the user's lock).

        :raises AuditUnavailable: the database did not answer.
        """

    async def count_by_chat_type(self, since: datetime, node_id: str) -> dict[str, int]:
        """Uploads (POST rows) completed on ``node_id`` since ``since``, per chat type.

        For the ``HH.n`` roll-over after a restart (:meth:`DirectoryAllocator.seed`).

        :raises AuditUnavailable: the database did not answer.
        """

    # Legal holds and purge marks (schema version 2). Written straight to the database,
    # never spooled: a hold must reach every node at once, and a purge that cannot record
    # what it deletes must not delete.

    async def add_hold(self, hold: Hold) -> int:
        """Store a new hold; its ``HOLD_ID``.

        :raises AuditUnavailable: the database did not take it.
        """

    async def list_holds(self, *, include_released: bool = False) -> Sequence[Hold]:
        """Active holds (all holds with ``include_released``), oldest first.

        :raises AuditUnavailable: the database did not answer.
        """

    async def release_hold(
        self, hold_id: int, *, by: str, reason: str = "", at: datetime | None = None
    ) -> Hold | None:
        """Release an active hold (recording ``at``, ``by`` and ``reason``).

        :returns: the hold as now stored, or ``None`` if there is no such hold.
            Releasing a released hold changes nothing and returns it as it was.
        :raises AuditUnavailable: the database did not answer.
        """

    async def mark_purged(
        self, resources: Sequence[str], *, node_id: str, by: str, at: datetime | None = None
    ) -> None:
        """Record that the files ``resources`` are being deleted by retention.

        :raises AuditUnavailable: the marks were not stored (then delete nothing).
        """

    async def purged(self, resources: Sequence[str]) -> set[str]:
        """Which of ``resources`` retention purged.

        :raises AuditUnavailable: the database did not answer.
        """


class FindsUploadAndShare(Protocol):
    """A back-end that finds a GET's two rows in one go (SQLite: one hop to its thread)."""

    async def find_upload_and_share(
        self, resource: str
    ) -> tuple[AuditRecord | None, AuditRecord | None]:
        """The POST row of ``resource`` and, when that names no recipient, the oldest
        SHARE row (as :meth:`AuditLog.find_upload` and :meth:`AuditLog.find_first_share`).

        :raises AuditUnavailable: the database did not answer.
        """


def upload_and_share_finder_of(audit: object) -> FindsUploadAndShare | None:
    """``audit`` as a :class:`FindsUploadAndShare` if it has that method, else ``None``."""
    found = callable(getattr(audit, "find_upload_and_share", None))
    return cast(FindsUploadAndShare, audit) if found else None


class AuditWriteFailed(AuditUnavailable):
    """A row did not reach the database.

    ``maybe_index`` is the AFT_INDEX the row was given when the failure hit the COMMIT
    itself, whose outcome is then unknown; the spool checks that index before delivering
    the row again, so the row is stored exactly once.
    """

    def __init__(self, text: str | None = None, *, maybe_index: int | None = None) -> None:
        super().__init__(text)
        self.maybe_index = maybe_index


def bare_jid(jid: str) -> str:
    """``user@host/resource`` -> ``user@host`` (lower-cased: bare JIDs compare caselessly)."""
    return jid.partition("/")[0].lower()


def jid_matches(stored: str, jid: str) -> bool:
    """Whether the stored (bare or full) JID ``stored`` belongs to the bare JID of ``jid``."""
    return bare_jid(stored) == bare_jid(jid)


def naive_utc(dt: datetime) -> datetime:
    """``dt`` in UTC without tzinfo, as both databases store DATE_TIME (naive means UTC)."""
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt
