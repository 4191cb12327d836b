"""The pure header rules: Range parsing, Content-Type guessing, Content-Disposition."""

from __future__ import annotations

import pytest

from httpd.headers import (
    ByteRange,
    RangeNotSatisfiable,
    content_disposition,
    content_type_for,
    parse_range,
)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("", 10, None),
        ("bytes=0-0", 10, ByteRange(0, 1)),
        ("bytes=0-9", 10, ByteRange(0, 10)),
        ("bytes=3-", 10, ByteRange(3, 7)),
        ("bytes=-4", 10, ByteRange(6, 4)),
        ("bytes=-40", 10, ByteRange(0, 10)),
        ("bytes=8-400", 10, ByteRange(8, 2)),
        ("bytes = 1-2", 10, ByteRange(1, 2)),
        ("bytes=5-2", 10, None),  # last < first: invalid, ignored
        ("bytes=0-1,3-4", 10, None),  # several ranges: whole file
        ("bytes=-", 10, None),
        ("bytes=a-b", 10, None),
        ("pages=1-2", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: ByteRange | None) -> None:
    """Single byte ranges are honoured; anything else means the whole file."""
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=-0", 10), ("bytes=-5", 0)]
)
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    """A range starting past the end, or an empty suffix, is unsatisfiable (416)."""
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


def test_content_range_header() -> None:
    """Content-Range names the inclusive end and the full size."""
    assert ByteRange(7, 3).content_range(10) == "bytes 7-9/10"


@pytest.mark.parametrize(
    ("name", "ctype"),
    [("a.PNG", "image/png"), ("x.svg", "image/svg+xml"), ("noext", "application/octet-stream")],
)
def test_content_type_for(name: str, ctype: str) -> None:
    """The type comes from the extension, case-insensitively; unknown is octet-stream."""
    assert content_type_for(name) == ctype


def test_content_disposition_escapes_name() -> None:
    """Quotes, backslashes and non-ASCII never reach the plain filename= parameter."""
    value = content_disposition('ré"sumé\\; x.html', "text/html")
    assert value.startswith('attachment; filename="r__sum___ x.html"; ')
    assert value.endswith("filename*=UTF-8''r%C3%A9%22sum%C3%A9%5C%3B%20x.html")


@pytest.mark.parametrize(
    ("ctype", "kind"),
    [
        ("image/jpeg", "inline"),
        ("audio/ogg", "inline"),
        ("text/plain; charset=utf-8", "inline"),
        ("image/svg+xml", "attachment"),
        ("text/html", "attachment"),
        ("application/pdf", "attachment"),
    ],
)
def test_disposition_kind(ctype: str, kind: str) -> None:
    """Only types that cannot run anything are shown inline."""
    assert content_disposition("f", ctype).split(";")[0] == kind
