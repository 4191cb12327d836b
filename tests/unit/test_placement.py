"""httpd.ops.placement: an HTTP worker pinned to one CPU, chosen by its index, with
threads that inherit the pin and a default executor whose threads may use every CPU.

Each test pins a thread of its own, never the test runner's main thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from httpd.ops.placement import Placement, place_worker
from httpd.repository import open_repository
from httpd.repository.sftp import SftpRepository
from tests.fixtures.config import ConfigFactory

T = TypeVar("T")
ALLOWED = frozenset(os.sched_getaffinity(0))


def in_new_thread(fn: Callable[[], T]) -> T:
    """``fn()`` run in a thread of its own (its affinity changes die with it)."""
    out: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return out[0]


def mask() -> frozenset[int]:
    """The calling thread's CPUs."""
    return frozenset(os.sched_getaffinity(0))


needs_two = pytest.mark.skipif(len(ALLOWED) < 2, reason="one CPU: nothing to choose from")


@needs_two
@pytest.mark.parametrize("index", [1, 2, len(ALLOWED) + 1])
def test_worker_index_picks_the_cpu_round_the_allowed_ones(index: int) -> None:
    def placed() -> tuple[Placement | None, frozenset[int], frozenset[int]]:
        where = place_worker(index)
        child = in_new_thread(mask)  # a thread it starts afterwards
        return where, mask(), child

    where, own, child = in_new_thread(placed)
    cpu = sorted(ALLOWED)[(index - 1) % len(ALLOWED)]
    assert where == Placement(cpu, ALLOWED)
    assert own == child == {cpu}


@needs_two
def test_executors_pinned_and_spread() -> None:
    def threads() -> tuple[frozenset[int], frozenset[int]]:
        where = place_worker(2)
        assert where is not None
        with where.pinned_executor() as pinned, where.spread_executor() as spread:
            return pinned.submit(mask).result(), spread.submit(mask).result()

    pinned, spread = in_new_thread(threads)
    assert pinned == {sorted(ALLOWED)[1]}
    assert spread == ALLOWED


def test_one_cpu_allowed_leaves_the_thread_alone() -> None:
    def on_one() -> tuple[Placement | None, frozenset[int]]:
        os.sched_setaffinity(0, {min(ALLOWED)})
        return place_worker(2), mask()

    assert in_new_thread(on_one) == (None, {min(ALLOWED)})


def test_a_refused_pin_leaves_the_worker_unpinned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The kernel answering EINVAL (the CPU left the container's set) is no crash."""

    def refuse(pid: int, cpus: object) -> None:
        raise OSError(22, "Invalid argument")

    before = in_new_thread(mask)
    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    with caplog.at_level("WARNING"):
        got = in_new_thread(lambda: (place_worker(1), mask()))
    assert got == (None, before)
    if len(ALLOWED) >= 2:
        assert "HTTP worker 1 left unpinned: [Errno 22] Invalid argument" in caplog.text


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned-worker", "unpinned"])
def test_sftp_uploads_are_hashed_on_the_loop_of_a_pinned_worker(
    config_factory: ConfigFactory, pinned: bool
) -> None:
    """open_repository gets the pinned executor only in a worker pinned to one CPU: the
    sftp:// repository then hashes on that worker's loop, not in a thread on another CPU."""
    cfg = config_factory(repository={"url": "sftp://mft@files.example.com/srv/mft"})
    with ThreadPoolExecutor(1) as small_jobs:
        repo = open_repository(cfg, small_jobs=small_jobs if pinned else None)
    assert isinstance(repo, SftpRepository)
    assert repo._hash_on_loop is pinned
