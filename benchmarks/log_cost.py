"""CPU per request of the two log lines of an upload, by way of setting up logging.

Each mode runs in a child process: an asyncio loop "serves" ``--requests`` requests,
each logging what a PUT logs (the ``upload stored`` line and the access-log line) and
then waiting 0.4 ms for I/O as a busy worker does. Printed per mode, medians over
interleaved ``--rounds``: CPU microseconds per request on the loop's thread and in the
whole process (the log listener's thread included), minus the same loop logging nothing.

- ``basic``: :func:`logging.basicConfig`, as before (format and write(2) per record, on
  the loop);
- ``flags``: the same without the caller's file/line, thread and process lookups;
- ``cheap``: :func:`component.cli.stderr_logging` (what ``mft`` uses): ``flags`` with
  the date and time rendered once per second;
- ``listener``: ``cheap``'s formatting done by a stdlib QueueListener thread, the
  record only made on the loop, each batch (10 ms) written in one write.

    python benchmarks/log_cost.py [--rounds 5] [--requests 5000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("none", "basic", "flags", "cheap", "listener")

CHILD = """
import asyncio, contextlib, logging, os, resource, sys, time
sys.path.insert(0, {root!r})
mode, n = {mode!r}, {n}
fmt = "%(asctime)s %(levelname)s http-0 %(name)s: %(message)s"
os.dup2(os.open({out!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
cm = contextlib.nullcontext()
if mode == "flags":
    logging.logMultiprocessing = logging.logThreads = False
    logging._srcfile = None
if mode in ("basic", "flags"):
    logging.basicConfig(level=logging.INFO, format=fmt)
elif mode == "cheap":
    from component.cli import stderr_logging
    cm = stderr_logging(logging.INFO, fmt)
elif mode == "listener":
    import queue
    from logging.handlers import QueueHandler, QueueListener
    from component.cli import _SecondsFormatter
    logging.logMultiprocessing = logging.logThreads = False
    logging._srcfile = None

    class HandOff(QueueHandler):
        def prepare(self, record):
            record.msg, record.args = record.getMessage(), None
            return record

    class Batched(logging.StreamHandler):
        pending = []
        def emit(self, record):
            self.pending.append(self.format(record) + self.terminator)
        def flush(self):
            if self.pending:
                text, self.pending[:] = "".join(self.pending), []
                self.stream.write(text)
                self.stream.flush()

    class Listener(QueueListener):
        def dequeue(self, block):
            try:
                return self.queue.get_nowait()
            except queue.Empty:
                pass
            for h in self.handlers:
                h.flush()
            record = self.queue.get()
            time.sleep(0.01)  # let a batch gather: one wake-up and one write for it
            return record

    records = queue.SimpleQueue()
    stream = Batched()
    stream.setFormatter(_SecondsFormatter(fmt))
    listener = Listener(records, stream)
    logging.getLogger().addHandler(HandOff(records))
    logging.getLogger().setLevel(logging.INFO)

    @contextlib.contextmanager
    def listening():
        listener.start()
        yield
        listener.stop()
        stream.flush()
    cm = listening()
log, access = logging.getLogger("httpd.upload"), logging.getLogger("aiohttp.access")
on = mode != "none"

async def serve():
    for _ in range(n):
        if on:
            log.info("upload stored: %s %s/%s %d bytes in %.2fs from %s (Content-Type %r)",
                     "im", "20261202/01", "abcdefghijklmnopqrstuv", 100000, 0.0123,
                     "alice@example.com", "application/octet-stream")
            access.info('%s "%s %s" %d %d %.3fs', "127.0.0.1", "PUT",
                        "/upload/abcdefghijklmnopqrstuv/x.bin", 201, 0, 0.0123)
        await asyncio.sleep(0.0004)

with cm:
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.thread_time()
    asyncio.run(serve())
    t1 = time.thread_time()
r1 = resource.getrusage(resource.RUSAGE_SELF)
total = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
print((t1 - t0) / n * 1e6, total / n * 1e6)
"""


def run_mode(mode: str, n: int, out: Path) -> tuple[float, float]:
    """(loop thread, whole process) CPU microseconds per request of one child, its
    stderr a file (as ``mft run``'s under the benchmarks; journald's is a pipe)."""
    code = CHILD.format(root=str(ROOT), mode=mode, n=n, out=str(out))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loop, process = out.stdout.split()
    return float(loop), float(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args(argv)
    got: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    out = Path(tempfile.mkdtemp(prefix="log-cost-")) / "stderr.log"
    for r in range(args.rounds):
        order = MODES[r % len(MODES) :] + MODES[: r % len(MODES)]
        for mode in order:
            got[mode].append(run_mode(mode, args.requests, out))
    base = [statistics.median(x[i] for x in got["none"]) for i in (0, 1)]
    print("| mode | loop thread us/request | process us/request |")
    print("|---|---|---|")
    for mode in MODES[1:]:
        loop = statistics.median(x[0] for x in got[mode]) - base[0]
        proc = statistics.median(x[1] for x in got[mode]) - base[1]
        print(f"| {mode} | {loop:.1f} | {proc:.1f} |")
    out.unlink(missing_ok=True)
    out.parent.rmdir()
    print(f"(logging nothing: loop {base[0]:.1f}, process {base[1]:.1f} us/request)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
