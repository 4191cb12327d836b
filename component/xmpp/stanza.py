"""XEP-0363 stanzas: slixmpp's ``urn:xmpp:http:upload:0`` ones, plus what slixmpp lacks.

Added here: the error children ``<file-too-large>`` and ``<retry>``, the legacy
``urn:xmpp:http:upload`` request/slot shapes (XEP-0363 v0.2, child elements, as ejabberd
and older Conversations use), and the xmpp-mft extension ``urn:xmpp-mft:0``
(``<recipient jid>`` inside a request, ``<download url>`` IQ for personal download URLs).
:func:`parse_slot_request` reads either syntax into one :class:`SlotRequest`;
:func:`read_slot_element` reads the same from the raw element, before slixmpp builds any
stanza object (the component's inbound fast path), and :func:`read_raw_slot_requests`
from the stream's bytes, before the XML parser builds any element.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import ClassVar, NamedTuple

from slixmpp import Iq
from slixmpp.plugins.xep_0363.stanza import Get, Header, Put, Request, Slot
from slixmpp.stanza import Error
from slixmpp.xmlstream import ElementBase, register_stanza_plugin

NS = "urn:xmpp:http:upload:0"
NS_LEGACY = "urn:xmpp:http:upload"
NS_MFT = "urn:xmpp-mft:0"
NAMESPACES = (NS, NS_LEGACY)

__all__ = [
    "NS",
    "NS_LEGACY",
    "NS_MFT",
    "Download",
    "FileTooLarge",
    "Get",
    "Header",
    "LegacyFileTooLarge",
    "LegacyRequest",
    "LegacyRetry",
    "LegacySlot",
    "Put",
    "RawSlotRequest",
    "Recipient",
    "Request",
    "Retry",
    "Slot",
    "SlotRequest",
    "parse_slot_request",
    "read_raw_slot_requests",
    "read_slot_element",
    "register_stanzas",
]


class FileTooLarge(ElementBase):
    """``<file-too-large><max-file-size>N</max-file-size></file-too-large>`` in an error."""

    name = "file-too-large"
    namespace = NS
    plugin_attrib = "http_upload_file_too_large"
    interfaces: ClassVar[set[str]] = {"max-file-size"}
    sub_interfaces = interfaces


class Retry(ElementBase):
    """``<retry stamp='...Z'/>`` in a ``resource-constraint`` error (quota)."""

    name = "retry"
    namespace = NS
    plugin_attrib = "http_upload_retry"
    interfaces: ClassVar[set[str]] = {"stamp"}


class LegacyRequest(ElementBase):
    """v0.2 ``<request xmlns='urn:xmpp:http:upload'><filename/><size/><content-type/>``."""

    name = "request"
    namespace = NS_LEGACY
    plugin_attrib = "http_upload_legacy_request"
    # ``mime-type`` is what older go-sendxmpp sends instead of ``content-type``.
    interfaces: ClassVar[set[str]] = {"filename", "size", "content-type", "mime-type"}
    sub_interfaces = interfaces


class LegacySlot(ElementBase):
    """v0.2 ``<slot xmlns='urn:xmpp:http:upload'><put>URL</put><get>URL</get></slot>``."""

    name = "slot"
    namespace = NS_LEGACY
    plugin_attrib = "http_upload_legacy_slot"
    interfaces: ClassVar[set[str]] = {"put", "get"}
    sub_interfaces = interfaces


class LegacyFileTooLarge(FileTooLarge):
    """``<file-too-large>`` in the legacy namespace."""

    namespace = NS_LEGACY
    plugin_attrib = "http_upload_legacy_file_too_large"


class LegacyRetry(Retry):
    """``<retry>`` in the legacy namespace."""

    namespace = NS_LEGACY
    plugin_attrib = "http_upload_legacy_retry"


class Recipient(ElementBase):
    """xmpp-mft: ``<recipient xmlns='urn:xmpp-mft:0' jid='...'/>`` inside ``<request>``."""

    name = "recipient"
    namespace = NS_MFT
    plugin_attrib = "mft_recipient"
    interfaces: ClassVar[set[str]] = {"jid"}


class Download(ElementBase):
    """xmpp-mft: ``<download xmlns='urn:xmpp-mft:0' url='...'/>`` (IQ get and result)."""

    name = "download"
    namespace = NS_MFT
    plugin_attrib = "mft_download"
    interfaces: ClassVar[set[str]] = {"url"}


def register_stanzas() -> None:
    """Register every stanza plugin used by the component (idempotent)."""
    register_stanza_plugin(Iq, Request)
    register_stanza_plugin(Iq, Slot)
    register_stanza_plugin(Slot, Put)
    register_stanza_plugin(Slot, Get)
    register_stanza_plugin(Put, Header, iterable=True)
    register_stanza_plugin(Iq, LegacyRequest)
    register_stanza_plugin(Iq, LegacySlot)
    register_stanza_plugin(Request, Recipient)
    register_stanza_plugin(LegacyRequest, Recipient)
    register_stanza_plugin(Iq, Download)
    for child in (FileTooLarge, Retry, LegacyFileTooLarge, LegacyRetry):
        register_stanza_plugin(Error, child)


class SlotRequest(NamedTuple):
    """A slot request in either syntax; values are the raw strings the client sent.

    ``recipient`` is ``None`` without ``<recipient>``, and ``""`` for one without a JID.
    (A named tuple: made for every request, at half the cost of a frozen dataclass.)
    """

    namespace: str
    filename: str
    size: str
    content_type: str
    recipient: str | None


def parse_slot_request(iq: Iq) -> SlotRequest:
    """Read the ``<request>`` of ``iq`` (either namespace); the caller checks the values.

    ``content-type`` may be missing (Monal, Psi) or sent as ``mime-type``.
    """
    legacy = iq.xml.find(f"{{{NS_LEGACY}}}request") is not None
    req: ElementBase = iq["http_upload_legacy_request"] if legacy else iq["http_upload_request"]
    if legacy:
        content_type = req["content-type"] or req["mime-type"]
    else:
        content_type = req["content-type"] or req.xml.get("mime-type", "")
    recipient: str | None = None
    if req.xml.find(f"{{{NS_MFT}}}recipient") is not None:
        recipient = req["mft_recipient"]["jid"]
    return SlotRequest(
        namespace=NS_LEGACY if legacy else NS,
        filename=req["filename"] or "",
        size=(req["size"] or "").strip(),
        content_type=(content_type or "").strip(),
        recipient=recipient,
    )


_REQUEST = f"{{{NS}}}request"
_LEGACY_REQUEST = f"{{{NS_LEGACY}}}request"
_RECIPIENT = f"{{{NS_MFT}}}recipient"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_LEGACY_FIELDS = {
    f"{{{NS_LEGACY}}}{name}": name for name in ("filename", "size", "content-type", "mime-type")
}


def read_slot_element(request: ET.Element) -> SlotRequest | None:
    """The slot request ``request`` (the only child of an IQ get) carries, read raw.

    For every element it accepts it returns exactly what :func:`parse_slot_request`
    returns for an IQ with that one child (tests compare both). It declines (``None``)
    what is not a slot request, and the legacy shapes whose reading depends on
    slixmpp's ``xml:lang`` rules (a field repeated, or carrying ``xml:lang``): those take
    slixmpp's path, as before.
    """
    tag = request.tag
    fields: dict[str, str]
    if tag == _REQUEST:
        attrs = request.attrib
        fields = attrs
        content_type = attrs.get("content-type") or attrs.get("mime-type") or ""
    elif tag == _LEGACY_REQUEST:
        fields = {}
        for child in request:
            name = _LEGACY_FIELDS.get(child.tag)
            if name is None:
                continue
            if name in fields or _XML_LANG in child.attrib:
                return None
            fields[name] = child.text or ""
        content_type = fields.get("content-type") or fields.get("mime-type") or ""
    else:
        return None
    # slixmpp's stanza object keeps the last of repeated plugin elements.
    rcpts = request.findall(_RECIPIENT)
    return SlotRequest(
        namespace=NS if tag == _REQUEST else NS_LEGACY,
        filename=fields.get("filename", ""),
        size=fields.get("size", "").strip(),
        content_type=content_type.strip(),
        recipient=rcpts[-1].get("jid", "") if rcpts else None,
    )


# -- slot requests read from the stream's bytes ---------------------------------------
# The one shape servers send a XEP-0363 :0 request to a component in (ejabberd's and
# Prosody's serialisation: single quotes, one space between attributes, in any order):
# an <iq> whose only child is an empty <request/>. Anything else is left to the parser:
# a reference (&...;), a character that is not printable (tab and newline, which XML
# normalises in attributes, or what XML refuses), double quotes, other attributes.
# This reads a subset of XML, exactly as the parser reads it (tests compare both).
_RAW_SLOT = re.compile(" *<iq([^<]*)><request([^<]*)/></iq> *")
_IQ_NAMES = {
    f" {name}=": key
    for name, key in (
        ("to", "to"),
        ("from", "from"),
        ("type", "type"),
        ("id", "id"),
        ("xml:lang", _XML_LANG),
        ("xmlns", "xmlns"),
    )
}
_REQUEST_NAMES = {
    f" {name}=": name for name in ("xmlns", "filename", "size", "content-type", "mime-type")
}
_IQ_XMLNS = ("jabber:component:accept", "jabber:client")  # the stream's, or slixmpp's alias


class RawSlotRequest(NamedTuple):
    """One slot request read from the stream's bytes (:func:`read_raw_slot_requests`)."""

    attrs: dict[str, str]  # the <iq>'s attributes, keyed as ElementTree keys them
    request: SlotRequest
    stanza: str  # its text, for the stanza object a refusal is rendered from


