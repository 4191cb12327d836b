"""httpd.allocator: large socket reads stop costing fresh pages once the thresholds are set."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A child reads 100 KB 200 times with recv(256 KiB), as asyncio does, and prints the
# page faults those reads cost.
CHILD = """
import resource, socket, sys
from httpd.allocator import keep_socket_reads_in_heap
if sys.argv[1] == "tuned":
    assert keep_socket_reads_in_heap()
a, b = socket.socketpair()
a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
body = b"x" * 100_000
kept = []
def one():
    a.sendall(body)
    got = 0
    while got < len(body):
        data = b.recv(256 * 1024)
        got += len(data)
        kept.append(data)
    kept.clear()
for _ in range(20):
    one()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    one()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_socket_reads_reuse_heap_memory() -> None:
    """With the thresholds set, 200 reads of 100 KB cost next to no page faults; with
    glibc's defaults each read maps, touches and unmaps fresh pages."""
    default, tuned = _faults("default"), _faults("tuned")
    assert default > 200 * 10  # ~25 fresh pages per read
    assert tuned < 200
