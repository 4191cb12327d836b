"""AFT_LOG: the audit table of every upload and download, behind a small async interface.

:func:`open_audit_log` picks the back-end from ``[database] url``: ``sqlite://``
(embedded default), ``mysql://`` or ``postgresql://``; each back-end is a module of this
package, and none of them imports this one (the factory is the only place that knows them all).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from component.audit.base import (
    COLUMNS,
    HOLD_COLUMNS,
    METHODS,
    TEXT_LIMITS,
    AuditLog,
    AuditQuery,
    AuditRecord,
    AuditWriteFailed,
    FindsUploadAndShare,
    HeldJids,
    Hold,
    HoldColumn,
    Method,
    bare_jid,
    held_jids,
    jid_matches,
    naive_utc,
    upload_and_share_finder_of,
)
from component.config import Config
from component.metrics import Metrics

if TYPE_CHECKING:
    from component.audit.spooled import SpoolTarget

__all__ = [
    "COLUMNS",
    "HOLD_COLUMNS",
    "METHODS",
    "TEXT_LIMITS",
    "AuditLog",
    "AuditQuery",
    "AuditRecord",
    "AuditWriteFailed",
    "FindsUploadAndShare",
    "HeldJids",
    "Hold",
    "HoldColumn",
    "Method",
    "bare_jid",
    "held_jids",
    "jid_matches",
    "naive_utc",
    "open_audit_log",
    "upload_and_share_finder_of",
]


def open_audit_log(cfg: Config, metrics: Metrics | None = None, *, spool: bool = True) -> AuditLog:
    """The back-end for ``cfg.database.url`` (not yet opened).

    ``mysql://`` and ``postgresql://`` are wrapped in a
    :class:`~component.audit.spooled.SpooledAuditLog` so that a database outage does not
    fail transfers; ``spool=False`` gives the bare back-end (for read-only tools such as
    ``mft log``, which must not take the running service's spool). A local SQLite file
    needs no spool.
    """
    inner: SpoolTarget
    if cfg.database.scheme == "mysql":
        from component.audit.mysql import MysqlAuditLog

        inner = MysqlAuditLog(cfg, metrics)
    elif cfg.database.scheme == "postgresql":
        from component.audit.postgresql import PostgresAuditLog

        inner = PostgresAuditLog(cfg, metrics)
    else:
        from component.audit.sqlite import SqliteAuditLog

        return SqliteAuditLog(cfg, metrics)
    if not spool:
        return inner
    from component.audit.spooled import SpooledAuditLog

    return SpooledAuditLog(inner, cfg.spool_path, metrics or Metrics())
