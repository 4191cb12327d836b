"""CPU and time of one worker-thread round trip (``run_in_executor``), threads free or
pinned to one CPU as an HTTP worker pins them (:mod:`httpd.ops.placement`).

Each mode runs in a process of its own, in interleaved rounds: a no-op job handed to
the loop's default executor and awaited, one at a time (each wakes a sleeping thread,
then the loop) and 8 in flight; medians of microseconds per round trip, wall and CPU
(user + system of the whole process). The difference is what a hand-off costs on
this machine when the two threads sit on different CPUs.

    python benchmarks/thread_hop.py [--rounds 5] [--hops 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from httpd.ops.placement import place_worker

MODES = ("free", "pinned")


def _noop() -> None:
    return None


async def _measure(hops: int, window: int) -> tuple[float, float]:
    """µs per round trip, wall and CPU, with ``window`` in flight."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(window)

    async def one() -> None:
        async with sem:
            await loop.run_in_executor(None, _noop)

    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(hops)))
    seconds, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    return seconds / hops * 1e6, cpu / hops * 1e6


def child(mode: str, hops: int) -> None:
    """One mode's figures, as JSON on stdout."""
    if mode == "pinned" and place_worker(1) is None:
        print(json.dumps(None))
        return

    async def both() -> dict[str, tuple[float, float]]:
        await _measure(200, 1)  # the executor's threads started, not counted
        return {"1": await _measure(hops, 1), "8": await _measure(hops, 8)}

    print(json.dumps(asyncio.run(both())))


def main() -> None:
    """Run the rounds, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hops", type=int, default=5000)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.hops)
        return
    got: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in range(args.rounds):
        for mode in MODES[r % 2 :] + MODES[: r % 2]:
            argv = [sys.executable, __file__, "--child", mode, "--hops", str(args.hops)]
            out = json.loads(subprocess.run(argv, check=True, capture_output=True).stdout)
            if out is None:
                sys.exit("one CPU allowed: nothing to pin")
            for window, pair in out.items():
                got.setdefault((window, mode), []).append(tuple(pair))
    print("| round trips in flight | threads | µs wall per round trip | µs CPU per round trip |")
    print("|---|---|---|---|")
    for (window, mode), rows in sorted(got.items()):
        wall, cpu = (statistics.median(c) for c in zip(*rows, strict=True))
        print(f"| {window} | {mode} | {wall:.0f} | {cpu:.0f} |")
    load = os.getloadavg()
    print(f"\n{args.rounds} interleaved rounds, medians; {os.cpu_count()} CPUs; load {load[0]:.2f}")


if __name__ == "__main__":
    main()
