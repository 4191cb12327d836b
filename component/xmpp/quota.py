"""Per-user upload quotas: AFT_LOG usage plus this process's pending slots, one user at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from component.audit import AuditLog
from component.config import Config
from component.errors import AuditUnavailable
from component.xmpp.policy import SlotLedger, Usage, combine_usage, day_start, hour_start

log = logging.getLogger(__name__)


@dataclass
class _SharedLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class QuotaGate:
    """Usage of each user for the quota check, and the lock that serialises it.

    :param cfg: the configuration (quota windows, database timeout).
    :param audit: AFT_LOG, read for completed uploads.
    """

    def __init__(self, cfg: Config, audit: AuditLog) -> None:
        self.cfg = cfg
        self.audit = audit
        self.ledger = SlotLedger()
        self._quota_locks: dict[str, _SharedLock] = {}

    @contextlib.asynccontextmanager
    async def lock(self, jid: str) -> AsyncIterator[None]:
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

    async def usage(self, jid: str, now: datetime) -> Usage:
        """Uploads in AFT_LOG in the quota windows plus this process's pending slots.

        When AFT_LOG cannot answer, only the pending slots count (an audit outage must
        not stop transfers); that is logged.
        """
        pending = self.ledger.pending(jid)
        files = nbytes = 0
        try:
            async with asyncio.timeout(self.cfg.database.connect_timeout):
                if self.cfg.upload.files_per_hour:
                    files, _ = await self.audit.count_uploads(jid, hour_start(now))
                if self.cfg.upload.daily_bytes:
                    _, nbytes = await self.audit.count_uploads(jid, day_start(now))
                # One query for all pending slots, not one each: this runs under the lock.
                uploaded = (
                    await self.audit.uploaded_among([p.resource for p in pending])
                    if pending
                    else set()
                )
        except (AuditUnavailable, TimeoutError):
            log.warning("AFT_LOG unavailable: quota of %s counts pending slots only", jid)
            return combine_usage(0, 0, pending)
        if uploaded:
            self.ledger.settle(jid, uploaded)
            pending = [p for p in pending if p.resource not in uploaded]
        return combine_usage(files, nbytes, pending)
