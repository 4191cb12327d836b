"""``mft log`` option parsing and the three output formats."""

from __future__ import annotations

import argparse
import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from component.audit import COLUMNS
from component.audit.query import (
    UsageError,
    build_query,
    parse_when,
    render_csv,
    render_json,
    render_table,
)
from component.cli import build_parser
from tests.unit.test_spool import rec


def args(*argv: str) -> argparse.Namespace:
    """``mft log -c x.toml ARGV`` parsed by the real parser."""
    return build_parser().parse_args(["log", "-c", "x.toml", *argv])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("2024-05-01T13:30:00", datetime(2024, 5, 1, 13, 30, tzinfo=UTC)),
        ("2024-05-01T13:30:00Z", datetime(2024, 5, 1, 13, 30, tzinfo=UTC)),
        ("2024-05-01T15:30:00+02:00", datetime(2024, 5, 1, 13, 30, tzinfo=UTC)),
        ("2024-05-01 13:30", datetime(2024, 5, 1, 13, 30, tzinfo=UTC)),
    ],
)
def test_dates_are_utc(text: str, expected: datetime) -> None:
    """Dates and ISO date-times are read as UTC (or converted to it)."""
    assert parse_when(text, "--since") == expected


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "01/05/2024", ""])
def test_bad_dates_are_refused(text: str) -> None:
    """Anything else is a usage error naming the option."""
    with pytest.raises(UsageError, match="--since"):
        parse_when(text, "--since")


def test_query_from_options() -> None:
    """Every option lands in the AuditQuery."""
    q = build_query(
        args(
            "--jid", "alice@x.test", "--to", "room@conf.x.test", "--since", "2024-05-01",
            "--until", "2024-05-02", "--method", "GET_INCOMPLETE", "--chat-type", "groupchat",
            "--limit", "5",
        )
    )  # fmt: skip
    assert (q.jid, q.to_jid, q.method, q.chat_type, q.limit) == (
        "alice@x.test",
        "room@conf.x.test",
        "GET_INCOMPLETE",
        "groupchat",
        5,
    )
    assert q.since == datetime(2024, 5, 1, tzinfo=UTC)
    assert q.until == datetime(2024, 5, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    "argv",
    [("--since", "2024-05-02", "--until", "2024-05-01"), ("--limit", "0")],
)
def test_inconsistent_options_are_refused(argv: tuple[str, ...]) -> None:
    """An empty date range or a limit below 1 is a usage error."""
    with pytest.raises(UsageError):
        build_query(args(*argv))


def test_json_uses_design_column_names() -> None:
    """JSON is a list of objects keyed by the AFT_LOG columns, DATE_TIME in ISO UTC."""
    out = io.StringIO()
    render_json([rec(1), rec(2)], out)
    data = json.loads(out.getvalue())
    assert [list(d) for d in data] == [list(COLUMNS)] * 2
    assert data[0]["DATE_TIME"] == "2024-05-01T12:00:01.123456Z"
    assert data[1]["REAL_FILENAME"] == "résumé 2.pdf" and data[1]["FILE_SIZE"] == 1002


def test_csv_has_a_header_and_quotes() -> None:
    """CSV starts with the column names; a comma in a file name is quoted."""
    out = io.StringIO(newline="")
    r = replace(rec(1), real_filename='a,"b".txt')
    render_csv([r], out)
    rows = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert rows[0] == list(COLUMNS)
    assert rows[1][COLUMNS.index("REAL_FILENAME")] == 'a,"b".txt'


def test_table_is_aligned_and_escapes_control_characters() -> None:
    """Every column starts at the same offset on every line; a newline cannot forge a row."""
    evil = replace(rec(12), real_filename="x\ny")
    out = io.StringIO()
    render_table([rec(1), evil], out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1] == "(2 rows)"
    start = lines[0].index("METHOD")
    assert all(line[start : start + 4] == "POST" for line in lines[1:3])
    assert "x\\ny" in lines[2]
