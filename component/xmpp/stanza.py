"""XEP-0363 stanzas: slixmpp's ``urn:xmpp:http:upload:0`` ones, plus what slixmpp lacks.

Added here: the error children ``<file-too-large>`` and ``<retry>``, the legacy
``urn:xmpp:http:upload`` request/slot shapes (XEP-0363 v0.2, child elements, as ejabberd
and older Conversations use), and the xmpp-mft extension ``urn:xmpp-mft:0``
(``<recipient jid>`` inside a request, ``<download url>`` IQ for personal download URLs).
:func:`parse_slot_request` reads either syntax into one :class:`SlotRequest`;
:func:`read_slot_element` reads the same from the raw element, before slixmpp builds any
stanza object (the component's inbound fast path).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import ClassVar

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
    "Recipient",
    "Request",
    "Retry",
    "Slot",
    "SlotRequest",
    "parse_slot_request",
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


@dataclass(frozen=True, slots=True)
class SlotRequest:
    """A slot request in either syntax; values are the raw strings the client sent.

    ``recipient`` is ``None`` without ``<recipient>``, and ``""`` for one without a JID.
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
