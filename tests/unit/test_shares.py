"""ShareRecorder: which share reports become SHARE rows, with which columns, in which order."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest

from component.audit import AuditQuery, AuditRecord
from component.audit.sqlite import SqliteAuditLog
from component.errors import AuditUnavailable, InvalidRequest
from component.layout import new_resource
from component.metrics import Metrics
from component.xmpp.chattype import Classification
from component.xmpp.shares import ShareRecorder, ShareReport, parse_reports
from tests.fixtures.config import ConfigFactory

BASE = "https://upload.example.com:5443"
ROOM = "team@conference.example.com"


def post_row(resource: str) -> AuditRecord:
    """The POST row of a plain upload (no recipient)."""
    return AuditRecord(
        jid="alice@example.com",
        to_jid="",
        method="POST",
        filename=resource,
        real_filename="Plan B.pdf",
        file_type="pdf",
        chat_type="im",
        file_server="files.example.com",
        file_size=1234,
        node_id="node_1",
        file_sha256="ab" * 32,
    )


async def classify(recipient: str | None) -> Classification:
    """Rooms live on conference.example.com, all persistent; anything else is a user."""
    assert recipient is not None
    if "@" not in recipient:
        raise InvalidRequest("Invalid recipient JID")
    if recipient.startswith("team@conference."):
        return Classification("persistent", recipient.partition("/")[0])
    return Classification("im", recipient.partition("/")[0].lower())


class Env:
    """A recorder over a real SQLite AFT_LOG with one upload in it."""

    def __init__(self, recorder: ShareRecorder, audit: SqliteAuditLog, metrics: Metrics) -> None:
        self.recorder, self.audit, self.metrics = recorder, audit, metrics
        self.resource = new_resource()

    def url(self, resource: str | None = None, node: str = "node_1", base: str = BASE) -> str:
        """A GET URL of the upload (or of ``resource``)."""
        return f"{base}/{node}/im/20260101/09/{resource or self.resource}/Plan%20B.pdf"

    def report(self, **kw: Any) -> ShareReport:
        """A well-formed report from example.com, fields overridable."""
        values = {
            "host": "example.com",
            "sender": "Alice@example.com/phone",
            "recipient": "bob@example.com",
            "message_type": "chat",
            "url": self.url(),
        }
        values.update(kw)
        return ShareReport(**values)

    def ignored(self, reason: str) -> float:
        """How many reports were ignored for ``reason``."""
        return self.metrics.value("share_reports_ignored", {"reason": reason})


@pytest.fixture
async def env(config_factory: ConfigFactory) -> AsyncIterator[Env]:
    """An opened SQLite AFT_LOG holding one POST row, and a recorder over it."""
    cfg = config_factory(
        xmpp={"component_jid": "upload.example.com"},
        http={"public_url": BASE},
        cluster={"nodes": {"node_2": "https://node2.example.com:5443"}},
    )
    audit = SqliteAuditLog(cfg)
    await audit.open()
    metrics = Metrics()
    e = Env(ShareRecorder(cfg, audit, metrics, classify), audit, metrics)
    await audit.record(post_row(e.resource))
    yield e
    await audit.close()


def test_parse_reports_reads_every_shared_child() -> None:
    """Two <shared> children give two reports; a missing type means normal."""
    # language=XML
    msg = ET.fromstring(
        "<message xmlns='jabber:component:accept' from='example.com'>"
        "<shared xmlns='urn:xmpp-mft:0' from='a@example.com/x' to='b@example.com'"
        " type='chat' url=' https://u/1 '/>"
        "<shared xmlns='urn:xmpp-mft:0' from='a@example.com/x' to='r@c' url='https://u/2'/>"
        "</message>"
    )
    reports = parse_reports("example.com", msg)
    assert [(r.recipient, r.message_type, r.url) for r in reports] == [
        ("b@example.com", "chat", "https://u/1"),
        ("r@c", "normal", "https://u/2"),
    ]


async def test_report_becomes_a_share_row_with_the_uploads_columns(env: Env) -> None:
    """JID is the bare sender, TO_JID the classified recipient; the rest from the POST row."""
    row = await env.recorder.handle(env.report(recipient=ROOM, message_type="groupchat"))
    assert row is not None
    (stored,) = await env.audit.query(AuditQuery(method="SHARE"))
    assert (stored.jid, stored.to_jid, stored.chat_type) == (
        "alice@example.com",
        ROOM,
        "persistent",
    )
    assert (stored.filename, stored.real_filename, stored.file_type) == (
        env.resource,
        "Plan B.pdf",
        "pdf",
    )
    assert (stored.file_size, stored.file_server, stored.node_id) == (
        1234,
        "files.example.com",
        "node_1",
    )
    assert (stored.client_ip, stored.file_sha256) == ("", "ab" * 32)
    assert env.metrics.value("shares", {"chat_type": "persistent"}) == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"host": "alice@example.com/phone"}, "sender"),  # a user forging a report
        ({"host": "example.com/res"}, "sender"),
        ({"host": "evil.example"}, "sender"),  # not in share_hosts
        ({"sender": "mallory@evil.example/x"}, "sender"),  # another host's user
        ({"sender": "example.com"}, "sender"),
        ({"message_type": "headline"}, "malformed"),
        ({"recipient": ""}, "malformed"),
        ({"url": ""}, "malformed"),
        ({"url": "https://elsewhere.example/node_1/im/20260101/09/x/y"}, "foreign_url"),
        ({"url": BASE + "/node_1/im/bad/09/x/y"}, "foreign_url"),
        ({"recipient": "not a jid"}, "recipient"),
    ],
)
async def test_unacceptable_reports_are_ignored(
    env: Env, fields: dict[str, str], reason: str
) -> None:
    """Each kind of bad report writes no row and is counted under its reason."""
    assert await env.recorder.handle(env.report(**fields)) is None
    assert await env.audit.query(AuditQuery(method="SHARE")) == []
    assert env.ignored(reason) == 1


async def test_unknown_upload_and_other_node_are_ignored(env: Env) -> None:
    """A resource this node never stored, and a cluster node's URL, give no row here."""
    assert await env.recorder.handle(env.report(url=env.url(new_resource()))) is None
    other = env.url(node="node_2", base="https://node2.example.com:5443")
    assert await env.recorder.handle(env.report(url=other)) is None
    assert (env.ignored("unknown_upload"), env.ignored("other_node")) == (1, 1)


