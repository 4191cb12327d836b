"""The XEP-0114 component: disco, XEP-0363 slots, download tickets, error rendering.

:class:`UploadComponent` answers slot requests in ``urn:xmpp:http:upload:0`` and the
legacy ``urn:xmpp:http:upload`` (each in the syntax of the request) and the xmpp-mft
``<download>`` IQ. :func:`serve_component` keeps it connected, reconnecting with
exponential backoff until asked to stop. Errors reach peers in one place only,
:meth:`UploadComponent._reply_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

from slixmpp import JID, Iq
from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.jid import InvalidJID
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import StanzaPath

from component.audit import AuditLog
from component.backoff import Backoff
from component.config import Config
from component.errors import (
    AuditUnavailable,
    FileTooLarge,
    QuotaExceeded,
    UploadError,
)
from component.layout import DirectoryAllocator
from component.metrics import Metrics
from component.xmpp.chattype import ChatTypeResolver
from component.xmpp.disco import SlixDisco, publish_disco
from component.xmpp.policy import hour_start
from component.xmpp.quota import QuotaGate
from component.xmpp.shares import ShareRecorder
from component.xmpp.slotreply import ReplyWriter
from component.xmpp.slots import SlotIssuer
from component.xmpp.stanza import (
    NS_LEGACY,
    SlotRequest,
    parse_slot_request,
    read_slot_element,
    register_stanzas,
)
from component.xmpp.urls import personal_url

log = logging.getLogger(__name__)

INITIAL_RECONNECT_DELAY = 0.5
HANDSHAKE_TIMEOUT = 30  # a server that accepts TCP but never answers is a failed attempt
BARE_JID_MEMO = 4096  # senders whose bare JID is remembered
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _reason(exc: UploadError) -> str:
    """``slots_refused`` label: ``FileTooLarge`` -> ``file_too_large``."""
    if type(exc) is UploadError:
        return "internal"
    return _CAMEL.sub("_", type(exc).__name__).lower()


def _stamp(when: datetime) -> str:
    """XEP-0082 UTC timestamp, ``2017-12-03T23:42:05Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _first_of(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


class UploadComponent(ComponentXMPP):
    """The upload service as an external component.

    :param cfg: the configuration.
    :param audit: AFT_LOG, read for quota usage.
    :param metrics: the process's metrics registry (``slots``, ``slots_refused``).
    """

    def __init__(self, cfg: Config, audit: AuditLog, metrics: Metrics) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            cfg.xmpp.component_jid, cfg.xmpp.secret, cfg.xmpp.host, cfg.xmpp.port
        )
        self.cfg = cfg
        self.audit = audit
        self.metrics = metrics
        register_stanzas()
        for plugin in ("xep_0030", "xep_0004", "xep_0128"):
            self.register_plugin(plugin)
        self._allocator = DirectoryAllocator(cfg.repository.files_per_directory)
        self._replies = ReplyWriter(lambda: self.transport, lambda: self.loop)
        self._slot_tasks: set[asyncio.Task[None]] = set()
        self._iq_tag = f"{{{self.default_ns}}}iq"
        self._bare_jids: dict[str, str] = {}
        self.quota = QuotaGate(cfg, audit)
        self.chat_types = ChatTypeResolver(
            SlixDisco(self, cfg.xmpp.disco_timeout),
            cfg.xmpp.server_domain,
            cfg.xmpp.muc_domains,
            timeout=cfg.xmpp.disco_timeout,
            ttl=cfg.xmpp.disco_cache_ttl,
            ignore=[cfg.xmpp.component_jid],
        )
        self.slots = SlotIssuer(
            cfg, self.quota, self.chat_types, self._allocator, self._replies, metrics
        )
        for name, path in (
            ("HTTP Upload slot request", "iq@type=get/http_upload_request"),
            ("HTTP Upload legacy slot request", "iq@type=get/http_upload_legacy_request"),
        ):
            self.register_handler(
                CoroutineCallback(name, StanzaPath(path), self.on_slot_request)  # type: ignore[arg-type]
            )
        self.register_handler(
            CoroutineCallback(
                "xmpp-mft download ticket",
                StanzaPath("iq@type=get/mft_download"),
                self.on_download_request,  # type: ignore[arg-type]
            )
        )
        # <shared> reports from the XMPP server's mod_mft_share: SHARE rows.
        self.shares = ShareRecorder(cfg, audit, metrics, self.chat_types.classify)
        self.shares.attach(self)
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("stream_error", self._on_stream_error)
        publish_disco(self, cfg)

    # -- disco -----------------------------------------------------------------------

    async def _on_session_start(self, _event: Any) -> None:
        log.info(
            "component %s connected to %s:%d", self.boundjid, self.cfg.xmpp.host, self.cfg.xmpp.port
        )

    def _on_stream_error(self, error: Any) -> None:
        log.warning(
            "XMPP server sent a stream error: %s %s", error["condition"], error["text"] or ""
        )

    # -- slots -----------------------------------------------------------------------

    def _spawn_event(self, xml: ET.Element) -> None:
        """Every stanza from the server: slot requests straight to the slot path.

        A slot request (an IQ get whose only child is a ``<request>``) is recognised on
        the raw element and answered without slixmpp's stanza objects and handler
        matching, which cost more than the rest of the request. Only our slot handlers
        would match such an IQ (tests check that), and slixmpp registers no inbound
        stanza filters; what :func:`read_slot_element` declines, and a ``from`` that is
        no JID, go through slixmpp as before, to :meth:`on_slot_request`.
        """
        xml = self.incoming_filter(xml)  # type: ignore[no-untyped-call]
        if xml.tag == self._iq_tag and len(xml) == 1 and xml.get("type") == "get":
            req = read_slot_element(xml[0])
            requester = None if req is None else self._bare_jid(xml.get("from", ""))
            if req is not None and requester is not None:
                if self.slots.can_answer_now(req):
                    self._answer_slot_now(xml, req, requester)
                    return
                task = asyncio.ensure_future(self._answer_slot(xml, req, requester))
                self._slot_tasks.add(task)  # a reference until done (asyncio keeps none)
                task.add_done_callback(self._slot_tasks.discard)
                return
        super()._spawn_event(xml)

    def _bare_jid(self, sender: str) -> str | None:
        """The bare JID of ``sender`` (None if it is no JID), remembered per sender.

        A client's requests all come from one full JID; the memo is bounded (cleared
        when full) and holds only JIDs that parsed.
        """
        bare = self._bare_jids.get(sender)
        if bare is None:
            try:
                bare = JID(sender).bare
            except InvalidJID:
                return None
            if len(self._bare_jids) >= BARE_JID_MEMO:
                self._bare_jids.clear()
            self._bare_jids[sender] = bare
        return bare

    def data_received(self, data: bytes | str) -> None:
        """Parse what the server sent; the slots answered meanwhile leave in one write."""
        self._replies.hold()
        try:
            super().data_received(data)
        finally:
            self._replies.release()

    def _answer_slot_now(self, xml: ET.Element, req: SlotRequest, requester: str) -> None:
        """The fast path's :meth:`on_slot_request` for requests that need no wait."""
        try:
            self.slots.issue_now(xml.attrib, req, requester)
        except Exception as exc:
            self._slot_failed(xml, requester, exc)

    async def _answer_slot(self, xml: ET.Element, req: SlotRequest, requester: str) -> None:
        """The fast path's :meth:`on_slot_request` for requests that wait (quota, disco)."""
        try:
            await self.slots.issue(xml.attrib, req, requester)
        except Exception as exc:
            self._slot_failed(xml, requester, exc)

    def _slot_failed(self, xml: ET.Element, requester: str, exc: Exception) -> None:
        """Refuse as :meth:`on_slot_request` does, with the stanza object built now."""
        try:
            if not isinstance(exc, UploadError):
                log.error("slot request from %s failed", requester, exc_info=exc)
                exc = UploadError()
            self._refused(self._iq_of(xml), exc)
        except Exception as again:  # as slixmpp's CoroutineCallback does
            self._iq_of(xml).exception(again)  # type: ignore[no-untyped-call]

    def _iq_of(self, xml: ET.Element) -> Iq:
        """The stanza object slixmpp's path would have built from ``xml`` (an IQ)."""
        return cast(Iq, self._build_stanza(xml))

    async def on_slot_request(self, iq: Iq) -> None:
        """Answer a slot request (either namespace) with a slot or an error."""
        try:
            await self.slots.issue(iq.xml.attrib, parse_slot_request(iq), iq["from"].bare)
        except UploadError as exc:
            self._refused(iq, exc)
        except Exception:
            log.exception("slot request from %s failed", iq["from"].bare)
            self._refused(iq, UploadError())

    def _refused(self, iq: Iq, exc: UploadError) -> None:
        self.metrics.inc("slots_refused", labels={"reason": _reason(exc)})
        if isinstance(exc, FileTooLarge | QuotaExceeded):
            log.warning("slot refused for %s: %s", iq["from"].bare, exc.text)
        else:
            log.info("slot refused for %s: %s", iq["from"].bare, exc.text)
        self._reply_error(iq, exc)

    async def resume_directories(self, now: datetime | None = None) -> None:
        """Seed the ``HH.n`` roll-over from AFT_LOG, so a restart keeps counting.

        Without it a service restarted at 10:40 would count this hour from zero and put
        up to ``files_per_directory`` more files into a full ``HH``. AFT_LOG's DATE_TIME is
        when an upload *completed*, not when its slot (and directory) was handed out, so
        this is an approximation: an upload whose slot came before the hour began counts
        for the new hour, and slots handed out before the restart but not yet used do not
        count. Either way a directory overflows by a few files at most, never by a
        thousand. A failing audit log only costs the seed: logged, and counting starts
        from zero.
        """
        now = (now or datetime.now(UTC)).astimezone(UTC)
        since = hour_start(now)
        try:
            async with asyncio.timeout(self.cfg.database.connect_timeout):
                counts = await self.audit.count_by_chat_type(since, self.cfg.node.id)
        except (AuditUnavailable, TimeoutError) as exc:
            log.warning(
                "AFT_LOG unavailable: HH.n roll-over counts from zero (%s)",
                exc or type(exc).__name__,
            )
            return
        date, hour = since.strftime("%Y%m%d"), since.strftime("%H")
        self._allocator.seed({(ct, date, hour): n for ct, n in counts.items() if n})
        if counts:
            log.info(
                "uploads this hour so far (from AFT_LOG): %s",
                ", ".join(f"{ct} {n}" for ct, n in sorted(counts.items())),
            )

    # -- download tickets ------------------------------------------------------------

    async def on_download_request(self, iq: Iq) -> None:
        """Answer ``<download url=GET-URL/>`` with the requester's personal download URL."""
        try:
            reply = iq.reply()  # type: ignore[no-untyped-call]
            reply["mft_download"]["url"] = self.personal_url(
                iq["mft_download"]["url"], iq["from"].bare
            )
            reply.send()
            log.info("download ticket for %s", iq["from"].bare)
        except UploadError as exc:
            log.info("download ticket refused for %s: %s", iq["from"].bare, exc.text)
            self._reply_error(iq, exc)
        except Exception:
            log.exception("download ticket request from %s failed", iq["from"].bare)
            self._reply_error(iq, UploadError())

    def personal_url(self, url: str, jid: str) -> str:
        """``url`` (a GET URL of this cluster) with a signed ticket naming bare ``jid``.

        :raises InvalidRequest: not a GET URL of this cluster.
        """
        return personal_url(self.cfg, url, jid)

    # -- errors and notifications ----------------------------------------------------

    def _reply_error(self, iq: Iq, exc: UploadError) -> None:
        """Send ``exc`` as the IQ error, with the XEP-0363 child it calls for.

        The request is echoed, as in the XEP-0363 examples; the error children use the
        request's namespace. Unexpected errors get a generic text (never ``str(exc)``).
        """
        legacy = iq.xml.find(f"{{{NS_LEGACY}}}request") is not None
        reply = iq.reply(clear=False)  # type: ignore[no-untyped-call]
        reply["type"] = "error"
        error = reply["error"]
        error["type"] = exc.etype
        error["condition"] = exc.condition
        error["text"] = exc.text if type(exc) is not UploadError else UploadError.default_text
        if isinstance(exc, FileTooLarge):
            name = "http_upload_legacy_file_too_large" if legacy else "http_upload_file_too_large"
            error[name]["max-file-size"] = str(exc.max_size)
        elif isinstance(exc, QuotaExceeded):
            name = "http_upload_legacy_retry" if legacy else "http_upload_retry"
            error[name]["stamp"] = _stamp(exc.retry_at)
        reply.send()

    async def notify_admins(self, text: str) -> None:
        """Send ``text`` as a chat message to each JID in ``[alarm] admins``.

        While disconnected the messages wait in slixmpp's queue for the next session.
        """
        for admin in self.cfg.alarm.admins:
            self.send_message(mto=JID(admin), mbody=text, mtype="chat", mfrom=self.boundjid)

    # -- connection ------------------------------------------------------------------

    async def run_session(self, stop: asyncio.Event, on_start: Callable[[], None]) -> bool:
        """Connect once and stay until the stream ends or ``stop`` is set.

        :returns: whether the server accepted the component (handshake done).
        """
        ended, session = asyncio.Event(), asyncio.Event()

        def on_session(_event: Any) -> None:
            session.set()
            on_start()

        def on_end(_event: Any) -> None:
            ended.set()

        self.add_event_handler("session_start", on_session)
        self.add_event_handler("disconnected", on_end)
        self.add_event_handler("connection_failed", on_end)
        try:
            self.connect()
            try:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                    await _first_of(stop, ended, session)
            except TimeoutError:
                log.warning("no handshake from the XMPP server within %d s", HANDSHAKE_TIMEOUT)
                self.abort()
            if session.is_set():
                await _first_of(stop, ended)
            # slixmpp would retry a failed TCP connect on its own schedule; ours rules.
            self.cancel_connection_attempt()
            if stop.is_set() and not ended.is_set():
                await self._disconnect(ended)
        finally:
            self.del_event_handler("session_start", on_session)
            self.del_event_handler("disconnected", on_end)
            self.del_event_handler("connection_failed", on_end)
        return session.is_set()

    async def close(self) -> None:
        """Stop slixmpp's outgoing-stanza task (slixmpp leaves it pending otherwise).

        The slots counted since the last summary line are logged now.
        """
        self.slots.tally.flush()
        task = self._run_out_filters
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _disconnect(self, ended: asyncio.Event) -> None:
        self.disconnect(wait=2.0, reason="shutting down")
        try:
            async with asyncio.timeout(5.0):
                await ended.wait()
        except TimeoutError:
            self.abort()


