"""deploy/mft.example.toml is the documented reference: it loads and names every key."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from component.config import _SECTIONS, load_config
from component.servers import deploykit

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "mft.example.toml"
KEY_LINE = re.compile(r"^([a-z_]+)\s*=")


def test_example_loads() -> None:
    """load_config accepts the example as it ships."""
    cfg = load_config(EXAMPLE)
    assert cfg.xmpp.component_jid == "upload.example.com"
    assert cfg.repository.scheme == "sftp" and cfg.database.scheme == "mysql"


@pytest.mark.parametrize("section", sorted(_SECTIONS))
def test_every_key_is_in_the_example(section: str) -> None:
    """Each dataclass field of each section is a key in the example, and nothing else."""
    raw = tomllib.loads(EXAMPLE.read_text())
    fields = {f.name for f in dataclasses.fields(_SECTIONS[section])}
    assert set(raw.get(section, {})) == fields


def test_every_key_is_commented() -> None:
    """Each key (or a group of adjacent keys) is preceded by a comment line."""
    uncommented = []
    above = ""
    for line in EXAMPLE.read_text().splitlines():
        stripped = line.strip()
        m = KEY_LINE.match(stripped)
        if m:
            if not above.startswith("#") and not KEY_LINE.match(above):
                uncommented.append(m.group(1))
            above = stripped
        elif stripped:
            above = stripped
        else:
            above = ""
    assert uncommented == []


def test_snippets_match_the_example() -> None:
    """The Prosody and ejabberd examples carry the example's component JID, secret, port."""
    cfg = load_config(EXAMPLE)
    assert deploykit.EXAMPLE_COMPONENT_JID == cfg.xmpp.component_jid
    assert deploykit.EXAMPLE_SECRET == cfg.xmpp.secret
    assert deploykit.EXAMPLE_PORT == cfg.xmpp.port
    assert deploykit.EXAMPLE_INTERFACE == cfg.xmpp.host


def test_snippet_quoting() -> None:
    """Quotes and backslashes in a secret cannot break out of the Lua or YAML string."""
    lua = deploykit.prosody_snippet(secret='a"b\\c')
    assert 'component_secret = "a\\"b\\\\c"' in lua
    yml = deploykit.ejabberd_snippet(secret='a"b\\c')
    assert 'password: "a\\"b\\\\c"' in yml
