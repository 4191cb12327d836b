"""AFT_LOG: the audit table of every upload and download, behind a small async interface.

One row per completed transfer (``POST`` for an upload, ``GET`` for a download), with
the columns of DESIGN.md. :func:`open_audit_log` picks the back-end from
``[database] url``: ``sqlite://`` (embedded default) or ``mysql://``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal, Protocol

from .config import Config
from .errors import AuditUnavailable
from .metrics import Metrics

# POST: upload completed; GET: download completed. A download that did not complete is
# never logged as GET: GET_INCOMPLETE (cut off half-way), GET_REFUSED (no valid identity
# ticket when one is required), GET_GONE (file purged by retention).
Method = Literal["POST", "GET", "GET_INCOMPLETE", "GET_REFUSED", "GET_GONE"]
METHODS: tuple[Method, ...] = ("POST", "GET", "GET_INCOMPLETE", "GET_REFUSED", "GET_GONE")

# Column names and sizes, as Cisco's AFT_LOG plus NODE_ID and CLIENT_IP.
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
}


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
    index: int | None = None

    def clipped(self) -> AuditRecord:
        """The same row with every text cut to its column size."""
        values = {
            "jid": self.jid[: TEXT_LIMITS["JID"]],
            "to_jid": self.to_jid[: TEXT_LIMITS["TO_JID"]],
            "filename": self.filename[: TEXT_LIMITS["FILENAME"]],
            "real_filename": self.real_filename[: TEXT_LIMITS["REAL_FILENAME"]],
            "file_type": self.file_type[: TEXT_LIMITS["FILE_TYPE"]],
            "chat_type": self.chat_type[: TEXT_LIMITS["CHAT_TYPE"]],
            "file_server": self.file_server[: TEXT_LIMITS["FILE_SERVER"]],
            "node_id": self.node_id[: TEXT_LIMITS["NODE_ID"]],
            "client_ip": self.client_ip[: TEXT_LIMITS["CLIENT_IP"]],
        }
        return replace(self, **values)  # type: ignore[arg-type]

    def as_row(self) -> dict[str, object]:
        """Column name -> value (DATE_TIME as naive UTC, as the databases store it)."""
        return {
            "AFT_INDEX": self.index,
            "JID": self.jid,
            "TO_JID": self.to_jid,
            "METHOD": self.method,
            "FILENAME": self.filename,
            "REAL_FILENAME": self.real_filename,
            "FILE_TYPE": self.file_type,
            "CHAT_TYPE": self.chat_type,
            "FILE_SERVER": self.file_server,
            "FILE_SIZE": self.file_size,
            "DATE_TIME": naive_utc(self.date_time),
            "NODE_ID": self.node_id,
            "CLIENT_IP": self.client_ip,
        }


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
    limit: int | None = None


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

    async def record(self, rec: AuditRecord) -> None:
        """Store one row durably (in the database, or in the spool while it is down).

        :raises AuditUnavailable: neither the database nor the spool took the row.
        """

    async def find_upload(self, resource: str) -> AuditRecord | None:
        """The POST row of ``resource`` (for GET rows after a restart), if known."""

    async def query(self, q: AuditQuery) -> Sequence[AuditRecord]:
        """Rows matching ``q``, oldest first."""

    async def count_uploads(self, jid: str, since: datetime) -> tuple[int, int]:
        """``(files, bytes)`` uploaded by bare ``jid`` since ``since`` (for quotas)."""

    async def count_by_chat_type(self, since: datetime, node_id: str) -> dict[str, int]:
        """Uploads (POST rows) completed on ``node_id`` since ``since``, per chat type.

        For the ``HH.n`` roll-over after a restart (:meth:`DirectoryAllocator.seed`).

        :raises AuditUnavailable: the database did not answer.
        """


def open_audit_log(cfg: Config, metrics: Metrics | None = None, *, spool: bool = True) -> AuditLog:
    """The back-end for ``cfg.database.url`` (not yet opened).

    ``mysql://`` is wrapped in a :class:`~component.audit_spooled.SpooledAuditLog` so that a
    database outage does not fail transfers; ``spool=False`` gives the bare back-end (for
    read-only tools such as ``mft log``, which must not take the running service's spool).
    A local SQLite file needs no spool.
    """
    if cfg.database.scheme == "mysql":
        from .audit_mysql import MysqlAuditLog

        inner = MysqlAuditLog(cfg, metrics)
        if not spool:
            return inner
        from .audit_spooled import SpooledAuditLog

        return SpooledAuditLog(inner, cfg.spool_path, metrics or Metrics())
    from .audit_sqlite import SqliteAuditLog

    return SqliteAuditLog(cfg)


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


def _like_escape(text: str) -> str:
    # '!' as the LIKE escape: both SQLite (no default escape) and MySQL accept ESCAPE '!'.
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def where_clause(q: AuditQuery, placeholder: str) -> tuple[str, list[object]]:
    """SQL ``WHERE ...`` (or ``''``) and its parameters for ``q``; both back-ends use it.

    JIDs are matched as bare JIDs: ``alice@example.com`` finds rows stored with that bare
    JID and with any of its full JIDs (``alice@example.com/phone``).
    """
    conds: list[str] = []
    params: list[object] = []
    for column, jid in (("JID", q.jid), ("TO_JID", q.to_jid)):
        if jid is not None:
            bare = bare_jid(jid)
            conds.append(f"({column} = {placeholder} OR {column} LIKE {placeholder} ESCAPE '!')")
            params += [bare, _like_escape(bare) + "/%"]
    for column, value in (
        ("METHOD", q.method),
        ("CHAT_TYPE", q.chat_type),
        ("FILENAME", q.filename),
    ):
        if value is not None:
            conds.append(f"{column} = {placeholder}")
            params.append(value)
    if q.since is not None:
        conds.append(f"DATE_TIME >= {placeholder}")
        params.append(naive_utc(q.since))
    if q.until is not None:
        conds.append(f"DATE_TIME < {placeholder}")
        params.append(naive_utc(q.until))
    return (" WHERE " + " AND ".join(conds)) if conds else "", params


def naive_utc(dt: datetime) -> datetime:
    """``dt`` in UTC without tzinfo, as both databases store DATE_TIME (naive means UTC)."""
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def insert_sql(placeholder: str) -> str:
    """``INSERT INTO AFT_LOG`` of every column but AFT_INDEX, in :data:`COLUMNS` order."""
    names = COLUMNS[1:]
    return (
        f"INSERT INTO AFT_LOG ({', '.join(names)}) VALUES ({', '.join([placeholder] * len(names))})"
    )


SELECT_SQL = f"SELECT {', '.join(COLUMNS)} FROM AFT_LOG"


def count_by_chat_type_sql(placeholder: str) -> str:
    """``SELECT CHAT_TYPE, COUNT(*)`` of POST rows by NODE_ID since DATE_TIME, grouped.

    Parameters: node id, then the start time (naive UTC). A range on the DATE_TIME
    index: one hour of rows is read, not the table.
    """
    return (
        "SELECT CHAT_TYPE, COUNT(*) FROM AFT_LOG WHERE METHOD = 'POST'"
        f" AND NODE_ID = {placeholder} AND DATE_TIME >= {placeholder} GROUP BY CHAT_TYPE"
    )


def record_values(rec: AuditRecord) -> tuple[object, ...]:
    """:func:`insert_sql` parameters for ``rec`` (texts clipped to their column sizes)."""
    row = rec.clipped().as_row()
    return tuple(row[c] for c in COLUMNS[1:])


def row_to_record(row: Sequence[object]) -> AuditRecord:
    """A row in :data:`SELECT_SQL` column order -> :class:`AuditRecord` (DATE_TIME is UTC)."""
    dt = row[10]
    if isinstance(dt, str):
        dt = datetime.fromisoformat(dt)
    if not isinstance(dt, datetime):
        raise TypeError(f"DATE_TIME is {type(dt).__name__}, not a timestamp")
    return AuditRecord(
        index=int(row[0]),  # type: ignore[call-overload]
        jid=str(row[1]),
        to_jid=str(row[2]),
        method=str(row[3]),  # type: ignore[arg-type]
        filename=str(row[4]),
        real_filename=str(row[5]),
        file_type=str(row[6]),
        chat_type=str(row[7]),
        file_server=str(row[8]),
        file_size=int(row[9]),  # type: ignore[call-overload]
        date_time=dt.replace(tzinfo=UTC),
        node_id=str(row[11]),
        client_ip=str(row[12]),
    )
