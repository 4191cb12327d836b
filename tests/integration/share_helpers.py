"""Client-side helpers for the share-report tests (Prosody and ejabberd alike)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Mapping

import slixmpp

from component.audit import AuditRecord
from component.metrics import Metrics
from component.xmpp.stanza import NS_MFT

OOB = "jabber:x:oob"
DEADLINE = 10.0


def send_url(
    client: slixmpp.ClientXMPP,
    to: str,
    url: str,
    *,
    mtype: str = "chat",
    oob: bool = True,
    body: str | None = None,
) -> None:
    """Send ``url`` as most clients do: in the body and (``oob``) as XEP-0066 ``<url>``."""
    msg = client.make_message(mto=slixmpp.JID(to), mbody=body or f"have a look: {url}", mtype=mtype)
    if oob:
        x = ET.SubElement(msg.xml, f"{{{OOB}}}x")
        ET.SubElement(x, f"{{{OOB}}}url").text = url
    msg.send()


async def inbox(client: slixmpp.ClientXMPP) -> asyncio.Queue[slixmpp.Message]:
    """The chat messages ``client`` receives from now on (it goes online for them)."""
    queue: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
    client.add_event_handler("message", queue.put_nowait)
    client.send_presence()
    # A round trip on the same stream: the server has handled the presence after it.
    await client.plugin["xep_0030"].get_info(jid=slixmpp.JID(client.boundjid.domain), timeout=10)
    return queue


async def assert_delivered_untouched(queue: asyncio.Queue[slixmpp.Message], url: str) -> None:
    """The next message in ``queue`` carries ``url`` in its body and its OOB, as sent."""
    async with asyncio.timeout(DEADLINE):
        msg = await queue.get()
    assert msg["body"] == f"have a look: {url}"
    assert msg.xml.findtext(f"{{{OOB}}}x/{{{OOB}}}url") == url
    assert msg.xml.find(f"{{{NS_MFT}}}shared") is None


def send_forged_report(
    client: slixmpp.ClientXMPP, component: str, sender: str, to: str, url: str
) -> None:
    """A user sending the component a ``<shared>`` of their own making."""
    msg = client.make_message(mto=slixmpp.JID(component), mtype="normal")
    ET.SubElement(
        msg.xml, f"{{{NS_MFT}}}shared", {"from": sender, "to": to, "type": "chat", "url": url}
    )
    msg.send()


async def wait_metric(
    metrics: Metrics, name: str, labels: Mapping[str, str], at_least: float = 1
) -> float:
    """Poll a counter until it reaches ``at_least`` (a deadline, not a sleep)."""
    async with asyncio.timeout(DEADLINE):
        while True:
            value = metrics.value(name, labels)
            if value >= at_least:
                return value
            await asyncio.sleep(0.02)  # polling a counter another task increments


def share_columns(row: AuditRecord) -> tuple[str, str, str, str, str]:
    """(METHOD, JID, TO_JID, CHAT_TYPE, FILENAME) of a row."""
    return row.method, row.jid, row.to_jid, row.chat_type, row.filename
