"""The memory budget: FIFO waits, cancellation, the cap, and the idle call."""

from __future__ import annotations

import asyncio

import pytest

from component.config import DEFAULT_MEMORY_BUDGET
from component.errors import ConfigError
from httpd.budget import MemoryBudget, release_free_memory
from tests.fixtures.config import ConfigFactory


async def test_acquire_waits_until_release_and_serves_in_order() -> None:
    """A full budget makes acquire() wait; releases serve waiters first come, first served."""
    budget = MemoryBudget(100, on_idle=None)
    assert await budget.acquire(80) == 80
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await budget.acquire(n)
        order.append(name)

    big = asyncio.create_task(take("big", 60))
    await asyncio.sleep(0)
    small = asyncio.create_task(take("small", 10))  # fits now, but may not jump the queue
    await asyncio.sleep(0)
    assert order == [] and budget.waiting == 2
    assert not budget.try_acquire(1)  # nobody jumps the queue either
    budget.release(80)
    await asyncio.gather(big, small)
    assert order == ["big", "small"] and budget.in_use == 70


async def test_cancelled_waiter_leaves_the_queue_and_the_next_is_served() -> None:
    """A cancelled acquire() takes nothing and lets the one behind it through."""
    budget = MemoryBudget(100, on_idle=None)
    await budget.acquire(90)
    first = asyncio.create_task(budget.acquire(50))
    second = asyncio.create_task(budget.acquire(10))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == 10
    with pytest.raises(asyncio.CancelledError):
        await first
    assert budget.in_use == 100 and budget.waiting == 0


async def test_cancelled_after_grant_gives_the_bytes_back() -> None:
    """Granted and cancelled before it resumed: the bytes return to the budget."""
    budget = MemoryBudget(100, on_idle=None)
    await budget.acquire(100)
    waiter = asyncio.create_task(budget.acquire(40))
    await asyncio.sleep(0)
    budget.release(100)  # grants the waiter's 40 at once
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert budget.in_use == 0


async def test_request_larger_than_the_budget_is_cut_to_it() -> None:
    """A request over the whole budget runs alone instead of waiting forever."""
    budget = MemoryBudget(100, on_idle=None)
    async with budget.hold(1000) as taken:
        assert taken == 100 and budget.in_use == 100
    assert budget.in_use == 0 and budget.peak == 100


async def test_idle_call_once_unused() -> None:
    """After use, the budget calls on_idle once it has been unused for idle_delay."""
    idle = asyncio.Event()
    budget = MemoryBudget(100, on_idle=idle.set, idle_delay=0.01)
    async with budget.hold(10):
        pass
    async with asyncio.timeout(5):
        await idle.wait()


async def test_over_release_never_widens_the_budget() -> None:
    """Releasing more than was taken is logged and clamped, not credited."""
    budget = MemoryBudget(100, on_idle=None)
    budget.release(50)
    assert budget.in_use == 0
    assert budget.try_acquire(100) and not budget.try_acquire(1)


def test_release_free_memory_runs_on_glibc() -> None:
    """malloc_trim is found on this (glibc) machine."""
    assert release_free_memory() is True


def test_budget_needs_a_byte() -> None:
    """A budget of zero bytes is refused."""
    with pytest.raises(ValueError):
        MemoryBudget(0)


def test_config_memory_budget_default_and_bounds(config_factory: ConfigFactory) -> None:
    """[http] memory_budget defaults to 64 MiB and refuses less than 1 MiB."""
    assert config_factory().http.memory_budget == DEFAULT_MEMORY_BUDGET == 64 * 1024 * 1024
    assert config_factory(http={"memory_budget": 1024 * 1024}).http.memory_budget == 1024 * 1024
    for bad in (0, 1024 * 1024 - 1, -5):
        with pytest.raises(ConfigError, match="memory_budget"):
            config_factory(http={"memory_budget": bad})


def test_try_acquire_can_leave_room() -> None:
    """``leave`` keeps that many bytes free: read-ahead stops at half the budget."""
    budget = MemoryBudget(100, on_idle=None)
    assert budget.try_acquire(50, leave=50)
    assert not budget.try_acquire(1, leave=50)
    assert budget.try_acquire(50)
