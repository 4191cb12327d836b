"""``mft purge``: retention — delete files older than an age and report the space freed.

Only what the service itself writes is touched: published files at
``files/{chat_type}/{YYYYMMDD}/{HH[.n]}/{resource}`` and hidden ``.part`` files in hour
directories (uploads that died without cleaning up). Anything else under ``files/`` is
counted as skipped and left alone. Age is taken from the file's modification time;
a ``.part`` file is removed only when older than the age AND older than
:data:`PART_MIN_AGE`, because an upload in progress keeps touching its part file.

Afterwards empty date and hour directories are removed; ``files/`` and the three
chat-type directories stay (they were made by the first upload or by the admin's
preparation script, and keeping them keeps their ownership). AFT_LOG rows are never
changed: the audit outlives the file, and the HTTP server answers 410 Gone for a purged
file.

Legal holds (``mft hold``): a file whose uploader (the POST row's JID) or a recipient
(its TO_JID, or the TO_JID of a SHARE row of it) is under an active hold is kept and
counted. Each file about to be deleted gets a purge mark in the audit database first
(AFT_PURGED: resource, node, time, OS user), so ``mft verify`` knows it was purged, not
lost. Without the audit database nothing is deleted: holds could not be honoured.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from component.audit import AuditLog, AuditQuery, HeldJids, held_jids, open_audit_log
from component.config import Config
from component.dburl import safe_url
from component.errors import AuditUnavailable, NotFound, UploadError
from component.layout import CHAT_TYPES, classify
from httpd.ops.hold import os_user
from httpd.ops.util import human_bytes, parse_age, plural, repository_failure
from httpd.repository import Repository, StoredFile, open_repository

log = logging.getLogger(__name__)

PART_MIN_AGE = 3600  # seconds; an active upload's part file is never this stale
MARK_BATCH = 200  # purge marks written per transaction, each batch before its deletions


@dataclass(slots=True)
class PurgeReport:
    """What a purge deleted (or, in a dry run, would delete)."""

    files: int = 0
    file_bytes: int = 0
    parts: int = 0
    part_bytes: int = 0
    dirs: int = 0
    skipped: int = 0
    held: int = 0
    held_bytes: int = 0


async def purge(
    repo: Repository,
    older_than: float,
    *,
    dry_run: bool = False,
    now: float | None = None,
    on_match: Callable[[StoredFile, str], None] | None = None,
    report: PurgeReport | None = None,
    audit: AuditLog | None = None,
    node_id: str = "",
) -> PurgeReport:
    """Delete published and stale ``.part`` files older than ``older_than`` seconds.

    :param on_match: called with each file to delete and its kind (``file``/``part``)
        before it is deleted (or instead, in a dry run).
    :param report: filled in as the purge goes (so a caller can show partial progress).
    :param audit: the audit database: held files are kept, deleted ones marked purged.
    :raises StorageUnavailable: the repository failed; what was counted so far was deleted.
    :raises AuditUnavailable: the audit database failed; nothing unmarked was deleted.
    """
    now = time.time() if now is None else now
    report = PurgeReport() if report is None else report
    victims: list[tuple[StoredFile, str]] = []
    async for item in repo.walk("files"):
        kind: str = classify(item.path)
        age = now - item.mtime
        if kind == "other":
            report.skipped += 1
        elif age > older_than and (kind == "file" or age > PART_MIN_AGE):
            victims.append((item, kind))
    # Collected first, deleted after: the walk never sees a tree changing under it.
    victims.sort(key=lambda v: v[0].path)  # oldest day and hour first, stable output
    if audit is not None:
        victims = await _keep_held(audit, victims, report)
    for start in range(0, len(victims), MARK_BATCH):
        batch = victims[start : start + MARK_BATCH]
        if audit is not None and not dry_run:
            names = [item.path.rpartition("/")[2] for item, kind in batch if kind == "file"]
            await audit.mark_purged(names, node_id=node_id, by=os_user())
        for item, kind in batch:
            if on_match is not None:
                on_match(item, kind)
            if not dry_run:
                await repo.delete(item.path)
                log.info("purged %s (%d bytes)", item.path, item.size)
            if kind == "file":
                report.files += 1
                report.file_bytes += item.size
            else:
                report.parts += 1
                report.part_bytes += item.size
    if not dry_run:
        for chat_type in CHAT_TYPES:
            try:
                report.dirs += await repo.remove_empty_dirs(f"files/{chat_type}")
            except NotFound:
                pass  # no upload of this chat type yet
    return report


async def remove_stale_parts(
    repo: Repository, older_than: float, *, now: float | None = None
) -> PurgeReport:
    """Remove ``.part`` files not written to for ``older_than`` seconds (only those).

    Run by ``mft run`` at start: a process killed mid-upload (SIGKILL, OOM, power) left
    them, and nothing else would before the next ``mft purge``. An upload in progress
    writes its part file at least every ``[http] body_timeout``, so a threshold of at
    least that and the slot lifetime never takes a live one, even from another process
    serving the same node directory.

    :raises StorageUnavailable: the repository failed; what was counted was removed.
    """
    now = time.time() if now is None else now
    report = PurgeReport()
    stale = [
        item
        async for item in repo.walk("files")
        if classify(item.path) == "part" and now - item.mtime > older_than
    ]
    for item in sorted(stale, key=lambda i: i.path):
        await repo.delete(item.path)
        report.parts += 1
        report.part_bytes += item.size
        log.info("removed stale %s (%d bytes)", item.path, item.size)
    return report


async def _keep_held(
    audit: AuditLog, victims: list[tuple[StoredFile, str]], report: PurgeReport
) -> list[tuple[StoredFile, str]]:
    """``victims`` without the files under a legal hold (counted in ``report.held``)."""
    held = held_jids(await audit.list_holds())
    if not held:
        return victims
    kept = []
    for item, kind in victims:
        if kind == "file" and await _is_held(audit, held, item.path.rpartition("/")[2]):
            report.held += 1
            report.held_bytes += item.size
            log.info("kept %s: under a legal hold", item.path)
            continue
        kept.append((item, kind))
    return kept


async def _is_held(audit: AuditLog, held: HeldJids, resource: str) -> bool:
    up = await audit.find_upload(resource)
    if up is None:
        return False  # no POST row: no uploader or recipient a hold could name
    shares = await audit.query(AuditQuery(filename=resource, method="SHARE"))
    return held.holds_upload(up.jid, [up.to_jid, *(r.to_jid for r in shares)])


def summary_lines(report: PurgeReport, *, dry_run: bool) -> list[str]:
    """The printed totals."""
    verb = "would delete" if dry_run else "deleted"
    lines = [
        f"{verb} {plural(report.files, 'file')},"
        f" {report.file_bytes:,} bytes ({human_bytes(report.file_bytes)})",
        f"{verb} {plural(report.parts, 'stale .part file')}, {report.part_bytes:,} bytes",
    ]
    if dry_run:
        lines.append("dry run: nothing was deleted")
    else:
        lines.append(f"removed {plural(report.dirs, 'empty directory', 'empty directories')}")
    if report.held:
        lines.append(
            f"kept {plural(report.held, 'file')} under a legal hold,"
            f" {report.held_bytes:,} bytes (mft hold list)"
        )
    if report.skipped:
        lines.append(f"left alone {plural(report.skipped, 'file')} not made by the service")
    lines.append("AFT_LOG rows are kept")
    return lines


async def purge_command(cfg: Config | None, args: argparse.Namespace) -> int:
    """``mft purge -c FILE --older-than 30d [--dry-run]``: 0 on success, 1 when the
    repository fails, 2 for a bad age."""
    assert cfg is not None  # the CLI requires -c for this command
    try:
        age = parse_age(args.older_than)
    except ValueError as exc:
        print(f"mft purge: {exc}")
        return 2
    now = time.time()
    cutoff = datetime.fromtimestamp(now - age, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    print(
        f"{'Dry run: ' if args.dry_run else ''}files older than {args.older_than}"
        f" (modified before {cutoff}) in {safe_url(cfg.repository.url)}"
    )

    def show(item: StoredFile, kind: str) -> None:
        if args.dry_run:
            when = datetime.fromtimestamp(item.mtime, UTC).strftime("%Y-%m-%d %H:%M")
            print(f"  {item.path}  {item.size:,} bytes  {when} UTC")

    repo = open_repository(cfg)
    # Read-only on AFT_LOG; holds and purge marks go straight to the database (no spool).
    audit = open_audit_log(cfg, spool=False)
    report = PurgeReport()
    try:
        await audit.open()
        await repo.open()
        await purge(
            repo,
            age,
            dry_run=args.dry_run,
            now=now,
            on_match=show,
            report=report,
            audit=audit,
            node_id=cfg.node.id,
        )
    except AuditUnavailable as exc:
        print(f"the audit database is unavailable ({exc.text}): holds cannot be checked")
        print("stopped; so far:")
        for line in summary_lines(report, dry_run=args.dry_run)[:2]:
            print(line)
        return 1
    except (UploadError, OSError) as exc:
        print(repository_failure(cfg, exc))
        print("stopped part-way; so far:")
        for line in summary_lines(report, dry_run=args.dry_run)[:2]:
            print(line)
        return 1
    finally:
        await repo.close()
        await audit.close()
    for line in summary_lines(report, dry_run=args.dry_run):
        print(line)
    return 0
