"""Large ``curl -T`` PUTs into a ``file://`` repository: wall time and CPU per thread.

Each checkout (this one, and every ``--baseline DIR``) serves the HTTP application in a
child process of its own (SQLite audit log, the process's memory budget, as a worker of
``mft run`` does); rounds interleave the checkouts. Per PUT it prints MB/s, the CPU
seconds of the server's event loop and of its worker threads (utime+stime from
``/proc/PID/task``), curl's CPU, the CPU the whole machine spent meanwhile (``/proc/stat``:
kernel writeback included) and, with ``--get``, a GET right after::

    python benchmarks/bigput.py [--size 256M] [--rounds 3] [--get] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

# The child: ``bigput.py --serve CHECKOUT BASE`` serves CHECKOUT's app on BASE and answers
# "slot SIZE" lines on stdin with "PUT_URL GET_URL" (the secret stays in the child).
SERVE = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from aiohttp import web
from component.audit.sqlite import SqliteAuditLog
from component.config import parse_config
from component.metrics import Metrics
from httpd.app import make_app, make_runner
from httpd.budget import MemoryBudget
from httpd.repository import FileRepository
from tests.fixtures.common import free_port
from tests.fixtures.config import make_raw_config
from tests.unit.httpd_harness import make_slot

async def main() -> None:
    try:  # as serve_http() does in mft run; a checkout from before it has no allocator
        from httpd.allocator import keep_socket_reads_in_heap
        keep_socket_reads_in_heap()
    except ImportError:
        pass
    base = Path(sys.argv[2])
    cfg = parse_config(make_raw_config(base), source=str(base / "mft.toml"))
    budget = MemoryBudget(cfg.http.memory_budget)
    repo, audit = FileRepository(cfg.repository.path, budget=budget), SqliteAuditLog(cfg)
    await repo.open()
    await audit.open()
    runner = make_runner(make_app(cfg, repo, audit, Metrics(), budget))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    loop = asyncio.get_running_loop()
    url = f"http://127.0.0.1:{port}"
    print("ready", flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        slot = make_slot(cfg, int(line.split()[1]), "big.bin")
        print(f"{url}{slot.put_url} {url}{slot.get_url}", flush=True)
    await runner.cleanup()
    await audit.close()

asyncio.run(main())
"""

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(HERE))

# E402 below: the benchmarks folder and the checkout are put on the path first.
from big_file import cpu_s  # noqa: E402
from peers_ops import warm_memory  # noqa: E402

from httpd.ops.util import parse_size  # noqa: E402

MB = 1e6


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all CPUs, idle and iowait out)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """One checkout's app in a child process."""

    name: str
    proc: asyncio.subprocess.Process
    base: Path
    samples: dict[str, list[float]] = field(default_factory=dict)

    async def slot(self, size: int) -> tuple[str, str]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"slot {size}\n".encode())
        put, get = (await self.proc.stdout.readline()).decode().split()
        return put, get

    def add(self, key: str, value: float) -> None:
        self.samples.setdefault(key, []).append(value)


async def start(name: str, checkout: Path, base: Path) -> Server:
    python = checkout / ".venv" / "bin" / "python"
    proc = await asyncio.create_subprocess_exec(
        str(python if python.exists() else sys.executable),
        "-c",
        SERVE,
        str(checkout),
        str(base),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    if (await proc.stdout.readline()).strip() != b"ready":
        raise RuntimeError(f"{name}: the server did not start")
    return Server(name, proc, base)


async def curl(*args: str) -> tuple[float, float]:
    """Run curl; wall seconds and its CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-f", "-o", "/dev/null", *args, stdout=asyncio.subprocess.DEVNULL
    )
    if await proc.wait():
        raise RuntimeError(f"curl {args} failed")
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


async def one_put(server: Server, src: Path, size: int, get: bool, warm: int) -> None:
    put_url, get_url = await server.slot(size)
    if warm:
        warm_memory(src.parent, warm)
    pid = server.proc.pid
    (loop0, threads0), busy0 = cpu_s([pid]), machine_busy()
    wall, curl_cpu = await curl(
        "-T", str(src), "-H", "Content-Type: application/octet-stream", put_url
    )
    (loop1, threads1), busy1 = cpu_s([pid]), machine_busy()
    server.add("PUT MB/s", size / wall / MB)
    server.add("loop CPU s", loop1 - loop0)
    server.add("threads CPU s", threads1 - threads0)
    server.add("curl CPU s", curl_cpu)
    server.add("machine CPU s", busy1 - busy0)
    if get:
        wall, _ = await curl(get_url)
        server.add("GET MB/s", size / wall / MB)
    # Freed blocks are reused by the next PUT before ext4 discards them (on this VM a
    # write into discarded blocks runs at ~250 MB/s, into just-freed ones at ~1.5 GB/s).
    for stored in (server.base / "repo").rglob("*big.bin"):
        stored.unlink()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--get", action="store_true", help="GET each file right after")
    parser.add_argument("--baseline", action="append", type=Path, default=[])
    parser.add_argument(
        "--warm", type=int, default=0, help="MiB of page cache to free before each PUT"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go")
    args = parser.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        src = base / "src.bin"
        block = os.urandom(1024 * 1024)
        with src.open("wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
        checkouts = [("this", HERE)] + [(str(b), b.resolve()) for b in args.baseline]
        servers = []
        for i, (name, checkout) in enumerate(checkouts):
            (base / str(i)).mkdir()
            servers.append(await start(name, checkout, base / str(i)))
        try:
            for r in range(args.rounds):
                order = servers[r % len(servers) :] + servers[: r % len(servers)]
                for server in order:
                    await one_put(server, src, size, args.get, args.warm)
        finally:
            for server in servers:
                assert server.proc.stdin is not None
                server.proc.stdin.close()
                await server.proc.wait()
    keys = list(servers[0].samples)
    load = os.getloadavg()[0]
    print(f"{args.size} curl -T, warm {args.warm} MiB, medians of {args.rounds}; load {load:.2f}")
    print(f"{'':<16}" + "".join(f"{k:>15}" for k in keys))
    for server in servers:
        cells = "".join(f"{statistics.median(server.samples[k]):>15.3f}" for k in keys)
        print(f"{server.name[-16:]:<16}{cells}")
        for k in keys:
            print(f"    {k}: " + " ".join(f"{v:.3f}" for v in server.samples[k]), file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
