"""The component through a real Prosody: discovery, slots, errors, recipients, tickets."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from component.config import Config
from component.layout import SlotPath
from component.metrics import Metrics
from component.servers.prosody import ProsodyInstance
from component.tokens import verify_ticket, verify_upload
from component.xmpp.service import serve_component
from component.xmpp.stanza import NS, NS_LEGACY
from tests.fakes import FakeAudit
from tests.fixtures.prosody import (
    COMPONENT_JID,
    MUC_DOMAIN,
    TIMEOUT,
    ClientFactory,
    ComponentFactory,
    RunningComponent,
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

pytestmark = pytest.mark.integration
STANZA_ERR = "{urn:ietf:params:xml:ns:xmpp-stanzas}"


def check_put(rc: RunningComponent, put_url: str, get_url: str, size: int) -> SlotPath:
    """The PUT URL verifies, matches the GET URL, and binds ``size``; returns the path."""
    path = url_slot_path(rc.cfg, put_url)
    assert put_url.split("?")[0] == get_url
    grant = verify_upload(
        rc.cfg.http.secret, path, dict(parse_qsl(urlsplit(put_url).query, keep_blank_values=True))
    )
    assert grant.size == size
    return path


async def test_service_found_through_server_disco(
    component_factory: ComponentFactory, xmpp_client: ClientFactory
) -> None:
    """A client finds the service in the server's disco#items and reads max-file-size."""
    await component_factory(upload={"max_file_size": 123456})
    client = await xmpp_client()
    info = await client.plugin["xep_0363"].find_upload_service(timeout=TIMEOUT)
    assert info is not None and info["from"] == COMPONENT_JID
    assert NS_LEGACY in info["disco_info"]["features"]
    forms = info.xml.findall(".//{jabber:x:data}x")
    values = {}
    for form in forms:
        fields = form.findall("{jabber:x:data}field")
        assert fields[0].get("var") == "FORM_TYPE"  # go-sendxmpp needs it first
        values[fields[0].findtext("{jabber:x:data}value")] = fields[1].findtext(
            "{jabber:x:data}value"
        )
    assert values == {NS: "123456", NS_LEGACY: "123456"}


async def test_slot_v0_for_unicode_name(
    component_factory: ComponentFactory, xmpp_client: ClientFactory
) -> None:
    """A :0 request gets a :0 slot whose PUT URL verifies and lands under files/im/."""
    rc = await component_factory()
    client = await xmpp_client()
    reply = await ask_slot(client, "très cool ..jpg", 23456, content_type="image/jpeg")
    put_url, get_url = slot_urls(reply)
    assert reply.xml.find(f".//{{{NS}}}header") is None
    path = check_put(rc, put_url, get_url, 23456)
    assert path.filename == "très cool ..jpg"
    assert path.node == rc.cfg.node.id and path.chat_type == "im"
    assert path.repo_path.startswith(f"files/im/{datetime.now(UTC):%Y%m%d}/")
    query = dict(parse_qsl(urlsplit(put_url).query, keep_blank_values=True))
    assert query["from"] == client.boundjid.bare and query["to"] == ""
    assert query["type"] == "image/jpeg"
    assert rc.metrics.value("slots", {"chat_type": "im"}) == 1


async def test_component_stream_sends_without_delay(
    component_factory: ComponentFactory,
) -> None:
    """The component's TCP connection has TCP_NODELAY: a lone reply is not held back."""
    import socket

    rc = await component_factory()
    transport = rc.component.transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_slot_legacy_namespace(
    component_factory: ComponentFactory, xmpp_client: ClientFactory
) -> None:
    """A legacy request (mime-type alias) is answered with a legacy <slot><put/><get/>."""
    rc = await component_factory()
    client = await xmpp_client()
    reply = await ask_slot(client, "report.pdf", 99, content_type="application/pdf", legacy=True)
    assert reply.xml.find(f"{{{NS}}}slot") is None
    put_url, get_url = slot_urls(reply)
    check_put(rc, put_url, get_url, 99)
    assert (
        dict(parse_qsl(urlsplit(put_url).query, keep_blank_values=True))["type"]
        == "application/pdf"
    )


async def test_slot_without_content_type(
    component_factory: ComponentFactory, xmpp_client: ClientFactory
) -> None:
    """A request without content-type (Monal, Psi) still gets a slot."""
    rc = await component_factory()
    client = await xmpp_client()
    put_url, get_url = slot_urls(await ask_slot(client, "x.bin", 5, content_type=None))
    check_put(rc, put_url, get_url, 5)


