"""Share reports through the real Prosody of the suite (deploy/prosody/mod_mft_share.lua).

The session Prosody loads the module as an admin would (deploy/prosody/mft_share.cfg.lua,
rendered for loopback); plain slixmpp clients upload without ``<recipient>`` and send
the GET URL in chats, rooms and forwards; the component writes SHARE rows.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from pathlib import Path

import pytest
import slixmpp

from component.audit import AuditQuery, AuditRecord, bare_jid
from component.servers.prosody import ProsodyInstance
from tests.fixtures.common import require_binary, spawn_mft
from tests.fixtures.config import ConfigFileFactory
from tests.fixtures.mariadb import MariaDB
from tests.fixtures.prosody import (
    COMPONENT_JID,
    TIMEOUT,
    UNCONFIGURED_SHARE_HOST,
    ClientFactory,
    ComponentFactory,
    UserFactory,
)
from tests.fixtures.slots import make_room, personal_url
from tests.fixtures.stack import MftStack, StackFactory

from .share_helpers import (
    assert_delivered_untouched,
    inbox,
    send_forged_report,
    send_url,
    share_columns,
    wait_metric,
)

pytestmark = pytest.mark.integration


def bare(client: slixmpp.ClientXMPP) -> str:
    """The client's bare JID as AFT_LOG stores it."""
    return bare_jid(str(client.boundjid))


async def next_share(stack: MftStack) -> AuditRecord:
    """The next row, which must be a SHARE row."""
    row = await stack.next_row()
    assert row.method == "SHARE", row
    return row


async def test_chat_with_body_and_oob_gives_one_share_row(
    mft_stack: StackFactory, xmpp_client: ClientFactory
) -> None:
    """A 1:1 chat with the URL in body and OOB: one SHARE row; the GET row names bob."""
    stack = await mft_stack()
    alice, bob = await xmpp_client(), await xmpp_client()
    up = await stack.upload(alice, "report.pdf", b"%PDF-1.4 tiny\n")
    received = await inbox(bob)
    send_url(alice, bare(bob), up.get_url)
    await assert_delivered_untouched(received, up.get_url)  # bob's message as sent
    share = await next_share(stack)
    assert share_columns(share) == ("SHARE", bare(alice), bare(bob), "im", up.path.resource)
    assert (share.real_filename, share.file_type, share.file_size) == ("report.pdf", "pdf", 14)
    assert (share.node_id, share.file_server) == (up.row.node_id, up.row.file_server)
    # The next row is the download, not a second SHARE for the OOB copy of the URL.
    _body, get = await stack.download(up.get_url)
    assert (get.method, get.to_jid, get.chat_type) == ("GET", bare(bob), "im")
    (post,) = await stack.rows("POST")
    assert (post.to_jid, post.chat_type) == ("", "im")  # the POST row stays as written
    assert stack.metrics.value("shares", {"chat_type": "im"}) == 1


