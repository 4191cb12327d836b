"""An audit log that never loses a row: the database, or the durable spool while it is away.

:class:`SpooledAuditLog` wraps a database back-end (MariaDB or PostgreSQL).
``record()`` inserts directly while the spool is empty; when the database fails, the row
goes to the spool (fsync'd) and ``record()`` still succeeds. While the spool holds rows,
new rows queue behind them, and one background task delivers them in order, in batches,
with exponential back-off. Only a spool that cannot be written fails ``record()``.

Legal holds and purge marks are NOT spooled: they go straight to the database and fail
with :class:`~component.errors.AuditUnavailable` while it is away. A hold that only one
node's spool knew would not stop another node's purge, and a purge must not delete what
it could not record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from component.audit.base import (
    AuditLog,
    AuditQuery,
    AuditRecord,
    Hold,
    jid_matches,
    upload_and_share_finder_of,
)
from component.audit.spool import SpoolEntry, SpoolFile
from component.backoff import Backoff
from component.errors import AuditUnavailable
from component.metrics import Metrics

log = logging.getLogger(__name__)


class SpoolTarget(AuditLog, Protocol):
    """A database back-end the spool can deliver to."""

    async def deliver(self, entries: Sequence[SpoolEntry]) -> None:
        """Store ``entries`` in order, each exactly once, in one transaction.

        :raises AuditUnavailable: nothing was stored.
        """

    async def prune_delivered(self) -> None:
        """Forget old delivered event ids."""


class SpooledAuditLog:
    """:class:`~component.audit.AuditLog` over ``inner`` with a durable spool at ``spool_path``."""

    def __init__(
        self,
        inner: SpoolTarget,
        spool_path: Path,
        metrics: Metrics,
        *,
        batch_size: int = 200,
        retry_min: float = 0.25,
        retry_max: float = 30.0,
        recent_uploads: int = 4096,
    ) -> None:
        self._inner = inner
        # The database's one-statement GET lookup, if it has one (asked once, not per GET).
        self._inner_both = upload_and_share_finder_of(inner)
        self._spool = SpoolFile(spool_path)
        self._metrics = metrics
        self._batch_size = batch_size
        self._retry = Backoff(retry_min, retry_max)
        # POST rows this process wrote, by resource: GET rows copy their columns without
        # a query, and still can while the database is away.
        self._recent: OrderedDict[str, AuditRecord] = OrderedDict()
        self._recent_max = recent_uploads
        # The first SHARE row this process wrote per resource, for GET rows during outages.
        self._shares: OrderedDict[str, AuditRecord] = OrderedDict()
        self._wake = asyncio.Event()  # rows to deliver
        self._kick = asyncio.Event()  # cut a back-off short (flush, close)
        self._drained = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._delivered = 0
        self._opened = False
        self._spooling = False  # an outage is under way: warned once, until drained

    @property
    def spool_path(self) -> Path:
        """The spool file."""
        return self._spool.path

    @property
    def spooled(self) -> int:
        """Rows waiting in the spool."""
        return len(self._spool)

    async def open(self) -> None:
        """Open the spool and the database, then deliver rows a previous run left.

        :raises AuditUnavailable: the database cannot be reached (the service must not
            start) or the spool cannot be used.
        """
        try:
            await self._spool.open()
        except OSError as exc:
            raise AuditUnavailable(
                f"cannot use the AFT_LOG spool {self._spool.path}: {exc}"
            ) from exc
        try:
            await self._inner.open()
        except BaseException:
            await self._spool.close()
            raise
        self._opened = True
        self._update_gauge()
        if len(self._spool):
            self._spooling = True
            log.warning(
                "AFT_LOG spool %s holds %d rows from a previous run; delivering them",
                self._spool.path,
                len(self._spool),
            )
            self._wake.set()
        else:
            self._drained.set()
        task = asyncio.create_task(self._deliver_forever(), name="AFT_LOG spool delivery")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop the delivery task, try one last delivery (bounded), close everything.

        Rows still spooled stay in the file and are delivered at the next start.
        """
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if len(self._spool) and self._opened:
            # One last attempt, no retries: a database that is down fails at once.
            with contextlib.suppress(AuditUnavailable, TimeoutError):
                async with asyncio.timeout(5):
                    await self._deliver_all()
        if len(self._spool):
            log.warning(
                "AFT_LOG: %d rows stay in the spool %s until the next start",
                len(self._spool),
                self._spool.path,
            )
        self._opened = False
        await self._inner.close()
        await self._spool.close()

    async def flush(self) -> None:
        """Wait until the spool is empty, retrying the database now (bound it by a timeout)."""
        while len(self._spool):
            self._kick.set()
            self._wake.set()
            await self._drained.wait()

    async def ping(self) -> None:
        """Check the database answers.

        :raises AuditUnavailable: it does not (rows are being spooled).
        """
        await self._inner.ping()

    async def server_version(self) -> str:
        """The database's product and version."""
        return await self._inner.server_version()

    async def record(self, rec: AuditRecord) -> None:
        """Store ``rec`` in the database, or durably in the spool.

        :raises AuditUnavailable: the database failed and the spool cannot be written.
        """
        rec = rec.clipped()
        if not len(self._spool):
            try:
                await self._inner.record(rec)
            except AuditUnavailable as exc:
                if not self._spooling:
                    self._spooling = True
                    log.warning(
                        "AFT_LOG database unreachable (%s): spooling rows in %s until it returns",
                        exc.text,
                        self._spool.path,
                    )
                await self._to_spool(SpoolEntry(rec, maybe_index=getattr(exc, "maybe_index", None)))
        else:
            await self._to_spool(SpoolEntry(rec))
        if rec.method == "POST":
            self._remember(rec)
        elif rec.method == "SHARE" and rec.filename not in self._shares:
            self._shares[rec.filename] = rec
            while len(self._shares) > self._recent_max:
                self._shares.popitem(last=False)

    async def _to_spool(self, entry: SpoolEntry) -> None:
        try:
            await self._spool.append(entry)
        except OSError as exc:
            log.error(
                "AFT_LOG spool %s cannot be written: %s", self._spool.path, exc, exc_info=True
            )
            raise AuditUnavailable() from exc
        self._drained.clear()
        self._update_gauge()
        self._wake.set()

    def _remember(self, rec: AuditRecord) -> None:
        self._recent[rec.filename] = rec
        self._recent.move_to_end(rec.filename)
        while len(self._recent) > self._recent_max:
            self._recent.popitem(last=False)

    def _update_gauge(self) -> None:
        self._metrics.set("spool_rows", value=len(self._spool))

    async def _deliver_all(self) -> None:
        """Deliver batches until the spool is empty.

        :raises AuditUnavailable: a batch failed (it stays at the head of the spool).
        """
        while len(self._spool):
            batch = self._spool.head(self._batch_size)
            await self._inner.deliver(batch)
            await self._spool.remove_head(len(batch))
            self._delivered += len(batch)
            self._update_gauge()
        self._spooling = False
        if self._delivered:
            log.info("AFT_LOG spool drained: %d rows delivered", self._delivered)
            self._delivered = 0
            with contextlib.suppress(AuditUnavailable):
                await self._inner.prune_delivered()

    async def _deliver_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._deliver_all()
            except Exception as exc:  # keep trying whatever went wrong; rows wait safely
                if not isinstance(exc, AuditUnavailable):
                    log.exception("AFT_LOG spool delivery failed unexpectedly")
                log.info(
                    "AFT_LOG spool: %d rows wait, retrying in %.1f s (%s)",
                    len(self._spool),
                    self._retry.delay,
                    exc,
                )
                # flush() and close() cut the wait short.
                await self._retry.wait(self._kick)
                self._kick.clear()
                self._wake.set()
                continue
            self._retry.reset()
            # Only when empty right now: a row appended meanwhile has set _wake again.
            if not len(self._spool):
                self._drained.set()

    async def find_upload(self, resource: str) -> AuditRecord | None:
        """The POST row of ``resource``: from the spool, this process's recent uploads,
        or the database.

        :raises AuditUnavailable: not known locally and the database did not answer.
        """
        local = self._local_upload(resource)
        return local if local is not None else await self._inner.find_upload(resource)

    def _local_upload(self, resource: str) -> AuditRecord | None:
        for entry in reversed(tuple(self._spool)):
            if entry.record.method == "POST" and entry.record.filename == resource:
                return entry.record
        return self._recent.get(resource)

    async def find_upload_and_share(
        self, resource: str
    ) -> tuple[AuditRecord | None, AuditRecord | None]:
        """:meth:`find_upload`, and :meth:`find_first_share` when that row names no
        recipient: one round trip to the database when the POST row is not known here.

        A failed SHARE lookup after a POST row found here leaves the recipient to that row
        (logged): the download's row still gets the upload's columns.

        :raises AuditUnavailable: the POST row is not known here and the database did not
            answer.
        """
        up = self._local_upload(resource)
        if up is None and self._inner_both is not None:
            up, share = await self._inner_both.find_upload_and_share(resource)
            if up is not None and not up.to_jid and share is None:
                share = self._spooled_share(resource)  # newer than any in the database
            return up, share
        if up is None:
            up = await self._inner.find_upload(resource)
        if up is None or up.to_jid:
            return up, None
        try:
            return up, await self.find_first_share(resource)
        except AuditUnavailable as exc:
            log.warning("AFT_LOG share lookup failed for %s: %s", resource, exc)
            return up, None

    async def find_first_share(self, resource: str) -> AuditRecord | None:
        """The oldest SHARE row of ``resource``: from the database, else the spool (rows
        there are newer than any in the database), else this process's own shares.

        :raises AuditUnavailable: the database did not answer and nothing is known locally.
        """
        try:
            found = await self._inner.find_first_share(resource)
        except AuditUnavailable:
            found = self._shares.get(resource)
            if found is None and not self._spooled_share(resource):
                raise
        if found is not None:
            return found
        return self._spooled_share(resource)

    def _spooled_share(self, resource: str) -> AuditRecord | None:
        for entry in self._spool:
            if entry.record.method == "SHARE" and entry.record.filename == resource:
                return entry.record
        return None

    async def uploaded_among(self, resources: Sequence[str]) -> set[str]:
        """Which of ``resources`` have a POST row: those in the spool or this process's
        recent uploads, and, in one query, the database's answer for the rest.

        :raises AuditUnavailable: some are not known locally and the database did not answer.
        """
        spooled = {e.record.filename for e in self._spool if e.record.method == "POST"}
        known = {r for r in resources if r in spooled or r in self._recent}
        rest = [r for r in resources if r not in known]
        return known | (await self._inner.uploaded_among(rest) if rest else set())

    async def query(self, q: AuditQuery) -> Sequence[AuditRecord]:
        """Rows in the database matching ``q`` (spooled rows appear once delivered).

        :raises AuditUnavailable: the database did not answer.
        """
        return await self._inner.query(q)

    async def count_uploads(self, jid: str, since: datetime) -> tuple[int, int]:
        """``(files, bytes)`` uploaded by bare ``jid`` since ``since``, spooled rows included.

        :raises AuditUnavailable: the database did not answer.
        """
        files, size = await self._inner.count_uploads(jid, since)
        for entry in self._spool:
            r = entry.record
            if r.method == "POST" and r.date_time >= since and jid_matches(r.jid, jid):
                files += 1
                size += r.file_size
        return files, size

    async def count_by_chat_type(self, since: datetime, node_id: str) -> dict[str, int]:
        """POST rows of ``node_id`` since ``since`` per chat type, spooled rows included.

        :raises AuditUnavailable: the database did not answer.
        """
        counts = await self._inner.count_by_chat_type(since, node_id)
        for entry in self._spool:
            r = entry.record
            if r.method == "POST" and r.node_id == node_id and r.date_time >= since:
                counts[r.chat_type] = counts.get(r.chat_type, 0) + 1
        return counts

    async def add_hold(self, hold: Hold) -> int:
        """Store a hold in the database (never spooled).

        :raises AuditUnavailable: the database did not take it.
        """
        return await self._inner.add_hold(hold)

    async def list_holds(self, *, include_released: bool = False) -> Sequence[Hold]:
        """Holds in the database.

        :raises AuditUnavailable: the database did not answer.
        """
        return await self._inner.list_holds(include_released=include_released)

    async def release_hold(
        self, hold_id: int, *, by: str, reason: str = "", at: datetime | None = None
    ) -> Hold | None:
        """Release a hold in the database (never spooled).

        :raises AuditUnavailable: the database did not answer.
        """
        return await self._inner.release_hold(hold_id, by=by, reason=reason, at=at)

    async def mark_purged(
        self, resources: Sequence[str], *, node_id: str, by: str, at: datetime | None = None
    ) -> None:
        """Record purge marks in the database (never spooled).

        :raises AuditUnavailable: the marks were not stored.
        """
        await self._inner.mark_purged(resources, node_id=node_id, by=by, at=at)

    async def purged(self, resources: Sequence[str]) -> set[str]:
        """Which of ``resources`` have a purge mark in the database.

        :raises AuditUnavailable: the database did not answer.
        """
        return await self._inner.purged(resources)
