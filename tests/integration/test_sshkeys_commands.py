"""``mft keygen``, ``mft keyscan`` and ``mft run``'s start-up refusals, run as commands."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from component.config import load_config
from httpd.repository.sftp import SftpRepository
from httpd.repository.sshkeys import public_line
from tests.fixtures.common import free_port
from tests.fixtures.sshd import SshServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def mft(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m component ARGS`` as a user would (no MFT_CONFIG leaking in)."""
    env = {k: v for k, v in os.environ.items() if k != "MFT_CONFIG"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "component", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def write_config(path: Path, server: SshServer, client_key: Path, node: str = "node_7") -> Path:
    path.write_text(
        f"""\
[node]
id = "{node}"

[xmpp]
component_jid = "upload.localhost"
secret = "component-secret"

[http]
public_url = "http://127.0.0.1:5443"
secret = "0123456789abcdef0123"

[repository]
url = "{server.url(server.store / node)}"
host_key = "{server.host_key_line}"
client_key = "{client_key}"
connect_timeout = 5.0

[database]
url = "sqlite:///{path.parent}/aft.sqlite3"
"""
    )
    return path


def test_keygen_creates_shows_and_refuses_overwrite(sshd: SshServer, tmp_path: Path) -> None:
    """keygen writes a 0600 ed25519 key with mft@node, --show repeats it, no silent overwrite."""
    key_path = tmp_path / "etc" / "mft" / "node_key"
    cfg = write_config(tmp_path / "mft.toml", sshd, key_path)

    made = mft("keygen", "-c", str(cfg))
    assert made.returncode == 0, made.stderr
    line = made.stdout.strip()
    assert line.startswith("ssh-ed25519 AAAA") and line.endswith(" mft@node_7")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    key = asyncssh.read_private_key(key_path)
    assert key.export_public_key().decode().strip() == line

    again = mft("keygen", "-c", str(cfg))
    assert again.returncode == 1
    assert "--force" in again.stderr
    assert asyncssh.read_private_key(key_path).get_fingerprint() == key.get_fingerprint()

    shown = mft("keygen", "-c", str(cfg), "--show")
    assert (shown.returncode, shown.stdout.strip()) == (0, line)

    forced = mft("keygen", "-c", str(cfg), "--force")
    assert forced.returncode == 0
    assert forced.stdout.strip() != line
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_show_without_key_fails_clearly(sshd: SshServer, tmp_path: Path) -> None:
    """--show before any key exists exits 1 and says to run keygen."""
    cfg = write_config(tmp_path / "mft.toml", sshd, tmp_path / "missing_key")
    shown = mft("keygen", "-c", str(cfg), "--show")
    assert shown.returncode == 1
    assert "mft keygen" in shown.stderr


async def test_keygen_line_in_authorized_keys_opens_repository(
    sshd_factory: Callable[[], SshServer], tmp_path: Path
) -> None:
    """The printed line, appended to authorized_keys, lets the node in (seed's workflow)."""
    server = sshd_factory()
    key_path = tmp_path / "node_key"
    cfg_path = write_config(tmp_path / "mft.toml", server, key_path)
    made = mft("keygen", "-c", str(cfg_path))
    assert made.returncode == 0, made.stderr
    cfg = load_config(cfg_path)

    with pytest.raises(Exception, match="refused the node key"):
        await SftpRepository(cfg.repository).open()
    with server.authorized_keys.open("a") as f:
        f.write(made.stdout)
    repo = SftpRepository(cfg.repository)
    await repo.open()
    await repo.close()
    assert (server.store / "node_7").is_dir()


def test_keyscan_prints_the_pinnable_line(sshd: SshServer) -> None:
    """keyscan -t rsa prints exactly the server's key line and its SHA256 fingerprint."""
    out = mft("keyscan", "127.0.0.1", "-p", str(sshd.port), "-t", "rsa")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == sshd.host_key_line
    served = (sshd.dir / "ssh_host_rsa_key.pub").read_text().split()
    assert lines[0].split()[1:] == served[:2]
    ssh_keygen = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{sshd.host_key}.pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert ssh_keygen in lines[1]


def test_keyscan_all_types_and_missing_type(sshd: SshServer) -> None:
    """Without -t every type the server has is printed; a type it lacks fails clearly."""
    out = mft("keyscan", "127.0.0.1", "-p", str(sshd.port))
    assert out.returncode == 0, out.stderr
    assert [ln for ln in out.stdout.splitlines() if not ln.startswith("#")] == [sshd.host_key_line]
    missing = mft("keyscan", "127.0.0.1", "-p", str(sshd.port), "-t", "ed25519")
    assert missing.returncode == 1
    assert "no ed25519 host key" in missing.stderr


def test_keyscan_unreachable(sshd: SshServer) -> None:
    """Nothing listening: exit 1 with 'unreachable'."""
    out = mft("keyscan", "127.0.0.1", "-p", str(free_port()))
    assert out.returncode == 1
    assert "unreachable" in out.stderr


@pytest.mark.parametrize(
    ("change", "expected", "hint"),
    [
        ("host_key", "MAN-IN-THE-MIDDLE", "compare [repository] host_key with `mft keyscan"),
        ("client_key", "refused the node key", "append the line from `mft keygen --show`"),
        ("port", "is unreachable", "is sshd running on 127.0.0.1:"),
    ],
)
def test_run_refuses_to_start(
    sshd: SshServer, tmp_path: Path, change: str, expected: str, hint: str
) -> None:
    """mft run exits non-zero naming the repository, why, and the fix, before listening."""
    client_key = sshd.client_key
    if change == "client_key":
        client_key = tmp_path / "stranger"
        asyncssh.generate_private_key("ssh-ed25519").write_private_key(client_key)
    cfg = write_config(tmp_path / "mft.toml", sshd, client_key)
    text = cfg.read_text()
    if change == "host_key":
        other = public_line(asyncssh.generate_private_key("ssh-rsa", key_size=2048))
        text = text.replace(sshd.host_key_line, f"[127.0.0.1]:{sshd.port} {other}")
    elif change == "port":
        port = free_port()
        text = text.replace(f":{sshd.port}", f":{port}")
    cfg.write_text(text)
    out = mft("run", "-c", str(cfg))
    assert out.returncode == 1
    assert "cannot start: repository sftp://" in out.stderr
    assert expected in out.stderr
    assert f"mft: hint: {hint}" in out.stderr


def test_run_refuses_a_host_key_for_another_host(sshd: SshServer, tmp_path: Path) -> None:
    """A host_key line for another host: exit 2 at load, one line naming the key."""
    cfg = write_config(tmp_path / "mft.toml", sshd, sshd.client_key)
    text = cfg.read_text()
    cfg.write_text(text.replace('host_key = "[127.0.0.1]', 'host_key = "[files.example.com]'))
    out = mft("run", "-c", str(cfg))
    assert out.returncode == 2
    assert out.stderr.startswith("mft: configuration error: [repository] host_key begins with")
    assert "not the url's host" in out.stderr and out.stderr.count("\n") == 1
