"""``mft run`` with ``[http] workers = 2``: HTTP worker processes on one port.

Real processes: ``mft run --only httpd`` as a child, real uploads over fresh TCP
connections (so the kernel spreads them over the workers), real /metrics scrapes,
a worker killed with SIGKILL, a port taken by someone else, and a spool left by a
worker of an earlier, larger configuration delivered to MariaDB.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

from component.audit.base import AuditQuery, AuditRecord
from component.audit.spool import SpoolEntry, SpoolFile
from component.audit.sqlite import SqliteAuditLog
from component.config import load_config
from component.dburl import parse_mysql_url
from component.metrics import Metrics
from httpd.ops.workers import deliver_orphan_spools, worker_config, worker_spool_path
from tests.fixtures.config import ConfigFactory
from tests.fixtures.mariadb import MariaDB
from tests.integration.memory_load import ROOT, Service, service, write_config
from tests.unit.httpd_harness import make_slot

DEADLINE = 30.0


def children(pid: int) -> set[int]:
    """The direct child processes of ``pid``."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def metric_directories(pid: int) -> list[Path]:
    """The multiprocess metric directories of service ``pid``."""
    return list(Path(tempfile.gettempdir()).glob(f"mft-metrics-{pid}-*"))


def cpus_allowed(pid: int) -> frozenset[int]:
    """The CPUs process ``pid``'s main thread may run on."""
    return frozenset(os.sched_getaffinity(pid))


def assert_one_cpu_each(workers: set[int]) -> None:
    """Each worker pinned to a CPU of its own, among those the test may use (all of
    them where only one is: nothing to choose)."""
    allowed = frozenset(os.sched_getaffinity(0))
    masks = sorted((cpus_allowed(w) for w in workers), key=sorted)
    if len(allowed) < 2:
        assert masks == [allowed] * len(workers)
    else:
        assert masks == [frozenset({c}) for c in sorted(allowed)[: len(workers)]]


def running(pid: int) -> bool:
    """Whether process ``pid`` still exists."""
    return Path(f"/proc/{pid}").exists()


