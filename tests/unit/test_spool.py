"""The spool file: durable appends, reloading after a crash, truncation, compaction, locking."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from component.audit import AuditRecord
from component.audit import spool as spool_mod
from component.audit.spool import SpoolEntry, SpoolFile


def rec(n: int, method: str = "POST") -> AuditRecord:
    """A distinct row number ``n``."""
    return AuditRecord(
        jid=f"alice@example.test/r{n}",
        to_jid="bob@example.test",
        method=method,  # type: ignore[arg-type]
        filename=f"res{n}",
        real_filename=f"résumé {n}.pdf",
        file_type="pdf",
        chat_type="im",
        file_server="files.example.test",
        file_size=1000 + n,
        date_time=datetime(2024, 5, 1, 12, 0, n, 123456, tzinfo=UTC),
        node_id="node_1",
        client_ip="192.0.2.1",
    )


def test_entry_round_trips_through_a_line() -> None:
    """A spool line parses back into the same row, event id and maybe_index."""
    entry = SpoolEntry(rec(1), maybe_index=42)
    line = entry.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert SpoolEntry.from_line(line) == entry


async def test_appends_survive_reopen(tmp_path: Path) -> None:
    """Rows appended before a restart are pending, in order, after reopening."""
    path = tmp_path / "s" / "aft.spool"
    first = SpoolFile(path)
    await first.open()
    entries = [SpoolEntry(rec(i)) for i in range(5)]
    for e in entries:
        await first.append(e)
    await first.close()
    again = SpoolFile(path)
    await again.open()
    assert list(again) == entries
    await again.close()


async def test_torn_last_line_is_dropped(tmp_path: Path) -> None:
    """A half-written last line (crash inside write) is cut off; earlier rows stay."""
    path = tmp_path / "aft.spool"
    good = [SpoolEntry(rec(i)) for i in range(2)]
    path.write_bytes(b"".join(e.to_line() for e in good) + SpoolEntry(rec(9)).to_line()[:30])
    spool = SpoolFile(path)
    await spool.open()
    assert list(spool) == good
    assert path.read_bytes() == b"".join(e.to_line() for e in good)
    await spool.close()


async def test_unreadable_line_is_kept_aside(tmp_path: Path) -> None:
    """A corrupt line in the middle goes to .rejected and the rows after it still load."""
    path = tmp_path / "aft.spool"
    a, b = SpoolEntry(rec(1)), SpoolEntry(rec(2))
    path.write_bytes(a.to_line() + b'{"not": "a row"}\n' + b.to_line())
    spool = SpoolFile(path)
    await spool.open()
    assert list(spool) == [a, b]
    assert (tmp_path / "aft.spool.rejected").read_bytes() == b'{"not": "a row"}\n'
    await spool.close()


async def test_draining_truncates_the_file(tmp_path: Path) -> None:
    """Removing every pending row empties the file; removing some keeps the rest pending."""
    path = tmp_path / "aft.spool"
    spool = SpoolFile(path)
    await spool.open()
    entries = [SpoolEntry(rec(i)) for i in range(3)]
    for e in entries:
        await spool.append(e)
    await spool.remove_head(2)
    assert list(spool) == entries[2:]
    assert path.stat().st_size > 0
    await spool.remove_head(1)
    assert len(spool) == 0 and path.stat().st_size == 0
    await spool.close()


async def test_long_delivered_head_is_compacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once most of the file is delivered, it is rewritten with only the pending rows."""
    monkeypatch.setattr(spool_mod, "COMPACT_AFTER", 4)
    path = tmp_path / "aft.spool"
    spool = SpoolFile(path)
    await spool.open()
    entries = [SpoolEntry(rec(i)) for i in range(6)]
    for e in entries:
        await spool.append(e)
    await spool.remove_head(5)
    assert path.read_bytes() == entries[5].to_line()
    await spool.close()


async def test_second_process_cannot_take_the_spool(tmp_path: Path) -> None:
    """The spool's lock refuses a second user with a message naming the file."""
    path = tmp_path / "aft.spool"
    first = SpoolFile(path)
    await first.open()
    with pytest.raises(BlockingIOError, match="in use by another process"):
        await SpoolFile(path).open()
    await first.close()
    other = SpoolFile(path)
    await other.open()  # free again once released
    await other.close()


async def test_unwritable_spool_raises_and_keeps_nothing(tmp_path: Path) -> None:
    """When the file cannot be written, append raises OSError and nothing is pending."""
    path = tmp_path / "d" / "aft.spool"
    spool = SpoolFile(path)
    await spool.open()
    path.mkdir()  # a directory where the file should be: open(O_WRONLY) fails
    with pytest.raises(OSError):
        await spool.append(SpoolEntry(rec(1)))
    assert len(spool) == 0
    await spool.close()
