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
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from component.audit import AuditQuery, AuditRecord
from component.audit.sqlite import SqliteAuditLog
from component.config import load_config
from component.servers.prosody import ProsodyInstance
from component.xmpp.stanza import NS, NS_LEGACY
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
    start_component,
    stop_component,
)
from tests.fixtures.slots import (
    ask_slot,
    error_of,
    make_room,
    personal_url,
    slot_urls,
    url_slot_path,
)
from tests.fixtures.stack import MftStack, StackFactory, Upload, running_stack

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
    for row, method, jid in ((post, "POST", client.boundjid.bare), (get, "GET", "")):
        assert_transfer_row(row, up, method=method, jid=jid, real=name, ftype="pdf", size=len(body))
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


async def test_rollover_resumes_after_restart(
    mft_stack: StackFactory, xmpp_client: ClientFactory
) -> None:
    """Two uploads, component restarted on the same AFT_LOG: the next file goes to HH.1."""
    stack = await mft_stack(repository={"files_per_directory": 2})
    client = await xmpp_client()
    for i in range(2):
        await stack.upload(client, f"before-{i}.txt", b"before restart\n")
    # Stop the component only: the HTTP server and its audit log stay up (the stack's
    # clean-up stops it again harmlessly and closes the log).
    stack.component.stop.set()
    async with asyncio.timeout(TIMEOUT):
        await stack.component.task
    restarted = await start_component(stack.cfg)
    try:
        third = await stack.upload(client, "after.txt", b"after restart\n")
    finally:
        await stop_component(restarted)
    date, base = third.path.date, third.path.hour.split(".")[0]
    # Uploads are counted by completion time: normally both fall in this hour (-> HH.1);
    # only if an hour began in between does the new hour count from fewer.
    same_hour = [r for r in await stack.rows("POST") if hour_of(r.date_time) == (date, base)]
    before = len(same_hour) - 1
    assert third.path.hour == (base if before < 2 else f"{base}.1")
    assert (stack.root / third.path.repo_path).read_bytes() == b"after restart\n"


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
        gone = asyncio.Event()
        bad.add_event_handler("disconnected", lambda _e: gone.set())
        iq = bad.make_iq_get(ito=COMPONENT_JID)
        iq["http_upload_request"]["filename"] = "a\x00b.txt"
        iq["http_upload_request"]["size"] = "3"
        answer = iq.send(timeout=TIMEOUT)  # type: ignore[no-untyped-call]
        async with asyncio.timeout(TIMEOUT):
            await gone.wait()
        with contextlib.suppress(IqError, IqTimeout, asyncio.CancelledError):
            answer.cancel()
    finally:
        await disconnect_client(bad)
    client = await xmpp_client()
    up = await stack.upload(client, "after.txt", b"still here\n")
    assert (await stack.download(up.get_url))[0] == b"still here\n"
    assert stack.stored() == [up.path.repo_path]
    assert stack.component.metrics.value("slots_refused", {"reason": "invalid_request"}) == 0


# -- 8: bad input does not hurt ----------------------------------------------------------


async def raw_request(client: slixmpp.ClientXMPP, **attrs: str) -> slixmpp.Iq:
    """A ``:0`` slot request with exactly these attributes (missing ones stay missing)."""
    iq = client.make_iq_get(ito=COMPONENT_JID)
    req = iq["http_upload_request"]
    for name, value in attrs.items():
        req.xml.set(name, value)
    try:
        reply: slixmpp.Iq = await iq.send(timeout=TIMEOUT)  # type: ignore[no-untyped-call]
    except IqError as exc:
        reply = exc.iq
    return reply


