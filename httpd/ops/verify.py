"""``mft verify``: prove that the stored files are the files AFT_LOG says were sent.

Every file in the repository (``file://`` or ``sftp://``) is streamed and its SHA-256
compared with its POST row's FILE_SHA256. One line per problem, then a summary:

- ``ALTERED``: the bytes (or the size) differ from what the upload stored;
- ``MISSING``: a POST row of this node whose file is not in the repository and that
  ``mft purge`` did not delete (purged files carry a mark in AFT_PURGED and are fine);
- ``ORPHAN``: a file in the repository with no POST row (``.part`` files of uploads
  in flight are ignored).

Rows written before schema version 2 have no hash: their files are checked for presence
and size only, and counted as such. ``--since``/``--until`` select uploads by DATE_TIME
(and stray files by modification time). Memory stays bounded: files are read in blocks
by :data:`READERS` readers at once (each with the repository's bounded read-ahead), and
AFT_LOG is read in pages; only the repository's listing (path, size, time per file) and
the names of the files found are held.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from component.audit import AuditLog, AuditQuery, AuditRecord
from component.audit.query import UsageError, parse_when
from component.config import Config
from component.errors import NotFound
from component.layout import classify
from httpd.ops.util import command_stores, human_bytes, plural
from httpd.repository import Repository, StoredFile

READERS = 4  # files read at once
PAGE = 500  # AFT_LOG rows per query


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: status, the row's AFT_INDEX (if any), resource, path, detail."""

    status: str
    aft_index: int | None
    resource: str
    path: str
    detail: str


@dataclass(slots=True)
class VerifyReport:
    """Counts of a verify run."""

    files: int = 0
    bytes: int = 0
    ok: int = 0
    unhashed: int = 0
    purged: int = 0
    problems: dict[str, int] = field(default_factory=dict)

    def add(self, problem: Problem) -> None:
        """Count ``problem``."""
        self.problems[problem.status] = self.problems.get(problem.status, 0) + 1

    def summary(self) -> str:
        """The one summary line."""
        found = ", ".join(f"{n} {s}" for s, n in sorted(self.problems.items())) or "0 problems"
        line = (
            f"verified {plural(self.files, 'file')} ({human_bytes(self.bytes)}):"
            f" {self.ok} match, {found};"
            f" {self.purged} purged by retention"
        )
        if self.unhashed:
            line += f"; {self.unhashed} present but without a recorded hash (before schema v2)"
        return line


async def sha256_of(repo: Repository, path: str) -> tuple[str, int]:
    """``(hex digest, size)`` of a stored file, streamed in blocks (hashed off the loop).

    :raises NotFound: the file is gone.
    :raises StorageUnavailable: the repository failed.
    """
    digest, size = hashlib.sha256(), 0
    # aclosing: a failure here closes the file now, not when the generator is collected.
    async with contextlib.aclosing(repo.read(path)) as blocks:
        async for block in blocks:
            size += len(block)
            # hashlib drops the GIL for large blocks: the loop keeps the other readers going.
            await asyncio.to_thread(digest.update, block)
    return digest.hexdigest(), size


def resource_of(path: str) -> str:
    """The resource name (last component) of a repository path."""
    return path.rpartition("/")[2]


def in_range(dt: datetime, since: datetime | None, until: datetime | None) -> bool:
    """Whether ``dt`` is in ``[since, until)``."""
    return (since is None or dt >= since) and (until is None or dt < until)


def ours(row: AuditRecord, node_id: str) -> bool:
    """Whether a row's file is stored by this node (old rows may have no NODE_ID)."""
    return row.node_id in ("", node_id)


async def post_rows(
    audit: AuditLog, since: datetime | None, until: datetime | None
) -> AsyncIterator[AuditRecord]:
    """Every POST row in ``[since, until)``, oldest first, read :data:`PAGE` at a time."""
    after: int | None = None
    while True:
        page = await audit.query(
            AuditQuery(method="POST", since=since, until=until, after_index=after, limit=PAGE)
        )
        for row in page:
            yield row
        if len(page) < PAGE:
            return
        after = page[-1].index


