"""The one back-off helper of the retry loops (component, SFTP session, audit spool)."""

from __future__ import annotations

import asyncio
import time

import pytest

from component.backoff import Backoff


def test_delays_double_up_to_the_maximum_and_reset() -> None:
    """0.5, 1, 2, 4 then the cap; reset() starts over."""
    b = Backoff(0.5, 4.0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay() == 0.5


def test_jitter_stays_within_its_band() -> None:
    """Each delay is within ±jitter of the nominal one."""
    b = Backoff(1.0, 1.0, jitter=0.1)
    assert all(0.9 <= b.next_delay() <= 1.1 for _ in range(200))


def test_bad_bounds_are_refused() -> None:
    """A first delay of 0 or above the maximum is a programming error."""
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)


async def test_wake_cuts_a_wait_short_but_not_below_min_wait() -> None:
    """A set event ends a long wait early, after min_wait; the event stays set."""
    wake = asyncio.Event()
    wake.set()
    b = Backoff(60.0, 60.0, min_wait=0.05)
    started = time.monotonic()
    async with asyncio.timeout(10):
        assert await b.wait(wake) == 60.0
    assert time.monotonic() - started >= 0.04  # the rate limit held
    assert wake.is_set() and b.delay == 60.0


async def test_wait_without_event_sleeps_the_delay() -> None:
    """Without an event the whole (short) delay passes, then the next one doubles."""
    b = Backoff(0.01, 1.0)
    assert await b.wait() == 0.01
    assert b.delay == 0.02
