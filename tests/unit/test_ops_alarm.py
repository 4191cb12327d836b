"""Disk-space alarm: gauges, one message per crossing, hysteresis, retry, run loop."""

from __future__ import annotations

import asyncio

import pytest

from component.config import Config
from component.metrics import Metrics
from httpd.ops.alarm import HYSTERESIS, DiskAlarm
from httpd.repository import DiskUsage
from tests.fixtures.config import ConfigFactory

GB = 10**9


class ControlledDisk:
    """A repository test double: only disk_usage, with a free percentage we set."""

    def __init__(self, free_percent: float, total: int = 100 * GB) -> None:
        self.total = total
        self.free_percent = free_percent
        self.fail = False
        self.calls = 0
        self.called = asyncio.Event()

    async def wait_calls(self, n: int, within: float = 5.0) -> None:
        """Wait until disk_usage() has been called ``n`` times in all."""
        async with asyncio.timeout(within):
            while self.calls < n:
                self.called.clear()
                await self.called.wait()

    async def disk_usage(self) -> DiskUsage:
        """Free space as set by the test, or an error when ``fail`` is set."""
        self.calls += 1
        self.called.set()
        if self.fail:
            raise OSError("statvfs failed")
        return DiskUsage(total=self.total, free=int(self.total * self.free_percent / 100))


class Inbox:
    """Collects notify() texts; can be told to fail."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.fail = False

    async def __call__(self, text: str) -> None:
        if self.fail:
            raise ConnectionError("component offline")
        self.messages.append(text)


def make(
    config_factory: ConfigFactory, disk: ControlledDisk, threshold: float = 10, **alarm: object
) -> tuple[DiskAlarm, Metrics, Inbox, Config]:
    cfg = config_factory(
        alarm={"disk_free_min_percent": threshold, "admins": ["admin@localhost"], **alarm}
    )
    metrics, inbox = Metrics(), Inbox()
    return DiskAlarm(cfg, disk, metrics, inbox), metrics, inbox, cfg  # type: ignore[arg-type]


async def test_gauges_follow_free_space(config_factory: ConfigFactory) -> None:
    """disk_free_bytes, disk_free_percent and disk_alarm are set on every check."""
    disk = ControlledDisk(42.0)
    alarm, metrics, inbox, _ = make(config_factory, disk)
    await alarm.check_once()
    assert metrics.value("disk_free_bytes") == 42 * GB
    assert metrics.value("disk_free_percent") == pytest.approx(42.0)
    assert metrics.value("disk_alarm") == 0
    assert inbox.messages == []
    assert "mft_disk_free_percent 42" in metrics.render()


async def test_one_message_per_crossing(
    config_factory: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Falling below the threshold notifies once; staying below does not repeat."""
    disk = ControlledDisk(50.0)
    alarm, metrics, inbox, _ = make(config_factory, disk)
    await alarm.check_once()
    disk.free_percent = 4.0
    for _ in range(5):
        await alarm.check_once()
    assert len(inbox.messages) == 1
    assert "low on disk space" in inbox.messages[0]
    assert "4.0% free" in inbox.messages[0] and "node_1" in inbox.messages[0]
    assert metrics.value("disk_alarm") == 1
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "disk alarm" in r.message]
    assert len(warnings) == 1


async def test_recovery_needs_hysteresis(config_factory: ConfigFactory) -> None:
    """Back at the threshold is not enough; threshold + 1 point clears it, once."""
    disk = ControlledDisk(5.0)
    alarm, metrics, inbox, _ = make(config_factory, disk)
    await alarm.check_once()
    disk.free_percent = 10.0 + HYSTERESIS / 2  # above the threshold, inside the band
    await alarm.check_once()
    assert alarm.alarmed and len(inbox.messages) == 1
    disk.free_percent = 10.0 + HYSTERESIS
    await alarm.check_once()
    await alarm.check_once()
    assert not alarm.alarmed
    assert metrics.value("disk_alarm") == 0
    assert len(inbox.messages) == 2 and "recovered" in inbox.messages[1]


