"""Handing out one slot: policy, chat type, quota, directory, signed URLs, the reply.

:class:`SlotIssuer` does everything a slot request needs after it has been read. Most
requests need no wait (no quota configured, no ``<recipient>`` to classify by disco):
:meth:`SlotIssuer.issue_now` answers those synchronously, inside the read that
brought them, so the replies of one read leave in one write. The rest go through
:meth:`SlotIssuer.issue`, which awaits the quota lock, AFT_LOG and disco. Both raise
:class:`~component.errors.UploadError` for a refusal; the caller sends the error.
"""

from __future__ import annotations

import base64
import logging
import os
import time
from datetime import UTC, datetime

from component.config import Config
from component.layout import RESOURCE_BYTES, DirectoryAllocator, SlotPath
from component.metrics import Metrics
from component.tokens import UploadGrant
from component.xmpp.chattype import ChatTypeResolver, Classification
from component.xmpp.policy import check_quota, check_slot_request, quotas_enabled
from component.xmpp.quota import QuotaGate
from component.xmpp.slotreply import ReplyWriter, SlotTally, slot_reply
from component.xmpp.stanza import SlotRequest
from component.xmpp.urls import query_string

log = logging.getLogger("component.xmpp.service")  # the component's lines, one logger

CONTENT_TYPE_MAX = 255  # recorded in the PUT URL, never trusted
_DIRECT = Classification("im", "")  # no <recipient>: DESIGN.md "Chat type and recipient"


class ResourceNames:
    """Fresh resource names, as :func:`component.layout.new_resource` makes them.

    The same 144 bits from ``os.urandom`` per name, drawn ``batch`` names at a time:
    one system call and one base64 encoding per batch instead of per slot. 18 bytes are
    whole base64 quanta, so slices of one encoding are the names' own encodings.
    """

    def __init__(self, batch: int = 256) -> None:
        self._batch = batch
        self._names: list[str] = []

    def __call__(self) -> str:
        """One name (24 URL-safe characters), never handed out twice."""
        if not self._names:
            text = base64.urlsafe_b64encode(os.urandom(RESOURCE_BYTES * self._batch)).decode()
            width = RESOURCE_BYTES * 4 // 3
            self._names = [text[i : i + width] for i in range(0, len(text), width)]
        return self._names.pop()


class SlotIssuer:
    """Checks slot requests and writes the slots.

    :param cfg: the configuration.
    :param quota: per-user quotas (used only when configured).
    :param chat_types: classifies ``<recipient>``.
    :param allocator: the ``YYYYMMDD/HH[.n]`` directory of each slot.
    :param replies: where the prebuilt replies go.
    :param metrics: ``slots`` is counted here.
    """

    def __init__(
        self,
        cfg: Config,
        quota: QuotaGate,
        chat_types: ChatTypeResolver,
        allocator: DirectoryAllocator,
        replies: ReplyWriter,
        metrics: Metrics,
    ) -> None:
        self.cfg = cfg
        self.quota = quota
        self.chat_types = chat_types
        self.allocator = allocator
        self.replies = replies
        self.metrics = metrics
        self.tally = SlotTally(loop=lambda: replies.loop())
        self._quotas = quotas_enabled(cfg)
        self._new_resource = ResourceNames()

    def can_answer_now(self, req: SlotRequest) -> bool:
        """Whether ``req`` needs no wait (no quota lock, AFT_LOG read or disco query)."""
        return req.recipient is None and not self._quotas

    def issue_now(self, attrs: dict[str, str], req: SlotRequest, requester: str) -> None:
        """Answer a request for which :meth:`can_answer_now` holds.

        :param attrs: the request IQ's attributes (the reply swaps ``from`` and ``to``).
        :param requester: the requester's bare JID.
        :raises UploadError: refused.
        """
        now = datetime.now(UTC)
        size = check_slot_request(self.cfg, requester, req.filename, req.size, now=now)
        resource, expires = self._new_resource(), self._expires()
        self._grant(attrs, req, requester, size, _DIRECT, resource, expires, now)

    async def issue(self, attrs: dict[str, str], req: SlotRequest, requester: str) -> None:
        """Answer any request: classify its recipient, check and book the quota.

        :raises UploadError: refused.
        """
        now = datetime.now(UTC)
        size = check_slot_request(self.cfg, requester, req.filename, req.size, now=now)
        target = await self.chat_types.classify(req.recipient)
        resource, expires = self._new_resource(), self._expires()
        if self._quotas:
            async with self.quota.lock(requester):
                check_quota(self.cfg, size, await self.quota.usage(requester, now), now)
                self.quota.ledger.add(requester, resource, size, expires)
        self._grant(attrs, req, requester, size, target, resource, expires, now)

    def _expires(self) -> int:
        return int(time.time()) + self.cfg.upload.slot_lifetime

    def _grant(
        self,
        attrs: dict[str, str],
        req: SlotRequest,
        requester: str,
        size: int,
        target: Classification,
        resource: str,
        expires: int,
        now: datetime,
    ) -> None:
        """Sign the slot and write the reply (the request has passed every check)."""
        date, hour = self.allocator.allocate(target.chat_type, now)
        path = SlotPath(self.cfg.node.id, target.chat_type, date, hour, resource, req.filename)
        grant = UploadGrant(
            path=path,
            size=size,
            expires=expires,
            uploader=requester,
            recipient=target.to_jid,
            content_type=req.content_type[:CONTENT_TYPE_MAX],
        )
        get_url = f"{self.cfg.http.public_url}/{path.url_path}"
        put_url = f"{get_url}?{query_string(grant.query(self.cfg.http.secret))}"
        # Prebuilt text (see slotreply): slixmpp's stanza objects and per-character
        # escaping cost more than the rest of the request.
        if not self.replies.write(slot_reply(attrs, req.namespace, put_url, get_url)):
            log.info("slot for %s not sent: disconnected from the XMPP server", requester)
            return
        self.metrics.inc("slots", labels={"chat_type": target.chat_type})
        # One INFO line a minute sums the slots up (SlotTally); each upload made with a
        # slot is logged at INFO and recorded in AFT_LOG by the HTTP side.
        self.tally.add(target.chat_type)
        log.debug(
            "slot for %s: %d bytes, %s to %s, resource %s",
            requester,
            size,
            target.chat_type,
            target.to_jid or "-",
            resource,
        )
