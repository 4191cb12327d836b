"""Parsing slot requests in both syntaxes, and the xmpp-mft extension elements."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import pytest
from slixmpp import Iq

from component.xmpp.stanza import (
    NS,
    NS_LEGACY,
    SlotRequest,
    parse_slot_request,
    read_slot_element,
    register_stanzas,
)
from component.xmpp.urls import query_string

register_stanzas()


def iq_of(payload: str) -> Iq:
    # language=XML
    return Iq(xml=ET.fromstring(f"<iq xmlns='jabber:client' type='get' id='1'>{payload}</iq>"))


def test_v0_request() -> None:
    """A :0 request's attributes are read as sent."""
    # language=XML
    req = parse_slot_request(
        iq_of(
            f"<request xmlns='{NS}' filename='très cool.jpg' size='23456'"
            " content-type='image/jpeg'/>"
        )
    )
    assert req == SlotRequest(NS, "très cool.jpg", "23456", "image/jpeg", None)


def test_v0_mime_type_alias_and_missing_type() -> None:
    """``mime-type`` stands in for content-type; neither is fine too."""
    # language=XML
    req = parse_slot_request(
        iq_of(f"<request xmlns='{NS}' filename='a' size='1' mime-type='text/plain'/>")
    )
    assert req.content_type == "text/plain"
    # language=XML
    req = parse_slot_request(iq_of(f"<request xmlns='{NS}' filename='a' size='1'/>"))
    assert req.content_type == ""


def test_legacy_request() -> None:
    """A v0.2 request's child elements are read; mime-type is accepted."""
    # language=XML
    req = parse_slot_request(
        iq_of(
            f"""<request xmlns='{NS_LEGACY}'><filename>my juliet.png</filename>
                  <size>23456</size><mime-type>image/png</mime-type></request>"""
        )
    )
    assert req == SlotRequest(NS_LEGACY, "my juliet.png", "23456", "image/png", None)
    # language=XML
    req = parse_slot_request(
        iq_of(
            f"<request xmlns='{NS_LEGACY}'><filename>a</filename><size> 7 </size>"
            "<content-type>text/plain</content-type></request>"
        )
    )
    assert (req.size, req.content_type) == ("7", "text/plain")


def test_missing_fields_are_empty() -> None:
    """Missing filename or size come back empty (policy refuses them)."""
    # language=XML
    req = parse_slot_request(iq_of(f"<request xmlns='{NS_LEGACY}'/>"))
    assert (req.filename, req.size) == ("", "")


def test_recipient_in_either_syntax() -> None:
    """<recipient xmlns='urn:xmpp-mft:0' jid=.../> is read inside both request shapes."""
    rcpt = "<recipient xmlns='urn:xmpp-mft:0' jid='room@conference.localhost'/>"
    # language=XML
    v0 = parse_slot_request(iq_of(f"<request xmlns='{NS}' filename='a' size='1'>{rcpt}</request>"))
    # language=XML
    legacy = parse_slot_request(
        iq_of(f"<request xmlns='{NS_LEGACY}'><filename>a</filename><size>1</size>{rcpt}</request>")
    )
    assert v0.recipient == legacy.recipient == "room@conference.localhost"
    # language=XML
    empty = parse_slot_request(
        iq_of(
            f"<request xmlns='{NS}' filename='a' size='1'>"
            "<recipient xmlns='urn:xmpp-mft:0'/></request>"
        )
    )
    assert empty.recipient == ""


def test_download_element_round_trip() -> None:
    """<download url> builds and parses as the documented XML."""
    iq = Iq()
    iq["mft_download"]["url"] = "https://h/x?a=1&b=2"
    el = iq.xml.find("{urn:xmpp-mft:0}download")
    assert el is not None and el.attrib == {"url": "https://h/x?a=1&b=2"}
    again = Iq(xml=ET.fromstring(str(iq)))
    assert again["mft_download"]["url"] == "https://h/x?a=1&b=2"