@pytest.mark.parametrize("legacy", [False, True], ids=["v0", "legacy"])
async def test_refusals(
    component_factory: ComponentFactory, xmpp_client: ClientFactory, legacy: bool
) -> None:
    """Too large, bad name and bad sizes are refused with the XEP-0363 errors."""
    rc = await component_factory(upload={"max_file_size": 1000})
    client = await xmpp_client()
    ns = NS_LEGACY if legacy else NS

    reply = await ask_slot(client, "big.iso", 1001, legacy=legacy)
    assert error_of(reply) == ("not-acceptable", "modify")
    assert reply.xml.findtext(f".//{{{ns}}}file-too-large/{{{ns}}}max-file-size") == "1000"
    assert "1000" in reply["error"]["text"]

    for name, size in [("a/b.txt", 10), ("", 10), ("..", 10), ("ok.txt", 0), ("ok.txt", -5)]:
        assert error_of(await ask_slot(client, name, size, legacy=legacy)) == (
            "bad-request",
            "modify",
        ), (name, size)
    for size in ("abc", "1e3", "", "0x10"):
        assert error_of(await ask_slot(client, "ok.txt", size, legacy=legacy)) == (
            "bad-request",
            "modify",
        ), size
    assert rc.metrics.value("slots_refused", {"reason": "file_too_large"}) == 1
    assert rc.metrics.value("slots_refused", {"reason": "invalid_request"}) == 9
    # The service keeps working after refusals.
    slot_urls(await ask_slot(client, "fine.txt", 1000, legacy=legacy))