def read_raw_slot_requests(data: bytes) -> list[RawSlotRequest] | None:
    """The slot requests ``data`` consists of, or None if it is anything else.

    ``data`` must be whole stanzas in UTF-8, each a ``:0`` slot request without
    children in the shape described above (spaces between them are fine); None
    otherwise, and then nothing of it was taken: the caller feeds all of it to the XML
    parser. What it returns is what the parser and :func:`read_slot_element` would make
    of the same bytes. The caller must know that ``data`` starts between two stanzas
    (the parser at depth 1, every byte before fed to it): in a well-formed stream a
    ``<`` cannot continue a tag cut short.
    """
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    if "&" in text or not text.isprintable():
        return None
    found: list[RawSlotRequest] = []
    pos, end = 0, len(text)
    while pos < end:
        m = _RAW_SLOT.match(text, pos)
        if m is None:
            return None
        iq, req = _raw_attrs(m.group(1), _IQ_NAMES), _raw_attrs(m.group(2), _REQUEST_NAMES)
        if iq is None or req is None or req.pop("xmlns", None) != NS:
            return None
        if iq.pop("xmlns", _IQ_XMLNS[0]) not in _IQ_XMLNS or iq.get("type") != "get":
            return None
        content_type = req.get("content-type") or req.get("mime-type") or ""
        request = SlotRequest(
            NS, req.get("filename", ""), req.get("size", "").strip(), content_type.strip(), None
        )
        found.append(RawSlotRequest(iq, request, text[pos : m.end()]))
        pos = m.end()
    return found or None


def _raw_attrs(text: str, names: dict[str, str]) -> dict[str, str] | None:
    """`` name='value'`` pairs as a dict keyed by ``names``; None for any other text, a
    name not in ``names`` or one that repeats (not XML)."""
    parts = text.split("'")  # name, value, name, value, ..., what follows the last
    if len(parts) % 2 == 0 or parts[-1].strip(" "):
        return None
    attrs: dict[str, str] = {}
    for i in range(0, len(parts) - 1, 2):
        key = names.get(parts[i])
        if key is None or key in attrs:
            return None
        attrs[key] = parts[i + 1]
    return attrs
