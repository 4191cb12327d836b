"""An upload's part file: unnamed (O_TMPFILE) until it is published, named where the file
system refuses that, never overwriting, and nothing left by a killed process."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from httpd.repository import FileRepository, part_file
from httpd.repository.part_file import PartFile, unnamed_parts_work

PATH = "files/im/20260101/10/resource"
PART = "files/im/20260101/10/.resource.0a1b2c3d.part"


def _takes_unnamed(directory: Path) -> bool:
    try:
        os.close(os.open(directory, os.O_WRONLY | os.O_TMPFILE, 0o600))
    except OSError:
        return False
    return True


@pytest.fixture
def unnamed_ok(tmp_path: Path) -> None:
    if not _takes_unnamed(tmp_path):
        pytest.skip(f"{tmp_path} has no O_TMPFILE (the named-part tests cover it)")


@pytest.fixture
def refuse_unnamed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The file system says EOPNOTSUPP to O_TMPFILE (NFS, old overlayfs): how often."""
    refused: list[int] = []
    real_open = os.open

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            refused.append(flags)
            raise OSError(errno.EOPNOTSUPP, "not supported")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(part_file.os, "open", open_)
    return refused


def _part(root: Path, unnamed: bool) -> PartFile:
    return PartFile(str(root), PATH, f"{root}/{PART}", f"{root}/{PATH}", unnamed)


def _entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.mark.usefixtures("unnamed_ok")
def test_unnamed_part_has_no_name_until_published(tmp_path: Path) -> None:
    """Nothing in the directory while the bytes arrive; then the final name only, with
    every byte, mode 0640 (less the umask), the descriptor closed."""
    part = _part(tmp_path, unnamed=True)
    part.write(memoryview(b"first "), None, last=False)
    assert part.unnamed and part.fd is not None
    assert _entries(tmp_path) == []
    assert os.readlink(f"/proc/self/fd/{part.fd}").endswith("(deleted)")
    assert part.made == ["files", "files/im", "files/im/20260101", "files/im/20260101/10"]
    part.write(memoryview(b"last"), None, last=True)
    assert part.published and part.fd is None
    assert _entries(tmp_path) == [PATH]
    final = tmp_path / PATH
    assert final.read_bytes() == b"first last"
    umask = os.umask(0)
    os.umask(umask)
    assert final.stat().st_mode & 0o777 == 0o640 & ~umask


def test_named_part_where_unnamed_is_refused(tmp_path: Path, refuse_unnamed: list[int]) -> None:
    """EOPNOTSUPP: the hidden .part beside the target, published and then gone."""
    part = _part(tmp_path, unnamed=True)
    part.write(memoryview(b"first "), None, last=False)
    assert not part.unnamed and len(refuse_unnamed) == 1
    assert _entries(tmp_path) == [PART]
    part.write(memoryview(b"last"), None, last=True)
    assert _entries(tmp_path) == [PATH]
    assert (tmp_path / PATH).read_bytes() == b"first last"


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "named"])
def test_existing_name_is_never_overwritten(tmp_path: Path, unnamed: bool) -> None:
    """The link refuses the existing final name; discard() leaves only that file, as it was."""
    if unnamed and not _takes_unnamed(tmp_path):
        pytest.skip("no O_TMPFILE here")
    final = tmp_path / PATH
    final.parent.mkdir(parents=True)
    final.write_bytes(b"old")
    part = _part(tmp_path, unnamed)
    with pytest.raises(FileExistsError):
        part.write(memoryview(b"new bytes"), None, last=True)
    assert not part.published
    part.discard()
    assert part.fd is None
    assert _entries(tmp_path) == [PATH]
    assert final.read_bytes() == b"old"


_KILLED = """
import os, signal, sys
from httpd.repository.part_file import PartFile
root, path, part, unnamed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
p = PartFile(root, path, f"{root}/{part}", f"{root}/{path}", unnamed)
p.write(memoryview(b"x" * 100_000), None, last=False)
print(int(p.unnamed), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "named"])
def test_killed_mid_upload(tmp_path: Path, unnamed: bool) -> None:
    """SIGKILL half-way: an unnamed part leaves nothing; a named one leaves its .part,
    which the next start's sweep (or purge) removes."""
    if unnamed and not _takes_unnamed(tmp_path):
        pytest.skip("no O_TMPFILE here")
    run = subprocess.run(
        [sys.executable, "-c", _KILLED, str(tmp_path), PATH, PART, str(int(unnamed))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert run.stdout.strip() == str(int(unnamed))
    assert _entries(tmp_path) == ([] if unnamed else [PART])


def test_probe_leaves_nothing_and_refuses_what_it_cannot(tmp_path: Path) -> None:
    """The probe agrees with the file system, removes its file, and says no for a
    directory that is not there."""
    assert unnamed_parts_work(str(tmp_path)) == _takes_unnamed(tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert not unnamed_parts_work(str(tmp_path / "missing"))


async def test_repository_falls_back_once_and_stays_named(
    tmp_path: Path, refuse_unnamed: list[int]
) -> None:
    """A store refused O_TMPFILE switches the repository to named parts: one refusal in
    all, every file published, no .part left."""
    repo = FileRepository(tmp_path)
    assert repo.part_kind == "unnamed"  # /proc is there; open()'s probe has not run
    for n in range(3):
        await repo.store(f"files/im/20260101/10/r{n}", _chunks(b"%d" % n), 1)
    assert repo.part_kind == "named" and len(refuse_unnamed) == 1
    assert _entries(tmp_path) == [f"files/im/20260101/10/r{n}" for n in range(3)]


async def test_repository_open_probes(tmp_path: Path) -> None:
    """open() settles the kind from the probe: unnamed where the file system takes it."""
    repo = FileRepository(tmp_path)
    await repo.open()
    assert repo.part_kind == ("unnamed" if _takes_unnamed(tmp_path) else "named")
    await repo.store(PATH, _chunks(b"abc"), 3)
    assert _entries(tmp_path) == [PATH]


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