async def serve_component(
    cfg: Config,
    audit: AuditLog,
    metrics: Metrics,
    stop: asyncio.Event,
    started: asyncio.Event | None = None,
    on_ready: Callable[[UploadComponent], None] | None = None,
    freeze_gc: bool = True,
) -> None:
    """Run the component until ``stop`` is set, reconnecting with exponential backoff.

    The delay starts at 0.5 s, doubles after each failed attempt (refused connection or
    refused handshake) up to ``[xmpp] reconnect_max_delay``, and starts over after a
    session that was accepted. ``on_ready`` is called with the component and ``started``
    is set after the first accepted session. Before connecting, the ``HH.n`` counts of
    this hour are read back from AFT_LOG (:meth:`UploadComponent.resume_directories`).
    With ``freeze_gc`` (``mft run``; not in a shared test process) the objects alive at
    the first session are moved out of the cyclic collector's reach (:func:`gc.freeze`).
    """
    xmpp = UploadComponent(cfg, audit, metrics)
    await xmpp.resume_directories()
    first = True

    def on_start() -> None:
        nonlocal first
        if first:
            first = False
            if on_ready is not None:
                on_ready(xmpp)
            if started is not None:
                started.set()
            if freeze_gc:
                # What start-up built (config, slixmpp's plugins, whatever else is up
                # by the first session) lives as long as the process: the cyclic
                # collector need not walk it again every few hundred stanzas (that took
                # about a quarter of the CPU per slot). A collection first, so that no
                # start-up garbage is kept for good.
                gc.collect()
                gc.freeze()

    most = cfg.xmpp.reconnect_max_delay
    # Jitter: nodes restarted together do not reconnect in lockstep.
    backoff = Backoff(min(INITIAL_RECONNECT_DELAY, most), most, jitter=0.1)
    try:
        while not stop.is_set():
            accepted = await xmpp.run_session(stop, on_start)
            if stop.is_set():
                break
            if accepted:
                backoff.reset()
                log.warning("lost the connection to the XMPP server; reconnecting")
            log.info(
                "connecting to %s:%d again in about %.1f s",
                cfg.xmpp.host,
                cfg.xmpp.port,
                backoff.delay,
            )
            await backoff.wait(stop)
    finally:
        await xmpp.close()