async def test_disabled_mode(
    component_factory: ComponentFactory, xmpp_client: ClientFactory
) -> None:
    """Mode disabled hides the feature and form from disco and refuses slots."""
    await component_factory(upload={"mode": "disabled"})
    client = await xmpp_client()
    info = await client.plugin["xep_0030"].get_info(jid=COMPONENT_JID, timeout=TIMEOUT)
    assert NS not in info["disco_info"]["features"]
    assert info.xml.find(".//{jabber:x:data}x") is None
    assert ("store", "file") in {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    assert error_of(await ask_slot(client, "a.txt", 3)) == ("not-allowed", "cancel")
    assert error_of(await ask_slot(client, "a.txt", 3, legacy=True)) == ("not-allowed", "cancel")


async def test_remote_domain_refused(
    component_factory: ComponentFactory, xmpp_client: ClientFactory
) -> None:
    """A user whose domain is not in allowed_domains gets not-allowed."""
    await component_factory(upload={"allowed_domains": ["example.org"]})
    client = await xmpp_client()
    reply = await ask_slot(client, "a.txt", 3)
    assert error_of(reply) == ("not-allowed", "cancel")
    assert "localhost" in reply["error"]["text"]


async def test_files_per_hour_quota(
    component_factory: ComponentFactory, xmpp_client: ClientFactory
) -> None:
    """The third slot in an hour with files_per_hour=2 is refused with a retry stamp."""
    rc = await component_factory(upload={"files_per_hour": 2})
    client = await xmpp_client()
    other = await xmpp_client()
    for _ in range(2):
        slot_urls(await ask_slot(client, "a.txt", 3))
    reply = await ask_slot(client, "a.txt", 3)
    assert error_of(reply) == ("resource-constraint", "wait")
    stamp = reply.xml.find(f".//{{{NS}}}retry").get("stamp")
    now = datetime.now(UTC)
    expected = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    assert stamp in {
        f"{expected:%Y-%m-%dT%H:%M:%SZ}",
        f"{expected + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}",
    }
    # Quotas are per user.
    slot_urls(await ask_slot(other, "a.txt", 3))
    assert rc.metrics.value("slots_refused", {"reason": "quota_exceeded"}) == 1


async def test_daily_bytes_quota_legacy(
    component_factory: ComponentFactory, xmpp_client: ClientFactory
) -> None:
    """daily_bytes counts pending slots; the legacy error carries a legacy <retry>."""
    await component_factory(upload={"daily_bytes": 100})
    client = await xmpp_client()
    slot_urls(await ask_slot(client, "a.txt", 60, legacy=True))
    reply = await ask_slot(client, "b.txt", 41, legacy=True)
    assert error_of(reply) == ("resource-constraint", "wait")
    stamp = reply.xml.find(f".//{{{NS_LEGACY}}}retry").get("stamp")
    assert stamp.endswith("T00:00:00Z")
    slot_urls(await ask_slot(client, "c.txt", 40, legacy=True))


async def test_recipient_classification(
    component_factory: ComponentFactory, xmpp_client: ClientFactory, xmpp_user: UserFactory
) -> None:
    """Persistent room, temporary room, a user and no recipient give the right chat types."""
    rc = await component_factory()
    client = await xmpp_client()
    persistent = await make_room(client, persistent=True)
    temporary = await make_room(client, persistent=False)
    friend = await xmpp_user("friend")
    cases = [
        (persistent, "persistent", persistent),
        (temporary, "groupchat", temporary),
        (friend.jid, "im", friend.jid),
        (f"{friend.jid}/phone", "im", friend.jid),
        (f"{temporary}/owner", "im", f"{temporary}/owner"),
        (None, "im", ""),
    ]
    for recipient, chat_type, to_jid in cases:
        for legacy in (False, True):
            reply = await ask_slot(client, "pic.png", 10, recipient=recipient, legacy=legacy)
            put_url, get_url = slot_urls(reply)
            path = check_put(rc, put_url, get_url, 10)
            assert path.chat_type == chat_type, recipient
            assert path.repo_path.startswith(f"files/{chat_type}/")
            assert dict(parse_qsl(urlsplit(put_url).query, keep_blank_values=True))["to"] == to_jid
    assert rc.metrics.value("slots", {"chat_type": "persistent"}) == 2
    reply = await ask_slot(client, "pic.png", 10, recipient="not a jid@@")
    assert error_of(reply) == ("bad-request", "modify")


async def test_unknown_room_is_groupchat(
    component_factory: ComponentFactory, xmpp_client: ClientFactory
) -> None:
    """A room that does not exist (disco error) is classified groupchat, promptly."""
    rc = await component_factory(xmpp={"muc_domains": [MUC_DOMAIN]})
    client = await xmpp_client()
    room = f"nobody-{secrets.token_hex(4)}@{MUC_DOMAIN}"
    put_url, get_url = slot_urls(await ask_slot(client, "a.txt", 3, recipient=room))
    assert check_put(rc, put_url, get_url, 3).chat_type == "groupchat"


async def test_download_ticket(
    component_factory: ComponentFactory, xmpp_client: ClientFactory
) -> None:
    """<download url> returns the GET URL with a ticket naming the requester's bare JID."""
    rc = await component_factory()
    uploader = await xmpp_client()
    downloader = await xmpp_client()
    _put, get_url = slot_urls(await ask_slot(uploader, "notes 1.txt", 3))
    personal = await personal_url(downloader, get_url)
    assert personal.split("?")[0] == get_url
    query = dict(parse_qsl(urlsplit(personal).query, keep_blank_values=True))
    ticket = verify_ticket(rc.cfg.http.secret, url_slot_path(rc.cfg, get_url), query)
    assert ticket is not None and ticket.jid == downloader.boundjid.bare
    assert ticket.expires <= datetime.now(UTC).timestamp() + rc.cfg.download.ticket_lifetime + 1

    for bad in (
        "https://elsewhere.example/node_1/im/20240101/10/" + "A" * 24 + "/x.txt",
        get_url.replace(f"/{rc.cfg.node.id}/", "/node_9/"),
        get_url.replace("/im/", "/../"),
        get_url + "/extra",
        "not a url",
        "",
    ):
        iq = downloader.make_iq_get(ito=COMPONENT_JID)
        iq["mft_download"]["url"] = bad
        with pytest.raises(IqError) as err:
            await iq.send(timeout=TIMEOUT)
        assert error_of(err.value.iq) == ("bad-request", "modify"), bad


async def test_notify_admins(
    component_factory: ComponentFactory, xmpp_client: ClientFactory, xmpp_user: UserFactory
) -> None:
    """notify_admins sends a chat message from the component to each admin."""
    admin = await xmpp_user("admin")
    rc = await component_factory(alarm={"admins": [admin.jid]})
    client = await xmpp_client(admin)
    got: asyncio.Future[slixmpp.Message] = asyncio.get_running_loop().create_future()
    client.add_event_handler("message", lambda m: got.done() or got.set_result(m))
    client.send_presence()
    await rc.component.notify_admins("disk almost full")
    async with asyncio.timeout(TIMEOUT):
        msg = await got
    assert msg["body"] == "disk almost full" and msg["from"] == COMPONENT_JID


async def test_reconnects_after_prosody_restart(
    tmp_path_factory: pytest.TempPathFactory, config_factory: Callable[..., Config]
) -> None:
    """After Prosody restarts (and while it is down) the component reconnects by itself."""
    instance = ProsodyInstance(
        tmp_path_factory.mktemp("prosody-restart"),
        component_secret=secrets.token_hex(8),
        users={"alice": "pw-alice"},
    )
    async with instance:
        cfg = config_factory(xmpp=component_overrides(instance, reconnect_max_delay=1.0))
        rc = await start_component(cfg)
        sessions = asyncio.Queue[None]()
        rc.component.add_event_handler("session_start", lambda _e: sessions.put_nowait(None))
        try:
            await instance.restart()
            async with asyncio.timeout(TIMEOUT):
                await sessions.get()
            # Down for a while: the component's attempts fail and back off, then succeed.
            failures = asyncio.Queue[None]()
            rc.component.add_event_handler(
                "connection_failed", lambda _e: failures.put_nowait(None)
            )
            await instance.stop()
            async with asyncio.timeout(TIMEOUT):
                await failures.get()
                await failures.get()
            await instance.start()
            async with asyncio.timeout(TIMEOUT):
                await sessions.get()
            client = client_for(XmppUser("alice@localhost", "pw-alice"))
            await connect_client(client, instance.c2s_port)
            try:
                put_url, get_url = slot_urls(await ask_slot(client, "after.txt", 7))
                check_put(rc, put_url, get_url, 7)
            finally:
                await disconnect_client(client)
        finally:
            await stop_component(rc)


@pytest.mark.parametrize(
    "name",
    [
        "a b  c.txt",
        "..\\..\\windows\\win.ini",
        "..hidden",
        "x" * 300 + ".JPEG",
        "ファイル 名.pdf",
        "3f2a0b0e-8d5b-4c1e-9a53-5d0c7b1e2f44",
        "%2e%2e%2fetc%2fpasswd",
    ],
)
async def test_hostile_names_stay_in_the_url(
    component_factory: ComponentFactory, xmpp_client: ClientFactory, name: str
) -> None:
    """Odd names get a slot; the name lives only in the URL, the repository path is ours."""
    rc = await component_factory()
    client = await xmpp_client()
    put_url, get_url = slot_urls(await ask_slot(client, name, 3))
    path = check_put(rc, put_url, get_url, 3)
    assert path.filename == name
    assert path.repo_path == f"files/im/{path.date}/{path.hour}/{path.resource}"
    assert unquote(get_url.rsplit("/", 1)[1]) == name


class _Records(logging.Handler):
    """Puts log records into an asyncio queue, to wait on them as events."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.queue: asyncio.Queue[logging.LogRecord] = asyncio.Queue()

    def emit(self, record: logging.LogRecord) -> None:
        self.queue.put_nowait(record)


async def test_refused_handshake_backs_off_and_stops(
    prosody: ProsodyInstance, config_factory: Callable[..., Config]
) -> None:
    """A wrong secret is retried with growing delays (capped); stop ends it at once."""
    cfg = config_factory(
        xmpp=component_overrides(prosody, secret="wrong-secret", reconnect_max_delay=1.0)
    )
    records = _Records()
    logger = logging.getLogger("component.xmpp.service")
    logger.addHandler(records)
    previous = logger.level
    logger.setLevel(logging.INFO)
    stop, started = asyncio.Event(), asyncio.Event()
    audit = FakeAudit()
    task = asyncio.create_task(
        serve_component(cfg, audit, Metrics(), stop, started, freeze_gc=False)
    )
    try:
        delays: list[float] = []
        refusals = 0
        async with asyncio.timeout(TIMEOUT):
            while len(delays) < 3:
                rec = await records.queue.get()
                if rec.msg.startswith("XMPP server sent a stream error"):
                    refusals += 1
                elif rec.msg.startswith("connecting to"):
                    delays.append(float(rec.args[2]))  # type: ignore[index]
        assert refusals >= 2 and not started.is_set()
        assert 0.45 <= delays[0] <= 0.55 and 0.9 <= delays[1] <= 1.1 and delays[2] <= 1.1
        stop.set()
        async with asyncio.timeout(2.0):
            await task
    finally:
        stop.set()
        logger.removeHandler(records)
        logger.setLevel(previous)
        await asyncio.wait({task}, timeout=TIMEOUT)


async def test_concurrent_requests_respect_quota(
    component_factory: ComponentFactory, xmpp_client: ClientFactory
) -> None:
    """Ten simultaneous requests with files_per_hour=3 yield exactly three slots."""
    await component_factory(upload={"files_per_hour": 3})
    client = await xmpp_client()
    replies = await asyncio.gather(*(ask_slot(client, f"f{i}.txt", 3) for i in range(10)))
    assert sorted(r["type"] for r in replies) == ["error"] * 7 + ["result"] * 3
