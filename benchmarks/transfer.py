"""Transfer speed: OpenSSH's ``sftp`` CLI vs our SftpRepository vs HTTP through the app.

Same file, same sshd (started here on loopback with the test fixture's launcher), same
run, interleaved so that machine noise hits every method alike. Prints medians in MB/s,
the ratio to the ``sftp`` CLI, and the peak RSS (VmHWM) of the process doing our side.
Target (issue 4): HTTP->SFTP upload and SFTP->HTTP download each >= 80% of the CLI.

    /work/venv/bin/python benchmarks/transfer.py [--sizes 64M,1G] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from component.config import Config, load_config  # noqa: E402
from component.servers.childproc import die_with_parent  # noqa: E402
from httpd.ops.util import parse_size  # noqa: E402
from tests.fixtures.common import free_port, wait_for_port  # noqa: E402
from tests.fixtures.sshd import SshServer  # noqa: E402
from tests.unit.httpd_harness import make_slot  # noqa: E402

CHUNK = 256 * 1024
NODE = "node_1"
MB = 1_000_000


def vm_hwm_kib(pid: int | str = "self") -> int:
    """Peak resident set size of a process, from /proc (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def write_config(base: Path, server: SshServer, http_port: int = 0) -> Path:
    """An mft.toml for the service and the repository worker."""
    path = base / "mft.toml"
    path.write_text(
        f"""\
[node]
id = "{NODE}"
[xmpp]
component_jid = "upload.localhost"
secret = "bench"
[http]
bind = "127.0.0.1"
port = {http_port}
public_url = "http://127.0.0.1:{http_port}"
secret = "{secrets.token_hex(16)}"
[upload]
max_file_size = 0
[repository]
url = "{server.url(server.store / NODE)}"
host_key = "{server.host_key_line}"
client_key = "{server.client_key}"
[database]
url = "sqlite:///{base}/aft.sqlite3"
spool_path = "{base}/spool"
"""
    )
    return path


# ---------------------------------------------------------------- child roles


async def _file_chunks(src: Path) -> AsyncIterator[bytes]:
    # Plain reads of a page-cached file: as cheap as aiohttp handing over a socket chunk.
    with src.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


async def repo_worker(cfg_path: str, src: str, size: int) -> None:
    """One store and one full read with SftpRepository; prints seconds and VmHWM."""
    from httpd.repository.sftp import SftpRepository

    cfg = load_config(cfg_path)
    repo = SftpRepository(cfg.repository)
    await repo.open()
    try:
        path = f"files/im/bench/{secrets.token_hex(8)}"
        t0 = time.perf_counter()
        await repo.store(path, _file_chunks(Path(src)), size)
        t1 = time.perf_counter()
        got = 0
        async for block in repo.read(path):
            got += len(block)
        t2 = time.perf_counter()
        assert got == size, (got, size)
        await repo.delete(path)
    finally:
        await repo.close()
    print(json.dumps({"put": t1 - t0, "get": t2 - t1, "hwm": vm_hwm_kib()}))


async def serve(cfg_path: str) -> None:
    """The HTTP service (make_app over SftpRepository) until SIGTERM."""
    from component.audit import open_audit_log
    from component.metrics import Metrics
    from httpd.app import serve_http
    from httpd.repository.sftp import SftpRepository

    if os.environ.get("MFT_BENCH_NO_HASH") == "1":
        # --hash-cost's reference: the same service with FILE_SHA256 not computed.
        import httpd.upload

        class NoDigest(httpd.upload.StreamDigest):
            async def feed(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
                async for chunk in chunks:
                    yield chunk

        httpd.upload.StreamDigest = NoDigest  # type: ignore[misc]
    cfg = load_config(cfg_path)
    repo = SftpRepository(cfg.repository)
    audit = open_audit_log(cfg)
    await audit.open()
    await repo.open()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await serve_http(cfg, repo, audit, Metrics(), stop)
    finally:
        await repo.close()
        await audit.close()


# ---------------------------------------------------------------- measurements


@dataclass
class Results:
    """Seconds per (size, method, direction), and peak RSS per method."""

    times: dict[tuple[int, str, str], list[float]] = field(default_factory=dict)
    rss_kib: dict[str, int] = field(default_factory=dict)
    # --hash-cost: CPU seconds the service process spent per upload (robust to a busy
    # machine, where wall-clock speed mostly measures the other tenants).
    cpu: dict[tuple[int, str], list[float]] = field(default_factory=dict)

    def add(self, size: int, method: str, direction: str, seconds: float) -> None:
        self.times.setdefault((size, method, direction), []).append(seconds)

    def mbps(self, size: int, method: str, direction: str) -> float | None:
        runs = self.times.get((size, method, direction))
        return size / statistics.median(runs) / MB if runs else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], stdin: bytes | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, input=stdin, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def sftp_cli(server: SshServer, known_hosts: Path, batch: str, cipher: str | None) -> float:
    argv = ["sftp", "-F", "/dev/null", "-q", "-b", "-", "-i", str(server.client_key)]
    argv += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    argv += ["-o", "BatchMode=yes", "-P", str(server.port)]
    if cipher:
        argv += ["-c", cipher]
    return timed([*argv, f"{server.user}@127.0.0.1"], batch.encode())


def new_slot(cfg: Config, size: int) -> tuple[str, str]:
    """A signed PUT URL and its GET URL for a fresh slot."""
    slot = make_slot(cfg, size, "bench.bin", lifetime=3600)
    return cfg.http.public_url + slot.put_url, cfg.http.public_url + slot.get_url


@contextmanager
def service(cfg_path: Path, port: int, no_hash: bool = False) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(cfg_path)],
        stdin=subprocess.DEVNULL,
        preexec_fn=die_with_parent(),
        env={**os.environ, "MFT_BENCH_NO_HASH": "1" if no_hash else "0"},
    )
    try:
        wait_for_port(port, proc, 30)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_source(path: Path, size: int) -> None:
    """``size`` random bytes on disk (16 MiB of randomness repeated)."""
    block = os.urandom(16 * 1024**2)
    with path.open("wb") as f:
        for i in range(0, size, len(block)):
            f.write(block[: size - i])


