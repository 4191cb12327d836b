"""Which CPU an HTTP worker process runs on, and which of its threads may leave it.

On the 2-core VM the benchmarks run on, handing work to another thread costs two to
three times as much when the threads may sit on different CPUs (``benchmarks/thread_hop.py``:
a worker-thread round trip takes 193 µs of CPU with the threads free, 77 µs pinned to one
CPU; 83 and 41 µs with 8 in flight: waking a thread on another CPU is an inter-processor
interrupt, which a virtual CPU pays dearly for). A
100 KB upload makes two such hand-offs (its one file job, its share of an audit-log
commit) and the GIL passes between the threads at every system call of the job. So each
worker (``[http] workers`` above 1) keeps its event loop, its small-file jobs and its
audit-log thread on one CPU, worker 1 on the first CPU it may use, worker 2 on the
next, and so on round them. The kernel still spreads everything else.

What can use a core of its own stays free to: the loop's default executor, where a large
``file://`` upload's blocks are hashed and written beside the loop receiving the next
one, gets threads allowed every CPU the process was allowed at start. An ``sftp://``
upload, whose loop is busy encrypting, is hashed on the loop itself in a pinned worker
(see :func:`httpd.repository.sftp_write.write_body`): with a worker on every CPU there
is no spare core for that thread, only the cost of reaching another. An administrator
who keeps the service off some CPUs (``taskset``, systemd's ``CPUAffinity=``) is
obeyed: the choice is made among those.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Placement:
    """A worker pinned to ``cpu``; ``allowed``: every CPU the process could use."""

    cpu: int
    allowed: frozenset[int]

    def pinned_executor(self) -> ThreadPoolExecutor:
        """Worker threads on the worker's CPU (they inherit the pinned caller's mask)."""
        return ThreadPoolExecutor(thread_name_prefix="pinned")

    def spread_executor(self) -> ThreadPoolExecutor:
        """Worker threads allowed every CPU in ``allowed``."""
        return ThreadPoolExecutor(
            thread_name_prefix="spread",
            initializer=os.sched_setaffinity,
            initargs=(0, self.allowed),
        )


def place_worker(index: int) -> Placement | None:
    """Pin the calling thread, and the threads it starts from now on, to one CPU.

    ``index``: the worker's number, from 1; worker ``index`` takes the ``index``-th CPU
    this process may use, round them again when there are more workers than CPUs.

    :returns: where it went; ``None`` where there is no choice to make (one CPU allowed,
        or a platform without ``sched_setaffinity``) or the kernel refused (a container's
        CPU set changed under us, say: logged), and the thread is left as it was.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    try:
        allowed = frozenset(os.sched_getaffinity(0))
        if len(allowed) < 2:
            return None
        cpu = sorted(allowed)[(index - 1) % len(allowed)]
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        log.warning("HTTP worker %d left unpinned: %s", index, exc)
        return None
    return Placement(cpu, allowed)
