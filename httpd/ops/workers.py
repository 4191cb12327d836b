"""The HTTP worker processes of ``mft run`` with ``[http] workers`` above 1.

One Python process has one core; HTTP transfers are CPU-bound in Python (request
parsing, hashing, SSH crypto), so the HTTP side runs in ``workers`` processes that
listen on the same port with ``SO_REUSEPORT`` (the kernel spreads new connections over
them). The component stays one XMPP connection in the supervising process.

What stays consistent across processes, and how:

- AFT_LOG: each worker writes its own rows through its own connection (SQLite takes
  one writer at a time with its file lock; MariaDB and PostgreSQL many). The
  supervisor opens the audit log first, so the schema exists before a worker starts.
- The durable spool: one file per worker (:func:`worker_spool_path`), because a spool
  is locked by the process that uses it. Worker ``i`` delivers what its predecessor
  left; spools no worker of this run takes (a run with more workers left them) are
  delivered by ``mft run`` at start (:func:`deliver_orphan_spools`).
- ``/metrics``: prometheus_client's multiprocess mode (:mod:`component.metrics`), in a
  directory made for this run and removed after it.
- Quotas: decided by the component from AFT_LOG, as before.
- Memory: ``[http] memory_budget`` is per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
import re
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from component.audit import open_audit_log
from component.audit.spooled import SpooledAuditLog
from component.backoff import Backoff
from component.config import Config
from component.errors import AuditUnavailable
from component.metrics import Metrics, forget_process
from httpd.ops.util import first_or_stop
from httpd.ops.worker import READY, WorkerSpec

log = logging.getLogger(__name__)

WORKER_MODULE = "httpd.ops.worker"
# A worker that dies is started again after a delay that doubles up to this.
RESTART_FIRST, RESTART_MAX = 0.5, 30.0
# A worker that ran this long before it died restarts after RESTART_FIRST again.
STABLE_AFTER = 60.0
# Beyond the shutdown grace, how long a stopping worker gets before it is killed.
STOP_MARGIN = 5.0


class WorkerFailed(Exception):
    """An HTTP worker could not start (its own log lines say why)."""


def worker_spool_path(spool: Path, index: int) -> Path:
    """The spool file of worker ``index`` beside the service's ``spool`` file."""
    return spool.with_name(f"{spool.stem}.http{index}{spool.suffix}")


def _worker_spools(spool: Path) -> Iterator[tuple[int, Path]]:
    """(index, path) of every worker spool file beside ``spool``."""
    pattern = re.compile(re.escape(spool.stem) + r"\.http(\d+)" + re.escape(spool.suffix) + "$")
    if not spool.parent.is_dir():
        return
    for path in spool.parent.iterdir():
        found = pattern.match(path.name)
        if found:
            yield int(found.group(1)), path


def worker_config(cfg: Config, index: int, port: int) -> Config:
    """``cfg`` for worker ``index``: the resolved port, the worker's own spool file."""
    http = dataclasses.replace(cfg.http, port=port)
    database = dataclasses.replace(
        cfg.database, spool_path=str(worker_spool_path(cfg.spool_path, index))
    )
    return dataclasses.replace(cfg, http=http, database=database)


