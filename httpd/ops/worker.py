"""One HTTP worker process of ``mft run`` (``[http] workers`` above 1).

The supervisor (:mod:`httpd.ops.workers`) starts ``python -m httpd.ops.worker`` and
writes a pickled :class:`WorkerSpec` to its stdin, then keeps that pipe open: the
worker stops gracefully when the pipe reaches end-of-file (the supervisor stopped it or
died), on SIGTERM and on SIGINT. It opens its own audit log (its own spool file) and
repository, listens on the shared port with ``SO_REUSEPORT``, and writes
:data:`READY` to stdout once it listens. Its metrics go to the service's
multiprocess directory, so ``/metrics`` from any worker shows the whole service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import sys
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from component.cli import quiet_libraries, stderr_logging
from component.config import Config
from component.metrics import Metrics
from httpd.app import serve_http
from httpd.budget import MemoryBudget
from httpd.handlers import publish_budget
from httpd.ops.placement import place_worker
from httpd.ops.util import EXIT_OK, EXIT_UNAVAILABLE, open_stores, run_until_stopped

log = logging.getLogger(__name__)

READY = b"ready\n"
# How often the worker's memory-budget gauges are refreshed for the other workers'
# /metrics (the worker answering a scrape refreshes its own at once).
BUDGET_GAUGE_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What one worker needs: the configuration (its port and spool already its own)."""

    cfg: Config
    index: int
    metrics_dir: Path
    log_level: int
    verbose: int


async def _stop_at_eof(stop: asyncio.Event) -> None:
    """Set ``stop`` when stdin (the supervisor's pipe) reaches end-of-file."""
    loop = asyncio.get_running_loop()
    eof = asyncio.Event()
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            eof.set()

    loop.add_reader(fd, readable)
    try:
        await eof.wait()
        log.info("the supervisor closed its pipe; stopping")
        stop.set()
    finally:
        loop.remove_reader(fd)


async def _report_ready(started: asyncio.Event) -> None:
    """Tell the supervisor the worker listens."""
    await started.wait()
    os.write(sys.stdout.fileno(), READY)


async def _publish_budget(budget: MemoryBudget, metrics: Metrics, stop: asyncio.Event) -> None:
    """Keep this worker's memory-budget gauges current until ``stop``."""
    while not stop.is_set():
        publish_budget(metrics, budget)
        try:
            async with asyncio.timeout(BUDGET_GAUGE_INTERVAL):
                await stop.wait()
        except TimeoutError:
            pass


async def serve_worker(spec: WorkerSpec) -> int:
    """Serve HTTP until told to stop; the exit code (1: a store or the port failed)."""
    metrics = Metrics.shared(spec.metrics_dir)
    cfg = spec.cfg
    budget = MemoryBudget(cfg.http.memory_budget)
    # Before the stores open: the audit log's thread is started pinned with the loop.
    placement = place_worker(spec.index)
    small_jobs: ThreadPoolExecutor | None = None
    if placement is not None:
        asyncio.get_running_loop().set_default_executor(placement.spread_executor())
        small_jobs = placement.pinned_executor()
        log.info("HTTP worker %d on CPU %d", spec.index, placement.cpu)
    try:
        return await _serve(spec, metrics, budget, small_jobs)
    finally:
        if small_jobs is not None:
            await asyncio.get_running_loop().run_in_executor(None, small_jobs.shutdown)


async def _serve(
    spec: WorkerSpec, metrics: Metrics, budget: MemoryBudget, small_jobs: Executor | None
) -> int:
    """:func:`serve_worker` once placed: open the stores, serve, close them."""
    cfg = spec.cfg
    opened = await open_stores(cfg, metrics, budget, small_jobs)
    if isinstance(opened, int):
        return opened
    audit, repo = opened
    stop = asyncio.Event()
    started = asyncio.Event()
    servers = [
        serve_http(cfg, repo, audit, metrics, stop, started, budget, reuse_port=True),
        _report_ready(started),
        _stop_at_eof(stop),
        _publish_budget(budget, metrics, stop),
    ]
    failures = await run_until_stopped(servers, stop, audit, repo, budget)
    for exc in failures:
        log.error("HTTP worker failed: %s", exc, exc_info=exc)
    return EXIT_UNAVAILABLE if failures else EXIT_OK


def main() -> int:
    """Read the spec from stdin, set up logging like ``mft run``, serve."""
    spec = pickle.load(sys.stdin.buffer)
    if not isinstance(spec, WorkerSpec):
        print("mft worker: stdin did not carry a WorkerSpec", file=sys.stderr)
        return 2
    fmt = f"%(asctime)s %(levelname)s http-{spec.index} %(name)s: %(message)s"
    with stderr_logging(spec.log_level, fmt):
        quiet_libraries(spec.verbose)
        try:
            return asyncio.run(serve_worker(spec))
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    # Run as httpd.ops.worker, not __main__: the pickled spec names that module's class.
    from httpd.ops.worker import main as worker_main

    sys.exit(worker_main())
