"""The ``scanner`` line of ``mft check``: clamd reachable, its version and signature date."""

from __future__ import annotations

from datetime import datetime

from component.config import Config
from component.errors import ScanUnavailable
from httpd.ops.check.result import CheckResult, Status
from httpd.scan.clamd import ping, version

NAME = "scanner"
# freshclam updates several times a day; a week without an update means it stopped.
STALE_DAYS = 7


async def check_scanner(cfg: Config) -> list[CheckResult]:
    """PING and VERSION to ``[scan] clamd``.

    FAIL when clamd does not answer and uploads are refused for it (``on_error =
    "reject"``), WARN when they are then published unscanned (``"accept"``). WARN for
    signatures older than a week, or none but local ones (no official database).
    """
    scan = cfg.scan
    if not scan.enabled:
        return [CheckResult("OK", NAME, "off: no [scan] clamd, uploads are not scanned")]
    try:
        await ping(scan)
        found = await version(scan)
    except ScanUnavailable as exc:
        status: Status = "WARN" if scan.on_error == "accept" else "FAIL"
        effect = "published unscanned" if scan.on_error == "accept" else "refused (503)"
        return [
            CheckResult(
                status,
                NAME,
                f"{exc.text}; uploads are {effect} until it answers",
                "is clamd running (systemctl status clamav-daemon), and may the service"
                " user open its socket? (LocalSocketGroup/LocalSocketMode in clamd.conf)",
            )
        ]
    detail = f"{scan.clamd}: {found.engine}"
    if found.signatures_date is None:
        return [
            CheckResult(
                "WARN",
                NAME,
                f"{detail}, no official signature database (local signatures only)",
                "run freshclam (package clamav-freshclam) so clamd has current signatures",
            )
        ]
    # clamd prints the database's build time in its own local time; so do we.
    age = datetime.now() - found.signatures_date
    detail += f", signatures {found.database} of {found.signatures_date:%Y-%m-%d %H:%M}"
    if age.days >= STALE_DAYS:
        return [
            CheckResult(
                "WARN",
                NAME,
                f"{detail} ({age.days} days old)",
                "freshclam has not updated the signatures: systemctl status clamav-freshclam",
            )
        ]
    return [CheckResult("OK", NAME, detail)]
