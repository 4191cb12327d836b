"""``mft export``: an eDiscovery bundle of the matching uploads and every row about them.

``OUT`` ending ``.zip`` is a zip file, anything else a new directory; an existing ``OUT``
is refused. Inside:

- ``manifest.csv``: the POST rows of the matching uploads and every other AFT_LOG row of
  those files (GET, GET_*, SHARE), all columns with a header line, plus ``BUNDLE_FILE``
  (the file's name in the bundle, empty when the file is gone);
- ``files/<AFT_INDEX>_<safe real name>``: each upload's stored bytes;
- ``SHA256SUMS`` in ``sha256sum`` format over ``files/``: ``sha256sum -c SHA256SUMS``;
- ``README.txt``: what the bundle is, when, by which OS user, with which filters.

``--jid`` selects uploads by the uploader, ``--to`` by a recipient (the POST row's TO_JID
or a SHARE row's), ``--since``/``--until`` by the upload's DATE_TIME. Files are streamed
from the repository into the bundle block by block (a zip member is written as it is
read), hashed on the way and compared with FILE_SHA256. An upload whose file is gone
(purged, or missing) stays in the manifest and is named in the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import hashlib
import io
import os
import re
import socket
import sys
import unicodedata
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from component.audit import COLUMNS, AuditLog, AuditQuery, AuditRecord
from component.audit.query import UsageError, as_dict, parse_when
from component.config import Config
from component.errors import NotFound
from component.layout import classify
from httpd.ops.hold import os_user
from httpd.ops.util import command_stores, human_bytes, plural
from httpd.repository import Repository, StoredFile

MANIFEST_COLUMNS = (*COLUMNS, "BUNDLE_FILE")


def safe_name(real_filename: str) -> str:
    """A file name safe on every file system: letters, digits, ``.``, ``-`` and ``_``."""
    text = unicodedata.normalize("NFC", real_filename)
    return (re.sub(r"[^\w.\-]+", "_", text).strip("._") or "file")[:120]


class Bundle:
    """Where the bundle goes: a new directory or a new zip file (never overwritten)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.is_zip = out.suffix.lower() == ".zip"
        self._zip: zipfile.ZipFile | None = None
        self._raw: IO[bytes] | None = None

    def create(self) -> None:
        """Make ``out``.

        :raises FileExistsError: it exists already.
        """
        if self.is_zip:
            self._raw = self.out.open("xb")  # exclusive: an existing file is refused
            self._zip = zipfile.ZipFile(self._raw, "w", zipfile.ZIP_STORED, allowZip64=True)
        else:
            self.out.mkdir(parents=False, exist_ok=False)
            (self.out / "files").mkdir()

    def open_member(self, name: str) -> IO[bytes]:
        """A writable stream for ``name`` (a zip member, or a new file)."""
        if self._zip is not None:
            return self._zip.open(name, "w", force_zip64=True)
        return (self.out / name).open("xb")

    def discard(self, name: str) -> bool:
        """Remove a member whose copy failed; ``True`` if it stays (a zip cannot drop
        a member once written: the caller names it as partial)."""
        if self._zip is not None:
            return True
        (self.out / name).unlink(missing_ok=True)
        return False

    def add_text(self, name: str, text: str) -> None:
        """A small text member (deflated in a zip)."""
        data = text.encode()
        if self._zip is not None:
            self._zip.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
        else:
            (self.out / name).write_bytes(data)

    def close(self) -> None:
        """Finish the zip's central directory and close."""
        if self._zip is not None:
            self._zip.close()
        if self._raw is not None:
            self._raw.close()


@dataclass(slots=True)
class ExportReport:
    """What went into the bundle."""

    uploads: int = 0
    files: int = 0
    bytes: int = 0
    rows: int = 0
    gone: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)


