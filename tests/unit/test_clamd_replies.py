"""clamd's replies parsed into verdicts, typed errors and versions (no clamd needed)."""

from __future__ import annotations

import pytest

from component.errors import ScanUnavailable, TooLargeToScan
from httpd.scan.clamd import Verdict, parse_verdict, parse_version


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("stream: OK", Verdict()),
        ("stream: Win.Test.EICAR_HDB-1 FOUND", Verdict("Win.Test.EICAR_HDB-1")),
    ],
)
def test_parse_verdict(reply: str, expected: Verdict) -> None:
    """OK and FOUND replies become verdicts."""
    assert parse_verdict(reply) == expected


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("INSTREAM size limit exceeded. ERROR", TooLargeToScan),
        ("Can't allocate memory ERROR", ScanUnavailable),
        ("stream: FOUND", ScanUnavailable),
        ("PONG", ScanUnavailable),
        ("", ScanUnavailable),
    ],
)
def test_parse_bad_replies(reply: str, error: type[Exception]) -> None:
    """Errors and anything unexpected are typed errors, never a clean verdict."""
    with pytest.raises(error):
        parse_verdict(reply)


def test_parse_version_with_database() -> None:
    """A VERSION reply with the official database gives its version and date."""
    found = parse_version("ClamAV 1.4.6/27470/Tue Dec  1 09:27:05 2026")
    assert (found.engine, found.database) == ("ClamAV 1.4.6", "27470")
    assert found.signatures_date is not None and found.signatures_date.day == 1


def test_parse_version_local_database_only() -> None:
    """Without an official database VERSION is the engine alone: no date."""
    found = parse_version("ClamAV 1.4.6")
    assert (found.engine, found.database, found.signatures_date) == ("ClamAV 1.4.6", "", None)
