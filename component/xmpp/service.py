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
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

from slixmpp import JID, Iq
from slixmpp.componentxmpp import ComponentXMPP
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import StanzaPath

from component.audit import AuditLog
from component.config import Config
from component.errors import (
    AuditUnavailable,
    FileTooLarge,
    InvalidRequest,
    QuotaExceeded,
    UploadError,
)
from component.layout import DirectoryAllocator, SlotPath, new_resource
from component.metrics import Metrics
from component.tokens import DownloadTicket, UploadGrant
from component.xmpp.chattype import ChatTypeResolver, DiscoInfo, DiscoUnavailable
from component.xmpp.policy import (
    SlotLedger,
    Usage,
    check_quota,
    check_slot_request,
    combine_usage,
    day_start,
    hour_start,
    quotas_enabled,
)
from component.xmpp.stanza import NS, NS_LEGACY, parse_slot_request, register_stanzas

log = logging.getLogger(__name__)

CONTENT_TYPE_MAX = 255  # recorded in the PUT URL, never trusted
INITIAL_RECONNECT_DELAY = 0.5
HANDSHAKE_TIMEOUT = 30  # a server that accepts TCP but never answers is a failed attempt
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def _reason(exc: UploadError) -> str:
    """``slots_refused`` label: ``FileTooLarge`` -> ``file_too_large``."""
    if type(exc) is UploadError:
        return "internal"
    return _CAMEL.sub("_", type(exc).__name__).lower()