async def matching_uploads(
    audit: AuditLog,
    jid: str | None,
    to: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[AuditRecord]:
    """POST rows by ``jid``, sent to ``to`` (TO_JID or a SHARE row), in ``[since, until)``."""
    posts = {
        r.filename: r
        for r in await audit.query(
            AuditQuery(method="POST", jid=jid, to_jid=to, since=since, until=until)
        )
    }
    if to:
        for share in await audit.query(AuditQuery(method="SHARE", to_jid=to)):
            if share.filename in posts:
                continue
            up = await audit.find_upload(share.filename)
            if up is None or (since and up.date_time < since) or (until and up.date_time >= until):
                continue
            if jid is None or up.jid.lower() == jid.partition("/")[0].lower():
                posts[up.filename] = up
    return sorted(posts.values(), key=lambda r: r.index or 0)


async def locate(repo: Repository, resources: set[str]) -> dict[str, StoredFile]:
    """Where each of ``resources`` is stored (one walk of the repository)."""
    found: dict[str, StoredFile] = {}
    async for item in repo.walk("files"):
        name = item.path.rpartition("/")[2]
        if name in resources and classify(item.path) == "file":
            found[name] = item
    return found


async def copy_into(repo: Repository, path: str, dest: IO[bytes]) -> tuple[str, int]:
    """Stream ``path`` into ``dest``; ``(sha256 hex, size)``."""
    digest, size = hashlib.sha256(), 0
    async with contextlib.aclosing(repo.read(path)) as blocks:
        async for block in blocks:
            digest.update(block)
            size += len(block)
            await asyncio.to_thread(dest.write, block)
    return digest.hexdigest(), size


def manifest_csv(rows: Sequence[tuple[AuditRecord, str]]) -> str:
    """``manifest.csv``: a header line, then each row with its BUNDLE_FILE."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(MANIFEST_COLUMNS)
    for rec, bundle_file in rows:
        values = as_dict(rec)
        writer.writerow([*(values[c] for c in COLUMNS), bundle_file])
    return buf.getvalue()


def readme_text(cfg: Config, args: argparse.Namespace, report: ExportReport) -> str:
    """``README.txt``: what, when, by whom, which filters, how to check it."""
    filters = [
        f"--{name} {value}"
        for name, value in (
            ("jid", args.jid),
            ("to", args.to),
            ("since", args.since),
            ("until", args.until),
        )
        if value
    ]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        "eDiscovery export of xmpp-mft (managed file transfer for XMPP)",
        "",
        f"Made:     {now} by OS user {os_user()} on {socket.gethostname()}",
        f"Node:     {cfg.node.id}",
        f"Filters:  {' '.join(filters) or '(none: every upload)'}",
        f"Contents: {plural(report.uploads, 'upload')}, {plural(report.files, 'file')}"
        f" ({report.bytes:,} bytes), {plural(report.rows, 'AFT_LOG row')}",
        "",
        "manifest.csv  the uploads' POST rows and every other AFT_LOG row about those",
        "              files (GET: downloads, SHARE: sent to), with BUNDLE_FILE naming",
        "              the file in this bundle (empty when the file is gone)",
        "files/        each upload's bytes as stored, named <AFT_INDEX>_<file name>",
        "SHA256SUMS    check the files with:  sha256sum -c SHA256SUMS",
        "              (each hash also equals the upload's FILE_SHA256 in manifest.csv,",
        "              which was computed while the upload arrived)",
    ]
    if report.gone:
        lines += ["", "Files no longer in the repository (listed in manifest.csv only):"]
        lines += [f"  {g}" for g in report.gone]
    if report.altered:
        lines += ["", "Files whose bytes differ from the FILE_SHA256 recorded at upload:"]
        lines += [f"  {a}" for a in report.altered]
    return "\n".join(lines) + "\n"


async def export(
    repo: Repository, audit: AuditLog, bundle: Bundle, uploads: Sequence[AuditRecord]
) -> tuple[ExportReport, list[tuple[AuditRecord, str]], list[str]]:
    """Copy ``uploads`` into ``bundle``; the report, manifest rows and SHA256SUMS lines.

    :raises StorageUnavailable: the repository failed.
    :raises AuditUnavailable: the audit database failed.
    """
    report = ExportReport(uploads=len(uploads))
    where = await locate(repo, {u.filename for u in uploads})
    gone = {u.filename for u in uploads if u.filename not in where}
    purged = await audit.purged(sorted(gone)) if gone else set()
    rows: list[tuple[AuditRecord, str]] = []
    sums: list[str] = []
    for up in uploads:
        label = f"AFT_INDEX {up.index} {up.real_filename!r} ({up.filename})"
        name = f"files/{up.index}_{safe_name(up.real_filename)}"
        stored = where.get(up.filename)
        if stored is not None:
            try:
                with bundle.open_member(name) as dest:
                    digest, size = await copy_into(repo, stored.path, dest)
            except NotFound:
                stored = None  # purged or removed while we worked
                partial = bundle.discard(name)
                if partial:
                    report.altered.append(f"{label}: gone while copied; {name} is partial")
            else:
                report.files += 1
                report.bytes += size
                sums.append(f"{digest}  {name}")
                if up.file_sha256 and digest != up.file_sha256:
                    report.altered.append(f"{label}: sha256 {digest}, AFT_LOG {up.file_sha256}")
        if stored is None:
            why = "purged by retention" if up.filename in purged else "missing"
            report.gone.append(f"{label}: {why}")
            name = ""
        for rec in await audit.query(AuditQuery(filename=up.filename)):
            rows.append((rec, name if rec.method == "POST" else ""))
    report.rows = len(rows)
    return report, rows, sums


async def export_command(cfg: Config | None, args: argparse.Namespace) -> int:
    """``mft export [--jid J] [--to J] [--since D] [--until D] OUT``: 0 when every file
    is in the bundle (or was purged), 1 when one is missing or altered, or the repository
    or database fails; 2 for bad options or an existing OUT."""
    assert cfg is not None  # the CLI requires -c for this command
    try:
        since = parse_when(args.since, "--since") if args.since else None
        until = parse_when(args.until, "--until") if args.until else None
    except UsageError as exc:
        print(f"mft export: {exc}", file=sys.stderr)
        return 2
    bundle = Bundle(Path(args.out))
    if await asyncio.to_thread(os.path.lexists, bundle.out):
        print(f"mft export: {bundle.out} exists; give a new name", file=sys.stderr)
        return 2
    async with command_stores(cfg, "export") as stores:
        await stores.open()
        uploads = await matching_uploads(stores.audit, args.jid, args.to, since, until)
        try:
            await asyncio.to_thread(bundle.create)
        except FileExistsError:
            print(f"mft export: {bundle.out} exists; give a new name", file=sys.stderr)
            return 2
        try:
            report, rows, sums = await export(stores.repo, stores.audit, bundle, uploads)
            bundle.add_text("manifest.csv", manifest_csv(rows))
            bundle.add_text("SHA256SUMS", "".join(s + "\n" for s in sums))
            bundle.add_text("README.txt", readme_text(cfg, args, report))
        finally:
            bundle.close()
    if stores.failed:
        return 1
    for line in report.gone:
        print(f"gone: {line}")
    for line in report.altered:
        print(f"ALTERED: {line}")
    print(
        f"exported {plural(report.uploads, 'upload')} ({plural(report.files, 'file')},"
        f" {human_bytes(report.bytes)}) and {plural(report.rows, 'AFT_LOG row')} to {bundle.out}"
    )
    missing = any(g.endswith(": missing") for g in report.gone)
    return 1 if missing or report.altered else 0
