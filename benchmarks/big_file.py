"""One big file up and down with ``curl`` through ``mft run --only httpd`` on file://:
MB/s each way and the service's peak RSS (VmHWM) during the PUT and during the GET.

The body is a sparse file (``truncate``: no disk blocks, reads as zeros), so the only
copy of it on disk is the one the service stores, and that is deleted after its GET.
With ``--baseline DIR`` the same rounds run, interleaved, against the service from
another checkout (a fresh service per code tree, the same disk). Each round also GETs
the stored file from a plain blocking ``sendfile(2)`` loop in a thread of this script
(the "sendfile ceiling" column: what the kernel and curl do without any server code).
Usage::

    .venv/bin/python benchmarks/big_file.py [--size 4G] [--runs 1] [--baseline DIR]
                                                [--workers N]

The issue 13 target: peak RSS under 150 MiB while a 4 GiB file goes up and down.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from httpd.ops.util import parse_size  # noqa: E402
from tests.fixtures.common import free_port  # noqa: E402
from tests.fixtures.config import make_raw_config, toml_text  # noqa: E402
from tests.integration.memory_load import rss_kib, service  # noqa: E402
from tests.unit.httpd_harness import make_slot  # noqa: E402

CURL = ["curl", "-sS", "-f", "--noproxy", "*", "-o", "/dev/null"]
MB = 1_000_000


@dataclass
class Column:
    """Results of one code tree: MB/s each way and peak RSS (MiB) per round."""

    put: list[float] = field(default_factory=list)
    get: list[float] = field(default_factory=list)
    put_cpu: list[tuple[float, float]] = field(default_factory=list)
    get_cpu: list[tuple[float, float]] = field(default_factory=list)
    put_rss: list[float] = field(default_factory=list)
    get_rss: list[float] = field(default_factory=list)
    idle_rss: list[float] = field(default_factory=list)
    ceiling: list[float] = field(default_factory=list)


def sendfile_once(path: Path) -> int:
    """A port that answers one GET with ``path`` by blocking sendfile(2), then closes."""
    srv = socket.create_server(("127.0.0.1", 0))
    size = path.stat().st_size

    def serve() -> None:
        conn, _ = srv.accept()
        with srv, conn, path.open("rb") as f:
            conn.recv(65536)  # the request (small; its content does not matter)
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
            conn.sendall(head.encode())
            sent = 0
            while sent < size:
                sent += os.sendfile(conn.fileno(), f.fileno(), sent, size - sent)

    threading.Thread(target=serve, daemon=True).start()
    return int(srv.getsockname()[1])


def _cpu(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def service_pids(pid: int) -> list[int]:
    """``mft run`` and its HTTP worker processes (none with ``workers = 1``)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def cpu_s(pids: list[int]) -> tuple[float, float]:
    """CPU seconds (user+system) of the processes: (event-loop threads, other threads)."""
    main = sum(_cpu(Path(f"/proc/{p}/task/{p}/stat")) for p in pids)
    total = sum(_cpu(Path(f"/proc/{p}/stat")) for p in pids)
    return main, total - main


def rss_mib(pids: list[int]) -> tuple[float, float]:
    """(VmRSS, VmHWM) summed over the processes, MiB (the sum of peaks: an upper bound)."""
    both = [rss_kib(p) for p in pids]
    return sum(b[0] for b in both) / 1024, sum(b[1] for b in both) / 1024


def reset_peak(pids: list[int]) -> None:
    """Start VmHWM afresh (``clear_refs`` 5, Linux >= 4.0): a peak per direction."""
    for p in pids:
        Path(f"/proc/{p}/clear_refs").write_text("5")


async def all_listening(svc_log: Path, workers: int) -> None:
    """Wait (polling the service's log) until every worker listens."""
    if workers <= 1:
        return
    line = f"{workers} HTTP worker processes listen"
    deadline = time.monotonic() + 60
    while line not in svc_log.read_text():  # noqa: ASYNC240 (another process's log)
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {line!r} in {svc_log}")
        await asyncio.sleep(0.1)