async def half_put(stack: MftStack, put_url: str, size: int) -> None:
    """Send a PUT's headers and half its body, then hang up once storing has begun."""
    parts = urlsplit(put_url)
    _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = (
        f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Length: {size}\r\n\r\n"
    )
    writer.write(head.encode() + b"h" * (size // 2))
    await writer.drain()
    async with asyncio.timeout(TIMEOUT):
        await stack.repo.started.get()
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def test_service_keeps_running_after_bad_input(
    mft_stack: StackFactory, xmpp_client: ClientFactory
) -> None:
    """Malformed slot requests and PUTs are refused; nothing stray stays; uploads still work."""
    stack = await mft_stack(upload={"max_file_size": 10_000})
    client = await xmpp_client()
    for attrs in (
        {"filename": "a.txt"},  # no size
        {"size": "5"},  # no filename
        {},
        {"filename": "a.txt", "size": "-5"},
        {"filename": "a.txt", "size": "0"},
        {"filename": "a.txt", "size": "abc"},
        {"filename": "a.txt", "size": "1.5"},
        {"filename": "a.txt", "size": ""},
        {"filename": "", "size": "5"},
    ):
        assert error_of(await raw_request(client, **attrs)) == ("bad-request", "modify"), attrs
    reply = await raw_request(client, filename="a.txt", size="10001")
    assert error_of(reply) == ("not-acceptable", "modify")

    body = os.urandom(100)
    put_url, get_url = slot_urls(await ask_slot(client, "target.bin", len(body)))
    path = stack.path_of(get_url)
    await half_put(stack, put_url, len(body))  # the client goes away mid-body
    async with asyncio.timeout(TIMEOUT):
        assert isinstance(await stack.repo.stores.get(), Exception)
    # Not even a directory (the part file is made with the first block, none came).
    assert list(stack.root.rglob("*")) in ([], [stack.root / "files"])
    other = stack.path_of(slot_urls(await ask_slot(client, "other.bin", 100))[1])
    for url, data, status in [
        (get_url, body, 401),  # no token
        (with_query(put_url, size="99"), body[:99], 403),  # forged size
        (with_query(put_url, **{"from": "mallory@localhost"}), body, 403),  # forged uploader
        (put_url.replace(path.resource, other.resource), body, 403),  # token of another slot
        (put_url, body[:99], 400),  # shorter than the slot
        (put_url, body + b"!", 413),  # longer than the slot
    ]:
        assert await stack.put(url, data) == status, url
    assert stack.stored() == []
    assert await stack.put(put_url, body) == 201
    assert (await stack.next_row()).filename == path.resource
    assert await stack.put(put_url, os.urandom(100)) == 409  # never overwritten
    assert (stack.root / path.repo_path).read_bytes() == body
    assert (await stack.get(f"http://127.0.0.1:{stack.cfg.http.port}/{other.url_path}"))[0] == 404

    up = await stack.upload(client, "normal.txt", b"all is well\n")
    got, _get = await stack.download(up.get_url)
    assert got == b"all is well\n"
    assert sorted(stack.stored()) == sorted([path.repo_path, up.path.repo_path])  # no .part
    assert [(r.method, r.filename) for r in await stack.rows()] == [
        ("POST", path.resource),
        ("POST", up.path.resource),
        ("GET", up.path.resource),
    ]
    assert stack.metrics.value("slots_refused", {"reason": "invalid_request"}) == 9


# -- 9: `mft run` as a process -----------------------------------------------------------


class MftRun:
    """``mft run`` as a child process whose log lines are collected as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[str] = []
        self._changed = asyncio.Condition()
        assert proc.stdout is not None and proc.stderr is not None
        self._pumps = [asyncio.create_task(self._pump(s)) for s in (proc.stdout, proc.stderr)]

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            async with self._changed:
                self.log.append(line.decode(errors="replace").rstrip())
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    def tail(self) -> str:
        """The last log lines, for failure messages."""
        return "\n".join(self.log[-30:])

    async def expect(self, fragment: str, count: int = 1) -> None:
        """Wait until ``count`` log lines contain ``fragment``; fail if the process exits."""

        def seen() -> bool:
            return sum(fragment in line for line in self.log) >= count or all(
                p.done() for p in self._pumps
            )

        try:
            async with asyncio.timeout(TIMEOUT), self._changed:
                await self._changed.wait_for(seen)
        except TimeoutError:
            pytest.fail(f"no {fragment!r} from mft run:\n{self.tail()}")
        if sum(fragment in line for line in self.log) < count:
            pytest.fail(f"mft run ended before {fragment!r}:\n{self.tail()}")

    async def terminate(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds it took to exit)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT):
            code = await self.proc.wait()
            await asyncio.gather(*self._pumps)
        return code, time.monotonic() - started

    async def close(self) -> None:
        """Kill the process if it still runs; reap it."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(*self._pumps)


@contextlib.asynccontextmanager
async def mft_run(config: Path) -> AsyncIterator[MftRun]:
    """``mft run -c config`` until both halves are up; killed at the end if still running."""
    run = MftRun(await spawn_mft("run", "-c", str(config)))
    try:
        await run.expect("HTTP server on")
        await run.expect(f"component {COMPONENT_JID} connected to")
        yield run
    finally:
        await run.close()


def http_overrides() -> dict[str, object]:
    """``[http]`` on a fresh loopback port."""
    port = free_port()
    return {"port": port, "public_url": f"http://127.0.0.1:{port}", "shutdown_grace": 2.0}


async def transfer(client: slixmpp.ClientXMPP, name: str, body: bytes) -> str:
    """Slot through the client's server, PUT and GET back with aiohttp; the GET URL."""
    put_url, get_url = slot_urls(await ask_slot(client, name, len(body)))
    async with aiohttp.ClientSession() as http:
        async with http.put(put_url, data=body) as resp:
            assert resp.status == 201
        async with http.get(get_url) as resp:
            assert (resp.status, await resp.read()) == (200, body)
    return get_url


async def audit_rows(config: Path) -> list[AuditRecord]:
    """AFT_LOG as the stopped process left it."""
    audit = SqliteAuditLog(load_config(config))
    await audit.open()
    try:
        return list(await audit.query(AuditQuery()))
    finally:
        await audit.close()


async def test_mft_run_serves_and_stops_on_sigterm(
    prosody: ProsodyInstance, config_file: ConfigFileFactory, xmpp_client: ClientFactory
) -> None:
    """`mft run` serves a whole transfer through Prosody; SIGTERM stops it with 0, quickly."""
    path = config_file(xmpp=component_overrides(prosody), http=http_overrides())
    async with mft_run(path) as run:
        client = await xmpp_client()
        body = os.urandom(300_000)
        get_url = await transfer(client, "via mft run.bin", body)
        code, seconds = await run.terminate()
        assert code == 0, run.tail()
        assert seconds < 5, seconds
        assert any("stopped cleanly" in line for line in run.log)
    rows = await audit_rows(path)
    assert [columns(r) for r in rows] == [
        ("POST", "im", "", client.boundjid.bare),
        ("GET", "im", "", ""),
    ]
    repo_path = url_slot_path(load_config(path), get_url).repo_path
    assert (path.parent / "repo" / repo_path).read_bytes() == body


async def test_mft_run_survives_prosody_restart(
    tmp_path_factory: pytest.TempPathFactory, config_file: ConfigFileFactory
) -> None:
    """After Prosody restarts under `mft run`, the component is back and slots work."""
    require_binary("prosody")
    instance = ProsodyInstance(
        tmp_path_factory.mktemp("prosody-mft-run"),
        component_secret=secrets.token_hex(8),
        users={"alice": "pw-alice"},
    )
    async with instance:
        path = config_file(
            xmpp=component_overrides(instance, reconnect_max_delay=1.0), http=http_overrides()
        )
        async with mft_run(path) as run:
            await instance.restart()
            await run.expect("lost the connection to the XMPP server")
            await run.expect(f"component {COMPONENT_JID} connected to", count=2)
            client = client_for(XmppUser(f"alice@{instance.domain}", "pw-alice"))
            await connect_client(client, instance.c2s_port)
            try:
                await transfer(client, "after restart.txt", b"back again\n")
            finally:
                await disconnect_client(client)
            code, seconds = await run.terminate()
            assert (code, seconds < 5) == (0, True), run.tail()
    assert [r.method for r in await audit_rows(path)] == ["POST", "GET"]


# -- 10: go-sendxmpp ---------------------------------------------------------------------


async def test_go_sendxmpp_upload(
    tmp_path_factory: pytest.TempPathFactory, config_factory: ConfigFactory, tmp_path: Path
) -> None:
    """go-sendxmpp -h finds the service by disco, uploads, and sends the URL to bob."""
    gosend = require_binary("go-sendxmpp")
    require_binary("openssl")
    require_binary("prosody")
    # go-sendxmpp always takes STARTTLS when offered: Prosody gets a self-signed cert.
    instance = ProsodyInstance(
        tmp_path_factory.mktemp("prosody-tls"),
        component_secret=secrets.token_hex(8),
        users={"alice": "pw-alice", "bob": "pw-bob"},
        tls=True,
    )
    async with instance:
        cfg = config_factory(xmpp=component_overrides(instance), http=http_overrides())
        async with running_stack(cfg) as stack:
            bob = client_for(XmppUser(f"bob@{instance.domain}", "pw-bob"))
            await connect_client(bob, instance.c2s_port)
            try:
                messages: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
                bob.add_event_handler("message", messages.put_nowait)
                bob.send_presence()
                # A round trip: Prosody has handled the presence before go-sendxmpp sends.
                await bob.plugin["xep_0030"].get_info(
                    jid=slixmpp.JID(instance.domain), timeout=TIMEOUT
                )
                upload = tmp_path / "team notes.txt"
                body = os.urandom(10_000)
                upload.write_bytes(body)
                proc = await asyncio.create_subprocess_exec(
                    gosend,
                    "--no-tls-verify",
                    "--jserver", f"127.0.0.1:{instance.c2s_port}",
                    "--username", f"alice@{instance.domain}",
                    "--password", "pw-alice",
                    "--timeout", "10",
                    "--http-upload", str(upload),
                    f"bob@{instance.domain}",
                    env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")},
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )  # fmt: skip
                async with asyncio.timeout(30):
                    out, _ = await proc.communicate()
                assert proc.returncode == 0, out.decode(errors="replace")
                async with asyncio.timeout(TIMEOUT):
                    msg = await messages.get()
                url = msg["body"].strip()
                post = await stack.next_row()
                got, get = await stack.download(url)
            finally:
                await disconnect_client(bob)
    assert got == body
    path = stack.path_of(url)
    assert path.filename == "team_notes.txt"  # go-sendxmpp replaces spaces
    assert (stack.root / path.repo_path).read_bytes() == body
    assert columns(post) == ("POST", "im", "", f"alice@{instance.domain}")
    assert (post.real_filename, post.file_type, post.file_size) == ("team_notes.txt", "txt", 10_000)
    assert columns(get) == ("GET", "im", "", "")
