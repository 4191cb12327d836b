"""CPU per byte of SftpRepository's own transfers, without HTTP: where asyncssh spends it.

Starts one sshd on loopback (the test fixture's launcher), opens SftpRepository in this
process and moves one file up (``receive`` from memory, SHA-256 on, as a PUT does) and
down (``read`` to the end, as a GET does), in rounds. Prints, per direction, the median
MB/s and the CPU seconds per transfer of this process and of sshd's session processes.
``--hash-on-loop`` hashes uploads on the event loop (as a pinned HTTP worker does);
``--hash-on-loop both`` does each round's upload twice, hashed in a worker thread and on
the loop, interleaved (rows ``up`` and ``up-loop``).
``--profile FILE`` runs the transfers under cProfile (``FILE.up`` / ``FILE.down``);
``--baseline DIR`` runs each round a second time with the code (and venv) of another
checkout, interleaved, each round in a child process with its own sshd.

    .venv/bin/python benchmarks/sftp_cpu.py [--size 256M] [--rounds 3] [--profile /tmp/p]
        [--baseline /work/main] [--hash-on-loop [both]]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(os.environ.get("MFT_BENCH_CODE") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))

from component.config import load_config  # noqa: E402
from httpd.ops.util import parse_size  # noqa: E402
from tests.fixtures.sshd import SshServer, ssh_server  # noqa: E402

MB = 1_000_000


class MemoryBody:
    """A BodySource of ``size`` bytes copied out of one random buffer (a memcpy each, as
    cheap as a socket's ``recv_into``)."""

    def __init__(self, pattern: bytes, size: int) -> None:
        self._pattern, self._left = memoryview(pattern), size

    async def readinto(self, buf: memoryview) -> int:
        n = min(len(buf), self._left, len(self._pattern))
        buf[:n] = self._pattern[:n]
        self._left -= n
        return n

    async def end(self) -> None:
        return None


def tree_cpu(pid: int) -> float:
    """utime+stime of ``pid`` and its descendants (sshd's session processes)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def write_config(base: Path, server: SshServer) -> Path:
    path = base / "mft.toml"
    path.write_text(
        f"""\
[node]
id = "node_1"
[xmpp]
component_jid = "upload.localhost"
secret = "bench"
[http]
public_url = "http://127.0.0.1:1"
secret = "{secrets.token_hex(16)}"
[repository]
url = "{server.url(server.store / "node_1")}"
host_key = "{server.host_key_line}"
client_key = "{server.client_key}"
[database]
url = "sqlite:///{base}/aft.sqlite3"
"""
    )
    return path


async def run(
    size: int, rounds: int, profile: str | None, server: SshServer, base: Path, on_loop: str
) -> None:
    from httpd.repository.sftp import SftpRepository

    cfg = load_config(write_config(base, server))
    repo = SftpRepository(cfg.repository, hash_on_loop=on_loop == "loop")
    await repo.open()
    # "both": a second connection whose uploads are hashed on the loop, beside repo's.
    loop_repo = SftpRepository(cfg.repository, hash_on_loop=True) if on_loop == "both" else repo
    if loop_repo is not repo:
        await loop_repo.open()
    sshd_pid = server.process.proc.pid  # type: ignore[union-attr]
    pattern = os.urandom(16 * 1024**2)
    directions = ["up", "up-loop", "down"] if on_loop == "both" else ["up", "down"]
    rows: dict[str, list[tuple[float, float, float]]] = {d: [] for d in directions}
    profs = {d: cProfile.Profile() for d in rows} if profile else {}
    try:
        for _ in range(rounds):
            path = f"files/im/bench/{secrets.token_hex(8)}"
            for direction in directions:
                c0, s0, t0 = own_cpu(), tree_cpu(sshd_pid), time.perf_counter()
                if direction in profs:
                    profs[direction].enable()
                if direction.startswith("up"):
                    if direction == "up-loop":  # the same file again, once the first is gone
                        await repo.delete(path)
                    into = loop_repo if direction == "up-loop" else repo
                    await into.receive(path, MemoryBody(pattern, size), size, hashlib.sha256())
                else:
                    got = 0
                    async for block in repo.read(path):
                        got += len(block)
                    assert got == size, got
                if direction in profs:
                    profs[direction].disable()
                t1, c1, s1 = time.perf_counter(), own_cpu(), tree_cpu(sshd_pid)
                rows[direction].append((size / MB / (t1 - t0), c1 - c0, s1 - s0))
            await repo.delete(path)
    finally:
        await repo.close()
        if loop_repo is not repo:
            await loop_repo.close()
    if os.environ.get("MFT_BENCH_JSON"):
        print(json.dumps(rows))
        return
    report("", rows)
    for direction, prof in profs.items():
        prof.dump_stats(f"{profile}.{direction}")


def report(label: str, rows: dict[str, list[tuple[float, float, float]]]) -> None:
    for direction, runs in rows.items():
        mbs = statistics.median(r[0] for r in runs)
        ours = statistics.median(r[1] for r in runs)
        sshd = statistics.median(r[2] for r in runs)
        print(
            f"{label}{direction:8} {mbs:7.0f} MB/s  CPU s per transfer: ours {ours:.3f}"
            f" sshd {sshd:.3f}  sum {ours + sshd:.3f}"
        )


def interleaved(size: str, rounds: int, baseline: Path, on_loop: str) -> None:
    """Rounds alternating between this checkout and ``baseline``, one child each."""
    here = Path(__file__).resolve().parents[1]
    runs: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for _ in range(rounds):
        for label, code in (("this", here), ("baseline", baseline)):
            env = {**os.environ, "MFT_BENCH_CODE": str(code), "MFT_BENCH_JSON": "1"}
            argv = [str(code / ".venv/bin/python"), __file__, "--size", size, "--rounds", "1"]
            if on_loop != "thread":
                argv += ["--hash-on-loop", on_loop]
            out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
            got = json.loads(out.stdout.strip().splitlines()[-1])
            for direction, rows in got.items():
                runs.setdefault(label, {}).setdefault(direction, []).extend(map(tuple, rows))
    for label, rows in runs.items():
        report(f"{label:9}", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="256M")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", help="cProfile output prefix")
    parser.add_argument("--baseline", type=Path, help="another checkout, interleaved")
    parser.add_argument(
        "--hash-on-loop",
        nargs="?",
        const="loop",
        default="thread",
        choices=["thread", "loop", "both"],
        help="hash uploads on the event loop (both: each round with and without)",
    )
    args = parser.parse_args()
    if args.baseline:
        interleaved(args.size, args.rounds, args.baseline.resolve(), args.hash_on_loop)
        return
    with (
        tempfile.TemporaryDirectory(dir="/var/tmp") as tmp,
        ssh_server(Path(tmp) / "sshd") as server,
    ):
        size = parse_size(args.size)
        asyncio.run(run(size, args.rounds, args.profile, server, Path(tmp), args.hash_on_loop))


if __name__ == "__main__":
    main()