async def curl(*argv: str) -> float:
    """Run curl; seconds it took. :raises RuntimeError: it failed."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*CURL, *argv, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"curl {argv[-1]}: exit {proc.returncode}: {err.decode().strip()}")
    return time.perf_counter() - t0


async def one_round(
    code: Path, base: Path, src: Path, size: int, col: Column, workers: int
) -> None:
    """A fresh service from ``code``: PUT then GET of ``src``, its RSS, then clean up."""
    base.mkdir(parents=True)  # noqa: ASYNC240 (a benchmark's set-up)
    port = free_port()
    http: dict[str, object] = {"port": port, "public_url": f"http://127.0.0.1:{port}"}
    if "workers" in (code / "component" / "config.py").read_text():
        http["workers"] = workers  # 1: one process, the pid measured does all the work
    raw = make_raw_config(base, http=http, upload={"max_file_size": 0, "slot_lifetime": 3600})
    cfg_path = base / "mft.toml"
    cfg_path.write_text(toml_text(raw))
    async with service(cfg_path, code) as svc:
        slot = make_slot(svc.cfg, size, "big.bin", lifetime=3600)
        url = f"http://127.0.0.1:{port}"
        await all_listening(base / "mft.log", workers)
        pids = service_pids(svc.pid)
        col.idle_rss.append(rss_mib(pids)[0])
        reset_peak(pids)
        c0 = cpu_s(pids)
        put_s = await curl("-T", str(src), "-H", "Content-Type: application/octet-stream",
                           url + slot.put_url)  # fmt: skip
        c1 = cpu_s(pids)
        col.put_rss.append(rss_mib(pids)[1])
        reset_peak(pids)
        get_s = await curl(url + slot.get_url)
        c2 = cpu_s(pids)
        col.get_rss.append(rss_mib(pids)[1])
        col.put_cpu.append((c1[0] - c0[0], c1[1] - c0[1]))
        col.get_cpu.append((c2[0] - c1[0], c2[1] - c1[1]))
        col.put.append(size / MB / put_s)
        col.get.append(size / MB / get_s)
        stored = base / "repo" / slot.path.repo_path
        ceiling_s = await curl(f"http://127.0.0.1:{sendfile_once(stored)}/")
        col.ceiling.append(size / MB / ceiling_s)
        stored.unlink()


async def main(args: argparse.Namespace) -> None:
    """Interleaved rounds per code tree; a table on stdout."""
    size = parse_size(args.size)
    trees = [("this tree", ROOT)]
    if args.baseline:
        trees.append(("baseline", args.baseline))
    cols = {label: Column() for label, _ in trees}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        src = work / "body.sparse"
        with src.open("wb") as f:
            f.truncate(size)  # a hole: no disk blocks, zeros when read
        for r in range(args.runs):
            order = trees if r % 2 == 0 else trees[::-1]
            for label, code in order:
                workers = args.workers if label == "this tree" else 1
                base = work / f"r{r}-{label.split()[0]}"
                await one_round(code, base, src, size, cols[label], workers)
                c = cols[label]
                print(
                    f"round {r + 1} {label:<10} PUT {c.put[-1]:6.0f} MB/s (peak {c.put_rss[-1]:.0f}"
                    f" MiB, CPU loop/threads {c.put_cpu[-1][0]:.2f}/{c.put_cpu[-1][1]:.2f} s)"
                    f"  GET {c.get[-1]:6.0f} MB/s (peak {c.get_rss[-1]:.0f} MiB, CPU "
                    f"{c.get_cpu[-1][0]:.2f}/{c.get_cpu[-1][1]:.2f} s); sendfile ceiling "
                    f"{c.ceiling[-1]:.0f} MB/s",
                    flush=True,
                )
    med = statistics.median
    print(
        f"\n{args.size} file, {args.runs} round(s), medians; RSS = VmHWM of mft run"
        f" (this tree: [http] workers = {args.workers}, summed over its processes)"
    )
    print(
        "| code | PUT MB/s | GET MB/s | GET sendfile ceiling MB/s | PUT CPU s (loop+threads) "
        "| GET CPU s | idle RSS MiB | peak RSS PUT MiB | peak RSS GET MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for label, c in cols.items():
        put_cpu = med(sum(x) for x in c.put_cpu)
        get_cpu = med(sum(x) for x in c.get_cpu)
        print(
            f"| {label} | {med(c.put):,.0f} | {med(c.get):,.0f} | {med(c.ceiling):,.0f} | "
            f"{put_cpu:.2f} | "
            f"{get_cpu:.2f} | {med(c.idle_rss):.0f} | {max(c.put_rss):.0f} | "
            f"{max(c.get_rss):.0f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="4G", help="bytes (K/M/G suffixes)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--baseline", help="another checkout to run side by side")
    parser.add_argument("--dir", default=os.environ.get("TMPDIR"), help="where to work")
    parser.add_argument(
        "--workers", type=int, default=1, help="[http] workers of this tree (RSS summed)"
    )
    arguments = parser.parse_args()
    if arguments.baseline:
        arguments.baseline = Path(arguments.baseline).resolve()
    asyncio.run(main(arguments))
