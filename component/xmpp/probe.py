"""A bare XEP-0114 handshake, to test the XMPP router without becoming the component.

``mft check`` uses it: it opens a component stream, sends the handshake and reports
the server's answer (accepted, or the stream error condition), then closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast
from xml.sax.saxutils import quoteattr

STREAMS_NS = "http://etherx.jabber.org/streams"
STREAM_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-streams"
COMPONENT_NS = "jabber:component:accept"
XMPP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Handshake:
    """How the XMPP server answered a component handshake."""

    accepted: bool
    condition: str = ""  # stream error condition when refused, e.g. not-authorized
    text: str = ""


async def component_handshake(
    host: str, port: int, jid: str, secret: str, within: float = XMPP_TIMEOUT
) -> Handshake:
    """Open a XEP-0114 stream as ``jid`` and send the handshake; close it again.

    :raises OSError: the TCP connection failed.
    :raises TimeoutError: the server did not answer within ``within`` seconds.
    :raises ValueError: the server's answer is not a component stream.
    """
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            return await _handshake(reader, writer, jid, secret)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, jid: str, secret: str
) -> Handshake:
    writer.write(
        (
            "<?xml version='1.0'?>"
            f"<stream:stream xmlns='{COMPONENT_NS}' xmlns:stream='{STREAMS_NS}'"
            f" to={quoteattr(jid)}>"
        ).encode()
    )
    await writer.drain()
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
    depth = 0
    while True:
        data = await reader.read(4096)
        if not data:
            return Handshake(False, "connection-closed", "the server closed the connection")
        parser.feed(data)
        # typeshed types read_events() too loosely to unpack; it yields (event, element).
        for event, elem in cast(Iterator[tuple[str, object]], parser.read_events()):
            if not isinstance(elem, ET.Element):
                continue  # only start/end events were asked for
            if event == "start":
                depth += 1
                if depth == 1:
                    if elem.tag != f"{{{STREAMS_NS}}}stream":
                        raise ValueError(f"not an XMPP stream: {elem.tag}")
                    stream_id = elem.get("id")
                    if stream_id is None:
                        continue  # an error follows (RFC 6120 4.9.1.2: no id then)
                    # XEP-0114 §3: handshake = hex SHA-1 of stream id + secret.
                    token = hashlib.sha1((stream_id + secret).encode()).hexdigest()
                    writer.write(f"<handshake>{token}</handshake>".encode())
                    await writer.drain()
                continue
            depth -= 1
            if depth != 1:
                continue
            if elem.tag == f"{{{COMPONENT_NS}}}handshake":
                writer.write(b"</stream:stream>")
                with contextlib.suppress(OSError):
                    await writer.drain()
                return Handshake(True)
            if elem.tag == f"{{{STREAMS_NS}}}error":
                condition, text = "undefined-condition", ""
                for child in elem:
                    name = child.tag.rpartition("}")[2]
                    if child.tag == f"{{{STREAM_ERRORS_NS}}}text":
                        text = (child.text or "").strip()
                    elif child.tag.startswith(f"{{{STREAM_ERRORS_NS}}}"):
                        condition = name
                return Handshake(False, condition, text)
