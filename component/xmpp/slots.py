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
from component.layout import RESOURCE_BYTES, ChatType, DirectoryAllocator, quote_filename
from component.metrics import Metrics
from component.xmpp.chattype import ChatTypeResolver, Classification
from component.xmpp.policy import SlotPolicy, check_quota, quotas_enabled
from component.xmpp.quota import QuotaGate
from component.xmpp.slotreply import ReplyWriter, SlotTally, escape, slot_reply_xml
from component.xmpp.stanza import SlotRequest
from component.xmpp.urls import put_query

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

    What a slot costs before its reply is sent is only what the reply needs: the
    checks, the directory, the signed URLs and the text. Counting it (``slots``, the
    tally, the DEBUG line) waits until the replies of the batch were written
    (:meth:`book`, the writer's ``after_write``), and is done once per batch and chat
    type rather than once per slot.

    :param cfg: the configuration.
    :param quota: per-user quotas (used only when configured).
    :param chat_types: classifies ``<recipient>``.
    :param allocator: the ``YYYYMMDD/HH[.n]`` directory of each slot.
    :param replies: where the prebuilt replies go; its ``after_write`` is set to
        :meth:`book`.
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
        self.policy = SlotPolicy(cfg)
        self._quotas = quotas_enabled(cfg)
        self._new_resource = ResourceNames()
        # Read once: attribute chains cost more than what they lead to, per slot.
        self._secret = cfg.http.secret
        self._node = cfg.node.id
        self._lifetime = cfg.upload.slot_lifetime
        self._public_xml = escape(cfg.http.public_url)
        self._granted: dict[str, int] = {}  # slots written, not yet counted (book)
        self._debug: list[tuple[str, int, str, str, str]] = []
        replies.after_write = self.book

    def can_answer_now(self, req: SlotRequest) -> bool:
        """Whether ``req`` needs no wait (no quota lock, AFT_LOG read or disco query)."""
        return req.recipient is None and not self._quotas

    def issue_now(self, attrs: dict[str, str], req: SlotRequest, requester: str) -> None:
        """Answer a request for which :meth:`can_answer_now` holds.

        :param attrs: the request IQ's attributes (the reply swaps ``from`` and ``to``).
        :param requester: the requester's bare JID.
        :raises UploadError: refused.
        """
        size = self.policy.check(requester, req.filename, req.size)
        now = time.time()
        expires = int(now) + self._lifetime
        self._grant(attrs, req, requester, size, _DIRECT, self._new_resource(), now, expires)

    async def issue(self, attrs: dict[str, str], req: SlotRequest, requester: str) -> None:
        """Answer any request: classify its recipient, check and book the quota.

        :raises UploadError: refused.
        """
        now = datetime.now(UTC)
        size = self.policy.check(requester, req.filename, req.size)
        target = await self.chat_types.classify(req.recipient)
        resource, expires = self._new_resource(), int(time.time()) + self._lifetime
        if self._quotas:
            async with self.quota.lock(requester):
                check_quota(self.cfg, size, await self.quota.usage(requester, now), now)
                self.quota.ledger.add(requester, resource, size, expires)
        self._grant(attrs, req, requester, size, target, resource, now.timestamp(), expires)

    def _grant(
        self,
        attrs: dict[str, str],
        req: SlotRequest,
        requester: str,
        size: int,
        target: Classification,
        resource: str,
        now: float,
        expires: int,
    ) -> None:
        """Sign the slot and write the reply (the request has passed every check).

        The URLs are those of ``SlotPath(...).url_path`` and ``UploadGrant(...).query``,
        built as text (tests compare them), and escaped for XML as they are built:
        every segment but the public URL is URL-safe text, free of XML's specials.
        """
        chat_type: ChatType = target.chat_type
        date, hour = self.allocator.allocate_at(chat_type, now)
        prefix = f"{self._node}/{chat_type}/{date}/{hour}/{resource}/"
        get = f"{self._public_xml}/{prefix}{quote_filename(req.filename)}"
        query = put_query(
            self._secret,
            prefix + req.filename,  # SlotPath.signed_path
            chat_type,
            size,
            expires,
            requester,
            target.to_jid,
            req.content_type[:CONTENT_TYPE_MAX],
            sep="&amp;",
        )
        # Prebuilt text (see slotreply): slixmpp's stanza objects and per-character
        # escaping cost more than the rest of the request.
        if not self.replies.write(slot_reply_xml(attrs, req.namespace, f"{get}?{query}", get)):
            log.info("slot for %s not sent: disconnected from the XMPP server", requester)
            return
        self._granted[chat_type] = self._granted.get(chat_type, 0) + 1
        if log.isEnabledFor(logging.DEBUG):
            self._debug.append((requester, size, chat_type, target.to_jid or "-", resource))

    def book(self) -> None:
        """Count the slots written since the last call (``slots``, the tally) and log
        them at DEBUG; called after each write of replies."""
        if not self._granted:
            return
        granted, self._granted = self._granted, {}
        for chat_type, n in granted.items():
            self.metrics.inc("slots", labels={"chat_type": chat_type}, value=n)
            # One INFO line a minute sums the slots up (SlotTally); each upload made
            # with a slot is logged at INFO and recorded in AFT_LOG by the HTTP side.
            self.tally.add(chat_type, n)
        debug, self._debug = self._debug, []
        for line in debug:
            log.debug("slot for %s: %d bytes, %s to %s, resource %s", *line)
