"""SlotIssuer's parts: resource names drawn in batches, which requests are answered at once,
the URLs built as text."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode

import pytest

from component.config import parse_config
from component.layout import (
    RESOURCE_BYTES,
    RESOURCE_PATTERN,
    DirectoryAllocator,
    SlotPath,
    new_resource,
)
from component.metrics import Metrics
from component.xmpp.slotreply import ReplyWriter
from component.xmpp.slots import ResourceNames
from component.xmpp.stanza import NS, NS_LEGACY, SlotRequest
from tests.fixtures.config import make_raw_config


def test_resource_names_look_like_new_resource() -> None:
    """Each name has new_resource's shape and 144 random bits; none repeats across batches."""
    names = ResourceNames(batch=3)
    drawn = [names() for _ in range(20)]
    assert len(set(drawn)) == 20
    for name in drawn:
        assert re.fullmatch(RESOURCE_PATTERN, name) and len(name) == len(new_resource())
        assert len(base64.urlsafe_b64decode(name)) == RESOURCE_BYTES


def test_only_requests_without_waits_are_answered_at_once(tmp_path: Path) -> None:
    """A <recipient> (disco) or a quota (lock, AFT_LOG) sends the request down the async path."""
    from component.xmpp.slots import SlotIssuer

    def issuer(**upload: int) -> SlotIssuer:
        cfg = parse_config(make_raw_config(tmp_path, upload=upload))
        replies = ReplyWriter(lambda: None)
        return SlotIssuer(cfg, None, None, None, replies, None)  # type: ignore[arg-type]

    plain = SlotRequest(NS, "a", "1", "", None)
    to_room = SlotRequest(NS, "a", "1", "", "room@conference.x")
    assert issuer().can_answer_now(plain)
    assert not issuer().can_answer_now(to_room)
    assert not issuer(files_per_hour=5).can_answer_now(plain)
    assert not issuer(daily_bytes=5).can_answer_now(plain)


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


@pytest.mark.parametrize(
    ("namespace", "filename", "content_type", "requester"),
    [
        (NS, "photo.jpg", "image/jpeg", "romeo@localhost"),
        (NS, "a b&<'\">%ü?#.txt", 'text/plain; charset="x" & <y>', "o'neil&co@localhost"),
        (NS_LEGACY, "ü ö.pdf", "", "juliet@localhost"),
        (NS, "x" * 300, "a" * 300, "u@localhost"),
    ],
)
async def test_slot_urls_are_those_of_slot_path_and_upload_grant(
    tmp_path: Path, namespace: str, filename: str, content_type: str, requester: str
) -> None:
    """The text-built URLs equal SlotPath.url_path + urlencode(UploadGrant.query), and verify."""
    from component.tokens import UploadGrant, verify_upload
    from component.xmpp.slots import CONTENT_TYPE_MAX, SlotIssuer

    cfg = parse_config(make_raw_config(tmp_path, http={"public_url": "http://h.test:5443/up"}))
    transport = _Transport()
    metrics = Metrics()
    replies = ReplyWriter(lambda: transport)  # type: ignore[arg-type, return-value]
    issuer = SlotIssuer(cfg, None, None, DirectoryAllocator(), replies, metrics)  # type: ignore[arg-type]
    attrs = {"id": "q1", "from": f"{requester}/r", "to": "upload.localhost"}
    request = SlotRequest(namespace, filename, "42", content_type, None)
    with replies.batch():
        issuer.issue_now(attrs, request, requester)
    (sent,) = transport.writes
    slot = ET.fromstring(sent)[0]
    if namespace == NS:
        put, get = (slot.find(f"{{{NS}}}{k}").get("url") for k in ("put", "get"))  # type: ignore[union-attr]
    else:
        put, get = (slot.find(f"{{{NS_LEGACY}}}{k}").text for k in ("put", "get"))  # type: ignore[union-attr]
    assert put is not None and get is not None
    base, query = put.split("?", 1)
    assert base == get
    node, chat_type, date, hour, resource, name = get.split("/")[4:]
    path = SlotPath.parse(node, chat_type, date, hour, resource, unquote(name))
    assert path.filename == filename
    assert get == f"{cfg.http.public_url}/{path.url_path}"
    granted = verify_upload(cfg.http.secret, path, dict(parse_qsl(query, keep_blank_values=True)))
    expected = UploadGrant(
        path=path,
        size=42,
        expires=granted.expires,
        uploader=requester,
        recipient="",
        content_type=content_type[:CONTENT_TYPE_MAX],
    )
    assert granted == expected
    assert query == urlencode(expected.query(cfg.http.secret))
    assert metrics.value("slots", {"chat_type": "im"}) == 1  # counted once written