class Progress:
    """A one-line progress bar on a terminal (files, bytes, ETA); nothing otherwise."""

    def __init__(
        self, stream: TextIO, files: int, nbytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream
        self._clock = clock
        self._on = stream.isatty()
        self._files, self._bytes = files, nbytes
        self.done_files = self.done_bytes = 0
        self._started = self._shown = clock()

    def advance(self, nbytes: int, files: int = 0) -> None:
        """Count ``nbytes`` read and ``files`` finished; redraw at most 5 times a second."""
        self.done_bytes += nbytes
        self.done_files += files
        now = self._clock()
        if self._on and now - self._shown >= 0.2:
            self._shown = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = self.done_bytes / self._bytes if self._bytes else 1.0
        elapsed = now - self._started
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        bar = "#" * int(frac * 24)
        self._stream.write(
            f"\r\033[K[{bar:<24}] {self.done_files}/{self._files} files"
            f" {human_bytes(self.done_bytes)}/{human_bytes(self._bytes)}"
            f" ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        )
        self._stream.flush()

    def clear(self) -> None:
        """Erase the bar (before a problem line, and at the end)."""
        if self._on:
            self._stream.write("\r\033[K")
            self._stream.flush()


async def verify(
    repo: Repository,
    audit: AuditLog,
    *,
    node_id: str,
    since: datetime | None = None,
    until: datetime | None = None,
    on_problem: Callable[[Problem], None] = lambda p: None,
    progress_stream: TextIO | None = None,
) -> VerifyReport:
    """Check every stored file against AFT_LOG and every POST row against the repository.

    :raises StorageUnavailable: the repository failed.
    :raises AuditUnavailable: the audit database failed.
    """
    report = VerifyReport()
    listing = [
        item async for item in repo.walk("files") if classify(item.path) != "part"
    ]  # path, size and time per file: the only per-file state besides the names seen
    progress = Progress(progress_stream or sys.stderr, len(listing), sum(i.size for i in listing))

    def found(problem: Problem) -> None:
        report.add(problem)
        progress.clear()
        on_problem(problem)

    seen: set[str] = set()

    async def check(item: StoredFile) -> None:
        resource = resource_of(item.path)
        row = await audit.find_upload(resource) if classify(item.path) == "file" else None
        if row is None or not ours(row, node_id):
            mtime = datetime.fromtimestamp(item.mtime, UTC)
            if in_range(mtime, since, until):
                found(Problem("ORPHAN", None, resource, item.path, "no POST row in AFT_LOG"))
            progress.advance(item.size, 1)
            return
        if not in_range(row.date_time, since, until):
            progress.advance(item.size, 1)
            return
        seen.add(resource)
        report.files += 1
        try:
            got, size = await sha256_of(repo, item.path)
        except NotFound:
            size, got = -1, ""  # removed while we looked: the MISSING pass decides
            seen.discard(resource)
            report.files -= 1
        progress.advance(max(size, 0), 1)
        if size < 0:
            return
        report.bytes += size
        if size != row.file_size:
            detail = f"{size} bytes, AFT_LOG says {row.file_size}"
            found(Problem("ALTERED", row.index, resource, item.path, detail))
        elif not row.file_sha256:
            report.unhashed += 1
        elif got != row.file_sha256:
            detail = f"sha256 {got}, AFT_LOG says {row.file_sha256}"
            found(Problem("ALTERED", row.index, resource, item.path, detail))
        else:
            report.ok += 1

    todo = iter(listing)

    async def reader() -> None:
        for item in todo:  # one iterator shared by the readers: each file read once
            await check(item)

    try:
        async with asyncio.TaskGroup() as group:  # a failing reader stops the others
            for _ in range(READERS):
                group.create_task(reader())
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    del listing
    await _missing(audit, node_id, since, until, seen, report, found)
    progress.clear()
    return report


async def _missing(
    audit: AuditLog,
    node_id: str,
    since: datetime | None,
    until: datetime | None,
    seen: set[str],
    report: VerifyReport,
    found: Callable[[Problem], None],
) -> None:
    """POST rows of this node whose file was not found: purged, or MISSING."""
    batch: list[AuditRecord] = []

    async def settle() -> None:
        purged = await audit.purged([r.filename for r in batch])
        for row in batch:
            if row.filename in purged:
                report.purged += 1
                continue
            where = f"files/{row.chat_type}/{row.date_time:%Y%m%d}/*/{row.filename}"
            detail = f"{row.real_filename!r} from {row.jid}, {row.file_size} bytes"
            found(Problem("MISSING", row.index, row.filename, where, detail))
        batch.clear()

    async for row in post_rows(audit, since, until):
        if ours(row, node_id) and row.filename not in seen:
            batch.append(row)
            if len(batch) >= PAGE:
                await settle()
    await settle()


HEADER = f"{'STATUS':<8} {'AFT_INDEX':>9}  RESOURCE  PATH  DETAIL"


def _table_line(p: Problem) -> str:
    index = "-" if p.aft_index is None else str(p.aft_index)
    return f"{p.status:<8} {index:>9}  {p.resource}  {p.path}  {p.detail}"


async def verify_command(cfg: Config | None, args: argparse.Namespace) -> int:
    """``mft verify [--since D] [--until D] [--format table|json]``: 0 when every file
    matches, 1 on any problem or when the repository or database fails, 2 for bad dates."""
    assert cfg is not None  # the CLI requires -c for this command
    try:
        since = parse_when(args.since, "--since") if args.since else None
        until = parse_when(args.until, "--until") if args.until else None
    except UsageError as exc:
        print(f"mft verify: {exc}")
        return 2
    as_json = args.format == "json"
    shown = 0

    def show(p: Problem) -> None:
        # Streamed, in JSON too (an array written item by item): a disaster's thousands
        # of problems never sit in memory.
        nonlocal shown
        if as_json:
            print(("  " if not shown else ", ") + json.dumps(asdict(p)), flush=True)
        else:
            if not shown:
                print(HEADER)
            print(_table_line(p), flush=True)
        shown += 1

    async with command_stores(cfg, "verify") as stores:
        await stores.open()
        if as_json:
            print('{"problems": [')
        report = await verify(
            stores.repo,
            stores.audit,
            node_id=cfg.node.id,
            since=since,
            until=until,
            on_problem=show,
        )
    if stores.failed:
        return 1
    if as_json:
        tail = {"summary": asdict(report), "text": report.summary()}
        print("], " + json.dumps(tail)[1:])
    else:
        print(report.summary())
    return 1 if report.problems else 0
