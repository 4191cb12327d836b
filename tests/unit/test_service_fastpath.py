# ruff: noqa: E501  (XML literals)
"""The inbound fast path for slot requests answers as slixmpp's path does, stanza for stanza."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from slixmpp.componentxmpp import ComponentXMPP

from component.xmpp.service import UploadComponent
from component.xmpp.stanza import NS, NS_LEGACY
from tests.unit.test_service import ComponentTest
from tests.unit.test_stanza import READ_ALIKE

IQ = (
    "<iq xmlns='jabber:component:accept' from='{sender}' id='{id}' to='upload.montague.tld'"
    " type='{type}'>{payload}</iq>"
)
V0 = f"<request xmlns='{NS}' filename='a.jpg' size='100' content-type='image/jpeg'/>"
LEGACY = f"<request xmlns='{NS_LEGACY}'><filename>a.jpg</filename><size>100</size></request>"
# Beyond READ_ALIKE: IQs the fast path must leave to slixmpp, and refusals by policy.
MORE: list[dict[str, str]] = [
    {"payload": "<request xmlns='urn:xmpp:http:upload:1' filename='a' size='1'/>"},
    {"payload": "<request filename='a' size='1'/>"},
    {"payload": V0 + "<query xmlns='http://jabber.org/protocol/disco#info'/>"},  # two children
    {"payload": V0 + V0},
    {"payload": V0, "type": "set"},
    {"payload": V0, "type": "GET"},
    {"payload": V0, "sender": "mallory@evil.tld/x"},  # domain not allowed
    {"payload": V0, "sender": "montague.tld"},  # a server, not a user
    {"payload": V0, "sender": "@@bad@@"},  # no JID: slixmpp's path
    {"payload": V0, "sender": ""},
    {"payload": LEGACY, "sender": "mallory@evil.tld/x"},
    {"payload": f"<request xmlns='{NS}' filename='big.iso' size='30000'/>"},  # too large
    {
        "payload": f"<request xmlns='{NS_LEGACY}'><filename>big.iso</filename><size>30000</size></request>"
    },
    {
        "payload": f"<request xmlns='{NS}' filename='a' size='1'><recipient xmlns='urn:xmpp-mft:0' jid='@bad@'/></request>"
    },
    {
        "payload": f"<request xmlns='{NS}' filename='a' size='1'><recipient xmlns='urn:xmpp-mft:0' jid='juliet@capulet.tld'/></request>"
    },
    {
        "payload": f"<request xmlns='{NS_LEGACY}'><filename>a</filename><filename>b</filename><size>1</size></request>"
    },
]
CASES = [{"payload": p} for p in READ_ALIKE] + MORE


def _stanza(case: dict[str, str], n: int) -> ET.Element:
    fields = {"sender": "romeo@montague.tld/garden", "type": "get", **case, "id": f"q{n}"}
    return ET.fromstring(IQ.format(**fields))


def _comparable(el: ET.Element) -> object:
    """Tag, attributes, text, children; slot URLs without their random or timed parts."""
    attrs = dict(el.attrib)
    text = (el.text or "").strip()
    if el.tag.endswith(("}put", "}get")):
        if "url" in attrs:
            attrs["url"] = _url_shape(attrs["url"])
        else:
            text = str(_url_shape(text))
    return (el.tag, sorted(attrs.items()), text, [_comparable(c) for c in el])


def _url_shape(url: str) -> object:
    parts = urlsplit(url)
    segments = parts.path.split("/")
    del segments[5]  # the resource (random)
    query = {k: v for k, v in parse_qsl(parts.query) if k not in ("sig", "exp")}
    return ("/".join(segments), sorted(query.items()))


class TestFastPath(ComponentTest):
    def answer(self, spawn: Callable[[Any, ET.Element], None], xml: ET.Element) -> object:
        """Everything the component sends back for ``xml``, fed to ``spawn`` (in any order)."""
        spawn(self.xmpp, xml)
        self.wait_()
        self.wait_for_send_queue()
        sent = []
        while (raw := self.xmpp.socket.next_sent()) is not None:
            el = self.parse_xml(raw.decode() if isinstance(raw, bytes) else raw)
            self.fix_namespaces(el)
            sent.append(_comparable(el))
        return sorted(sent, key=repr)

    def test_every_case_answered_alike(self) -> None:
        """Slots and refusals: the fast path and slixmpp's path send the same stanza."""
        self.start(upload={"max_file_size": 20000}, xmpp={"muc_domains": ["rooms.montague.tld"]})
        for n, case in enumerate(CASES):
            fast = self.answer(UploadComponent._spawn_event, _stanza(case, n))
            slow = self.answer(ComponentXMPP._spawn_event, _stanza(case, n))
            assert fast == slow, case
        assert self.xmpp.socket.next_sent() is None  # one answer per request, no more

    def test_a_slot_is_one_stanza(self) -> None:
        """A granted slot is answered with one result and nothing else, in either syntax."""
        self.start()
        for n, payload in enumerate((V0, LEGACY)):
            sent = self.answer(UploadComponent._spawn_event, _stanza({"payload": payload}, n))
            assert isinstance(sent, list) and len(sent) == 1
            assert ("type", "result") in sent[0][1]

    def test_refusals_counted_alike(self) -> None:
        """slots and slots_refused count the same on either path."""
        self.start(upload={"max_file_size": 20000}, xmpp={"muc_domains": ["rooms.montague.tld"]})
        counts = []
        for spawn in (UploadComponent._spawn_event, ComponentXMPP._spawn_event):
            metrics_before = self.snapshot()
            for n, case in enumerate(CASES):
                self.answer(spawn, _stanza(case, n))
            counts.append(self.delta(metrics_before))
        assert counts[0] == counts[1]
        assert (counts[0]["slots:im"], counts[0]["refused:file_too_large"]) == (18, 4)
        assert (counts[0]["refused:not_allowed"], counts[0]["refused:invalid_request"]) == (3, 19)

    def snapshot(self) -> dict[str, float]:
        m = self.metrics
        values = {
            f"slots:{ct}": m.value("slots", {"chat_type": ct})
            for ct in ("im", "groupchat", "persistent")
        }
        for reason in (
            "file_too_large",
            "not_allowed",
            "invalid_request",
            "quota_exceeded",
            "internal",
        ):
            values[f"refused:{reason}"] = m.value("slots_refused", {"reason": reason})
        return values

    def delta(self, before: dict[str, float]) -> dict[str, float]:
        return {k: v - before[k] for k, v in self.snapshot().items()}

    def test_slot_requests_skip_stanza_objects(self) -> None:
        """A plain request is answered without building a stanza object; a declined one is built."""
        self.start()
        built: list[str] = []
        build = self.xmpp._build_stanza

        def counting(xml: ET.Element, *args: Any) -> Any:
            built.append(xml.get("id", ""))
            return build(xml, *args)

        self.xmpp._build_stanza = counting  # type: ignore[method-assign]
        for n, case in enumerate([{"payload": V0}, {"payload": LEGACY}, MORE[-1]]):
            self.answer(UploadComponent._spawn_event, _stanza(case, n))
        assert built == ["q2"]  # the repeated legacy <filename> takes slixmpp's path

    def test_only_the_slot_handlers_would_match(self) -> None:
        """Of every registered handler, only ours matches a slot request; no inbound filters."""
        self.start()
        handlers = self.xmpp._XMLStream__handlers  # type: ignore[attr-defined]
        for payload, name in (
            (V0, "HTTP Upload slot request"),
            (LEGACY, "HTTP Upload legacy slot request"),
        ):
            iq = self.xmpp._build_stanza(_stanza({"payload": payload}, 0))
            assert [h.name for h in handlers if h.match(iq)] == [name]
        assert self.xmpp._XMLStream__filters["in"] == []  # type: ignore[attr-defined]

    def test_jabber_client_namespace_is_fast_too(self) -> None:
        """An IQ in jabber:client (as slixmpp's incoming filter rewrites it) gets its slot."""
        self.start()
        xml = ET.fromstring(
            IQ.replace("jabber:component:accept", "jabber:client").format(
                sender="romeo@montague.tld/garden", id="c1", type="get", payload=V0
            )
        )
        self.xmpp._spawn_event(xml)
        self.wait_()
        got = self.sent_xml()
        assert got.get("type") == "result" and got.find(f"{{{NS}}}slot") is not None


def test_slot_summary_line(caplog: pytest.LogCaptureFixture) -> None:
    """Slots are summed up in one INFO line per interval; nothing is logged without slots."""
    import asyncio

    from component.xmpp.slotreply import SlotTally

    async def run() -> None:
        tally = SlotTally(interval=0.01)
        for chat_type in ("im", "im", "groupchat"):
            tally.add(chat_type)
        await asyncio.sleep(0.05)  # the interval's timer, not synchronisation with a peer
        tally.flush()

    with caplog.at_level(logging.INFO, logger="component.xmpp.service"):
        asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["slots handed out in the last 0.01 s: 3 (groupchat 1, im 2)"]
