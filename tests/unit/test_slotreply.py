"""The prebuilt slot reply says what slixmpp's stanza objects would say."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
from slixmpp import Iq
from slixmpp.xmlstream import tostring

from component.xmpp.slotreply import ReplyWriter, slot_reply
from component.xmpp.stanza import NS, NS_LEGACY, register_stanzas

PUT = "http://h:1/node_1/im/x/a%20b&c.txt?v=1&sig=a<b>\"'"
GET = "http://h:1/node_1/im/x/a%20b&c.txt"
ATTRS = {"id": "q&1", "from": 'u@example.test/r"1', "to": "upload.example.test", "type": "get"}


def _slixmpp_reply(namespace: str) -> ET.Element:
    register_stanzas()
    iq = Iq(stype="get")  # type: ignore[no-untyped-call]
    for key, value in ATTRS.items():
        iq.xml.set(key, value)
    reply = iq.reply()  # type: ignore[no-untyped-call]
    reply["from"] = ATTRS["to"]  # what reply() does on a component's stream
    if namespace == NS_LEGACY:
        reply["http_upload_legacy_slot"]["put"] = PUT
        reply["http_upload_legacy_slot"]["get"] = GET
    else:
        reply["http_upload_slot"]["put"]["url"] = PUT
        reply["http_upload_slot"]["get"]["url"] = GET
    return ET.fromstring(tostring(reply.xml))


def _shape(el: ET.Element) -> object:
    """Tag, attributes, text and children, namespaces resolved."""
    tag = el.tag.split("}")[-1] if el.tag.startswith("{jabber:") else el.tag
    return (tag, sorted(el.attrib.items()), (el.text or "").strip(), [_shape(c) for c in el])


@pytest.mark.parametrize("namespace", [NS, NS_LEGACY])
def test_slot_reply_matches_slixmpp(namespace: str) -> None:
    """Same elements, attributes and text as iq.reply() with the slot plugin."""
    ours = ET.fromstring(slot_reply(ATTRS, namespace, PUT, GET))
    assert _shape(ours) == _shape(_slixmpp_reply(namespace))


def test_slot_reply_escapes_every_value() -> None:
    """Quotes, ampersands and angle brackets in any value cannot break the XML."""
    text = slot_reply({"id": 'a"><x/>', "from": "f'&", "to": "t<"}, NS, PUT, GET)
    root = ET.fromstring(text)
    assert root.get("id") == 'a"><x/>' and root.get("to") == "f'&" and root.get("from") == "t<"
    slot = root.find(f"{{{NS}}}slot")
    assert slot is not None and slot.find(f"{{{NS}}}put").get("url") == PUT  # type: ignore[union-attr]


class Transport:
    """A transport that records each write (or hands it to ``sink``)."""

    def __init__(self, sink: Callable[[bytes], object] | None = None) -> None:
        self.writes: list[bytes] = []
        self._sink = sink or self.writes.append

    def write(self, data: bytes) -> None:
        self._sink(data)


async def test_replies_of_one_iteration_go_out_in_one_write() -> None:
    """Stanzas queued in one loop iteration reach the transport as one write, in order."""
    transport = Transport()
    connected: list[Transport | None] = [transport]
    writer = ReplyWriter(lambda: connected[0])  # type: ignore[arg-type, return-value]
    assert writer.write("<a/>") and writer.write("<b/>")
    await asyncio.sleep(0)
    assert writer.write("<c/>")
    await asyncio.sleep(0)
    assert transport.writes == [b"<a/><b/>", b"<c/>"]
    connected[0] = None
    assert not writer.write("<d/>")


async def test_a_batch_goes_out_in_one_write_at_its_end() -> None:
    """Stanzas written inside batch() leave together when it ends, before the loop runs on."""
    transport = Transport()
    writer = ReplyWriter(lambda: transport)  # type: ignore[arg-type, return-value]
    assert writer.write("<a/>")  # outside: scheduled for the end of the iteration
    with writer.batch():
        assert writer.write("<b/>") and writer.write("<c/>")
        assert transport.writes == []
    assert transport.writes == [b"<a/><b/><c/>"]
    await asyncio.sleep(0)  # the flush scheduled for <a/> finds nothing left
    assert writer.write("<d/>")
    await asyncio.sleep(0)
    assert transport.writes == [b"<a/><b/><c/>", b"<d/>"]


async def test_after_write_runs_once_per_write_after_it() -> None:
    """after_write is called after the batch's one write, and not for an empty flush."""
    events: list[str] = []
    transport = Transport(lambda data: events.append(data.decode()))
    writer = ReplyWriter(
        lambda: transport,  # type: ignore[arg-type, return-value]
        after_write=lambda: events.append("after"),
    )
    writer.hold()
    assert writer.write("<a/>") and writer.write("<b/>")
    assert events == []
    writer.release()
    assert events == ["<a/><b/>", "after"]
    writer.release()  # nothing held: no write, no after_write
    await asyncio.sleep(0)
    assert events == ["<a/><b/>", "after"]


def test_a_failing_after_write_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    """An error in after_write (metrics) is logged; the write stands, the caller goes on."""

    def broken() -> None:
        raise OSError("no space left for the metrics file")

    transport = Transport()
    writer = ReplyWriter(lambda: transport, after_write=broken)  # type: ignore[arg-type, return-value]
    with writer.batch():
        writer.write("<a/>")
    assert transport.writes == [b"<a/>"]
    assert "bookkeeping after a write of replies failed" in caplog.text
