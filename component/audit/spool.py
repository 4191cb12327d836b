"""The durable local spool: AFT_LOG rows that wait, in order, for the database to return.

The spool is a JSON-lines file, one row per line, appended and ``fsync``'d before
``record()`` returns, so an acknowledged row survives a crash or a restart. Each row
carries an event id; the database side (``AFT_SPOOL_DELIVERED``) records the ids it has
taken, so a row is stored exactly once even if the process dies after the INSERT
committed and before the spool file was updated. The file is truncated when everything
in it has been delivered, and rewritten (compacted) when a long delivered head builds up.
A lock file keeps a second process from using the same spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from component.audit.base import COLUMNS, AuditRecord

log = logging.getLogger(__name__)

# Rewrite the file once this many delivered rows sit at its head (and they are the
# majority): keeps restart-time re-checking short without rewriting on every batch.
COMPACT_AFTER = 1000
# Columns added after the spool format was fixed; an older entry may lack them.
OPTIONAL_COLUMNS = ("FILE_SHA256", "SCAN_RESULT")


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled row: its event id, the row, and the AFT_INDEX of a COMMIT in doubt."""

    record: AuditRecord
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Set when the direct INSERT got this AFT_INDEX but its COMMIT's outcome is unknown.
    maybe_index: int | None = None

    def to_line(self) -> bytes:
        """The entry as one JSON line (DATE_TIME as ISO 8601 with its UTC offset)."""
        row = self.record.as_row()
        row["DATE_TIME"] = self.record.date_time.isoformat()
        del row["AFT_INDEX"]
        doc = {"id": self.event_id, "maybe_index": self.maybe_index, "row": row}
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> SpoolEntry:
        """Parse :meth:`to_line` output.

        :raises ValueError: the line is not a spool entry.
        """
        doc: dict[str, Any] = json.loads(line)
        row = doc["row"]
        # Entries spooled before schema version 2 lack its columns: they stay empty.
        values = {c.lower(): row[c] for c in COLUMNS[1:] if c not in OPTIONAL_COLUMNS}
        for c in OPTIONAL_COLUMNS:
            values[c.lower()] = str(row.get(c) or "")
        values["date_time"] = datetime.fromisoformat(row["DATE_TIME"])
        values["file_size"] = int(row["FILE_SIZE"])
        maybe = doc.get("maybe_index")
        return cls(
            record=AuditRecord(**values),
            event_id=str(doc["id"]),
            maybe_index=int(maybe) if maybe is not None else None,
        )


class SpoolFile:
    """The spool file and its in-memory mirror (the rows not yet delivered, oldest first).

    All file work runs in a worker thread so an ``fsync`` never stalls the event loop;
    an :class:`asyncio.Lock` keeps appends and removals in order.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._rejected_path = path.with_name(path.name + ".rejected")
        self._pending: deque[SpoolEntry] = deque()
        self._delivered_in_file = 0  # delivered rows still at the head of the file
        self._lock = asyncio.Lock()
        self._lock_fd: int | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def __iter__(self) -> Iterator[SpoolEntry]:
        return iter(tuple(self._pending))

    def head(self, n: int) -> list[SpoolEntry]:
        """The ``n`` oldest pending entries."""
        return [e for _, e in zip(range(n), self._pending, strict=False)]

    async def open(self) -> None:
        """Take the spool's lock and load the rows a previous run left behind.

        :raises OSError: the spool directory or lock cannot be used.
        :raises BlockingIOError: another process holds this spool.
        """
        await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BlockingIOError(
                f"spool {self.path} is in use by another process"
                " (give each process its own [database] spool_path)"
            ) from None
        self._lock_fd = fd
        self._pending = deque(self._load())

    def _load(self) -> list[SpoolEntry]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        entries: list[SpoolEntry] = []
        good_end = 0
        pos = 0
        for raw in data.splitlines(keepends=True):
            pos += len(raw)
            if not raw.endswith(b"\n"):
                # A torn last line: the process died inside write(), before the fsync
                # that would have acknowledged the row. Nobody was told it was stored.
                log.warning("AFT_LOG spool %s: dropping a torn unacknowledged last line", self.path)
                break
            try:
                entries.append(SpoolEntry.from_line(raw))
            except (ValueError, KeyError, TypeError):
                # Kept aside rather than lost, and the rows after it still go out.
                log.error(
                    "AFT_LOG spool %s: unreadable line kept in %s", self.path, self._rejected_path
                )
                with self._rejected_path.open("ab") as f:
                    f.write(raw)
            good_end = pos
        if good_end != len(data):
            os.truncate(self.path, good_end)
        return entries

    async def close(self) -> None:
        """Release the lock (pending rows stay in the file for the next start)."""
        async with self._lock:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = None

    async def append(self, entry: SpoolEntry) -> None:
        """Append ``entry`` durably (written and fsync'd) before returning.

        :raises OSError: the spool cannot be written (the row is NOT stored).
        """
        line = entry.to_line()
        async with self._lock:
            if self._lock_fd is None:
                raise OSError(f"spool {self.path} is not open")
            await asyncio.to_thread(self._append_sync, line)
            self._pending.append(entry)

    def _append_sync(self, line: bytes) -> None:
        # Opened per append so that a replaced or removed file is noticed, not written
        # into a ghost inode; appends are rare (only while the database is away).
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            start = os.fstat(fd).st_size
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(f"short write to spool {self.path}")
                os.fsync(fd)
            except BaseException:
                # Cut a partial line off so it cannot glue itself to the next append.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.path.parent)

    async def remove_head(self, n: int) -> None:
        """Forget the ``n`` oldest entries (delivered); truncate or compact the file."""
        async with self._lock:
            for _ in range(min(n, len(self._pending))):
                self._pending.popleft()
            self._delivered_in_file += n
            if not self._pending:
                await asyncio.to_thread(_truncate, self.path)
                self._delivered_in_file = 0
            elif self._delivered_in_file >= COMPACT_AFTER and self._delivered_in_file > len(
                self._pending
            ):
                await asyncio.to_thread(self._rewrite_sync, tuple(self._pending))
                self._delivered_in_file = 0

    def _rewrite_sync(self, entries: Sequence[SpoolEntry]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("wb") as f:
            for e in entries:
                f.write(e.to_line())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)


def _truncate(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError), path.open("r+b") as f:
        f.truncate(0)
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    # Make a new or renamed file's directory entry durable too.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