def run(
    sizes: list[int], runs: int, base: Path, with_http: bool, hash_cost: bool = False
) -> Results:
    """Every method, ``runs`` times per size, interleaved."""
    res = Results()
    with ExitStack() as stack:
        server = SshServer(base / "sshd").start()
        stack.callback(server.stop)
        known_hosts = base / "known_hosts"
        known_hosts.write_text(server.host_key_line + "\n")
        port = free_port()
        cfg_path = write_config(base, server, port)
        cfg = load_config(cfg_path)
        (server.store / NODE).mkdir(exist_ok=True)
        remote = server.store / "cli-copy"
        app = stack.enter_context(service(cfg_path, port)) if with_http else None
        bare: tuple[Config, subprocess.Popen[bytes]] | None = None
        if hash_cost:
            (base / "nohash").mkdir()
            port2 = free_port()
            cfg2_path = write_config(base / "nohash", server, port2)
            bare = (load_config(cfg2_path), stack.enter_context(service(cfg2_path, port2, True)))
        curl = ["curl", "-sS", "-f", "--noproxy", "*"]
        for size in sizes:
            src = base / f"src-{size}"
            make_source(src, size)
            for _ in range(runs):
                for label, cipher in (("sftp CLI", None), ("sftp CLI aes128-gcm", AES)):
                    # Our side keeps its session open, so the CLI's start-up, key
                    # exchange and authentication (a batch doing just "pwd") are
                    # subtracted from its times.
                    setup = sftp_cli(server, known_hosts, "pwd", cipher)
                    put, get = f"put {src} {remote}", f"get {remote} /dev/null"
                    up = sftp_cli(server, known_hosts, put, cipher)
                    down = sftp_cli(server, known_hosts, get, cipher)
                    res.add(size, label, "up", up - setup)
                    res.add(size, label, "down", down - setup)
                    remote.unlink()
                worker = json.loads(
                    subprocess.run(
                        [sys.executable, __file__, "--repo-worker", str(cfg_path), str(src)],
                        check=True,
                        capture_output=True,
                        text=True,
                    ).stdout.splitlines()[-1]
                )
                res.add(size, REPO, "up", worker["put"])
                res.add(size, REPO, "down", worker["get"])
                res.rss_kib[REPO] = max(res.rss_kib.get(REPO, 0), worker["hwm"])
                if app is not None:
                    put_url, get_url = new_slot(cfg, size)
                    cpu0 = cpu_seconds(app.pid)
                    res.add(size, HTTP, "up", timed([*curl, "-T", str(src), put_url]))
                    res.cpu.setdefault((size, HTTP), []).append(cpu_seconds(app.pid) - cpu0)
                    res.add(size, HTTP, "down", timed([*curl, "-o", "/dev/null", get_url]))
                if bare is not None:
                    put_url, get_url = new_slot(bare[0], size)
                    cpu0 = cpu_seconds(bare[1].pid)
                    res.add(size, NO_HASH, "up", timed([*curl, "-T", str(src), put_url]))
                    res.cpu.setdefault((size, NO_HASH), []).append(cpu_seconds(bare[1].pid) - cpu0)
                    res.add(size, NO_HASH, "down", timed([*curl, "-o", "/dev/null", get_url]))
            src.unlink()
            shutil.rmtree(server.store / NODE / "files", ignore_errors=True)
        if app is not None:
            res.rss_kib[HTTP] = vm_hwm_kib(app.pid)
        if bare is not None:
            res.rss_kib[NO_HASH] = vm_hwm_kib(bare[1].pid)
    return res


