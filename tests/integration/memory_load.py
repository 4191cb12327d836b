"""Concurrent uploads then downloads against ``mft run`` as its own process, with its RSS.

Shared by ``tests/integration/test_memory_budget.py`` and ``benchmarks/load_memory.py``.
Every file has its own content (a random MiB rotated by the file's index), so a download
that returned another file's bytes, or bytes out of order, is caught.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from component.config import Config, load_config
from component.servers.childproc import die_with_parent
from tests.fixtures.common import free_port, wait_for_port_async
from tests.fixtures.config import make_raw_config, toml_text
from tests.unit.httpd_harness import Slot, make_slot

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024
CHUNK = 256 * 1024
_BASE = os.urandom(MIB)


def rss_kib(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of a process in KiB, from /proc/PID/status."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


def _pattern(index: int) -> bytes:
    """Two periods of file ``index``'s 1 MiB pattern (a slice never wraps)."""
    k = (index * 7919) % MIB
    one = _BASE[k:] + _BASE[:k]
    return one + one


async def _body(index: int, size: int) -> AsyncIterator[bytes]:
    """File ``index``: its pattern repeated to ``size`` bytes, sent in CHUNK pieces."""
    pattern, sent = _pattern(index), 0
    while sent < size:
        n = min(CHUNK, size - sent)
        start = sent % MIB
        yield pattern[start : start + n]
        sent += n


@dataclass
class Service:
    """One ``mft run --only httpd`` child: its config, port and process."""

    cfg: Config
    port: int
    proc: asyncio.subprocess.Process

    @property
    def pid(self) -> int:
        """The service's process id."""
        return self.proc.pid

    def slot(self, size: int, index: int) -> Slot:
        """A signed slot for file ``index``."""
        return make_slot(self.cfg, size, f"load-{index}.bin")


def write_config(base: Path, repository: dict[str, Any], http: dict[str, Any]) -> Path:
    """An mft.toml under ``base`` for an HTTP-only node on ``repository``, one process
    (its RSS is what is measured; the budget is per worker process)."""
    port = free_port()
    raw = make_raw_config(
        base,
        http={"port": port, "public_url": f"http://127.0.0.1:{port}", "workers": 1, **http},
        repository=repository,
        upload={"max_file_size": 1024 * MIB},
    )
    path = base / "mft.toml"
    path.write_text(toml_text(raw))
    return path


@contextlib.asynccontextmanager
async def service(cfg_path: Path, code: Path = ROOT) -> AsyncIterator[Service]:
    """``mft run --only httpd`` from the source tree ``code``, stopped (SIGTERM) after."""
    cfg = load_config(cfg_path)
    env = {**os.environ, "PYTHONPATH": str(code)}
    with (cfg_path.parent / "mft.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "component", "run", "--only", "httpd", "-c", str(cfg_path),
            cwd=code, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            preexec_fn=die_with_parent(),
        )  # fmt: skip
    try:
        await wait_for_port_async(cfg.http.port, within=30)
        yield Service(cfg, cfg.http.port, proc)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _put(http: aiohttp.ClientSession, svc: Service, slot: Slot, index: int) -> None:
    headers = {"Content-Length": str(slot.size), "Content-Type": "application/octet-stream"}
    async with http.put(slot.put_url, data=_body(index, slot.size), headers=headers) as resp:
        assert resp.status == 201, (resp.status, await resp.text())


async def _get(http: aiohttp.ClientSession, slot: Slot, index: int) -> None:
    pattern, got = _pattern(index), 0
    async with http.get(slot.get_url) as resp:
        assert resp.status == 200, resp.status
        async for chunk in resp.content.iter_chunked(CHUNK):
            start = got % MIB
            if chunk != pattern[start : start + len(chunk)]:
                raise AssertionError(f"file {index}: wrong bytes at offset {got}")
            got += len(chunk)
    assert got == slot.size, (index, got)


@dataclass
class LoadResult:
    """What one load round measured (RSS in KiB, times in seconds)."""

    idle: int
    peak: int
    after: int
    upload_s: float
    download_s: float


async def run_load(svc: Service, n: int, size: int) -> tuple[float, float]:
    """``n`` concurrent PUTs of ``size`` bytes, then ``n`` concurrent GETs, all checked.

    :returns: seconds for the uploads and for the downloads.
    """
    slots = [svc.slot(size, i) for i in range(n)]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(
        f"http://127.0.0.1:{svc.port}", connector=connector, timeout=timeout
    ) as http:
        t0 = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for i, slot in enumerate(slots):
                tg.create_task(_put(http, svc, slot, i))
        t1 = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for i, slot in enumerate(slots):
                tg.create_task(_get(http, slot, i))
        t2 = time.monotonic()
    return t1 - t0, t2 - t1


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Poll ``condition`` (a file, a log line, /proc) until true.

    :raises TimeoutError: naming ``what``, after ``within`` seconds.
    """
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {within}s: {what}")
        await asyncio.sleep(0.05)  # polling state outside this process, with a deadline


async def settle(pid: int, below_kib: int, within: float) -> int:
    """Poll VmRSS until it is at most ``below_kib`` or ``within`` seconds pass; the last value."""
    with contextlib.suppress(TimeoutError):
        await until(lambda: rss_kib(pid)[0] <= below_kib, within, "RSS back near idle")
    return rss_kib(pid)[0]


async def measure(svc: Service, n: int, size: int, settle_s: float, margin_kib: int) -> LoadResult:
    """Idle RSS, the load, its peak (VmHWM), and RSS once back within ``margin_kib`` of idle
    (or after ``settle_s`` seconds)."""
    idle, _ = rss_kib(svc.pid)
    up, down = await run_load(svc, n, size)
    _, peak = rss_kib(svc.pid)
    after = await settle(svc.pid, idle + margin_kib, settle_s)
    return LoadResult(idle, peak, after, up, down)


@contextlib.contextmanager
def git_tree(ref: str, into: Path) -> Iterator[Path]:
    """A detached worktree of ``ref`` at ``into`` (removed afterwards)."""
    import subprocess

    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(into), ref], check=True
    )
    try:
        yield into
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(into)], check=False
        )
