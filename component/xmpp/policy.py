"""Slot policy, pure: may this user get a slot for this file? (like Prosody's may_upload).

Checks, in this order (authorization before anything about the file, as Prosody does):
mode ``disabled`` -> :class:`NotAllowed`; uploader's domain not in ``allowed_domains``
-> :class:`NotAllowed`; bad file name -> :class:`InvalidRequest`; size not a positive
integer -> :class:`InvalidRequest`; size over ``max_file_size`` -> :class:`FileTooLarge`;
quotas -> :class:`QuotaExceeded` with the moment the user may retry.

Quota windows are UTC clock windows: ``files_per_hour`` counts the current hour (retry at
the next full hour), ``daily_bytes`` the current day (retry at the next midnight). Usage
is what AFT_LOG says was uploaded in the window plus the slots this process handed out
that are still valid and not yet uploaded (:class:`SlotLedger`), so a user cannot get
around a quota by asking for many slots before uploading any.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from component.config import Config
from component.errors import FileTooLarge, InvalidRequest, NotAllowed, QuotaExceeded
from component.layout import check_filename

_SIZE_RE = re.compile(r"^[0-9]{1,20}$")  # digits only: no sign, no exponent, no hex


@dataclass(frozen=True, slots=True)
class Usage:
    """What a user has used in the current quota windows (uploads + pending slots)."""

    files_this_hour: int = 0
    bytes_today: int = 0


@functools.lru_cache(maxsize=16)
def _lowered(domains: tuple[str, ...]) -> frozenset[str]:
    """``domains`` lowercased, as a set (the configured tuple, so a handful of keys)."""
    return frozenset(d.lower() for d in domains)


def hour_start(now: datetime) -> datetime:
    """Start of the UTC hour of ``now`` (the ``files_per_hour`` window)."""
    return now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_start(now: datetime) -> datetime:
    """Start of the UTC day of ``now`` (the ``daily_bytes`` window)."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def quotas_enabled(cfg: Config) -> bool:
    """Whether any per-user quota is configured (else usage need not be counted)."""
    return bool(cfg.upload.daily_bytes or cfg.upload.files_per_hour)


def parse_size(size: str | int) -> int:
    """The slot size as an integer.

    :raises InvalidRequest: not a decimal integer, or not positive.
    """
    if isinstance(size, bool):
        raise InvalidRequest("Invalid size")
    if isinstance(size, str):
        if not _SIZE_RE.match(size):
            raise InvalidRequest("Invalid size: expected a positive integer")
        size = int(size)
    if size <= 0:
        raise InvalidRequest("Invalid size: expected a positive integer")
    return size


class SlotPolicy:
    """:func:`check_slot_request` without quotas, its settings read once.

    The component checks every slot request with one of these.

    :param cfg: the configuration (``[upload] mode``, ``max_file_size``, the allowed
        domains).
    """

    __slots__ = ("_disabled", "_domains", "_max_size")

    def __init__(self, cfg: Config) -> None:
        self._disabled = cfg.upload.mode == "disabled"
        self._domains = _lowered(cfg.allowed_domains)
        self._max_size = cfg.upload.max_file_size

    def check(self, requester: str, filename: str, size: str | int) -> int:
        """As :func:`check_slot_request` without ``usage``: the size as an integer.

        :raises NotAllowed: uploads disabled, or the requester's domain is not allowed.
        :raises InvalidRequest: bad file name or size.
        :raises FileTooLarge: ``size`` exceeds ``[upload] max_file_size``.
        """
        if self._disabled:
            raise NotAllowed("File upload is disabled")
        domain = requester.rpartition("@")[2].partition("/")[0].lower()
        if domain not in self._domains:
            raise NotAllowed(f"Users of {domain} may not upload files here")
        check_filename(filename)
        # Plain ASCII digits, as _SIZE_RE asks, without the regular expression; anything
        # else (and 0) goes to parse_size, for its verdict and its message.
        n = (
            int(size)
            if type(size) is str and size.isascii() and size.isdigit() and len(size) <= 20
            else 0
        )
        if n <= 0:
            n = parse_size(size)
        if n > self._max_size:
            raise FileTooLarge(n, self._max_size)
        return n


