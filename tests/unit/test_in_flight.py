"""InFlight: requests and the work they leave behind, counted for a graceful stop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from httpd.appkeys import InFlight


async def test_detached_work_counts_until_done_and_failures_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stop waits for detached work; one that fails is logged and uncounted."""
    in_flight = InFlight()
    release = asyncio.Event()

    async def row() -> None:
        await release.wait()

    async def broken() -> None:
        raise RuntimeError("database gone")

    in_flight.detach(row(), "GET row")
    in_flight.detach(broken(), "broken row")
    assert in_flight.count == 2
    idle = asyncio.create_task(in_flight.idle())
    await asyncio.wait({idle}, timeout=0.05)
    assert not idle.done()
    release.set()
    async with asyncio.timeout(5):
        await idle
    await in_flight.detached_done(within=1)
    assert in_flight.count == 0
    assert any(
        r.levelno == logging.ERROR and "broken row failed" in r.getMessage() for r in caplog.records
    )


async def test_detached_done_gives_up_after_its_limit() -> None:
    """Work that never ends does not hold a stop past ``within``."""
    in_flight = InFlight()
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    in_flight.detach(stuck(), "stuck")
    async with asyncio.timeout(5):
        await in_flight.detached_done(within=0.01)
    assert in_flight.count == 1
    never.set()  # clean up: let it end
    await in_flight.detached_done(within=5)
    assert in_flight.count == 0
