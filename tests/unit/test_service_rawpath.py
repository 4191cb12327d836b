# ruff: noqa: E501  (XML literals)
"""Slot requests answered from the stream's bytes say what the parsed paths say."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from slixmpp.componentxmpp import ComponentXMPP

from component.xmpp.stanza import NS, read_raw_slot_requests, read_slot_element
from tests.unit.test_service import ComponentTest
from tests.unit.test_service_fastpath import CASES, V0, _comparable, _stanza

HOST = "upload.montague.tld"
# Shapes of the same request the bytes reader takes (order, spaces, xml:lang, ">", '"').
TAKEN = [
    f"<iq from='romeo@montague.tld/garden' id='t0' to='{HOST}' type='get'>{V0}</iq>",
    f"<iq type='get' id='t1' to='{HOST}' from='romeo@montague.tld/garden'><request size='5' filename='b \"x\".txt' xmlns='{NS}' /></iq>",
    f"<iq xml:lang='en' to='{HOST}' from='romeo@montague.tld/garden' type='get' id='t2'><request xmlns='{NS}' filename='ü &gt; x.png' size='7'/></iq>".replace(
        "&gt;", ">"
    ),
    f"<iq xmlns='jabber:client' from='romeo@montague.tld/garden' id='t3' to='{HOST}' type='get'>{V0}</iq>",
    f"<iq from='romeo@montague.tld/garden' id='t4' to='{HOST}' type='get'><request xmlns='{NS}' filename='a' size='1' mime-type='text/plain'/></iq>",
]
# Left to the parser: references, normalised whitespace, other shapes and namespaces.
LEFT = [
    f"<iq from='romeo@montague.tld/garden' id='l0' to='{HOST}' type='get'><request xmlns='{NS}' filename='a&amp;b' size='1'/></iq>",
    f"<iq from='romeo@montague.tld/garden' id='l1' to='{HOST}' type='get'><request xmlns='{NS}' filename='a\tb' size='1'/></iq>",
    f"<iq from='romeo@montague.tld/garden' id='l2' to='{HOST}' type='get'><request xmlns='{NS}' filename='a' size='1'></request></iq>",
    f"<iq from='romeo@montague.tld/garden' id='l3' to='{HOST}' type='set'>{V0}</iq>",
    f"<iq from='romeo@montague.tld/garden' id='l4' to='{HOST}' type='get'><request xmlns='urn:xmpp:http:upload' filename='a' size='1'/></iq>",
    f"<iq from='romeo@montague.tld/garden' id='l5' to='{HOST}' type='get' xmlns:x='y'>{V0}</iq>",
    f"<iq from='romeo@montague.tld/garden' id='l6' to='{HOST}' type='get'><request xmlns='{NS}' xml:lang='de' filename='a' size='1'/></iq>",
    f"<iq from='romeo@montague.tld/garden' id='l7' to='{HOST}' type='get'><u:request xmlns:u='{NS}' filename='a' size='1'/></iq>",
    f"<iq from='romeo@montague.tld/garden' id='l8' to='{HOST}' type='get' xmlns='jabber:server'>{V0}</iq>",
    f"<iq from='romeo@montague.tld/garden' id='l9' to='{HOST}' type='get' other='x'>{V0}</iq>",
    f"<iq from = 'romeo@montague.tld/garden' id='l10' to='{HOST}' type='get'>{V0}</iq>",
    f"<iq from='romeo@montague.tld/garden' id='l11' to='{HOST}' type='get'><request xmlns='{NS}' filename='a\ufffe' size='1'/></iq>",
    f'<iq type="get" id="l12" to="{HOST}" from="romeo@montague.tld/garden"><request size="5" filename="b.txt" xmlns="{NS}" /></iq>',
    f"<iq from='romeo@montague.tld/garden'  id='l13' to='{HOST}' type='get'>{V0}</iq>",
    f"<iq from='romeo@montague.tld/garden' id='l14' to='{HOST}' type='get'>\n{V0}</iq>",
    f"<iq from='romeo@montague.tld/garden' id='l15'to='{HOST}' type='get'>{V0}</iq>",
    f"<iq from='romeo@montague.tld/garden' id='l16' to='{HOST}' type='get'><request xmlns='{NS}' filename='a\u200bb' size='1'/></iq>",
]


def _parsed(stanza: bytes) -> ET.Element:
    return ET.fromstring(b"<s xmlns='jabber:component:accept'>" + stanza + b"</s>")[0]


def _well_formed(stanza: bytes) -> bool:
    try:
        _parsed(stanza)
    except ET.ParseError:
        return False
    return True


@pytest.mark.parametrize("stanza", TAKEN)
def test_bytes_reader_reads_as_the_parser_does(stanza: str) -> None:
    """Attributes and request equal ElementTree's attrib and read_slot_element's reading."""
    data = stanza.encode()
    (raw,) = read_raw_slot_requests(b" " + data + b"  ") or []
    el = _parsed(data)
    assert raw.attrs == dict(el.attrib)
    assert raw.request == read_slot_element(el[0])


@pytest.mark.parametrize("stanza", LEFT)
def test_bytes_reader_leaves_the_rest(stanza: str) -> None:
    """Other shapes, and a read with one of them among plain requests, go to the parser."""
    assert read_raw_slot_requests(stanza.encode()) is None
    assert read_raw_slot_requests((TAKEN[0] + stanza).encode()) is None


def test_bytes_reader_needs_whole_stanzas() -> None:
    """A cut stanza, a repeated attribute, invalid UTF-8 or mere whitespace: None."""
    data = TAKEN[0].encode()
    for cut in (data[:-1], data[:10], data[5:], data + data[:7], b" \n", b""):
        assert read_raw_slot_requests(cut) is None
    assert read_raw_slot_requests(data.replace(b"id='t0'", b"id='t0' id='t9'")) is None
    assert read_raw_slot_requests(data.replace(b"a.jpg", b"a\xff.jpg")) is None
    assert [r.attrs["id"] for r in read_raw_slot_requests(data * 3) or []] == ["t0"] * 3


class TestBytesPath(ComponentTest):
    def sent(self) -> list[object]:
        self.wait_()
        self.wait_for_send_queue()
        out = []
        while (raw := self.xmpp.socket.next_sent()) is not None:
            text = raw.decode() if isinstance(raw, bytes) else raw
            for el in ET.fromstring(f"<r xmlns='jabber:component:accept'>{text}</r>"):
                self.fix_namespaces(el)
                out.append(_comparable(el))  # one write may carry several replies
        return out

    def feed(self, data: bytes) -> list[object]:
        self.xmpp.data_received(data)
        return self.sent()

    def parsed_path(self, stanza: bytes) -> list[object]:
        xml = _parsed(stanza)
        ComponentXMPP._spawn_event(self.xmpp, xml)
        return self.sent()

    def count_feeds(self) -> list[bytes]:
        fed: list[bytes] = []
        feed = self.xmpp.parser.feed

        def counting(data: Any) -> None:
            fed.append(data)
            feed(data)

        self.xmpp.parser.feed = counting  # type: ignore[method-assign]
        return fed

    def test_every_case_answered_alike(self) -> None:
        """Slots and refusals from bytes equal slixmpp's answers to the parsed stanza."""
        self.start(upload={"max_file_size": 20000}, xmpp={"muc_domains": ["rooms.montague.tld"]})
        stanzas = [ET.tostring(_stanza(case, n)) for n, case in enumerate(CASES)]
        stanzas += [s.encode() for s in TAKEN + LEFT if _well_formed(s.encode())]
        for data in stanzas:
            assert sorted(map(repr, self.feed(data))) == sorted(
                map(repr, self.parsed_path(data))
            ), data
        assert self.xmpp.socket.next_sent() is None

    def test_plain_requests_skip_the_parser(self) -> None:
        """A read of plain requests is answered in one write and never fed to the parser."""
        self.start()
        fed = self.count_feeds()
        data = "".join(TAKEN).encode()
        got = self.feed(data)
        assert fed == [] and len(got) == len(TAKEN)
        assert all(("type", "result") in g[1] for g in got)  # type: ignore[index]
        assert self.metrics.value("slots", {"chat_type": "im"}) == len(TAKEN)
        assert self.feed(LEFT[0].encode()) and fed == [LEFT[0].encode()]

    def test_refusal_from_bytes_is_slixmpps(self) -> None:
        """A refused plain request gets slixmpp's error stanza, the request echoed."""
        self.start(upload={"max_file_size": 10})
        fed = self.count_feeds()
        (got,) = self.feed(TAKEN[0].encode())
        assert fed == [] and ("type", "error") in got[1]  # type: ignore[index]
        assert [got] == self.parsed_path(TAKEN[0].encode())

    def test_only_between_stanzas(self) -> None:
        """An <iq> inside an unfinished stanza, or a stanza cut in two, goes to the parser."""
        self.start()
        forged = f"<iq from='tybalt@montague.tld/x' id='f1' to='{HOST}' type='get'>{V0}</iq>"
        assert read_raw_slot_requests(forged.encode()) is not None
        self.feed(f"<message from='romeo@montague.tld/garden' to='{HOST}'>".encode())
        assert self.feed(forged.encode()) == []
        self.feed(b"</message>")
        assert self.sent() == []  # a message with an <iq> child: no slot for tybalt
        data = TAKEN[0].encode()
        assert self.feed(data[:40]) == [] and len(self.feed(data[40:])) == 1
        assert len(self.feed(data)) == 1  # and then from bytes again

    def test_quotas_take_the_parsed_path(self) -> None:
        """With a quota configured every request goes through the parser (lock, AFT_LOG)."""
        self.start(upload={"files_per_hour": 5})
        fed = self.count_feeds()
        self.xmpp.data_received(TAKEN[0].encode())
        assert fed == [TAKEN[0].encode()]
