"""Parsing slot requests in both syntaxes, and the xmpp-mft extension elements."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from slixmpp import Iq

from component.xmpp.stanza import NS, NS_LEGACY, SlotRequest, parse_slot_request, register_stanzas

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
