"""The sandbox banner's text, without starting anything (the integration test runs it)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from component.config import load_config
from component.servers.localca import ensure_local_ca
from component.servers.prosody import ProsodyInstance
from httpd.ops import sandbox
from httpd.ops.sandbox import COMMANDS_HEADER, READY_LINE, Ports, banner, write_config

STATE = {
    "component_secret": "c",
    "http_secret": "h" * 32,
    "passwords": {"alice": "Pw1", "bob": "Pw2"},
}


def _banner(tmp_path: Path, *, https: bool, c2s: int = 5222, asked: int = 5222) -> str:
    ca = (
        ensure_local_ca(tmp_path / "tls", ["localhost", "upload.localhost"], label="t")
        if https
        else None
    )
    config = write_config(tmp_path, "localhost", STATE, 15347, 5443, ca)
    prosody = ProsodyInstance(tmp_path / "prosody", users={}, c2s_port=c2s)
    return banner(prosody, load_config(config), STATE, config, Ports(c2s, 5443, asked), ca)


def _commands(text: str) -> list[str]:
    block = text[text.index(COMMANDS_HEADER) : text.index(READY_LINE)]
    return [line[4:] for line in block.splitlines() if line.startswith("    ")]


def test_plain_banner_commands_name_full_paths(tmp_path: Path) -> None:
    """http: go-sendxmpp (self-signed c2s: --no-tls-verify) with the sample, then mft log."""
    upload, log = _commands(_banner(tmp_path, https=False))
    assert upload == (
        "go-sendxmpp -u alice@localhost -p Pw1 -j 127.0.0.1:5222 --no-tls-verify"
        f" -h {tmp_path / 'sample.txt'} bob@localhost"
    )
    mft = Path(sys.executable).absolute().parent / "mft"
    assert log == f"{shlex.quote(str(mft))} log -c {tmp_path / 'mft.toml'}"


def test_https_banner_as_a_user_asks_for_sudo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--https, not root: trust and removal lines go through sudo; the upload verifies TLS."""
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    text = _banner(tmp_path, https=True)
    trust, upload, _log, remove = _commands(text)
    assert trust.startswith(
        f"sudo cp {tmp_path / 'tls' / 'ca.crt'} /usr/local/share/ca-certificates/"
    )
    assert trust.endswith(".crt && sudo update-ca-certificates")
    assert remove.startswith("sudo rm -f /usr/local/share/ca-certificates/xmpp-mft-sandbox-")
    assert remove.endswith(" && sudo update-ca-certificates --fresh")
    assert trust.split()[3] == remove.split()[3]  # the same file is added and removed
    assert "--no-tls-verify" not in upload
    assert "https://127.0.0.1:5443" in text


def test_busy_client_port_is_named(tmp_path: Path) -> None:
    """5222 taken (a system Prosody): the banner says so and gives the port it took."""
    text = _banner(tmp_path, https=False, c2s=40001, asked=5222)
    assert "127.0.0.1 port 40001" in text
    assert "port 5222 was taken" in text
    assert "port 5222 was taken" not in _banner(tmp_path, https=False)
