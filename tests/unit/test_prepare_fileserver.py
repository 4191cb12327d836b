"""``deploy/prepare-fileserver.sh`` run into a temporary root (no user is created)."""

from __future__ import annotations

import getpass
import os
import stat
import subprocess
from pathlib import Path

import asyncssh
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "prepare-fileserver.sh"
KEY_A = asyncssh.generate_private_key("ssh-ed25519", comment="mft@node_1")
KEY_B = asyncssh.generate_private_key("ssh-ed25519", comment="mft@node_2")


def line(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()


def prepare(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the script for the current user (which exists, so ownership is set too)."""
    return subprocess.run(
        ["sh", str(SCRIPT), "--root", str(root), "--user", getpass.getuser(), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / Path(os.path.expanduser("~")).relative_to("/")


def test_help_exits_zero() -> None:
    """--help documents the options and changes nothing."""
    out = subprocess.run(["sh", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "--key" in out.stdout and "mftuser" in out.stdout and "/opt/mftFileStore" in out.stdout


def test_creates_tree_with_modes_and_is_idempotent(tmp_path: Path, home: Path) -> None:
    """Dirs 700, authorized_keys 600, owned by the user; a second run duplicates nothing."""
    first = prepare(tmp_path, "-k", line(KEY_A), "node_1", "node_2")
    assert first.returncode == 0, first.stderr
    auth = home / ".ssh" / "authorized_keys"
    top = tmp_path / "opt" / "mftFileStore"
    assert (mode(home / ".ssh"), mode(auth)) == (0o700, 0o600)
    assert (mode(top), mode(top / "node_1"), mode(top / "node_2")) == (0o700, 0o700, 0o700)
    assert {p.stat().st_uid for p in (auth, top, top / "node_1")} == {os.getuid()}
    assert auth.read_text() == line(KEY_A) + "\n"

    os.chmod(top / "node_1", 0o777)  # loosened by hand: a re-run tightens it again
    second = prepare(tmp_path, "-k", line(KEY_A), "-k", line(KEY_B), "node_1", "node_3")
    assert second.returncode == 0, second.stderr
    assert auth.read_text() == f"{line(KEY_A)}\n{line(KEY_B)}\n"
    assert "already authorized" in second.stdout
    assert mode(top / "node_1") == 0o700 and (top / "node_3").is_dir()


def test_keys_from_file_and_custom_dir(tmp_path: Path, home: Path) -> None:
    """--key-file reads several lines (comments skipped); --dir moves the store."""
    keys = tmp_path / "keys.pub"
    keys.write_text(f"# nodes\n{line(KEY_A)}\n\n{line(KEY_B)}\n")
    root = tmp_path / "root"
    root.mkdir()
    out = prepare(root, "-K", str(keys), "--dir", "/srv/mft", "node_1")
    assert out.returncode == 0, out.stderr
    home_in_root = root / home.relative_to(tmp_path)
    assert (home_in_root / ".ssh/authorized_keys").read_text().splitlines() == [
        line(KEY_A),
        line(KEY_B),
    ]
    assert mode(root / "srv/mft/node_1") == 0o700


@pytest.mark.parametrize(
    "args",
    [
        ["-k", "garbage"],
        ["-k", 'command="/bin/sh" ssh-ed25519 AAAAC3Nza'],
        ["../evil"],
        ["--dir", "relative/path"],
        ["--user", "bad user"],
        ["--bogus"],
    ],
)
def test_bad_input_changes_nothing(tmp_path: Path, args: list[str]) -> None:
    """Bad keys, node ids, paths and options fail before anything is created."""
    out = prepare(tmp_path, *args)
    assert out.returncode != 0
    assert out.stderr.startswith("prepare-fileserver.sh: ")
    assert list(tmp_path.iterdir()) == []