async def test_room_share_then_forward_and_mft_log(
    mft_stack: StackFactory,
    xmpp_client: ClientFactory,
    config_file: ConfigFileFactory,
) -> None:
    """Persistent room, then a forward to a third user's full JID: two SHARE rows; the
    GET row takes the first share's room; `mft log --to` and `--method SHARE` show them."""
    stack = await mft_stack()
    alice, carol = await xmpp_client(), await xmpp_client()
    room = await make_room(alice, persistent=True)
    up = await stack.upload(alice, "plan v2.txt", b"the plan\n")
    send_url(alice, room, up.get_url, mtype="groupchat")
    in_room = await next_share(stack)
    assert share_columns(in_room) == ("SHARE", bare(alice), room, "persistent", up.path.resource)
    send_url(alice, str(carol.boundjid), up.get_url, oob=False)  # full JID, body only
    forward = await next_share(stack)
    assert share_columns(forward) == ("SHARE", bare(alice), bare(carol), "im", up.path.resource)
    _body, get = await stack.download(await personal_url(carol, up.get_url))
    assert (get.method, get.jid, get.to_jid, get.chat_type) == (
        "GET",
        bare(carol),
        room,
        "persistent",
    )

    path = config_file()  # the same AFT_LOG file as the stack's
    shown = {}
    for option in (["--to", room], ["--to", bare(carol)], ["--method", "SHARE"], []):
        proc = await spawn_mft("log", "-c", str(path), "--format", "json", *option)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        shown[" ".join(option)] = [(r["METHOD"], r["TO_JID"]) for r in json.loads(out)]
    assert shown[f"--to {room}"] == [("SHARE", room), ("GET", room)]
    assert shown[f"--to {bare(carol)}"] == [("SHARE", bare(carol))]
    assert shown["--method SHARE"] == [("SHARE", room), ("SHARE", bare(carol))]
    assert [m for m, _ in shown[""]] == ["POST", "SHARE", "SHARE", "GET"]
    proc = await spawn_mft("log", "-c", str(path))
    out, _ = await proc.communicate()
    print(  # the closing note's table: pytest -s shows it
        f"\nmft log (Prosody):\n{out.decode()}"
    )
    # `mft check` against the running service: the module is active.
    http = {"port": stack.cfg.http.port, "public_url": stack.cfg.http.public_url}
    proc = await spawn_mft("check", "-c", str(config_file(http=http)))
    out, _ = await proc.communicate()
    [line] = [x for x in out.decode().splitlines() if "share reports" in x]
    assert line.startswith("OK    share reports     mod_mft_share is active"), out.decode()


async def test_temporary_room_is_groupchat(
    mft_stack: StackFactory, xmpp_client: ClientFactory
) -> None:
    """A URL sent to a temporary room gives a SHARE row with CHAT_TYPE groupchat."""
    stack = await mft_stack()
    alice = await xmpp_client()
    room = await make_room(alice, persistent=False)
    up = await stack.upload(alice, "a.png", b"\x89PNG")
    send_url(alice, room, up.get_url, mtype="groupchat", oob=False)
    share = await next_share(stack)
    assert (share.to_jid, share.chat_type) == (room, "groupchat")
    assert stack.metrics.value("shares", {"chat_type": "groupchat"}) == 1


async def test_upload_with_recipient_keeps_it_on_get_rows(
    mft_stack: StackFactory, xmpp_client: ClientFactory
) -> None:
    """A client that sent <recipient> keeps its TO_JID on GET rows; the share is logged."""
    stack = await mft_stack()
    alice, bob, carol = await xmpp_client(), await xmpp_client(), await xmpp_client()
    up = await stack.upload(alice, "x.txt", b"x", recipient=bare(bob))
    send_url(alice, bare(carol), up.get_url)
    share = await next_share(stack)
    assert share.to_jid == bare(carol)
    _body, get = await stack.download(up.get_url)
    assert (get.to_jid, get.chat_type) == (bare(bob), "im")


async def test_forged_report_and_foreign_urls_are_ignored(
    mft_stack: StackFactory, xmpp_client: ClientFactory
) -> None:
    """<shared> sent by a user, a URL of no node of ours, an unknown upload: no rows."""
    stack = await mft_stack()
    alice, bob = await xmpp_client(), await xmpp_client()
    up = await stack.upload(alice, "secret.txt", b"s")
    send_forged_report(alice, COMPONENT_JID, str(alice.boundjid), bare(bob), up.get_url)
    await wait_metric(stack.metrics, "share_reports_ignored", {"reason": "sender"})
    # Our prefix (loopback) but another port: reported by Prosody, not a URL of ours.
    foreign = up.get_url.replace(f":{stack.cfg.http.port}/", ":1/")
    send_url(alice, bare(bob), foreign)
    await wait_metric(stack.metrics, "share_reports_ignored", {"reason": "foreign_url"})
    unknown = up.get_url.replace(up.path.resource, secrets.token_urlsafe(18))
    send_url(alice, bare(bob), unknown)
    await wait_metric(stack.metrics, "share_reports_ignored", {"reason": "unknown_upload"})
    # Not our prefix at all: Prosody does not report it; then a real share is the next row.
    send_url(alice, bare(bob), "https://elsewhere.example/x/y.txt")
    send_url(alice, bare(bob), up.get_url)
    share = await next_share(stack)
    assert share.to_jid == bare(bob)
    assert [r.index for r in await stack.rows("SHARE")] == [2]  # after the POST row
    assert stack.metrics.value("share_reports_ignored", {"reason": "foreign_url"}) == 1


