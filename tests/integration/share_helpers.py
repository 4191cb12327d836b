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
