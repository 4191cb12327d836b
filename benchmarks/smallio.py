"""CPU per small upload and per small download, per process and per thread, A/B.

Starts ejabberd 23.01 and ``mft run`` (file:// repository, SQLite AFT_LOG, ``[http]
workers``) from this checkout and, with ``--baseline DIR`` (repeatable), from other
checkouts beside it, each its own component on the same ejabberd. In interleaved rounds
(the order rotates) each runs ``--uploads`` 100 KB uploads end to end (slot + PUT, 16 in
flight) and then a GET of each, and prints medians of CPU milliseconds per operation
(``/proc/*/task/*/schedstat``, nanoseconds) of:

- the component (``mft run``'s own process) and the HTTP workers summed;
- per thread kind, summed over the workers: ``loop`` (each worker's main thread, the
  event loop), ``sqlite`` (the database's thread), ``logging`` (the log listener's),
  ``executor`` (``asyncio_N``, or a pinned worker's ``pinned_N`` and ``spread_N``:
  the file writes), anything else by its name.

A worker's time per upload it handles is the workers' sum divided by all uploads.
CPU time moves far less than throughput when other work shares the machine; both are
printed. ``--spy DIR`` also records py-spy raw stacks (``/tmp/tools/bin/py-spy``) of
each worker during the last round's uploads and downloads.

    python benchmarks/smallio.py [--baseline OTHER_CHECKOUT]... [--rounds 5]
                                 [--uploads 1000] [--workers 2] [--spy DIR]

Each ``--baseline`` adds a column (named after its directory): several checkouts of
one branch's history give the gain of each step in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers_ops import anonymous_client, downloads, slots, uploads
from peers_servers import EJABBERD_DOMAIN, MFT_JID, ROOT, Ejabberd, Mft, running_mft, tree

from tests.fixtures.prosody import connect_client

PY_SPY = "/tmp/tools/bin/py-spy"


def _cpu(path: str) -> float:
    """Seconds on a CPU of a process or thread (``/proc/.../schedstat``: nanoseconds,
    not the 10 ms ticks of ``stat``). A process's file counts its main thread only."""
    with open(path + "/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


# Python 3.11 names no OS thread: the names come from ``py-spy dump`` (tid -> name).
_NAMES: dict[int, str] = {}


def learn_threads(pid: int) -> None:
    """Map ``pid``'s thread ids to their Python names (py-spy dump)."""
    out = subprocess.run([PY_SPY, "dump", "--pid", str(pid)], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("Thread ") and '"' in line:
            _NAMES[int(line.split()[1])] = line.split('"')[1]


def _kind(pid: int, tid: int) -> str:
    if tid == pid:
        return "loop"
    name = _NAMES.get(tid, "other")
    if name.startswith(("asyncio_", "pinned_", "spread_")):
        return "executor"  # the default executor's, or a pinned worker's two kinds
    if "_connection_worker_thread" in name or name.startswith("sqlite"):
        return "sqlite"
    if "_monitor" in name:
        return "logging"
    return name


@dataclass
class Sample:
    """CPU seconds per process kind and per worker thread kind at one instant."""

    procs: dict[str, float] = field(default_factory=dict)
    threads: dict[str, float] = field(default_factory=dict)


def _workers(mft: Mft) -> list[int]:
    found = []
    for p in tree(mft.pid)[1:]:
        with contextlib.suppress(OSError):
            if b"httpd.ops.worker" in Path(f"/proc/{p}/cmdline").read_bytes():
                found.append(p)
    return found


def sample(mft: Mft) -> Sample:
    """Read /proc for ``mft``'s component and its workers."""
    s = Sample(collections.defaultdict(float), collections.defaultdict(float))
    with contextlib.suppress(OSError):
        for t in Path(f"/proc/{mft.pid}/task").iterdir():
            s.procs["component"] += _cpu(str(t))
    for p in _workers(mft):
        for t in Path(f"/proc/{p}/task").iterdir():
            with contextlib.suppress(OSError):
                sec = _cpu(str(t))
                s.procs["workers"] += sec
                s.threads[_kind(p, int(t.name))] += sec
    return s


def per_op(before: Sample, after: Sample, n: int) -> dict[str, float]:
    """ms per op of each process and thread kind between two samples."""
    out = {k: (v - before.procs.get(k, 0.0)) * 1000 / n for k, v in after.procs.items()}
    for k, v in after.threads.items():
        out[f"  {k}"] = (v - before.threads.get(k, 0.0)) * 1000 / n
    return out


@dataclass
class Flavour:
    """One xmpp-mft under test and what was measured of it."""

    column: str
    root: Path
    prefix: str
    mft: Mft | None = None
    results: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, op: str, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.results.setdefault(op, {}).setdefault(k, []).append(v)


def _spy(
    pids: list[int], spy_dir: Path | None, tag: str, seconds: int
) -> list[subprocess.Popen[bytes]]:
    if spy_dir is None:
        return []
    spy_dir.mkdir(parents=True, exist_ok=True)
    argv = [PY_SPY, "record", "-t", "-r", "200", "-f", "raw", "-d", str(seconds)]
    return [
        subprocess.Popen(
            [*argv, "-o", str(spy_dir / f"{tag}-{p}.txt"), "--pid", str(p)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for p in pids
    ]


async def run(args: argparse.Namespace) -> list[Flavour]:
    """Start everything, run the rounds, stop everything."""
    flavours = [Flavour("this", ROOT, "upload")]
    for i, other in enumerate(args.baseline or []):
        flavours.append(Flavour(other.name, other.resolve(), f"base{i}"))
    base = Path(tempfile.mkdtemp(prefix="smallio-", dir="/var/tmp"))
    jids = [MFT_JID.format(domain=EJABBERD_DOMAIN)]
    jids += [f"{f.prefix}.{EJABBERD_DOMAIN}" for f in flavours[1:]]
    ej = Ejabberd(base / "ejabberd", components=tuple(jids))
    ej.start()
    body = os.urandom(100_000)
    try:
        async with contextlib.AsyncExitStack() as stack:
            client = anonymous_client(EJABBERD_DOMAIN)
            await connect_client(client, ej.c2s_port)
            for f, jid in zip(flavours, jids, strict=True):
                f.mft = Mft(
                    f.prefix,
                    base / f.prefix,
                    f'component_jid = "{jid}"\nsecret = "{ej.secret}"\nport = {ej.ports[jid]}\n',
                    f'url = "file://{base}/{f.prefix}/repo"\n',
                    root=f.root,
                )
                await stack.enter_async_context(running_mft(f.mft, None, args.workers, []))
            http = await stack.enter_async_context(aiohttp.ClientSession())
            for jid in jids:
                async with asyncio.timeout(30):
                    while True:
                        try:
                            await client.plugin["xep_0030"].get_info(jid=jid, timeout=2)
                            break
                        except Exception:
                            await asyncio.sleep(0.2)  # polling another process's start-up
                await slots(client, jid, 50, 8)
                await uploads(client, http, jid, 100, 16, body)  # warm-up, not counted
            for r in range(args.rounds):
                order = flavours[r % len(flavours) :] + flavours[: r % len(flavours)]
                last = r == args.rounds - 1
                line = [f"round {r + 1}/{args.rounds} (load {os.getloadavg()[0]:.2f})"]
                for f in order:
                    assert f.mft is not None
                    jid = jids[flavours.index(f)]
                    for p in _workers(f.mft):
                        learn_threads(p)
                    spies = _spy(_workers(f.mft), args.spy if last else None, f"{f.column}-up", 4)
                    s0, t0 = sample(f.mft), time.perf_counter()
                    urls, _ = await uploads(client, http, jid, args.uploads, 16, body)
                    el, s1 = time.perf_counter() - t0, sample(f.mft)
                    f.add("upload", {**per_op(s0, s1, len(urls)), "rate/s": len(urls) / el})
                    for s in spies:
                        s.wait()
                    spies = _spy(_workers(f.mft), args.spy if last else None, f"{f.column}-down", 4)
                    s0, t0 = sample(f.mft), time.perf_counter()
                    done = 0
                    while done < args.uploads * args.gets:
                        await downloads(http, urls, 16)
                        done += len(urls)
                    el, s1 = time.perf_counter() - t0, sample(f.mft)
                    f.add("download", {**per_op(s0, s1, done), "rate/s": done / el})
                    for s in spies:
                        s.wait()
                    line.append(
                        f"{f.column}: up {f.results['upload']['rate/s'][-1]:,.0f}/s "
                        f"down {f.results['download']['rate/s'][-1]:,.0f}/s"
                    )
                print("  ".join(line), flush=True)
            client.disconnect()
    finally:
        ej.stop()
    return flavours


def paired(flavours: list[Flavour]) -> str:
    """Per round, each flavour's CPU per op over the last flavour's (its baseline): the
    median of those ratios, which cancels most of what other load does to both."""
    ref = flavours[-1]
    out = [
        f"| median of per-round ratios to {ref.column} | "
        + " | ".join(f.column for f in flavours[:-1])
        + " |"
    ]
    out.append("|---" * len(flavours) + "|")
    for op in ("upload", "download"):
        for k in ref.results.get(op, {}):
            if k == "rate/s":
                continue
            cells = []
            for f in flavours[:-1]:
                mine, theirs = f.results.get(op, {}).get(k), ref.results[op][k]
                ratios = [a / b for a, b in zip(mine or [], theirs, strict=False) if b]
                cells.append(f"{statistics.median(ratios):.3f}" if ratios else "-")
            out.append(f"| {op} {k.strip()} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def report(flavours: list[Flavour]) -> str:
    """Medians, one column per flavour."""
    out = ["| median | " + " | ".join(f.column for f in flavours) + " |"]
    out.append("|---" * (len(flavours) + 1) + "|")
    for op in ("upload", "download"):
        keys = list(dict.fromkeys(k for f in flavours for k in f.results.get(op, {})))
        for k in keys:
            cells = []
            for f in flavours:
                v = f.results.get(op, {}).get(k)
                fmt = "{:,.0f}" if k == "rate/s" else "{:.3f}"
                cells.append(fmt.format(statistics.median(v)) if v else "-")
            name = k.strip() if k == "rate/s" else f"{k.strip()} ms/op"
            indent = "&nbsp;&nbsp;" if k.startswith(" ") else ""
            out.append(f"| {op} {indent}{name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--baseline", type=Path, action="append", help="also run xmpp-mft from this checkout"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--uploads", type=int, default=1000, help="100 KB uploads per round")
    parser.add_argument("--gets", type=int, default=2, help="GETs of each upload per round")
    parser.add_argument("--workers", type=int, default=2, help="[http] workers of each")
    parser.add_argument("--spy", type=Path, help="py-spy raw stacks of the last round here")
    args = parser.parse_args(argv)
    flavours = asyncio.run(run(args))
    print(report(flavours))
    if len(flavours) > 1:
        print()
        print(paired(flavours))
    return 0


if __name__ == "__main__":
    sys.exit(main())
