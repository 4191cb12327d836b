"""Host-key line parsing, host matching and node key files (no network)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from pathlib import Path

import asyncssh
import pytest

from component.config import RepositoryConfig
from component.errors import ConfigError
from component.hostkey import host_pattern
from httpd.repository.sshkeys import (
    authorized_keys_line,
    generate_node_key,
    key_type,
    load_client_key,
    parse_host_key_line,
    pinned_host_key,
    public_line,
)

KEY = asyncssh.generate_private_key("ssh-ed25519")
PUB = public_line(KEY)


def repo(url: str, host_key: str) -> RepositoryConfig:
    return RepositoryConfig(url=url, host_key=host_key)


def hashed(name: str) -> str:
    salt = b"0123456789abcdef0123"
    mac = hmac.new(salt, name.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(mac).decode()}"


@pytest.mark.parametrize(
    ("alg", "kind"),
    [("ssh-ed25519", "ed25519"), ("ecdsa-sha2-nistp384", "ecdsa"), ("ssh-rsa", "rsa")],
)
def test_key_type_names_as_keyscan(alg: str, kind: str) -> None:
    """Key types are named as ssh-keyscan -t (and mft keyscan -t) name them."""
    if alg == "ssh-rsa":
        key = asyncssh.generate_private_key(alg, key_size=1024)  # small: only the type matters
    else:
        key = asyncssh.generate_private_key(alg)
    assert key_type(key) == kind


def test_host_pattern_brackets_other_ports() -> None:
    """ssh-keyscan prints a bare host for port 22 and [host]:port otherwise."""
    assert host_pattern("files.example.com", 22) == "files.example.com"
    assert host_pattern("files.example.com", 2222) == "[files.example.com]:2222"


def test_parse_line_with_comment() -> None:
    """A keyscan line with a trailing comment parses to the same key."""
    line = parse_host_key_line(f"files.example.com {PUB} root@files\n")
    assert line.hosts == "files.example.com"
    assert public_line(line.key) == PUB
    assert line.fingerprint.startswith("SHA256:")


@pytest.mark.parametrize(
    "text",
    ["", "   ", "files.example.com", "files.example.com ssh-ed25519", "h ssh-ed25519 !!!notbase64"],
)
def test_parse_rejects_malformed_lines(text: str) -> None:
    """Empty, truncated and garbled lines are configuration errors."""
    with pytest.raises(ConfigError, match=r"\[repository\] host_key"):
        parse_host_key_line(text)


def test_parse_rejects_markers() -> None:
    """@cert-authority / @revoked lines are not a pinned key."""
    with pytest.raises(ConfigError, match="marker"):
        parse_host_key_line(f"@cert-authority *.example.com {PUB}")


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("sftp://u@files.example.com/x", "files.example.com"),
        ("sftp://u@files.example.com:22/x", "FILES.example.com"),
        ("sftp://u@files.example.com:2222/x", "[files.example.com]:2222"),
        ("sftp://u@files.example.com:2222/x", "files.example.com"),
        ("sftp://u@10.0.0.5/x", "files.example.com,10.0.0.5"),
        ("sftp://u@files.example.com:2222/x", hashed("[files.example.com]:2222")),
    ],
)
def test_pinned_key_matches_url_host(url: str, hosts: str) -> None:
    """A line naming the URL's host (plain, bracketed with the port, hashed) is accepted."""
    assert pinned_host_key(repo(url, f"{hosts} {PUB}")).key == KEY.convert_to_public()


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("sftp://u@files.example.com/x", "other.example.com"),
        ("sftp://u@files.example.com:2222/x", "[files.example.com]:2200"),
        ("sftp://u@files.example.com/x", "[files.example.com]:2222"),
        ("sftp://u@files.example.com/x", "files.example.com.evil"),
        ("sftp://u@files.example.com/x", hashed("other.example.com")),
    ],
)
def test_pinned_key_for_another_host_is_refused(url: str, hosts: str) -> None:
    """A line for another host or port names both in a clear error."""
    with pytest.raises(ConfigError, match="not the url's host") as info:
        pinned_host_key(repo(url, f"{hosts} {PUB}"))
    assert "mft keyscan files.example.com" in str(info.value)


def test_generate_node_key_modes_and_comment(tmp_path: Path) -> None:
    """The private key is 0600 in a created directory; the public line carries the comment."""
    path = tmp_path / "etc" / "mft" / "node_key"
    key = generate_node_key(path, "mft@node_1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert authorized_keys_line(key).startswith("ssh-ed25519 AAAA")
    assert authorized_keys_line(key).endswith(" mft@node_1")
    assert (tmp_path / "etc/mft/node_key.pub").read_text().strip() == authorized_keys_line(key)
    assert load_client_key(path).get_fingerprint() == key.get_fingerprint()


def test_generate_node_key_refuses_overwrite(tmp_path: Path) -> None:
    """An existing key survives unless force is given."""
    path = tmp_path / "node_key"
    first = generate_node_key(path, "mft@a")
    with pytest.raises(FileExistsError):
        generate_node_key(path, "mft@a")
    assert load_client_key(path).get_fingerprint() == first.get_fingerprint()
    second = generate_node_key(path, "mft@a", force=True)
    assert load_client_key(path).get_fingerprint() == second.get_fingerprint()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node_key", "node_key.pub"]


def test_load_client_key_errors_are_clear(tmp_path: Path) -> None:
    """A missing or garbled node key names the file and the fix."""
    with pytest.raises(ConfigError, match="mft keygen"):
        load_client_key(tmp_path / "absent")
    (tmp_path / "bad").write_text("not a key\n")
    with pytest.raises(ConfigError, match="not an unencrypted private key"):
        load_client_key(tmp_path / "bad")
