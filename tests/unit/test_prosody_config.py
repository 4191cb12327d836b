"""ProsodyInstance's config text and Lua literals (no prosody binary needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from component.servers.prosody import ProsodyInstance, lua


def test_lua_literals() -> None:
    """Strings are escaped; lists, tables and booleans render as Lua."""
    assert lua('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert lua(True) == "true" and lua(5) == "5"
    assert lua(["a", 1]) == '{ "a", 1 }'
    assert lua({"k": "v"}) == '{ ["k"] = "v" }'
    with pytest.raises(TypeError):
        lua(object())


def test_config_has_loopback_ports_and_entries(tmp_path: Path) -> None:
    """The config binds every port on 127.0.0.1 and declares host, components and MUC."""
    p = ProsodyInstance(
        tmp_path,
        domain="example.test",
        component_secret='s"cret',
        muc_domain="rooms.example.test",
        extra_components={"upload.node-2.test": "n2-secret"},
        extra_config=['Component "share.example.test" "http_file_share"'],
    )
    text = p.render_config()
    assert f"c2s_ports = {{ {p.c2s_port} }}" in text
    assert f"component_ports = {{ {p.component_port} }}" in text
    assert 'component_interface = "127.0.0.1"' in text
    assert "s2s_ports = {}" in text and "run_as_root = true" in text
    assert "c2s_require_encryption = false" in text
    assert 'VirtualHost "example.test"' in text
    assert 'Component "upload.example.test"\n    component_secret = "s\\"cret"' in text
    assert 'Component "rooms.example.test" "muc"' in text
    assert 'Component "upload.node-2.test"\n    component_secret = "n2-secret"' in text
    assert text.rstrip().endswith('Component "share.example.test" "http_file_share"')
    assert len({p.c2s_port, p.component_port, p.http_port}) == 3
    assert "ssl =" not in text


def test_config_tls(tmp_path: Path) -> None:
    """With tls=True the config points at the certificate in the directory."""
    text = ProsodyInstance(tmp_path, tls=True).render_config()
    assert f'certificate = "{tmp_path.resolve()}/tls.crt"' in text
