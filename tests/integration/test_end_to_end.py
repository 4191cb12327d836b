"""End to end: a slixmpp user -> Prosody -> component -> HTTP server -> repository + AFT_LOG.

Every test runs the whole stack (``mft_stack``, or ``mft run`` as a process) against a
real Prosody, uploads with real clients (slixmpp, aiohttp, go-sendxmpp) and checks the
bytes, the repository layout and the AFT_LOG rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from component.audit import AuditQuery, AuditRecord
from component.audit_sqlite import SqliteAuditLog
from component.config import Config
from component.prosody import ProsodyInstance
from component.stanza import NS, NS_LEGACY
from tests.fixtures.common import free_port, require_binary, spawn_mft
from tests.fixtures.config import ConfigFactory, ConfigFileFactory
from tests.fixtures.prosody import (
    COMPONENT_JID,
    TIMEOUT,
    ClientFactory,
    UserFactory,
    XmppUser,
    client_for,
    component_overrides,
    connect_client,
    disconnect_client,
)
from tests.fixtures.slots import ask_slot, error_of, make_room, slot_urls
from tests.fixtures.stack import MftStack, StackFactory, Upload, personal_url, running_stack

pytestmark = pytest.mark.integration


def now() -> datetime:
    """The current UTC time."""
    return datetime.now(UTC)


def hour_of(when: datetime) -> tuple[str, str]:
    """(YYYYMMDD, HH) of a UTC time, as slot URLs carry them."""
    return f"{when:%Y%m%d}", f"{when:%H}"


def with_query(url: str, **changes: str) -> str:
    """``url`` with some query parameters replaced."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def columns(row: AuditRecord) -> tuple[str, str, str, str]:
    """(METHOD, CHAT_TYPE, TO_JID, JID) of a row: what the closing-note table lists."""
    return row.method, row.chat_type, row.to_jid, row.jid


def assert_transfer_row(
    row: AuditRecord, up: Upload, *, method: str, jid: str, real: str, ftype: str, size: int
) -> None:
    """The columns every row of one upload shares, and the per-row ones given."""
    assert row.method == method
    assert row.jid == jid
    assert row.to_jid == up.row.to_jid
    assert row.filename == up.path.resource
    assert row.real_filename == real
    assert row.file_type == ftype
    assert row.chat_type == up.path.chat_type
    assert row.file_server == "localhost"  # file:// repository
    assert row.file_size == size
    assert row.node_id == "node_1"
    assert row.client_ip == "127.0.0.1"


# -- 1, 2: discovery, slot, PUT, GET, AFT_LOG ------------------------------------------


def max_file_sizes(info: slixmpp.Iq) -> dict[str, str]:
    """FORM_TYPE -> max-file-size of the XEP-0128 forms in a disco#info result."""
    sizes = {}
    for form in info.xml.findall(".//{jabber:x:data}x"):
        fields = {
            f.get("var"): f.findtext("{jabber:x:data}value")
            for f in form.findall("{jabber:x:data}field")
        }
        sizes[str(fields["FORM_TYPE"])] = str(fields["max-file-size"])
    return sizes