async def deliver_orphan_spools(cfg: Config, metrics: Metrics, in_use: int) -> None:
    """Deliver the worker spools no worker of this run will take, then remove them.

    :param in_use: workers of this run (0 when HTTP runs in this process or not at
        all): worker ``i`` takes spool ``i`` itself; any other is an orphan, left by a
        run with more workers.
    :raises AuditUnavailable: the database cannot take them now (the rows stay).
    """
    if cfg.database.scheme == "sqlite":
        return  # no spool
    for index, path in sorted(_worker_spools(cfg.spool_path)):
        if index <= in_use:
            continue  # that worker takes its own
        if path.stat().st_size == 0:
            path.unlink(missing_ok=True)
            continue
        audit = open_audit_log(worker_config(cfg, index, cfg.http.port), metrics)
        assert isinstance(audit, SpooledAuditLog)  # every back-end but SQLite's
        await audit.open()  # starts delivering what the file holds
        try:
            async with asyncio.timeout(cfg.database.connect_timeout + 30):
                await audit.flush()
        except TimeoutError:
            raise AuditUnavailable(f"rows in {path} could not be delivered yet") from None
        finally:
            await audit.close()
        log.info("delivered the rows of a former HTTP worker's spool %s", path)
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def reserved_port(bind: str, port: int) -> Iterator[int]:
    """The port the workers share: ``port``, or for 0 one the kernel picks, held by a
    bound (not listening) ``SO_REUSEPORT`` socket until the workers have stopped."""
    if port != 0:
        yield port
        return
    family, kind, proto, _name, addr = socket.getaddrinfo(
        bind, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        yield int(sock.getsockname()[1])


class HttpWorkers:
    """Starts ``[http] workers`` HTTP processes, restarts one that dies, stops them all.

    :param metrics_dir: the run's prometheus_client multiprocess directory.
    :param log_level: the root logger's level, for the workers' logging.
    :param verbose: ``mft -v`` count (which libraries log at INFO).
    """

    def __init__(self, cfg: Config, metrics_dir: Path, *, log_level: int, verbose: int) -> None:
        self.cfg = cfg
        self.metrics_dir = metrics_dir
        self.log_level = log_level
        self.verbose = verbose

    async def run(self, stop: asyncio.Event, started: asyncio.Event) -> None:
        """Run the workers until ``stop``; ``started`` is set once every one listens.

        :raises WorkerFailed: a worker exited before it listened, at start.
        """
        count = self.cfg.http.workers
        with reserved_port(self.cfg.http.bind, self.cfg.http.port) as port:
            ready = [asyncio.Event() for _ in range(count)]
            try:
                async with asyncio.TaskGroup() as tg:
                    for index in range(1, count + 1):
                        tg.create_task(self._keep(index, port, stop, ready[index - 1]))
                    tg.create_task(self._all_ready(ready, started, count, port))
            except* WorkerFailed as group:
                raise group.exceptions[0] from None  # the first to fail says it best

    async def _all_ready(
        self, ready: list[asyncio.Event], started: asyncio.Event, count: int, port: int
    ) -> None:
        for event in ready:
            await event.wait()
        log.info("%d HTTP worker processes listen on port %d", count, port)
        started.set()

    async def _keep(self, index: int, port: int, stop: asyncio.Event, ready: asyncio.Event) -> None:
        """Worker ``index``: started, and started again when it dies, until ``stop``."""
        backoff = Backoff(RESTART_FIRST, RESTART_MAX, jitter=0.2)
        spec = WorkerSpec(
            worker_config(self.cfg, index, port),
            index,
            self.metrics_dir,
            self.log_level,
            self.verbose,
        )
        while not stop.is_set():
            proc = await self._spawn(spec)
            loop = asyncio.get_running_loop()
            began = loop.time()
            try:
                listening = await self._wait_listening(proc, stop)
                if not listening and not stop.is_set() and not ready.is_set():
                    raise WorkerFailed(
                        f"HTTP worker {index} exited with code {proc.returncode} before it"
                        " listened (its log lines above say why)"
                    )
                ready.set()
                code = await self._wait_exit(proc, stop)
            finally:
                await self._stop(proc, index)
            if stop.is_set():
                return
            if loop.time() - began >= STABLE_AFTER:
                backoff.reset()
            delay = backoff.next_delay()
            log.error(
                "HTTP worker %d (pid %d) exited with code %s; starting a new one in %.1fs",
                index,
                proc.pid,
                code,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()

    async def _spawn(self, spec: WorkerSpec) -> asyncio.subprocess.Process:
        """Start one worker and hand it its spec; stdin stays open (closing it stops it)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # the service's own stderr: one log
        )
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps(spec))
        await proc.stdin.drain()
        log.debug("HTTP worker %d started, pid %d", spec.index, proc.pid)
        return proc

    async def _wait_listening(self, proc: asyncio.subprocess.Process, stop: asyncio.Event) -> bool:
        """True once the worker says it listens; False if it exits first or ``stop``."""
        assert proc.stdout is not None
        line = await first_or_stop(proc.stdout.readline(), stop)
        return line is not None and line.result() == READY

    async def _wait_exit(self, proc: asyncio.subprocess.Process, stop: asyncio.Event) -> int | None:
        """The worker's exit code, or None when ``stop`` came first."""
        assert proc.stdout is not None
        # Drain stdout (a library might print) so the worker never blocks on it.
        drain = asyncio.ensure_future(proc.stdout.read())
        try:
            exited = await first_or_stop(proc.wait(), stop)
        finally:
            drain.cancel()
        return None if exited is None else exited.result()

    async def _stop(self, proc: asyncio.subprocess.Process, index: int) -> None:
        """Stop the worker gracefully (end of its stdin, then SIGTERM), kill it late."""
        if proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            limit = self.cfg.http.shutdown_grace + STOP_MARGIN
            try:
                async with asyncio.timeout(limit):
                    await proc.wait()
            except TimeoutError:
                log.warning("HTTP worker %d (pid %d) did not stop; killing it", index, proc.pid)
                self._kill(proc)
                await proc.wait()
            except asyncio.CancelledError:
                # Another worker failed at start: no transfers to let finish here.
                self._kill(proc)
                await proc.wait()
                raise
        forget_process(self.metrics_dir, proc.pid)

    @staticmethod
    def _kill(proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def metrics_directory(base: Path | None = None) -> Path:
    """A fresh directory for this run's multiprocess metric files (private to the user)."""
    return Path(tempfile.mkdtemp(prefix=f"mft-metrics-{os.getpid()}-", dir=base))
