"""Disk-space alarm on the repository (seed: the external file server disk-space alarm).

Every ``[alarm] check_interval`` seconds :class:`DiskAlarm` reads the repository's free
space (local statvfs for ``file://``, SFTP statvfs for ``sftp://``), exports it as the
gauges ``disk_free_bytes``, ``disk_free_percent`` and ``disk_alarm``, and on a
*crossing* logs one WARNING and sends one chat message to the admins.

Hysteresis: the alarm raises when free space falls below ``disk_free_min_percent`` and
clears only when it is back at or above that threshold plus :data:`HYSTERESIS` (one
percentage point), so a disk hovering at the threshold does not flap. A message that
could not be delivered (component offline) is retried at the next check; a newer state
replaces an undelivered older one. With ``disk_free_min_percent = 0`` the gauges are
still kept up to date but no alarm is ever raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from component.config import Config
from component.metrics import Metrics
from httpd.ops.util import human_bytes
from httpd.repository import DiskUsage, Repository

log = logging.getLogger(__name__)

HYSTERESIS = 1.0  # percentage points above the threshold needed to clear the alarm

Notify = Callable[[str], Awaitable[None]]


class DiskAlarm:
    """Watches the repository's free space; one message per crossing, not per check."""

    def __init__(
        self, cfg: Config, repo: Repository, metrics: Metrics, notify: Notify | None
    ) -> None:
        """
        :param cfg: the configuration (``[alarm]``, ``[node]``, ``[repository]``).
        :param repo: an opened repository; only :meth:`Repository.disk_usage` is used.
        :param metrics: the process's registry for the three gauges.
        :param notify: sends a chat message to every admin, e.g.
            ``UploadComponent.notify_admins``; ``None`` where no component runs
            (``mft run --only httpd``): log line and gauges only.
        """
        self._cfg = cfg
        self._repo = repo
        self._metrics = metrics
        self._notify = notify
        self._threshold = cfg.alarm.disk_free_min_percent
        self.alarmed = False
        self._pending: str | None = None

    @property
    def enabled(self) -> bool:
        """False when ``disk_free_min_percent`` is 0."""
        return self._threshold > 0

    async def check_once(self) -> DiskUsage | None:
        """Read free space, update the gauges, raise or clear the alarm on a crossing.

        Errors reading the repository are logged and counted in ``repository_errors``;
        they neither raise nor clear the alarm.

        :returns: the usage read, or ``None`` if it could not be read.
        """
        try:
            usage = await self._repo.disk_usage()
        except Exception:
            log.warning("disk alarm: cannot read the repository's free space", exc_info=True)
            self._metrics.inc("repository_errors")
            await self._deliver()
            return None
        pct = usage.free_percent
        self._metrics.set("disk_free_bytes", value=usage.free)
        self._metrics.set("disk_free_percent", value=pct)
        if self.enabled:
            if not self.alarmed and pct < self._threshold:
                self._transition(usage, low=True)
            elif self.alarmed and pct >= self._threshold + HYSTERESIS:
                self._transition(usage, low=False)
        self._metrics.set("disk_alarm", value=1 if self.alarmed else 0)
        await self._deliver()
        return usage

    def _transition(self, usage: DiskUsage, *, low: bool) -> None:
        """Raise (``low``) or clear the alarm: one log line, one queued message."""
        self.alarmed = low
        log.warning(
            "disk alarm %s: repository %s has %.1f%% free (%s), threshold %g%%",
            "raised" if low else "cleared",
            self._cfg.repository.host,
            usage.free_percent,
            human_bytes(usage.free),
            self._threshold,
        )
        self._pending = self._message(usage, low=low)

    def _message(self, usage: DiskUsage, *, low: bool) -> str:
        """The chat text for the admins."""
        where = f"xmpp-mft {self._cfg.node.id}: repository on {self._cfg.repository.host}"
        amount = (
            f"{usage.free_percent:.1f}% free"
            f" ({human_bytes(usage.free)} of {human_bytes(usage.total)})"
        )
        if low:
            return (
                f"{where} is low on disk space: {amount}, below the alarm threshold of"
                f" {self._threshold:g}%. Delete old files (mft purge) or grow the partition."
            )
        return f"{where} disk space recovered: {amount}."

    async def _deliver(self) -> None:
        """Send the pending message, if any; keep it for the next check if that fails."""
        if self._pending is None:
            return
        if not self._cfg.alarm.admins or self._notify is None:
            self._pending = None  # nobody to tell: the log line and the gauge remain
            return
        try:
            await self._notify(self._pending)
        except Exception as exc:
            log.warning("disk alarm: could not message the admins (%r); will retry", exc)
            return
        self._pending = None

    async def run(self, stop: asyncio.Event) -> None:
        """Check now and every ``check_interval`` seconds until ``stop`` is set."""
        interval = max(self._cfg.alarm.check_interval, 0.1)  # 0 would spin
        while not stop.is_set():
            try:
                await self.check_once()
            except Exception:  # never let the watcher die; the next round may work
                log.exception("disk alarm: check failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
            except TimeoutError:
                pass