async def test_discover_upload_download_and_audit(
    mft_stack: StackFactory, xmpp_client: ClientFactory
) -> None:
    """Disco through the server, slot, PUT, GET byte-identical, one POST and one GET row."""
    stack = await mft_stack(upload={"max_file_size": 5_000_000})
    client = await xmpp_client()
    xep = client.plugin["xep_0363"]
    info = await xep.find_upload_service(timeout=TIMEOUT)  # the server's disco#items
    assert info is not None and info["from"] == COMPONENT_JID
    assert ("store", "file") in {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    assert max_file_sizes(info) == {NS: "5000000", NS_LEGACY: "5000000"}

    body = os.urandom(700_000)  # several HTTP chunks
    name = "Quarterly report 2024.PDF"
    before = now()
    slot = await xep.request_slot(info["from"], name, len(body), "application/pdf", timeout=TIMEOUT)
    put_url = slot["http_upload_slot"]["put"]["url"]
    get_url = slot["http_upload_slot"]["get"]["url"]
    assert await stack.put(put_url, body, "application/pdf") == 201
    assert (await stack.next_row()).method == "POST"
    status, got = await stack.get(get_url)
    assert (status, got == body) == (200, True)
    assert (await stack.next_row()).method == "GET"
    after = now()

    path = stack.path_of(get_url)
    assert (path.date, path.hour) in {hour_of(before), hour_of(after)}
    assert path.repo_path == f"files/im/{path.date}/{path.hour}/{path.resource}"
    assert stack.stored() == [path.repo_path]
    assert (stack.root / path.repo_path).read_bytes() == body
    post, get = await stack.rows()  # exactly two rows, as stored in the table
    up = Upload(put_url, get_url, path, post)
    common = {"real": name, "ftype": "pdf", "size": len(body)}
    assert_transfer_row(post, up, method="POST", jid=client.boundjid.bare, **common)  # type: ignore[arg-type]
    assert_transfer_row(get, up, method="GET", jid="", **common)  # type: ignore[arg-type]
    assert post.to_jid == "" and post.chat_type == "im"
    for row in (post, get):
        assert before <= row.date_time <= after
    assert post.index is not None and get.index is not None and post.index < get.index


async def test_slixmpp_upload_file(mft_stack: StackFactory, xmpp_client: ClientFactory) -> None:
    """slixmpp's own high-level upload_file (XEP-0363 plugin) works against the service."""
    stack = await mft_stack()
    client = await xmpp_client()
    body = os.urandom(50_000)
    with io.BytesIO(body) as f:
        url = await client.plugin["xep_0363"].upload_file(
            "holiday photo.jpg", input_file=f, timeout=TIMEOUT
        )
    post = await stack.next_row()
    got, get = await stack.download(url)
    assert got == body
    path = stack.path_of(url)
    assert path.filename == "holiday photo.jpg"
    assert (stack.root / path.repo_path).read_bytes() == body
    assert (post.method, post.jid, post.real_filename, post.file_type, post.file_size) == (
        "POST",
        client.boundjid.bare,
        "holiday photo.jpg",
        "jpg",
        len(body),
    )
    assert (get.method, get.filename) == ("GET", path.resource)


# -- 3, 4: chat types, recipients, downloader identity ---------------------------------


async def test_chat_types_end_to_end(
    mft_stack: StackFactory, xmpp_client: ClientFactory, xmpp_user: UserFactory
) -> None:
    """Rooms, a one-to-one recipient and none land in files/<chat_type>/ with their rows."""
    stack = await mft_stack()
    owner = await xmpp_client()
    friend = await xmpp_client(await xmpp_user("friend"))
    persistent = await make_room(owner, persistent=True)
    temporary = await make_room(owner, persistent=False)
    uploader, downloader = owner.boundjid.bare, friend.boundjid.bare
    cases = [
        (persistent, "persistent", persistent),
        (temporary, "groupchat", temporary),
        (downloader, "im", downloader),
        (friend.boundjid.full, "im", downloader),
        (None, "im", ""),
    ]
    for recipient, chat_type, to_jid in cases:
        body = os.urandom(2000)
        up = await stack.upload(owner, f"for {chat_type}.bin", body, recipient=recipient)
        assert up.path.chat_type == chat_type, recipient
        assert up.path.repo_path.startswith(f"files/{chat_type}/{up.path.date}/")
        assert (stack.root / up.path.repo_path).read_bytes() == body
        assert columns(up.row) == ("POST", chat_type, to_jid, uploader), recipient
        # The recipient downloads with a personal URL: its JID is in the GET row.
        got, row = await stack.download(await personal_url(friend, up.get_url))
        assert got == body
        assert columns(row) == ("GET", chat_type, to_jid, downloader), recipient
        # A plain GET (no ticket) repeats chat type and recipient, downloader unknown.
        got, row = await stack.download(up.get_url)
        assert got == body
        assert columns(row) == ("GET", chat_type, to_jid, ""), recipient
    assert len(await stack.rows("POST")) == len(cases)
    assert len(await stack.rows("GET")) == 2 * len(cases)


async def test_identity_required_for_downloads(
    mft_stack: StackFactory, xmpp_client: ClientFactory
) -> None:
    """With require_identity, no ticket is 401, a forged one 403 (GET_REFUSED); a ticket works."""
    stack = await mft_stack(download={"require_identity": True})
    uploader = await xmpp_client()
    downloader = await xmpp_client()
    body = b"for your eyes only\n"
    up = await stack.upload(uploader, "plan.txt", body, recipient=downloader.boundjid.bare)
    async with stack.http.get(up.get_url) as resp:
        assert resp.status == 401
        assert "WWW-Authenticate" in resp.headers
    refused = await stack.next_row()
    assert columns(refused) == ("GET_REFUSED", "im", downloader.boundjid.bare, "")

    mine = await personal_url(downloader, up.get_url)
    # Someone else's name on a valid ticket: the signature no longer matches.
    forged = with_query(mine, jid=uploader.boundjid.bare)
    assert (await stack.get(forged))[0] == 403
    assert (await stack.next_row()).method == "GET_REFUSED"

    got, row = await stack.download(mine)
    assert got == body
    assert columns(row) == ("GET", "im", downloader.boundjid.bare, downloader.boundjid.bare)
    got, row = await stack.download(await personal_url(uploader, up.get_url))
    assert (got, row.jid) == (body, uploader.boundjid.bare)
    methods = [r.method for r in await stack.rows()]
    assert methods == ["POST", "GET_REFUSED", "GET_REFUSED", "GET", "GET"]


# -- 5: HH.n roll-over ------------------------------------------------------------------


async def test_rollover_to_next_directory(
    mft_stack: StackFactory, xmpp_client: ClientFactory
) -> None:
    """With files_per_directory=2 the third upload of the hour goes to HH.1 (URL = disk)."""
    stack = await mft_stack(repository={"files_per_directory": 2})
    client = await xmpp_client()
    hours: dict[tuple[str, str], list[Upload]] = {}
    bodies: dict[str, bytes] = {}
    # Up to six uploads: if an hour boundary passes mid-test, the new hour fills up anew.
    for i in range(6):
        body = f"file {i}\n".encode()
        up = await stack.upload(client, f"n{i}.txt", body)
        bodies[up.path.resource] = body
        base = up.path.hour.split(".")[0]
        group = hours.setdefault((up.path.date, base), [])
        n = len(group) // 2
        assert up.path.hour == (base if n == 0 else f"{base}.{n}"), (i, up.path.hour)
        group.append(up)
        if len(group) == 3:
            break
    else:
        pytest.fail(f"no hour got three uploads: {hours}")
    first, second, third = group
    date, base = first.path.date, first.path.hour
    assert second.path.hour == base and third.path.hour == f"{base}.1"
    hour_dir = stack.root / "files" / "im" / date
    assert sorted(p.name for p in (hour_dir / base).iterdir()) == sorted(
        [first.path.resource, second.path.resource]
    )
    assert [p.name for p in (hour_dir / f"{base}.1").iterdir()] == [third.path.resource]
    assert f"/im/{date}/{base}.1/{third.path.resource}/" in third.get_url
    got, row = await stack.download(third.get_url)
    assert got == bodies[third.path.resource]
    assert (row.filename, row.real_filename) == (third.path.resource, third.row.real_filename)
    assert len(await stack.rows("POST")) == len(bodies)


# -- 6: legacy namespace ---------------------------------------------------------------


async def test_legacy_namespace_end_to_end(
    mft_stack: StackFactory, xmpp_client: ClientFactory
) -> None:
    """A urn:xmpp:http:upload (v0.2) slot, PUT and GET work; the recipient is honoured."""
    stack = await mft_stack()
    client = await xmpp_client()
    friend = await xmpp_client()
    body = os.urandom(4096)
    reply = await ask_slot(
        client,
        "minutes.odt",
        len(body),
        content_type="application/vnd.oasis.opendocument.text",
        recipient=friend.boundjid.bare,
        legacy=True,
    )
    assert reply.xml.find(f"{{{NS_LEGACY}}}slot") is not None
    assert reply.xml.find(f"{{{NS}}}slot") is None
    put_url, get_url = slot_urls(reply)
    assert await stack.put(put_url, body) == 201
    post = await stack.next_row()
    got, get = await stack.download(await personal_url(friend, get_url))
    assert got == body
    assert columns(post) == ("POST", "im", friend.boundjid.bare, client.boundjid.bare)
    assert columns(get) == ("GET", "im", friend.boundjid.bare, friend.boundjid.bare)
    assert (post.real_filename, post.file_type) == ("minutes.odt", "odt")
    assert stack.stored() == [stack.path_of(get_url).repo_path]


# -- 7: hostile file names -------------------------------------------------------------

HOSTILE_NAMES = [
    # (name, FILE_TYPE)
    ("a b  c.txt", "txt"),
    ("ファイル 名.PDF", "pdf"),
    ("emoji 🎉.png", "png"),
    ("..hidden", "hidden"),
    ("report..final.Docx", "docx"),
    ("..\\..\\windows\\win.ini", "ini"),
    ("%2e%2e%2fetc%2fpasswd", ""),
    ("x" * 300 + ".JPEG", "jpeg"),
    ("y" * 600 + ".tar.gz", "gz"),
    ("archive.VeryLongExtension", "verylongex"),
    ("no extension", ""),
]


async def test_hostile_file_names_end_to_end(
    mft_stack: StackFactory, xmpp_client: ClientFactory
) -> None:
    """Odd names are stored under the resource only, served back, and logged clipped."""
    stack = await mft_stack()
    client = await xmpp_client()
    expected_files = []
    for name, ftype in HOSTILE_NAMES:
        body = os.urandom(100)
        up = await stack.upload(client, name, body)
        assert up.path.filename == name
        assert up.path.repo_path == f"files/im/{up.path.date}/{up.path.hour}/{up.path.resource}"
        expected_files.append(up.path.repo_path)
        got, get = await stack.download(up.get_url)
        assert got == body, name
        for row in (up.row, get):
            assert row.real_filename == name[:511], name
            assert row.file_type == ftype, name
    assert len(HOSTILE_NAMES[8][0]) > 511 and len(HOSTILE_NAMES[7][0]) > 300
    assert sorted(stack.stored()) == sorted(expected_files)

    for bad in ("a/b.txt", "../etc/passwd", "dir/", ".", ".."):
        assert error_of(await ask_slot(client, bad, 10)) == ("bad-request", "modify"), bad
    # XML turns a tab in an attribute into a space; the legacy syntax's element text keeps
    # control characters, and they are refused.
    for bad in ("tab\there.txt", "line\nbreak.txt"):
        reply = await ask_slot(client, bad, 10, legacy=True)
        assert error_of(reply) == ("bad-request", "modify"), bad
    # NUL cannot travel in XML at all: it reaches us only through an HTTP URL.
    put_url, _get = slot_urls(await ask_slot(client, "a.txt", 3))
    path, _, query = put_url.partition("?")
    assert await stack.put(f"{path.rsplit('/', 1)[0]}/a%00.txt?{query}", b"abc") == 400
    assert await stack.put(f"{path.rsplit('/', 1)[0]}/a%2Fb.txt?{query}", b"abc") == 400
    assert sorted(stack.stored()) == sorted(expected_files)


async def test_nul_in_file_name_ends_only_that_stream(
    mft_stack: StackFactory,
    xmpp_client: ClientFactory,
    xmpp_user: UserFactory,
    prosody: ProsodyInstance,
) -> None:
    """A NUL in a slot request is not XML: Prosody drops that client; the service goes on."""
    stack = await mft_stack()
    bad = client_for(await xmpp_user())
    await connect_client(bad, prosody.c2s_port)
    try:
        gone = asyncio.get_running_loop().create_future()
        bad.add_event_handler("disconnected", lambda _e: gone.done() or gone.set_result(None))
        iq = bad.make_iq_get(ito=COMPONENT_JID)
        iq["http_upload_request"]["filename"] = "a\x00b.txt"
        iq["http_upload_request"]["size"] = "3"
        answer = iq.send(timeout=TIMEOUT)
        async with asyncio.timeout(TIMEOUT):
            await gone
        with contextlib.suppress(IqError, IqTimeout, asyncio.CancelledError):
            answer.cancel()
    finally:
        await disconnect_client(bad)
    client = await xmpp_client()
    up = await stack.upload(client, "after.txt", b"still here\n")
    assert (await stack.download(up.get_url))[0] == b"still here\n"
    assert stack.stored() == [up.path.repo_path]
    assert stack.component.metrics.value("slots_refused", {"reason": "invalid_request"}) == 0