AES = "aes128-gcm@openssh.com"
REPO, HTTP = "SftpRepository", "HTTP via app"
NO_HASH = "HTTP via app, FILE_SHA256 off"  # --hash-cost: the hash's reference
METHODS = ("sftp CLI", "sftp CLI aes128-gcm", REPO, HTTP, NO_HASH)


def table(res: Results, sizes: list[int], runs: int) -> str:
    rows = [
        "| size | method | upload MB/s | vs CLI | download MB/s | vs CLI | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        ref_up, ref_down = res.mbps(size, "sftp CLI", "up"), res.mbps(size, "sftp CLI", "down")
        for method in METHODS:
            up, down = res.mbps(size, method, "up"), res.mbps(size, method, "down")
            if up is None or down is None or ref_up is None or ref_down is None:
                continue
            rss = res.rss_kib.get(method)
            rows.append(
                f"| {size // 1024**2} MiB | {method} | {up:.0f} | {up / ref_up:.0%} | "
                f"{down:.0f} | {down / ref_down:.0%} | "
                f"{f'{rss / 1024:.0f} MiB' if rss else '-'} |"
            )
    for size in sizes:
        for method in (HTTP, NO_HASH):
            if (size, method) in res.cpu:
                cpu = statistics.median(res.cpu[(size, method)])
                rows.append(f"service CPU per {size // 1024**2} MiB upload, {method}: {cpu:.2f} s")
    rows.append(
        f"\nmedian of {runs} runs; sftp CLI times exclude its session set-up (a 'pwd' batch);"
        " HTTP = curl -T / curl -o /dev/null against make_app over SftpRepository;"
        " peak RSS = VmHWM of the process running our side"
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="64M,1G", help="comma-separated sizes (K/M/G)")
    parser.add_argument("--runs", type=int, default=3, help="runs per method (median)")
    parser.add_argument("--no-http", action="store_true", help="skip HTTP through the app")
    parser.add_argument(
        "--hash-cost",
        action="store_true",
        help="also HTTP through a second service with FILE_SHA256 off, interleaved",
    )
    parser.add_argument("--repo-worker", nargs=2, metavar=("CONFIG", "SRC"), help=argparse.SUPPRESS)
    parser.add_argument("--serve", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repo_worker:
        cfg_path, src = args.repo_worker
        asyncio.run(repo_worker(cfg_path, src, os.path.getsize(src)))
        return 0
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    with_http = not args.no_http
    with tempfile.TemporaryDirectory(prefix="mft-bench-") as tmp:
        res = run(sizes, args.runs, Path(tmp), with_http, args.hash_cost and with_http)
    print(table(res, sizes, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