def check_slot_request(
    cfg: Config,
    requester: str,
    filename: str,
    size: str | int,
    usage: Usage | None = None,
    now: datetime | None = None,
) -> int:
    """Decide whether ``requester`` (a bare JID) may upload ``filename`` of ``size`` bytes.

    :param usage: the requester's usage in the current windows; quotas are checked only
        when it is given (the caller counts usage only for requests that pass the rest).
    :returns: the size as an integer.
    :raises NotAllowed: uploads disabled, or the requester's domain is not allowed.
    :raises InvalidRequest: bad file name or size.
    :raises FileTooLarge: ``size`` exceeds ``[upload] max_file_size``.
    :raises QuotaExceeded: ``files_per_hour`` or ``daily_bytes`` would be exceeded.
    """
    n = SlotPolicy(cfg).check(requester, filename, size)
    if usage is not None:
        check_quota(cfg, n, usage, now)
    return n


def check_quota(cfg: Config, size: int, usage: Usage, now: datetime | None = None) -> None:
    """Check the per-user quotas for one more file of ``size`` bytes.

    :raises QuotaExceeded: with ``retry_at`` the start of the next UTC hour (files) or
        day (bytes).
    """
    now = now or datetime.now(UTC)
    per_hour, per_day = cfg.upload.files_per_hour, cfg.upload.daily_bytes
    if per_hour and usage.files_this_hour + 1 > per_hour:
        raise QuotaExceeded(
            hour_start(now) + timedelta(hours=1),
            f"Quota reached. You can only upload {per_hour} files per hour",
        )
    if per_day and usage.bytes_today + size > per_day:
        raise QuotaExceeded(
            day_start(now) + timedelta(days=1),
            f"Quota reached. You can only upload {per_day} bytes per day",
        )


@dataclass(frozen=True, slots=True)
class PendingSlot:
    """A slot handed out and not yet known to be uploaded."""

    resource: str
    size: int
    expires: float  # time.time() seconds


class SlotLedger:
    """Slots issued by this process per bare JID, until they expire or are uploaded.

    Memory is bounded by the slot lifetime: a user's expired entries are dropped when
    the user is looked up, everyone's at most once a minute when a slot is added.
    """

    PRUNE_EVERY = 60.0

    def __init__(self) -> None:
        self._slots: dict[str, dict[str, PendingSlot]] = {}
        self._pruned = 0.0

    def add(
        self, jid: str, resource: str, size: int, expires: float, now: float | None = None
    ) -> None:
        """Remember a slot just issued to ``jid``."""
        now = time.time() if now is None else now
        if now - self._pruned > self.PRUNE_EVERY:
            self._pruned = now
            for other in list(self._slots):
                self._prune(other, now)
        self._slots.setdefault(jid, {})[resource] = PendingSlot(resource, size, expires)

    def pending(self, jid: str, now: float | None = None) -> list[PendingSlot]:
        """``jid``'s slots still valid at ``now`` (expired ones are forgotten)."""
        self._prune(jid, time.time() if now is None else now)
        return list(self._slots.get(jid, {}).values())

    def settle(self, jid: str, resources: Iterable[str]) -> None:
        """Forget slots that were uploaded (AFT_LOG counts them from now on)."""
        slots = self._slots.get(jid)
        if slots is None:
            return
        for r in resources:
            slots.pop(r, None)
        if not slots:
            del self._slots[jid]

    def _prune(self, jid: str, now: float) -> None:
        slots = self._slots.get(jid)
        if slots is None:
            return
        live = {r: s for r, s in slots.items() if s.expires >= now}
        if live:
            self._slots[jid] = live
        else:
            del self._slots[jid]

    def __len__(self) -> int:
        return sum(len(s) for s in self._slots.values())


def combine_usage(files_this_hour: int, bytes_today: int, pending: Iterable[PendingSlot]) -> Usage:
    """Uploads counted in AFT_LOG plus pending slots (each one file, its size in bytes)."""
    pend = list(pending)
    return Usage(
        files_this_hour=files_this_hour + len(pend),
        bytes_today=bytes_today + sum(p.size for p in pend),
    )