async def test_flapping_at_threshold_sends_no_storm(config_factory: ConfigFactory) -> None:
    """Free space wobbling around the threshold gives a single alarm message."""
    disk = ControlledDisk(10.2)
    alarm, _, inbox, _ = make(config_factory, disk)
    for pct in (9.9, 10.1, 9.8, 10.4, 9.95, 10.6):
        disk.free_percent = pct
        await alarm.check_once()
    assert len(inbox.messages) == 1


async def test_undelivered_message_is_retried(config_factory: ConfigFactory) -> None:
    """When the admins cannot be reached the message waits for the next check."""
    disk = ControlledDisk(3.0)
    alarm, _, inbox, _ = make(config_factory, disk)
    inbox.fail = True
    await alarm.check_once()
    assert inbox.messages == [] and alarm.alarmed
    inbox.fail = False
    await alarm.check_once()
    await alarm.check_once()
    assert len(inbox.messages) == 1 and "low on disk space" in inbox.messages[0]


async def test_disabled_at_zero_still_exports_gauges(config_factory: ConfigFactory) -> None:
    """disk_free_min_percent = 0: no alarm even when nearly full; gauges still set."""
    disk = ControlledDisk(0.5)
    alarm, metrics, inbox, _ = make(config_factory, disk, threshold=0)
    await alarm.check_once()
    assert not alarm.enabled and not alarm.alarmed
    assert inbox.messages == []
    assert metrics.value("disk_free_percent") == pytest.approx(0.5)
    assert metrics.value("disk_alarm") == 0


async def test_no_admins_no_messages(config_factory: ConfigFactory) -> None:
    """Without admins the alarm is logged and exported but nobody is messaged."""
    disk = ControlledDisk(1.0)
    alarm, metrics, inbox, _ = make(config_factory, disk, admins=[])
    await alarm.check_once()
    assert metrics.value("disk_alarm") == 1 and inbox.messages == []


async def test_repository_error_keeps_state(config_factory: ConfigFactory) -> None:
    """A failed free-space read counts an error and neither raises nor clears the alarm."""
    disk = ControlledDisk(1.0)
    alarm, metrics, inbox, _ = make(config_factory, disk)
    await alarm.check_once()
    disk.fail = True
    assert await alarm.check_once() is None
    assert alarm.alarmed and metrics.value("repository_errors") == 1
    assert len(inbox.messages) == 1


async def test_run_checks_periodically_and_stops(config_factory: ConfigFactory) -> None:
    """run() checks at once and every interval, and returns promptly when stopped."""
    disk = ControlledDisk(50.0)
    alarm, _, _, _ = make(config_factory, disk, check_interval=0.1)
    stop = asyncio.Event()
    task = asyncio.create_task(alarm.run(stop))
    await disk.wait_calls(3)
    stop.set()
    async with asyncio.timeout(1):
        await task


async def test_run_survives_notify_crash(config_factory: ConfigFactory) -> None:
    """An exception inside a check does not end the loop."""
    disk = ControlledDisk(1.0)
    alarm, _, inbox, _ = make(config_factory, disk, check_interval=0.1)
    inbox.fail = True
    stop = asyncio.Event()
    task = asyncio.create_task(alarm.run(stop))
    await disk.wait_calls(2)
    inbox.fail = False
    async with asyncio.timeout(5):
        while not inbox.messages:
            disk.called.clear()
            await disk.called.wait()
    stop.set()
    async with asyncio.timeout(1):
        await task
    assert len(inbox.messages) == 1


async def test_without_component_only_logs_and_exports(config_factory: ConfigFactory) -> None:
    """notify=None (mft run --only httpd): the alarm is raised and exported, nobody messaged."""
    cfg = config_factory(alarm={"disk_free_min_percent": 10, "admins": ["admin@localhost"]})
    metrics = Metrics()
    alarm = DiskAlarm(cfg, ControlledDisk(2.0), metrics, None)  # type: ignore[arg-type]
    await alarm.check_once()
    assert alarm.alarmed and metrics.value("disk_alarm") == 1
