"""check, speedtest and purge against a real sshd through the sftp:// repository."""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from component.config import Config
from component.layout import new_resource
from httpd.ops.check import check_repository
from httpd.ops.purge import purge_command
from httpd.ops.speedtest import speedtest_command
from tests.fixtures.common import free_port
from tests.fixtures.config import ConfigFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def sftp_repo(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    """The session's sshd and a [repository] section for a fresh node directory."""
    pytest.importorskip("httpd.repository.sftp")
    sshd = request.getfixturevalue("sshd")
    node_dir = sshd.store / f"node-{tmp_path.name}"
    return sshd, sshd.repository(node_dir)


def keygen(path: Path, kind: str) -> Path:
    """A fresh key pair at ``path`` (and ``path.pub``)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)],
        check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return path


def other_key_line(tmp_path: Path, host_field: str) -> str:
    """A host-key line for a freshly made RSA key: the right host, the wrong key."""
    pub = keygen(tmp_path / "impostor", "rsa").with_suffix(".pub")
    kind, blob = pub.read_text().split()[:2]
    return f"{host_field} {kind} {blob}"


def put_file(path: Path, age: float) -> Path:
    """A 321-byte file at ``path`` modified ``age`` seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"z" * 321)
    os.utime(path, (time.time() - age,) * 2)
    return path


def tree(directory: Path) -> set[str]:
    """Every path below ``directory``, relative to it."""
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*")}


def files_under(directory: Path) -> list[Path]:
    """Regular files below ``directory``."""
    return [p for p in directory.rglob("*") if p.is_file()]


async def test_check_ok_over_sftp(
    config_factory: ConfigFactory, sftp_repo: tuple[Any, dict[str, Any]]
) -> None:
    """Connect, host key, key auth, probe and free space are all checked over SFTP."""
    _sshd, repo = sftp_repo
    lines = await check_repository(config_factory(repository=repo))
    assert [(r.name, r.status) for r in lines][:2] == [
        ("repository", "OK"),
        ("repository probe", "OK"),
    ]
    assert "host key matches" in lines[0].detail


async def test_check_wrong_host_key(
    tmp_path: Path, config_factory: ConfigFactory, sftp_repo: tuple[Any, dict[str, Any]]
) -> None:
    """A server presenting another key: FAIL naming the MITM risk, hint mft keyscan."""
    _sshd, repo = sftp_repo
    repo = {**repo, "host_key": other_key_line(tmp_path, repo["host_key"].split()[0])}
    [line] = await check_repository(config_factory(repository=repo))
    assert line.status == "FAIL" and "MAN-IN-THE-MIDDLE" in line.detail
    assert "mft keyscan" in line.hint


async def test_check_key_not_authorized(
    tmp_path: Path, config_factory: ConfigFactory, sftp_repo: tuple[Any, dict[str, Any]]
) -> None:
    """A node key the server does not know: FAIL with the keygen hint."""
    _sshd, repo = sftp_repo
    key = keygen(tmp_path / "stranger", "ed25519")
    [line] = await check_repository(config_factory(repository={**repo, "client_key": str(key)}))
    assert line.status == "FAIL" and "mft keygen --show" in line.hint
    assert "refused the node key" in line.detail


def broken(case: str, tmp_path: Path, repo: dict[str, Any], sshd: Any) -> dict[str, Any]:
    """A [repository] section that fails to open in the way ``case`` names."""
    host_field = repo["host_key"].split()[0]
    if case == "unreachable":
        port = free_port()
        return {
            **repo,
            "url": repo["url"].replace(f":{sshd.port}/", f":{port}/"),
            "host_key": repo["host_key"].replace(str(sshd.port), str(port)),
        }
    if case == "key type missing":  # the fixture's sshd has an RSA host key only
        pub = keygen(tmp_path / "ed", "ed25519").with_suffix(".pub")
        return {**repo, "host_key": f"{host_field} {' '.join(pub.read_text().split()[:2])}"}
    if case == "not pinned":
        return {**repo, "host_key": ""}
    if case == "no node key":
        return {**repo, "client_key": str(tmp_path / "absent")}
    assert case == "not writable"
    (Path(sshd.store) / f"file-{tmp_path.name}").write_text("x")
    return {**repo, "url": f"{repo['url'].rsplit('/', 1)[0]}/file-{tmp_path.name}/node_1"}


@pytest.mark.parametrize(
    ("case", "detail", "hint"),
    [
        ("unreachable", "is unreachable", "is sshd running on 127.0.0.1:"),
        ("key type missing", "offers no ed25519 host key", "pin a line printed by `mft keyscan"),
        ("not pinned", "host_key is empty", "pin a line printed by `mft keyscan 127.0.0.1"),
        ("no node key", "does not exist", "`mft keygen -c "),
        ("not writable", "is not writable", "on the file server, owned by"),
    ],
)
async def test_check_hint_follows_the_failure(
    tmp_path: Path,
    config_factory: ConfigFactory,
    sftp_repo: tuple[Any, dict[str, Any]],
    case: str,
    detail: str,
    hint: str,
) -> None:
    """Each way the SSH side fails gets its own detail and the hint for that type."""
    sshd, repo = sftp_repo
    [line] = await check_repository(config_factory(repository=broken(case, tmp_path, repo, sshd)))
    assert line.status == "FAIL" and detail in line.detail
    assert hint in line.hint


async def test_speedtest_over_sftp(
    config_factory: ConfigFactory,
    sftp_repo: tuple[Any, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A speed test over SFTP prints both directions and leaves no file on the server."""
    _sshd, repo = sftp_repo
    cfg: Config = config_factory(repository=repo)
    assert await speedtest_command(cfg, argparse.Namespace(size="8M")) == 0
    out = capsys.readouterr().out
    assert "Write:" in out and "Read:" in out and "sftp://" in out
    assert files_under(Path(cfg.repository.path)) == []


async def test_purge_over_sftp(
    config_factory: ConfigFactory,
    sftp_repo: tuple[Any, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Purge walks and deletes through SFTP; empty date/hour directories go too."""
    _sshd, repo = sftp_repo
    cfg = config_factory(repository=repo)
    node = Path(cfg.repository.path)
    put_file(node / f"files/im/20200101/10/{new_resource()}", 40 * 86400)
    new = put_file(node / f"files/im/20990101/10/{new_resource()}", 60)
    args = argparse.Namespace(older_than="30d", dry_run=False)
    assert await purge_command(cfg, args) == 0
    assert "deleted 1 file, 321 bytes" in capsys.readouterr().out
    assert files_under(node) == [new]
    left = tree(node)
    assert "files/im/20200101" not in left and "files/im" in left