async def test_share_hosts_replace_the_default(config_factory: ConfigFactory) -> None:
    """With [xmpp] share_hosts set, only those hosts are believed."""
    cfg = config_factory(
        xmpp={"component_jid": "upload.example.com", "share_hosts": ["chat.example.org"]},
        http={"public_url": BASE},
    )
    assert cfg.xmpp.share_host_set == ("chat.example.org",)
    audit = SqliteAuditLog(cfg)
    await audit.open()
    try:
        resource = new_resource()
        await audit.record(post_row(resource))
        recorder = ShareRecorder(cfg, audit, Metrics(), classify)
        url = f"{BASE}/node_1/im/20260101/09/{resource}/x"
        base = ShareReport("example.com", "a@example.com/x", "b@example.com", "chat", url)
        assert await recorder.handle(base) is None
        ok = ShareReport("chat.example.org", "a@chat.example.org/x", "b@example.com", "chat", url)
        assert await recorder.handle(ok) is not None
    finally:
        await audit.close()


async def test_database_away_gives_a_row_from_the_url(env: Env) -> None:
    """When the POST row cannot be read, the SHARE row is written from the URL."""

    async def unavailable(_resource: str) -> AuditRecord | None:
        raise AuditUnavailable("down")

    env.audit.find_upload = unavailable  # type: ignore[method-assign]
    row = await env.recorder.handle(env.report())
    assert row is not None
    assert (row.real_filename, row.file_type, row.file_size) == ("Plan B.pdf", "pdf", 0)


async def test_rows_keep_the_order_reports_arrived_in(env: Env) -> None:
    """A slow room lookup does not let a later report's row overtake it."""
    gate, asked = asyncio.Event(), {ROOM: asyncio.Event(), "carol@example.com": asyncio.Event()}

    async def slow_rooms(recipient: str | None) -> Classification:
        assert recipient is not None
        asked[recipient].set()
        if recipient == ROOM:
            await gate.wait()
        return await classify(recipient)

    env.recorder._classify = slow_rooms
    first = asyncio.create_task(env.recorder.handle(env.report(recipient=ROOM)))
    second = asyncio.create_task(env.recorder.handle(env.report(recipient="carol@example.com")))
    for event in asked.values():  # both reports have arrived; the room lookup waits
        await event.wait()
    gate.set()
    await asyncio.gather(first, second)
    rows = await env.audit.query(AuditQuery(method="SHARE"))
    assert [r.to_jid for r in rows] == [ROOM, "carol@example.com"]
    assert (await env.audit.find_first_share(env.resource) or rows[1]).to_jid == ROOM
