"""clamd's replies parsed into verdicts, typed errors and versions (no clamd needed)."""

from __future__ import annotations

import pytest

from component.errors import (
    Infected,
    ScanUnavailable,
    TooLargeToScan,
    UploadError,
    http_status_of,
)
from httpd.middleware import error_response
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


@pytest.mark.parametrize(
    ("exc", "status", "text"),
    [
        (Infected("Win.Test.EICAR_HDB-1"), 422, "found Win.Test.EICAR_HDB-1"),
        (TooLargeToScan(), 413, "too large for the malware scanner"),
        (ScanUnavailable("clamd unix:///run/clamav/clamd.ctl: refused"), 503, "unavailable"),
    ],
)
def test_scan_errors_render(exc: UploadError, status: int, text: str) -> None:
    """The scan's errors map to 422 (naming the signature), 413 and 503 (generic text)."""
    resp = error_response(exc)
    assert resp.status == status == http_status_of(exc)
    assert resp.text is not None and text in resp.text
    assert "clamd.ctl" not in resp.text  # a 5xx never shows where clamd lives
