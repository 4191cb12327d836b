"""``mft hold add | list | release``: legal holds, kept in the audit database.

A hold names a bare JID as uploader (``--jid``) or as recipient (``--to``); while it is
active, ``mft purge`` keeps every file that JID uploaded or was sent. Holds live in the
AFT_HOLD table next to AFT_LOG, so every node, every ``mft purge`` and its systemd timer
see the same ones. Adding and releasing record the time, the OS user and a reason;
released holds stay in the table and show with ``mft hold list --all``.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Sequence
from datetime import UTC, datetime

from component.audit import AuditLog, Hold, HoldColumn, open_audit_log
from component.config import Config
from component.errors import AuditUnavailable


def os_user() -> str:
    """The OS user running the command (recorded with holds, purges and exports)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER: a container's bare uid
        return f"uid {os.getuid()}"


def _when(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if dt else ""


def hold_table(holds: Sequence[Hold]) -> list[str]:
    """Holds as an aligned text table (one line per hold, released ones say by whom)."""
    cells = [["ID", "ON", "JID", "SINCE (UTC)", "BY", "REASON", "RELEASED (UTC)", "BY", "WHY"]]
    for h in holds:
        cells.append(
            [
                str(h.hold_id),
                "uploader" if h.column == "JID" else "recipient",
                h.jid,
                _when(h.created_at),
                h.created_by,
                h.reason,
                _when(h.released_at) or "-",
                h.released_by,
                h.release_reason,
            ]
        )
    if not holds:
        return ["no holds"]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


async def _run(audit: AuditLog, args: argparse.Namespace) -> int:
    if args.hold_command == "add":
        column: HoldColumn = "JID" if args.jid else "TO_JID"
        jid = (args.jid or args.to or "").strip()
        if not jid or " " in jid:
            print(f"mft hold: {jid!r} is not a JID")
            return 2
        hold = Hold(column=column, jid=jid, reason=args.reason, created_by=os_user())
        hold_id = await audit.add_hold(hold)
        side = "uploaded by" if column == "JID" else "sent to"
        print(f"hold {hold_id}: files {side} {hold.jid.lower()} are kept by mft purge")
        return 0
    if args.hold_command == "list":
        for line in hold_table(await audit.list_holds(include_released=args.all)):
            print(line)
        return 0
    released = await audit.release_hold(args.hold_id, by=os_user(), reason=args.reason)
    if released is None:
        print(f"mft hold: no hold {args.hold_id}")
        return 1
    if released.released_by and released.released_at:
        print(
            f"hold {released.hold_id} released {_when(released.released_at)} UTC"
            f" by {released.released_by}"
        )
    return 0


async def hold_command(cfg: Config | None, args: argparse.Namespace) -> int:
    """``mft hold add|list|release``: 0 on success, 1 for an unknown hold or an
    unreachable database, 2 for a bad JID."""
    assert cfg is not None  # the CLI requires -c for this command
    # Never the running service's spool: holds go straight to the database.
    audit = open_audit_log(cfg, spool=False)
    try:
        await audit.open()
        return await _run(audit, args)
    except AuditUnavailable as exc:
        print(f"mft hold: the audit database is unavailable: {exc.text}")
        return 1
    finally:
        await audit.close()
