"""System time of filling the page cache with one new file, by the size of each write(2).

Each round writes ``--size`` bytes into a new file in ``--dir`` for every write size,
in interleaved order, each right after a scratch file a little larger is written in 1 MiB
writes and deleted (as ``peers.py`` warms memory before a PUT), with
``sync_file_range`` after every 4 MiB as the ``file://`` repository does, then fsync'd
and deleted. It prints the median and every round's CPU seconds of the writes (the
writing thread's utime+stime, the fsync not included)::

    python benchmarks/write_size.py [--size 256M] [--rounds 8] [--dir /var/tmp]

A 4 MiB block is written whole ("4M"), or in the pieces the ``file://`` repository
writes (``part_file.WRITE_PIECE``, "1M"), or in 512 KiB pieces.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers_ops import warm_memory

from httpd.ops.util import parse_size
from httpd.repository.part_file import _SYNC_FILE_RANGE as sync_file_range
from httpd.repository.part_file import SYNC_FILE_RANGE_WRITE

MIB = 1024 * 1024
BLOCK = 4 * MIB
# (name, bytes per write): the block is written in pieces of that size.
SHAPES = [("512K", 512 * 1024), ("1M", 1024 * 1024), ("4M", BLOCK)]


def fill(directory: Path, size: int, piece: int) -> float:
    """Write ``size`` bytes in ``piece``-sized writes; the thread's CPU seconds for it."""
    block = memoryview(os.urandom(BLOCK))
    target = directory / "write_size.bin"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        started, offset = time.thread_time(), 0
        while offset < size:
            for at in range(0, BLOCK, piece):
                os.write(fd, block[at : at + piece])
            if sync_file_range is not None:
                sync_file_range(fd, offset, BLOCK, SYNC_FILE_RANGE_WRITE)
            offset += BLOCK
        spent = time.thread_time() - started
        os.fsync(fd)
    finally:
        os.close(fd)
        target.unlink()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    size = -(-parse_size(args.size) // BLOCK) * BLOCK
    spent: dict[str, list[float]] = {name: [] for name, _ in SHAPES}
    for _ in range(args.rounds):
        for name, piece in SHAPES:
            warm_memory(args.dir, size * 5 // 4 // MIB + 1)
            spent[name].append(fill(args.dir, size, piece))
    print(f"{args.size} into a new file, {args.rounds} rounds: CPU s of the writes")
    for name, values in spent.items():
        rounds = " ".join(f"{v:.2f}" for v in values)
        print(f"  writes of {name:>4}: median {statistics.median(values):.3f}  ({rounds})")


if __name__ == "__main__":
    main()
