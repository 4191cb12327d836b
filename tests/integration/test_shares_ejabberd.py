"""Share reports through the suite's ejabberd 23.01 (deploy/ejabberd/mod_mft_share.erl).

The session ejabberd loads the module compiled with erlc and configured from the deploy
snippet; users register in-band, upload through the component without ``<recipient>``
and send the GET URL in chats, rooms and forwards.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import slixmpp

from component.audit import bare_jid
from tests.fixtures.common import free_port, spawn_mft
from tests.fixtures.config import ConfigFactory, ConfigFileFactory
from tests.fixtures.ejabberd import UNCONFIGURED_SHARE_HOST, EjabberdServer
from tests.fixtures.prosody import TIMEOUT, XmppUser, client_for, connect_client, disconnect_client
from tests.fixtures.slots import make_room, personal_url
from tests.fixtures.stack import MftStack, running_stack

from .share_helpers import (
    assert_delivered_untouched,
    inbox,
    send_forged_report,
    send_url,
    share_columns,
    wait_metric,
)

pytestmark = pytest.mark.integration

EjabberdClient = Callable[[], Awaitable[slixmpp.ClientXMPP]]


@pytest.fixture
async def ejabberd_client(ejabberd: EjabberdServer) -> AsyncIterator[EjabberdClient]:
    """``await ejabberd_client()``: a fresh account (in-band registration), connected."""
    clients: list[slixmpp.ClientXMPP] = []

    async def make() -> slixmpp.ClientXMPP:
        user = XmppUser(f"u-{secrets.token_hex(4)}@{ejabberd.domain}", secrets.token_urlsafe(12))
        client = client_for(user)
        client.register_plugin("xep_0077")
        client.plugin["xep_0077"].force_registration = True

        async def register(_form: Any) -> None:
            iq = client.Iq()
            iq["type"] = "set"
            iq["register"]["username"] = client.boundjid.user
            iq["register"]["password"] = user.password
            await iq.send(timeout=TIMEOUT)

        client.add_event_handler("register", register)
        clients.append(client)
        await connect_client(client, ejabberd.c2s_port)
        return client

    yield make
    for client in clients:
        await disconnect_client(client)


@pytest.fixture
async def stack(ejabberd: EjabberdServer, config_factory: ConfigFactory) -> AsyncIterator[MftStack]:
    """The component attached to ejabberd and the HTTP server, on a fresh AFT_LOG."""
    port = free_port()
    cfg = config_factory(
        xmpp={
            "component_jid": ejabberd.component_jid,
            "secret": ejabberd.secret,
            "host": "127.0.0.1",
            "port": ejabberd.component_port,
        },
        http={"port": port, "public_url": f"http://127.0.0.1:{port}"},
    )
    async with contextlib.AsyncExitStack() as stacks:
        yield await stacks.enter_async_context(running_stack(cfg))


def bare(client: slixmpp.ClientXMPP) -> str:
    """The client's bare JID as AFT_LOG stores it."""
    return bare_jid(str(client.boundjid))


async def test_ejabberd_chat_with_body_and_oob_gives_one_share_row(
    stack: MftStack, ejabberd_client: EjabberdClient
) -> None:
    """A 1:1 chat with the URL in body and OOB: one SHARE row; the GET row names bob."""
    alice, bob = await ejabberd_client(), await ejabberd_client()
    up = await stack.upload(alice, "report.pdf", b"%PDF-1.4 tiny\n")
    received = await inbox(bob)
    send_url(alice, bare(bob), up.get_url)
    await assert_delivered_untouched(received, up.get_url)  # bob's message as sent
    share = await stack.next_row()
    assert share_columns(share) == ("SHARE", bare(alice), bare(bob), "im", up.path.resource)
    assert (share.real_filename, share.file_size) == ("report.pdf", 14)
    _body, get = await stack.download(up.get_url)  # next row: the GET, no second SHARE
    assert (get.method, get.to_jid, get.chat_type) == ("GET", bare(bob), "im")


async def test_ejabberd_rooms_forward_and_mft_log(
    stack: MftStack,
    ejabberd: EjabberdServer,
    ejabberd_client: EjabberdClient,
    config_file: ConfigFileFactory,
) -> None:
    """Persistent and temporary rooms, a forward to a full JID; GET takes the first share."""
    alice, carol = await ejabberd_client(), await ejabberd_client()
    room = await make_room(alice, persistent=True, service=ejabberd.muc_domain)
    temporary = await make_room(alice, persistent=False, service=ejabberd.muc_domain)
    up = await stack.upload(alice, "plan v2.txt", b"the plan\n")
    send_url(alice, room, up.get_url, mtype="groupchat")
    assert share_columns(await stack.next_row()) == (
        "SHARE", bare(alice), room, "persistent", up.path.resource,
    )  # fmt: skip
    send_url(alice, str(carol.boundjid), up.get_url, oob=False)
    assert share_columns(await stack.next_row()) == (
        "SHARE", bare(alice), bare(carol), "im", up.path.resource,
    )  # fmt: skip
    _body, get = await stack.download(await personal_url(carol, up.get_url, ejabberd.component_jid))
    assert (get.jid, get.to_jid, get.chat_type) == (bare(carol), room, "persistent")
    path = config_file()  # the same AFT_LOG file as the stack's
    proc = await spawn_mft("log", "-c", str(path), "--format", "json", "--method", "SHARE")
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert [r["TO_JID"] for r in json.loads(out)] == [room, bare(carol)]
    proc = await spawn_mft("log", "-c", str(path))
    out, _ = await proc.communicate()
    print(  # the closing note's table: pytest -s shows it
        f"\nmft log (ejabberd):\n{out.decode()}"
    )
    send_url(alice, temporary, up.get_url, mtype="groupchat", oob=False)
    in_temporary = await stack.next_row()
    assert (in_temporary.to_jid, in_temporary.chat_type) == (temporary, "groupchat")


async def test_ejabberd_forged_report_is_ignored(
    stack: MftStack, ejabberd: EjabberdServer, ejabberd_client: EjabberdClient
) -> None:
    """A <shared> a user sends to the component gives no row."""
    alice, bob = await ejabberd_client(), await ejabberd_client()
    up = await stack.upload(alice, "s.txt", b"s")
    send_forged_report(alice, ejabberd.component_jid, str(alice.boundjid), bare(bob), up.get_url)
    await wait_metric(stack.metrics, "share_reports_ignored", {"reason": "sender"})
    assert await stack.rows("SHARE") == []


def test_ejabberd_module_without_options_is_inactive_and_says_so(ejabberd: EjabberdServer) -> None:
    """A host loading mod_mft_share without its options logs a clear error."""
    log = ejabberd.log_path.read_text(errors="replace")
    [line] = [x for x in log.splitlines() if "mod_mft_share is inactive" in x]
    assert UNCONFIGURED_SHARE_HOST in line and "mft_share_component" in line
    assert f"mod_mft_share on {ejabberd.domain}: reporting URLs under" in log