RCPT = "<recipient xmlns='urn:xmpp-mft:0' jid='room@conference.localhost'/>"
# Requests of every shape, hostile ones included: the raw reader must read each exactly
# as parse_slot_request does (policy then refuses the bad values in one place).
READ_ALIKE = [
    f"<request xmlns='{NS}' filename='très cool.jpg' size='23456' content-type='image/jpeg'/>",
    f"<request xmlns='{NS}' filename='a' size='1' mime-type=' text/plain '/>",
    f"<request xmlns='{NS}' filename='a' size='1' content-type='' mime-type='x/y'/>",
    f"<request xmlns='{NS}' size='1'/>",  # no filename
    f"<request xmlns='{NS}' filename='a'/>",  # no size
    f"<request xmlns='{NS}'/>",
    f"<request xmlns='{NS}' filename='a' size='abc'/>",
    f"<request xmlns='{NS}' filename='a' size='-1'/>",
    f"<request xmlns='{NS}' filename='a' size='1e3'/>",
    f"<request xmlns='{NS}' filename='a' size='0x10'/>",
    f"<request xmlns='{NS}' filename='a' size=' 12 '/>",
    f"<request xmlns='{NS}' filename='a' size='{'9' * 400}'/>",
    f"<request xmlns='{NS}' filename='{'x' * 5000}' size='1'/>",
    f"<request xmlns='{NS}' filename='a&#x85;b&#x7f;c&#x9;d' size='1'/>",  # C1, DEL, tab
    f"<request xmlns='{NS}' filename='invoice&#x202e;fdp.exe' size='1'/>",
    f"<request xmlns='{NS}' filename='../../etc/passwd' size='1'/>",
    f"<request xmlns='{NS}' filename='..' size='1'/>",
    f"<request xmlns='{NS}' filename='a&amp;b&lt;&quot;' size='1' content-type='&lt;x&gt;'/>",
    f"<request xmlns='{NS}' filename='a' size='1'>{RCPT}</request>",
    f"<request xmlns='{NS}' filename='a' size='1'><recipient xmlns='urn:xmpp-mft:0'/></request>",
    f"<request xmlns='{NS}' filename='a' size='1'>{RCPT}"
    "<recipient xmlns='urn:xmpp-mft:0' jid='second@x'/></request>",
    f"<request xmlns='{NS}' filename='a' size='1'><recipient jid='wrong-ns@x'/></request>",
    f"<request xmlns='{NS}' xml:lang='de' filename='a' size='1'/>",
    f"<request xmlns='{NS_LEGACY}'><filename>my juliet.png</filename><size>23456</size>"
    "<content-type>image/png</content-type></request>",
    f"<request xmlns='{NS_LEGACY}'><filename>a</filename><size> 7 </size>"
    "<mime-type>text/plain</mime-type></request>",
    f"<request xmlns='{NS_LEGACY}'><filename>a</filename><size>1</size>"
    "<content-type></content-type><mime-type>m/t</mime-type></request>",
    f"<request xmlns='{NS_LEGACY}'/>",
    f"<request xmlns='{NS_LEGACY}'><filename/><size/></request>",
    f"<request xmlns='{NS_LEGACY}'><filename>a<b/>c</filename><size>1</size></request>",
    f"<request xmlns='{NS_LEGACY}'><size>x1</size><other>y</other>"
    f"<filename xmlns='{NS}'>wrong-ns</filename></request>",
    f"<request xmlns='{NS_LEGACY}' xml:lang='en'><filename>a</filename><size>1</size></request>",
    f"<request xmlns='{NS_LEGACY}'><filename>a</filename><size>1</size>{RCPT}</request>",
    f"<request xmlns='{NS_LEGACY}' filename='attr-ignored' size='3'/>",
]


@pytest.mark.parametrize("payload", READ_ALIKE)
def test_raw_reader_reads_as_slixmpp_does(payload: str) -> None:
    """read_slot_element gives what parse_slot_request gives for the same request."""
    raw = read_slot_element(ET.fromstring(payload))
    assert raw is not None
    assert raw == parse_slot_request(iq_of(payload))


@pytest.mark.parametrize(
    "payload",
    [
        "<request xmlns='urn:xmpp:http:upload:1' filename='a' size='1'/>",  # wrong namespace
        "<request filename='a' size='1'/>",  # no namespace
        f"<slot xmlns='{NS}'/>",
        "<query xmlns='http://jabber.org/protocol/disco#info'/>",
        "<download xmlns='urn:xmpp-mft:0' url='x'/>",
        # slixmpp's xml:lang rules decide these: they take its path
        f"<request xmlns='{NS_LEGACY}'><filename>a</filename><filename>b</filename></request>",
        f"<request xmlns='{NS_LEGACY}'><filename xml:lang='en'>a</filename><size>1</size>"
        "</request>",
    ],
)
def test_raw_reader_declines_the_rest(payload: str) -> None:
    """Not a slot request, or one whose reading needs slixmpp's rules: None."""
    assert read_slot_element(ET.fromstring(payload)) is None


@pytest.mark.parametrize(
    "query",
    [
        {"v": "1", "size": "100", "exp": "1700000000", "sig": "aZ_-09"},
        {"from": "romeo@montague.tld", "to": "room@conference.x/nick name", "type": "image/jpeg"},
        {"type": "a+b&c=d%e é\u202e\x00", "to": "", "from": "~._-"},
    ],
)
def test_query_string_is_urlencode(query: dict[str, str]) -> None:
    """query_string writes what urlencode writes, character for character."""
    assert query_string(query) == urlencode(query)
