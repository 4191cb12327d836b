"""deploy/ejabberd/mft.yml attaches a component to a real ejabberd 23.01."""

from __future__ import annotations

from pathlib import Path

import pytest

from component.servers.deploykit import ejabberd_snippet
from httpd.ops.check import component_handshake
from tests.fixtures.ejabberd import EjabberdServer

from .xmpp_helpers import bare_component, disco_items

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_deploy_file_is_the_rendered_template() -> None:
    """deploy/ejabberd/mft.yml is exactly what ejabberd_snippet() renders for the example."""
    assert (DEPLOY / "ejabberd" / "mft.yml").read_text() == ejabberd_snippet()


async def test_component_handshake_and_disco_items(ejabberd: EjabberdServer) -> None:
    """The snippet's credentials are accepted and the component shows in disco#items."""
    async with bare_component(
        ejabberd.component_jid, ejabberd.secret, ejabberd.component_port
    ) as comp:
        jids = await disco_items(comp, ejabberd.domain)
    assert ejabberd.component_jid in jids


async def test_wrong_secret_is_refused(ejabberd: EjabberdServer) -> None:
    """A wrong secret gets a not-authorized stream error, not a session."""
    answer = await component_handshake(
        "127.0.0.1", ejabberd.component_port, ejabberd.component_jid, "wrong-" + ejabberd.secret
    )
    assert not answer.accepted
    assert answer.condition == "not-authorized"