async def until(what: str, condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (another process's state) until true; fail after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def log_text(svc: Service) -> str:
    """Everything the service and its workers logged so far."""
    return (Path(svc.cfg.source).parent / "mft.log").read_text(errors="replace")


async def upload(svc: Service, index: int) -> None:
    """One upload on a connection of its own; 201 or the test fails."""
    body = f"file {index}\n".encode() * 100
    slot = make_slot(svc.cfg, len(body), f"w-{index}.txt")
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(f"http://127.0.0.1:{svc.port}", connector=connector) as http,
        http.put(slot.put_url, data=body) as resp,
    ):
        assert resp.status == 201, await resp.text()


async def uploads_counted(svc: Service) -> float:
    """``mft_uploads_total`` summed over labels, from one scrape on a new connection."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        http.get(f"http://127.0.0.1:{svc.port}/metrics") as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("mft_uploads_total")
    )


async def test_two_workers_share_the_port_the_log_and_the_metrics(tmp_path: Path) -> None:
    """Both workers serve; every scrape counts every upload; a killed worker is replaced
    and its counts stay; SIGTERM stops all of them with 0 and removes the metric files."""
    cfg_path = write_config(tmp_path, {"url": f"file://{tmp_path}/repo"}, {"workers": 2})
    async with service(cfg_path) as svc:
        await until("both workers", lambda: "2 HTTP worker processes listen" in log_text(svc))
        workers = children(svc.pid)
        assert len(workers) == 2
        assert_one_cpu_each(workers)
        await asyncio.gather(*(upload(svc, i) for i in range(24)))
        # The access log names the worker: the kernel gave both some of the connections.
        # aiohttp writes the line after the response, so it may come a moment after.
        await until(
            "both workers in the access log",
            lambda: all(
                f'{w} aiohttp.access: 127.0.0.1 "PUT' in log_text(svc) for w in ("http-1", "http-2")
            ),
        )
        assert [await uploads_counted(svc) for _ in range(6)] == [24.0] * 6

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        await until("the restart", lambda: "exited with code -9" in log_text(svc))
        await until(
            "a new worker",
            lambda: len(children(svc.pid)) == 2 and victim not in children(svc.pid),
        )
        await until("the new worker listening", lambda: log_text(svc).count("HTTP server on") >= 3)
        assert_one_cpu_each(children(svc.pid))  # the new one took the CPU of the killed one
        await asyncio.gather(*(upload(svc, i) for i in range(24, 30)))
        assert [await uploads_counted(svc) for _ in range(6)] == [30.0] * 6

        metric_dirs = metric_directories(svc.pid)
        assert len(metric_dirs) == 1
        last_workers = children(svc.pid)
        svc.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE):
            code = await svc.proc.wait()
        assert code == 0, log_text(svc)[-3000:]
        assert metric_directories(svc.pid) == []
        assert all(not running(pid) for pid in last_workers)
        assert "stopped cleanly" in log_text(svc)
    rows = await _posts(cfg_path)
    assert rows == 30


async def _posts(cfg_path: Path) -> int:
    """POST rows in the stopped service's SQLite AFT_LOG."""
    audit = SqliteAuditLog(load_config(cfg_path))
    await audit.open()
    try:
        return sum(r.method == "POST" for r in await audit.query(AuditQuery()))
    finally:
        await audit.close()


async def test_a_worker_that_cannot_listen_stops_the_start(tmp_path: Path) -> None:
    """The port held by another program (no SO_REUSEPORT): `mft run` exits 1 and says
    which worker failed; the worker's own line names the bind error."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        cfg_path = write_config(
            tmp_path,
            {"url": f"file://{tmp_path}/repo"},
            {"workers": 2, "port": port, "public_url": f"http://127.0.0.1:{port}"},
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "component", "run", "--only", "httpd", "-c", str(cfg_path),
            cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        async with asyncio.timeout(DEADLINE):
            out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 1, text
    assert "before it listened" in text
    assert "address already in use" in text.lower()
    assert "Traceback" not in text.split("mft: stopped:")[-1]


async def test_spool_of_a_former_worker_is_delivered(
    config_factory: ConfigFactory, mariadb: MariaDB, mariadb_url: str
) -> None:
    """A spool left by worker 3 of an earlier 3-worker run reaches MariaDB exactly once
    and its file is removed; worker 1's own spool is left for worker 1 until a run with
    no workers delivers it too."""
    cfg = config_factory(database={"url": mariadb_url, "connect_timeout": 3.0}, http={"workers": 2})
    row = AuditRecord(
        jid="alice@example.org",
        to_jid="",
        method="POST",
        filename="n/a",
        real_filename="left.txt",
        file_type="text/plain",
        chat_type="im",
        file_server="file:///x",
        file_size=5,
        date_time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        node_id="node_1",
    )
    for index in (1, 3):
        spool = SpoolFile(worker_spool_path(cfg.spool_path, index))
        await spool.open()
        await spool.append(SpoolEntry(row))
        await spool.close()
    await deliver_orphan_spools(cfg, Metrics(), in_use=2)
    assert not worker_spool_path(cfg.spool_path, 3).exists()
    assert worker_spool_path(cfg.spool_path, 1).stat().st_size > 0
    assert worker_config(cfg, 1, 1234).spool_path == worker_spool_path(cfg.spool_path, 1)
    # With HTTP back in one process, worker 1's spool is an orphan too.
    await deliver_orphan_spools(cfg, Metrics(), in_use=0)
    assert not worker_spool_path(cfg.spool_path, 1).exists()
    database = parse_mysql_url(cfg.database.url).database
    conn = mariadb.root()
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT REAL_FILENAME FROM `{database}`.AFT_LOG")
            assert [r[0] for r in cur.fetchall()] == ["left.txt", "left.txt"]
    finally:
        conn.close()
