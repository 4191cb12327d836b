"""deploy/prosody/mft.cfg.lua attaches a component to a real Prosody 0.12.

Prosody is laid out as Debian ships it: the main file declares the VirtualHost and
ends with ``Include "conf.d/*.cfg.lua"``, and the snippet lives in conf.d/. This is
the case the snippet's ``Host "*"`` line exists for (global options after a host).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from component.config import parse_config
from component.servers.deploykit import DEBIAN_PLUGIN_DIR, prosody_share_snippet, prosody_snippet
from httpd.ops.check import check_xmpp, component_handshake
from tests.fixtures.common import ServerProcess, free_port, require_binary, running

from .xmpp_helpers import bare_component, disco_items

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@dataclass(frozen=True)
class DebianProsody:
    """A Prosody started from a Debian-shaped config with the snippet in conf.d/."""

    domain: str
    component_jid: str
    secret: str
    component_port: int
    log_path: Path


@pytest.fixture(scope="module")
def debian_prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DebianProsody]:
    """Prosody with the snippet Included after the VirtualHost, on loopback ports."""
    prosody = require_binary("prosody")
    base = tmp_path_factory.mktemp("prosody-deploy")
    srv = DebianProsody(
        domain="example.test",
        component_jid="upload.example.test",
        secret=secrets.token_urlsafe(12) + '"\\',  # quotes and backslashes survive
        component_port=free_port(),
        log_path=base / "prosody.log",
    )
    (base / "data").mkdir()
    (base / "conf.d").mkdir()
    (base / "conf.d" / "mft.cfg.lua").write_text(
        prosody_snippet(srv.component_jid, srv.secret, srv.component_port)
    )
    # The share module's snippet as shipped, but with this checkout's deploy/prosody.
    (base / "conf.d" / "mft_share.cfg.lua").write_text(
        prosody_share_snippet(
            srv.domain,
            [srv.component_jid],
            ["https://upload.example.test/"],
            [DEBIAN_PLUGIN_DIR, str(DEPLOY / "prosody")],
        )
    )
    (base / "prosody.cfg.lua").write_text(
        f"""
run_as_root = true
pidfile = "{base}/prosody.pid"
data_path = "{base}/data"
plugin_paths = {{}}
log = {{ info = "*console" }}
c2s_ports = {{ {free_port()} }}
c2s_interfaces = {{ "127.0.0.1" }}
http_ports = {{}}
https_ports = {{}}
s2s_ports = {{}}
modules_enabled = {{ "disco", "roster", "saslauth" }}
VirtualHost "{srv.domain}"
Include "{base}/conf.d/*.cfg.lua"
"""
    )
    proc = ServerProcess(
        "prosody", [prosody, "-F", "--config", str(base / "prosody.cfg.lua")], base / "prosody.log"
    )
    with running(proc, srv.component_port, timeout=30):
        yield srv


def test_deploy_file_is_the_rendered_template() -> None:
    """deploy/prosody/mft.cfg.lua is exactly what prosody_snippet() renders for the example."""
    assert (DEPLOY / "prosody" / "mft.cfg.lua").read_text() == prosody_snippet()


async def test_component_handshake_and_disco_items(debian_prosody: DebianProsody) -> None:
    """The snippet's port and secret work, and the component shows in disco#items."""
    srv = debian_prosody
    async with bare_component(srv.component_jid, srv.secret, srv.component_port) as comp:
        jids = await disco_items(comp, srv.domain)
        # While the component is connected, a second one with the same JID is refused.
        second = await component_handshake(
            "127.0.0.1", srv.component_port, srv.component_jid, srv.secret
        )
        raw = {
            "xmpp": {
                "component_jid": srv.component_jid,
                "secret": srv.secret,
                "port": srv.component_port,
            },
            "http": {"public_url": "http://127.0.0.1:1", "secret": "x" * 16},
        }
        [line] = await check_xmpp(parse_config(raw))
    assert srv.component_jid in jids
    assert (second.accepted, second.condition) == (False, "conflict")
    # ... which mft check reports as the service running.
    assert line.status == "OK" and "component already connected (service running)" in line.detail


async def test_share_snippet_loads_the_module(debian_prosody: DebianProsody) -> None:
    """deploy/prosody/mft_share.cfg.lua in conf.d/ (after the VirtualHost) loads mod_mft_share."""
    log = debian_prosody.log_path.read_text(errors="replace")
    assert "reporting URLs under https://upload.example.test/ to upload.example.test" in log
    assert "mod_mft_share is inactive" not in log


async def test_wrong_secret_and_unknown_jid_are_refused(debian_prosody: DebianProsody) -> None:
    """Wrong secret -> not-authorized; a JID without Component entry -> host-unknown."""
    srv = debian_prosody
    wrong = await component_handshake("127.0.0.1", srv.component_port, srv.component_jid, "x")
    unknown = await component_handshake(
        "127.0.0.1", srv.component_port, "nope.example.test", srv.secret
    )
    assert wrong.condition == "not-authorized"
    assert unknown.condition == "host-unknown"
