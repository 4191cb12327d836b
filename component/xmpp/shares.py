"""Share reports: the XMPP server tells the component who each upload URL was sent to.

The server module (``deploy/prosody/mod_mft_share.lua``, ``deploy/ejabberd/mod_mft_share.erl``)
sends, from the host's own JID, one ``<shared xmlns='urn:xmpp-mft:0' from to type url/>``
per URL a local user sent in a message (DESIGN.md "Recipients for every client").
:class:`ShareRecorder` accepts reports only from ``[xmpp] share_hosts`` about that
host's own users, resolves the URL to an upload of this node, classifies the recipient
as for ``<recipient>`` and writes a ``SHARE`` row. Anything else is logged and ignored.

A URL of another ``[cluster]`` node is ignored here: the server module reports every
URL to every node's component (``mft_share_component`` lists them all), and the node
that stored the upload records it, with the columns of its own POST row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from slixmpp import JID, Message
from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.jid import InvalidJID
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath

from component.audit import AuditLog, AuditRecord, bare_jid
from component.config import Config
from component.errors import AuditUnavailable, InvalidRequest
from component.layout import SlotPath, file_type, real_filename
from component.metrics import Metrics
from component.xmpp.chattype import Classification
from component.xmpp.stanza import NS_MFT
from component.xmpp.urls import parse_get_url

log = logging.getLogger(__name__)

SHARED = f"{{{NS_MFT}}}shared"
COMPONENT_NS = "jabber:component:accept"
MESSAGE_TYPES = frozenset({"chat", "normal", "groupchat"})

Ignored = Literal[
    "sender", "malformed", "foreign_url", "other_node", "unknown_upload", "recipient", "audit"
]
Classify = Callable[[str | None], Awaitable[Classification]]


@dataclass(frozen=True, slots=True)
class ShareReport:
    """One ``<shared>`` element and the JID of the server that sent it."""

    host: str
    sender: str
    recipient: str
    message_type: str
    url: str


def parse_reports(reporter: str, message: ET.Element) -> list[ShareReport]:
    """Every ``<shared>`` child of ``message`` (attribute values as sent, possibly empty)."""
    return [
        ShareReport(
            host=reporter,
            sender=el.get("from", ""),
            recipient=el.get("to", ""),
            message_type=el.get("type", "") or "normal",
            url=el.get("url", "").strip(),
        )
        for el in message.iter(SHARED)
    ]


class ShareIgnored(Exception):
    """A report that gives no SHARE row; ``reason`` labels the metric."""

    def __init__(self, reason: Ignored, text: str) -> None:
        super().__init__(text)
        self.reason: Ignored = reason
        self.text = text


class ShareRecorder:
    """Turns accepted share reports into ``SHARE`` rows.

    :param cfg: the configuration (``[xmpp] share_hosts``, node, cluster URLs).
    :param audit: AFT_LOG: the upload's POST row is read, the SHARE row written.
    :param metrics: ``shares`` by chat type, ``share_reports_ignored`` by reason.
    :param classify: the chat-type resolver's ``classify`` (rooms by disco#info).
    """

    def __init__(self, cfg: Config, audit: AuditLog, metrics: Metrics, classify: Classify) -> None:
        self._cfg = cfg
        self._audit = audit
        self._metrics = metrics
        self._classify = classify
        self._hosts = frozenset(h.lower() for h in cfg.xmpp.share_host_set)
        # Rows are written in the order the reports arrived (the first share of a file
        # decides its GET rows), while classifications, which may wait on disco, overlap.
        self._last: asyncio.Future[None] | None = None

    def attach(self, xmpp: ComponentXMPP) -> None:
        """Handle ``<message><shared/></message>`` on ``xmpp``.

        .. note:: slixmpp's ``message`` event never fires for a message without
           ``<body>``, so the handler matches the ``<shared>`` child itself.
        """
        xmpp.register_handler(
            CoroutineCallback(
                "xmpp-mft share report",
                MatchXPath(f"{{{COMPONENT_NS}}}message/{SHARED}"),
                self.on_message,  # type: ignore[arg-type]
            )
        )

    async def on_message(self, msg: Message) -> None:
        """Record every report in ``msg``; nothing is ever answered to the sender."""
        if msg["type"] == "error":
            return
        for report in parse_reports(str(msg["from"]), msg.xml):
            await self.handle(report)

    async def handle(self, report: ShareReport) -> AuditRecord | None:
        """Write the SHARE row for ``report``, or log why not.

        :returns: the row written, or ``None`` when the report was ignored.
        """
        prev, done = self._last, asyncio.get_running_loop().create_future()
        self._last = done
        try:
            try:
                path, sender = self._accept(report)
                target = await self._recipient(report)
            finally:
                if prev is not None:
                    with contextlib.suppress(BaseException):
                        await asyncio.shield(prev)
            row = await self._record(report, path, sender, target)
        except ShareIgnored as exc:
            self._metrics.inc("share_reports_ignored", labels={"reason": exc.reason})
            level = logging.DEBUG if exc.reason == "other_node" else logging.WARNING
            if exc.reason in ("foreign_url", "unknown_upload"):
                level = logging.INFO
            log.log(level, "share report from %s ignored: %s", report.host or "-", exc.text)
            return None
        finally:
            done.set_result(None)
            if self._last is done:
                self._last = None
        self._metrics.inc("shares", labels={"chat_type": row.chat_type})
        log.info("share: %s sent %s to %s (%s)", row.jid, row.filename, row.to_jid, row.chat_type)
        return row

    def _accept(self, report: ShareReport) -> tuple[SlotPath, str]:
        """The slot the URL names and the sender's bare JID, if the report is acceptable.

        :raises ShareIgnored: not from a share host, about another host's user,
            malformed, or not a URL of this node.
        """
        try:
            host = JID(report.host)
            sender = JID(report.sender)
        except InvalidJID:
            raise ShareIgnored("malformed", "invalid JID") from None
        if host.user or host.resource or host.domain.lower() not in self._hosts:
            # A user (or anyone else) sending <shared> to the component: never believed.
            raise ShareIgnored("sender", f"{host.full or '-'} is not in [xmpp] share_hosts")
        if not sender.user or sender.domain.lower() != host.domain.lower():
            raise ShareIgnored("sender", f"{host.domain} reported a sender of another host")
        if report.message_type not in MESSAGE_TYPES or not report.recipient or not report.url:
            raise ShareIgnored("malformed", "missing or unknown to, type or url")
        parts = urlsplit(report.url)
        try:
            path = parse_get_url(self._cfg, parts.scheme, parts.netloc, parts.path)
        except (InvalidRequest, ValueError):
            raise ShareIgnored("foreign_url", "not a download URL of this cluster") from None
        if path.node != self._cfg.node.id:
            raise ShareIgnored("other_node", f"an upload of {path.node}, which records it")
        return path, bare_jid(sender.bare)

    async def _recipient(self, report: ShareReport) -> Classification:
        try:
            return await self._classify(report.recipient)
        except InvalidRequest:
            raise ShareIgnored("recipient", "invalid recipient JID") from None

    async def _record(
        self, report: ShareReport, path: SlotPath, sender: str, target: Classification
    ) -> AuditRecord:
        try:
            up = await self._audit.find_upload(path.resource)
        except AuditUnavailable:
            # The database is away and this process did not see the upload: record what
            # the URL says (the row still reaches AFT_LOG through the spool).
            log.warning("AFT_LOG lookup failed for %s; SHARE row from the URL", path.resource)
            up = None
        else:
            if up is None:
                raise ShareIgnored("unknown_upload", f"no upload {path.resource} on this node")
        rec = AuditRecord(
            jid=sender,
            to_jid=target.to_jid,
            method="SHARE",
            filename=path.resource,
            real_filename=up.real_filename if up else real_filename(path.filename),
            file_type=up.file_type if up else file_type(path.filename),
            chat_type=target.chat_type,
            file_server=up.file_server if up else self._cfg.repository.host,
            file_size=up.file_size if up else 0,
            node_id=self._cfg.node.id,
            file_sha256=up.file_sha256 if up else "",  # as on GET rows: which bytes
        )
        try:
            await self._audit.record(rec)
        except AuditUnavailable:
            text = f"the SHARE row of {path.resource} was not stored"
            raise ShareIgnored("audit", text) from None
        return rec
