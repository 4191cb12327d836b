"""``mft log``: the AFT_LOG query a compliance officer runs, as a table, CSV or JSON.

``mft log -c mft.toml --jid alice@example.com --since 2024-05-01 --format csv``. JIDs
match as bare JIDs (every resource of the account); dates are UTC, ``YYYY-MM-DD`` or ISO
8601, ``--since`` inclusive and ``--until`` exclusive. Reads the database directly (never
the running service's spool), on SQLite and MariaDB/MySQL alike.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import TextIO

from component.audit import COLUMNS, AuditQuery, AuditRecord, open_audit_log
from component.config import Config
from component.errors import AuditUnavailable

log = logging.getLogger(__name__)


class UsageError(ValueError):
    """A command-line value ``mft log`` cannot use."""


def parse_when(text: str, option: str) -> datetime:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 date-time (UTC unless it says otherwise).

    :raises UsageError: ``text`` is neither.
    """
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: use YYYY-MM-DD or an ISO date-time such as 2024-05-01T13:00:00Z"
        ) from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def build_query(args: argparse.Namespace) -> AuditQuery:
    """The :class:`AuditQuery` for ``mft log``'s options.

    :raises UsageError: a date or the limit is invalid.
    """
    since = parse_when(args.since, "--since") if args.since else None
    until = parse_when(args.until, "--until") if args.until else None
    if since and until and until <= since:
        raise UsageError("--until must be later than --since")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    return AuditQuery(
        jid=args.jid or None,
        to_jid=args.to or None,
        method=args.method,
        chat_type=args.chat_type,
        since=since,
        until=until,
        limit=args.limit,
    )


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def as_dict(rec: AuditRecord) -> dict[str, object]:
    """One row keyed by the DESIGN column names (DATE_TIME as ISO 8601 UTC with ``Z``)."""
    row = rec.as_row()
    row["DATE_TIME"] = _iso(rec.date_time)
    return {c: row[c] for c in COLUMNS}


def render_json(records: Sequence[AuditRecord], out: TextIO) -> None:
    """A JSON list of row objects."""
    text = json.dumps([as_dict(r) for r in records], ensure_ascii=False, indent=1)
    out.write(_json_printable(text))
    out.write("\n")


def render_csv(records: Sequence[AuditRecord], out: TextIO) -> None:
    """CSV (RFC 4180) with a header line of column names."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for r in records:
        row = as_dict(r)
        writer.writerow([row[c] for c in COLUMNS])


def render_table(records: Sequence[AuditRecord], out: TextIO) -> None:
    """An aligned text table (numbers right-aligned); control characters made visible."""
    cells = [list(COLUMNS)]
    for r in records:
        row = as_dict(r)
        row["DATE_TIME"] = r.date_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        cells.append([_printable(str(row[c])) for c in COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    numeric = {COLUMNS.index("AFT_INDEX"), COLUMNS.index("FILE_SIZE")}
    for n, line in enumerate(cells):
        parts = [
            v.rjust(widths[i]) if i in numeric and n else v.ljust(widths[i])
            for i, v in enumerate(line)
        ]
        out.write("  ".join(parts).rstrip() + "\n")
    out.write(f"({len(records)} row{'s' if len(records) != 1 else ''})\n")


def _printable(text: str) -> str:
    # A file name is user input: a newline or escape sequence must not forge table lines.
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _json_escape(ch: str) -> str:
    o = ord(ch)
    if o <= 0xFFFF:
        return f"\\u{o:04x}"
    o -= 0x10000  # JSON escapes beyond the BMP as a UTF-16 surrogate pair
    return f"\\u{0xD800 + (o >> 10):04x}\\u{0xDC00 + (o & 0x3FF):04x}"


def _json_printable(text: str) -> str:
    # json escapes C0 but not C1 (CSI U+009B) or bidi overrides, which reach a terminal
    # as they are. Outside strings JSON has only whitespace and ASCII: every other
    # non-printable character is inside a string, where a \u escape means the same.
    return "".join(ch if ch.isprintable() or ch in "\n " else _json_escape(ch) for ch in text)


RENDERERS = {"table": render_table, "csv": render_csv, "json": render_json}


async def log_command(cfg: Config | None, args: argparse.Namespace) -> int:
    """``mft log``: print the AFT_LOG rows matching the options; 0 on success.

    Exit status 2 for bad options, 1 when the database cannot be read.
    """
    assert cfg is not None  # cli.py loads the config for every command but sandbox/keyscan
    try:
        query = build_query(args)
    except UsageError as exc:
        print(f"mft log: {exc}", file=sys.stderr)
        return 2
    audit = open_audit_log(cfg, spool=False)
    try:
        await audit.open()
        records = await audit.query(query)
    except AuditUnavailable as exc:
        print(f"mft log: {exc.text}", file=sys.stderr)
        return 1
    finally:
        await audit.close()
    buf = io.StringIO(newline="")
    RENDERERS[args.format](records, buf)
    sys.stdout.write(buf.getvalue())
    sys.stdout.flush()
    return 0