async def test_go_sendxmpp_upload_is_shared(
    mft_stack: StackFactory,
    prosody: ProsodyInstance,
    xmpp_user: UserFactory,
    xmpp_client: ClientFactory,
    tmp_path: Path,
) -> None:
    """go-sendxmpp -h: its upload and its URL message give POST and SHARE rows."""
    gosend = require_binary("go-sendxmpp")
    stack = await mft_stack()
    alice, bob = await xmpp_user(), await xmpp_client()
    upload = tmp_path / "minutes.txt"
    upload.write_bytes(os.urandom(2000))
    proc = await asyncio.create_subprocess_exec(
        gosend,
        "--no-tls-verify",
        "--jserver", f"127.0.0.1:{prosody.c2s_port}",
        "--username", alice.jid,
        "--password", alice.password,
        "--timeout", "10",
        "--http-upload", str(upload),
        bare(bob),
        env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode(errors="replace")
    post = await stack.next_row()
    share = await next_share(stack)
    assert (post.method, post.jid, post.to_jid) == ("POST", alice.jid, "")
    assert share_columns(share) == ("SHARE", alice.jid, bare(bob), "im", post.filename)


async def test_database_outage_while_shares_arrive(
    component_factory: ComponentFactory,
    xmpp_client: ClientFactory,
    mariadb: MariaDB,
    mariadb_url: str,
) -> None:
    """MariaDB stops while shares arrive: they wait in the spool and land exactly once."""
    rc = await component_factory(database={"url": mariadb_url, "connect_timeout": 3.0})
    alice, bob = await xmpp_client(), await xmpp_client()
    base = rc.cfg.http.public_url
    resource = secrets.token_urlsafe(18)
    url = f"{base}/{rc.cfg.node.id}/im/20260101/10/{resource}/notes.txt"
    await rc.audit.record(
        AuditRecord(
            jid=bare(alice),
            to_jid="",
            method="POST",
            filename=resource,
            real_filename="notes.txt",
            file_type="txt",
            chat_type="im",
            file_server="localhost",
            file_size=42,
            node_id=rc.cfg.node.id,
        )
    )
    await asyncio.to_thread(mariadb.stop)
    try:
        for n in range(1, 4):
            send_url(alice, bare(bob), url, body=f"{n}: {url}")
            await wait_metric(rc.metrics, "shares", {"chat_type": "im"}, at_least=n)
        assert rc.audit.spooled == 3  # type: ignore[attr-defined]
    finally:
        await asyncio.to_thread(mariadb.start)
    async with asyncio.timeout(TIMEOUT * 3):
        await rc.audit.flush()  # type: ignore[attr-defined]
    rows = await rc.audit.query(AuditQuery(method="SHARE"))
    assert [(r.to_jid, r.file_size, r.real_filename) for r in rows] == [
        (bare(bob), 42, "notes.txt")
    ] * 3


async def test_module_without_options_is_inactive_and_says_so(prosody: ProsodyInstance) -> None:
    """A VirtualHost loading mod_mft_share without its options logs a clear error."""
    log = prosody.log_path.read_text(errors="replace")
    [line] = [x for x in log.splitlines() if "mod_mft_share is inactive" in x]
    assert UNCONFIGURED_SHARE_HOST in line and "mft_share_component" in line
    assert "reporting URLs under http://127.0.0.1: to upload.localhost" in log