def _stamp(when: datetime) -> str:
    """XEP-0082 UTC timestamp, ``2017-12-03T23:42:05Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _SharedLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


async def _first_of(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


class _SlixDisco:
    """:class:`chattype.Disco` over the component's own stream."""

    def __init__(self, xmpp: ComponentXMPP, timeout: float) -> None:
        self._xmpp = xmpp
        self._timeout = timeout

    async def info(self, jid: str) -> DiscoInfo:
        try:
            iq = await self._xmpp.plugin["xep_0030"].get_info(
                jid=JID(jid), ifrom=self._xmpp.boundjid, timeout=self._timeout, local=False
            )
        except (IqError, IqTimeout) as exc:
            raise DiscoUnavailable(f"disco#info {jid}") from exc
        info = iq["disco_info"]
        return DiscoInfo(
            identities=frozenset((i[0], i[1]) for i in info["identities"]),
            features=frozenset(info["features"]),
        )

    async def items(self, jid: str) -> list[str]:
        try:
            iq = await self._xmpp.plugin["xep_0030"].get_items(
                jid=JID(jid), ifrom=self._xmpp.boundjid, timeout=self._timeout
            )
        except (IqError, IqTimeout) as exc:
            raise DiscoUnavailable(f"disco#items {jid}") from exc
        return [str(item[0]) for item in iq["disco_items"]["items"]]


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
        self._ledger = SlotLedger()
        self._quota_locks: dict[str, _SharedLock] = {}
        self.chat_types = ChatTypeResolver(
            _SlixDisco(self, cfg.xmpp.disco_timeout),
            cfg.xmpp.server_domain,
            cfg.xmpp.muc_domains,
            timeout=cfg.xmpp.disco_timeout,
            ttl=cfg.xmpp.disco_cache_ttl,
            ignore=[cfg.xmpp.component_jid],
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
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("stream_error", self._on_stream_error)
        self._publish_disco()

    # -- disco -----------------------------------------------------------------------

    async def _on_session_start(self, _event: Any) -> None:
        log.info(
            "component %s connected to %s:%d", self.boundjid, self.cfg.xmpp.host, self.cfg.xmpp.port
        )

    def _publish_disco(self) -> None:
        """identity ``store/file``, both upload features and their max-file-size forms.

        Published once: the static disco data outlives reconnections (and slixmpp 1.17's
        ``del_extended_info`` does not remove forms, so re-publishing would duplicate them).
        The static handlers are synchronous; their futures are already done.

        .. note:: go-sendxmpp reads ``max-file-size`` only when ``FORM_TYPE`` comes first.
        """
        disco = self.plugin["xep_0030"]
        jid = self.boundjid
        disco.add_identity(category="store", itype="file", name="HTTP File Upload", jid=jid)
        if self.cfg.upload.mode == "disabled":
            return  # hide the feature: clients then do not offer uploads at all
        forms = []
        for ns in (NS, NS_LEGACY):
            disco.add_feature(ns, jid=jid)
            form = self.plugin["xep_0004"].make_form(ftype="result")  # type: ignore[no-untyped-call]
            form.add_field(var="FORM_TYPE", ftype="hidden", value=ns)
            form.add_field(var="max-file-size", value=str(self.cfg.upload.max_file_size))
            forms.append(form)
        self.plugin["xep_0128"].add_extended_info(jid=jid, data=forms)

    def _on_stream_error(self, error: Any) -> None:
        log.warning(
            "XMPP server sent a stream error: %s %s", error["condition"], error["text"] or ""
        )

    # -- slots -----------------------------------------------------------------------

    async def on_slot_request(self, iq: Iq) -> None:
        """Answer a slot request (either namespace) with a slot or an error."""
        try:
            await self._issue_slot(iq)
        except UploadError as exc:
            self._refused(iq, exc)
        except Exception:
            log.exception("slot request from %s failed", iq["from"].bare)
            self._refused(iq, UploadError())

    def _refused(self, iq: Iq, exc: UploadError) -> None:
        self.metrics.inc("slots_refused", "Slot requests refused", {"reason": _reason(exc)})
        if isinstance(exc, FileTooLarge | QuotaExceeded):
            log.warning("slot refused for %s: %s", iq["from"].bare, exc.text)
        else:
            log.info("slot refused for %s: %s", iq["from"].bare, exc.text)
        self._reply_error(iq, exc)

    async def _issue_slot(self, iq: Iq) -> None:
        req = parse_slot_request(iq)
        requester = iq["from"].bare
        now = datetime.now(UTC)
        size = check_slot_request(self.cfg, requester, req.filename, req.size, now=now)
        target = await self.chat_types.classify(req.recipient)
        resource = new_resource()
        expires = int(time.time()) + self.cfg.upload.slot_lifetime
        if quotas_enabled(self.cfg):
            async with self._quota_lock(requester):
                check_quota(self.cfg, size, await self._usage(requester, now), now)
                self._ledger.add(requester, resource, size, expires)
        date, hour = self._allocator.allocate(target.chat_type, now)
        path = SlotPath(self.cfg.node.id, target.chat_type, date, hour, resource, req.filename)
        grant = UploadGrant(
            path=path,
            size=size,
            expires=expires,
            uploader=requester,
            recipient=target.to_jid,
            content_type=req.content_type[:CONTENT_TYPE_MAX],
        )
        base = self.cfg.http.public_url
        get_url = f"{base}/{path.url_path}"
        put_url = f"{get_url}?{urlencode(grant.query(self.cfg.http.secret))}"
        reply = iq.reply()  # type: ignore[no-untyped-call]
        if req.namespace == NS_LEGACY:
            reply["http_upload_legacy_slot"]["put"] = put_url
            reply["http_upload_legacy_slot"]["get"] = get_url
        else:
            # No <header>: the credential is in the URL (Gajim aborts on unknown headers,
            # several clients drop them).
            reply["http_upload_slot"]["put"]["url"] = put_url
            reply["http_upload_slot"]["get"]["url"] = get_url
        reply.send()
        self.metrics.inc("slots", "Upload slots handed out", {"chat_type": target.chat_type})
        log.info(
            "slot for %s: %d bytes, %s to %s, resource %s",
            requester,
            size,
            target.chat_type,
            target.to_jid or "-",
            resource,
        )

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

    @contextlib.asynccontextmanager
    async def _quota_lock(self, jid: str) -> AsyncIterator[None]:
        """Serialise one user's quota check and ledger update.

        Concurrent requests must not all pass on the same usage count. The lock lives
        while anyone holds or waits for it (reference count), so memory stays bounded.
        """
        entry = self._quota_locks.setdefault(jid, _SharedLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._quota_locks[jid]

    async def _usage(self, jid: str, now: datetime) -> Usage:
        """Uploads in AFT_LOG in the quota windows plus this process's pending slots.

        When AFT_LOG cannot answer, only the pending slots count (an audit outage must
        not stop transfers); that is logged.
        """
        pending = self._ledger.pending(jid)
        files = nbytes = 0
        try:
            async with asyncio.timeout(self.cfg.database.connect_timeout):
                if self.cfg.upload.files_per_hour:
                    files, _ = await self.audit.count_uploads(jid, hour_start(now))
                if self.cfg.upload.daily_bytes:
                    _, nbytes = await self.audit.count_uploads(jid, day_start(now))
                uploaded = [p.resource for p in pending if await self.audit.find_upload(p.resource)]
        except (AuditUnavailable, TimeoutError):
            log.warning("AFT_LOG unavailable: quota of %s counts pending slots only", jid)
            return combine_usage(0, 0, pending)
        if uploaded:
            self._ledger.settle(jid, uploaded)
            pending = [p for p in pending if p.resource not in uploaded]
        return combine_usage(files, nbytes, pending)

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
        """``url`` (a GET URL of ours) with a signed ticket naming bare ``jid``.

        URLs of the nodes in ``[cluster]`` are accepted too: tickets are signed with the
        shared ``[http] secret`` and any node verifies them.

        :raises InvalidRequest: not a GET URL under our public URL (or a cluster node's).
        """
        parts = urlsplit(url.strip())
        path = self._parse_get_path(parts.scheme, parts.netloc, parts.path)
        ticket = DownloadTicket(
            path=path, jid=jid, expires=int(time.time()) + self.cfg.download.ticket_lifetime
        )
        base = urlsplit(self._bases()[path.node])
        return urlunsplit(
            (
                base.scheme,
                base.netloc,
                f"{base.path}/{path.url_path}",
                urlencode(ticket.query(self.cfg.http.secret)),
                parts.fragment,
            )
        )

    def _bases(self) -> dict[str, str]:
        """Node id -> public base URL (without trailing slash), ours included."""
        nodes = {**self.cfg.cluster.nodes, self.cfg.node.id: self.cfg.http.public_url}
        return {node: url.rstrip("/") for node, url in nodes.items()}

    def _parse_get_path(self, scheme: str, netloc: str, path: str) -> SlotPath:
        for node, base_url in self._bases().items():
            base = urlsplit(base_url)
            prefix = f"{base.path}/{node}/"
            if (scheme.lower(), netloc.lower()) != (base.scheme.lower(), base.netloc.lower()):
                continue
            if not path.startswith(prefix):
                continue
            segments = path[len(base.path) + 1 :].split("/")
            if len(segments) != 6:
                break
            return SlotPath.parse(*(unquote(s) for s in segments))
        raise InvalidRequest("Not a download URL of this service")

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
        """Stop slixmpp's outgoing-stanza task (slixmpp leaves it pending otherwise)."""
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
) -> None:
    """Run the component until ``stop`` is set, reconnecting with exponential backoff.

    The delay starts at 0.5 s, doubles after each failed attempt (refused connection or
    refused handshake) up to ``[xmpp] reconnect_max_delay``, and starts over after a
    session that was accepted. ``on_ready`` is called with the component and ``started``
    is set after the first accepted session. Before connecting, the ``HH.n`` counts of
    this hour are read back from AFT_LOG (:meth:`UploadComponent.resume_directories`).
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

    delay = INITIAL_RECONNECT_DELAY
    try:
        while not stop.is_set():
            accepted = await xmpp.run_session(stop, on_start)
            if stop.is_set():
                break
            if accepted:
                delay = INITIAL_RECONNECT_DELAY
                log.warning("lost the connection to the XMPP server; reconnecting")
            wait = delay * random.uniform(0.9, 1.1)  # jitter: nodes do not reconnect in lockstep
            log.info("connecting to %s:%d again in %.1f s", cfg.xmpp.host, cfg.xmpp.port, wait)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await stop.wait()
            if not accepted:
                delay = min(delay * 2, cfg.xmpp.reconnect_max_delay)
    finally:
        await xmpp.close()
