"""xmpp-mft side by side with the upload modules of the servers it attaches to.

One run starts ejabberd 23.01 (mod_http_upload, no shaper, anonymous c2s logins),
Prosody 0.12 (mod_http_file_share), one sshd, and xmpp-mft three times: ``mft run``
attached to ejabberd and to Prosody (file:// repository each), and ``mft run --only
httpd`` over an sftp:// repository on the sshd. The same clients (slixmpp, aiohttp,
``curl``, OpenSSH ``sftp``) then measure, in interleaved rounds (the order of the
services rotates each round), medians of:

- slot requests/s at 1 and 32 in flight, on each server (one c2s connection);
- 100 KB uploads/s end to end (slot request + PUT) with 16 in flight, and downloads/s;
- 256 MiB and 1 GiB PUT (``curl -T``) and GET (``curl -o /dev/null``): xmpp-mft on
  file:// against each server's own disk store;
- HTTP->SFTP and SFTP->HTTP (curl through xmpp-mft's sftp:// repository) against the
  ``sftp`` CLI (default cipher, and ``-c aes128-gcm@openssh.com``) on the same sshd;
  for the PUT also ``sftp -f`` with aes-gcm, which ``fsync``'s each file on the server
  (``fsync@openssh.com``) as xmpp-mft does before its 201: a column of its own, not
  counted among the peers of the ratio;
- CPU milliseconds per operation of the server processes (/proc utime+stime, whole
  process trees), and peak RSS (VmHWM).

Durability is as deployed: xmpp-mft answers 201 after fsync (see README, Performance).
Every measurement that writes (uploads, PUTs) starts right after a scratch file a little
larger than what it writes is written and deleted (``peers_ops.warm_memory``), so that
each service writes into just-freed page cache, as on a running server whose cache is
full, not into pages this VM must first fetch from its hypervisor (~4 µs each), which
went to whichever service ran right after a clean-up.

    python benchmarks/peers.py [--quick] [--rounds 3] [--groups xmpp,crowd,curl,sftp]
                               [--workers N] [--baseline OTHER_CHECKOUT]

``MFT_BENCH_PROFILE="-m cProfile -o /tmp/mft.prof"`` runs every ``mft run`` under it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import slixmpp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers_ops import (
    Slot,
    anonymous_client,
    curl_get,
    curl_put,
    downloads,
    request_slot,
    run_timed,
    sftp_argv,
    slots,
    uploads,
    warm_memory,
)
from peers_servers import (
    EJABBERD_DOMAIN,
    MFT_JID,
    PROSODY_DOMAIN,
    ROOT,
    SHARE_JID,
    BenchProsody,
    Ejabberd,
    Mft,
    cpu_seconds,
    peak_rss_mib,
    prosody_instance,
    running_mft,
    tree,
)

from component.config import load_config
from httpd.ops.util import parse_size
from tests.fixtures.prosody import XmppUser, client_for, connect_client
from tests.fixtures.sshd import SshServer
from tests.unit.httpd_harness import make_slot

MFT, PROSODY, EJABBERD, CLI, CLI_AES = "xmpp-mft", "Prosody", "ejabberd", "sftp", "sftp aes-gcm"
BASELINE = "baseline"  # xmpp-mft from another checkout (--baseline), for before/after
PEERS = (PROSODY, EJABBERD, CLI, CLI_AES)
# Shown, not a peer of the ratio: the CLI with the durability xmpp-mft's PUT has.
CLI_AES_FSYNC = "sftp aes-gcm -f"
AES = "aes128-gcm@openssh.com"
MB = 1_000_000
PROSODY_MAX = 256 * 1024**2  # the largest file PUT to Prosody's module
PROFILE = os.environ.get("MFT_BENCH_PROFILE", "").split()


GROUPS = ("xmpp", "crowd", "curl", "sftp")


@dataclass(frozen=True)
class Params:
    """Sizes and counts of one run."""

    rounds: int
    serial_slots: int
    window_slots: int
    uploads: int
    sizes: tuple[int, ...]
    sftp_size: int
    groups: tuple[str, ...] = GROUPS
    workers: int | None = None  # [http] workers of this checkout (None: its default)


FULL = Params(3, 500, 4000, 1000, (256 * 1024**2, 1024**3), 256 * 1024**2)
QUICK = Params(1, 150, 800, 200, (32 * 1024**2, 64 * 1024**2), 32 * 1024**2)


@dataclass
class Row:
    """One line of the table: per column the rates of each round and CPU s per op."""

    label: str
    unit: str
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def add(self, column: str, rate: float, cpu_per_op: float | None) -> None:
        self.rates.setdefault(column, []).append(rate)
        if cpu_per_op is not None:
            self.cpu.setdefault(column, []).append(cpu_per_op)


@dataclass
class Target:
    """A service under test: its column, XMPP client and JID, the pids that do its work."""

    column: str
    client: slixmpp.ClientXMPP
    jid: str
    pids: list[int]

    def cpu(self) -> float:
        return sum(cpu_seconds(p) for p in self.pids)


class Bench:
    """The servers, clients and rows of one run."""

    def __init__(self, params: Params, base: Path) -> None:
        self.p = params
        self.base = base
        self.rows: dict[str, Row] = {}
        self.rss: dict[str, float] = {}
        self.rss_pids: dict[str, int] = {}
        self.errors: list[str] = []  # slot requests refused (counted out of the rates)
        self.loads: list[float] = []  # 1-minute load average at the start of each round

    def row(self, label: str, unit: str) -> Row:
        return self.rows.setdefault(label, Row(label, unit))

    def warm_for(self, nbytes: int) -> None:
        """:func:`warm_memory` before a measurement that writes ``nbytes``: 64 MiB more,
        for what the service and its client allocate besides the file."""
        warm_memory(self.base, nbytes // 1024**2 + 64)

    async def measure(
        self, label: str, unit: str, target: Target, run: Callable[[], Awaitable[tuple[float, int]]]
    ) -> None:
        """Run ``run`` (returns (amount, operations)) and add rate and CPU per op."""
        cpu0, t0 = target.cpu(), time.perf_counter()
        try:
            amount, ops = await run()
        except Exception as exc:
            raise RuntimeError(f"{label}, {target.column} ({target.jid}): {exc}") from exc
        seconds, cpu = time.perf_counter() - t0, target.cpu() - cpu0
        if os.environ.get("MFT_BENCH_DEBUG"):
            print(label, target.column, target.pids, cpu0, cpu, [tree(p) for p in target.pids])
        self.row(label, unit).add(target.column, amount / seconds, cpu / ops)

    # -- XMPP rows -------------------------------------------------------------------

    async def xmpp_rows(self, server: str, targets: list[Target], body: bytes) -> None:
        p = self.p
        for t in targets:
            await self.measure(
                f"slot requests/s, 1 in flight, {server}",
                "slots/s",
                t,
                lambda t=t: _count(slots(t.client, t.jid, p.serial_slots, 1, self.errors)),
            )
        for t in targets:
            await self.measure(
                f"slot requests/s, 32 in flight, {server}",
                "slots/s",
                t,
                lambda t=t: _count(slots(t.client, t.jid, p.window_slots, 32, self.errors)),
            )
        for t in targets:
            await self.upload_download(server, t, body)

    async def crowd(self, server: str, targets: list[Target], body: bytes) -> None:
        """100 uploads of 10 MB at once, end to end (slot + PUT): every one must succeed."""
        for t in targets:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:

                async def up(
                    t: Target = t, http: aiohttp.ClientSession = http
                ) -> tuple[float, int]:
                    got, _s = await uploads(t.client, http, t.jid, 100, 100, body)
                    return len(got) * len(body) / MB, len(got)

                self.warm_for(100 * len(body))
                await self.measure(
                    f"100 x 10 MB uploads at once, {server} (MB/s, all must succeed)", "MB/s", t, up
                )

    async def upload_download(self, server: str, t: Target, body: bytes) -> None:
        """100 KB uploads end to end, then a GET of each."""
        urls: list[str] = []
        async with aiohttp.ClientSession() as http:

            async def up() -> tuple[float, int]:
                got, _s = await uploads(t.client, http, t.jid, self.p.uploads, 16, body)
                urls.extend(got)
                return len(got), len(got)

            async def down() -> tuple[float, int]:
                await downloads(http, urls, 16)
                return len(urls), len(urls)

            self.warm_for(self.p.uploads * len(body))
            await self.measure(f"100 KB uploads/s, 16 in flight, {server}", "up/s", t, up)
            await self.measure(f"100 KB downloads/s, 16 in flight, {server}", "down/s", t, down)

    # -- big files with curl ---------------------------------------------------------

    async def curl_rows(
        self, targets: list[Target], src: Path, size: int, first: bool, clear: Callable[[], None]
    ) -> None:
        """PUT then GET of one big file per service, each PUT right after freeing a bit
        more page cache than it writes (:meth:`warm_for`: every service starts alike,
        whatever ran before it); ``clear`` drops the stored files after each service."""
        name = f"{size // 1024**2} MiB" if size < 1024**3 else f"{size // 1024**3} GiB"
        for t in targets:
            if t.column == PROSODY and (size > PROSODY_MAX or not first):
                # mod_http_file_share takes ~3 MB/s per PUT here (Lua-bound): one size,
                # one round, or the run takes an hour.
                continue
            slot = await request_slot(t.client, t.jid, "big.bin", size, "application/octet-stream")

            async def put(slot: Slot = slot) -> tuple[float, int]:
                await curl_put(slot, src)
                return size / MB, 1

            async def get(slot: Slot = slot) -> tuple[float, int]:
                await curl_get(slot.get)
                return size / MB, 1

            self.warm_for(size)
            await self.measure(f"{name} PUT, curl -T (file:// vs disk store)", "MB/s", t, put)
            await self.measure(f"{name} GET, curl", "MB/s", t, get)
            clear()

    # -- SFTP ------------------------------------------------------------------------

    async def sftp_rows(self, ours: list[tuple[str, Mft]], sshd: SshServer, src: Path) -> None:
        size = self.p.sftp_size
        name = f"{size // 1024**2} MiB"
        up_label, down_label = f"{name} HTTP->SFTP (PUT)", f"{name} SFTP->HTTP (GET)"
        sshd_pid = sshd.process.proc.pid  # type: ignore[union-attr]
        for column, mft in ours:
            cfg = load_config(mft.config_path)
            slot = make_slot(cfg, size, "sftp.bin", lifetime=3600)
            base = cfg.http.public_url
            mslot = Slot(base + slot.put_url, base + slot.get_url, {})
            t = Target(column, None, "", [mft.pid, sshd_pid])  # type: ignore[arg-type]
            self.warm_for(size)
            await self.measure(up_label, "MB/s", t, lambda s=mslot: _mb(curl_put(s, src), size))
            await self.measure(down_label, "MB/s", t, lambda s=mslot: _mb(curl_get(s.get), size))
        known_hosts = self.base / "known_hosts"
        known_hosts.write_text(sshd.host_key_line + "\n")
        remote = sshd.store / "cli-copy"
        for column, cipher, fsync in (
            (CLI, None, False),
            (CLI_AES, AES, False),
            (CLI_AES_FSYNC, AES, True),
        ):
            argv = sftp_argv(sshd.port, sshd.client_key, known_hosts, sshd.user, cipher)
            if fsync:
                argv.insert(1, "-f")
            # Our side keeps its SFTP session open: the CLI's start-up, key exchange and
            # authentication (a batch doing only "pwd") are subtracted from its times.
            for label, batch in (
                (up_label, f"put {src} {remote}"),
                *(() if fsync else ((down_label, f"get {remote} /dev/null"),)),
            ):
                if label == up_label:
                    self.warm_for(size)
                s0 = cpu_seconds(sshd_pid)
                setup = await run_timed(argv, b"pwd\n")
                s1 = cpu_seconds(sshd_pid)
                done = await run_timed(argv, batch.encode() + b"\n")
                s2 = cpu_seconds(sshd_pid)
                seconds = done.seconds - setup.seconds
                cpu = (done.child_cpu - setup.child_cpu) + (s2 - s1) - (s1 - s0)
                self.row(label, "MB/s").add(column, size / MB / seconds, cpu)
            remote.unlink()


async def _count(coro: Awaitable[tuple[int, float]]) -> tuple[float, int]:
    n, _seconds = await coro
    return n, n


async def _mb(coro: Awaitable[object], size: int) -> tuple[float, int]:
    await coro
    return size / MB, 1


def make_source(path: Path, size: int) -> None:
    """``size`` random bytes on disk (16 MiB of randomness repeated)."""
    block = os.urandom(16 * 1024**2)
    with path.open("wb") as f:
        for i in range(0, size, len(block)):
            f.write(block[: size - i])


async def wait_for_service(client: slixmpp.ClientXMPP, jid: str, mft: Mft) -> None:
    """Until the component answers disco#info (it connects on its own)."""
    async with asyncio.timeout(30):
        while True:
            if mft.process is not None and mft.process.returncode is not None:
                raise RuntimeError(f"{mft.name} exited:\n{mft.log_tail()}")
            try:
                await client.plugin["xep_0030"].get_info(jid=jid, timeout=2)
                return
            except (slixmpp.exceptions.IqError, slixmpp.exceptions.IqTimeout):
                await asyncio.sleep(0.2)  # polling another process's start-up


def _rotate(items: list[Target], n: int) -> list[Target]:
    return items[n % len(items) :] + items[: n % len(items)]


@dataclass
class Flavour:
    """One xmpp-mft under test (this checkout, or a baseline checkout) and its processes."""

    column: str
    root: Path
    prefix: str  # of its component JIDs

    def jid(self, domain: str) -> str:
        return f"{self.prefix}.{domain}"


async def run(bench: Bench, baseline: Path | None) -> None:
    """Start everything, run the rounds, stop everything."""
    params, base = bench.p, bench.base
    flavours = [Flavour(MFT, ROOT, "upload")]
    if baseline is not None:
        flavours.append(Flavour(BASELINE, baseline, "base"))
    extra = tuple(f.jid(EJABBERD_DOMAIN) for f in flavours[1:])
    ejabberd = Ejabberd(
        base / "ejabberd", components=(MFT_JID.format(domain=EJABBERD_DOMAIN), *extra)
    )
    ejabberd.start()
    sshd = SshServer(base / "sshd").start()
    prosody = prosody_instance(base / "prosody", tuple(f.jid(PROSODY_DOMAIN) for f in flavours[1:]))
    clients: list[slixmpp.ClientXMPP] = []
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(prosody)
            assert prosody.pid is not None
            ce = anonymous_client(EJABBERD_DOMAIN)
            cp = client_for(XmppUser(f"bench@{PROSODY_DOMAIN}", "bench-pw"), "bench")
            clients += [ce, cp]
            await connect_client(ce, ejabberd.c2s_port)
            await connect_client(cp, prosody.c2s_port)
            e_share, p_share = (
                SHARE_JID.format(domain=EJABBERD_DOMAIN),
                SHARE_JID.format(domain=PROSODY_DOMAIN),
            )
            on_e = [Target(EJABBERD, ce, e_share, [ejabberd.pid])]
            on_p = [Target(PROSODY, cp, p_share, [prosody.pid])]
            disk = [
                Target(PROSODY, cp, p_share, [prosody.pid]),
                Target(EJABBERD, ce, e_share, [ejabberd.pid]),
            ]
            sftp_targets: list[tuple[str, Mft]] = []
            dirs: list[Path] = []
            for f in flavours:
                e_jid, p_jid = f.jid(EJABBERD_DOMAIN), f.jid(PROSODY_DOMAIN)
                tag = f.prefix
                p_secret = prosody.extra_components.get(p_jid, prosody.component_secret)
                mft_e = Mft(
                    f"{tag}-ejabberd",
                    base / f"{tag}-e",
                    f'component_jid = "{e_jid}"\nsecret = "{ejabberd.secret}"\n'
                    f"port = {ejabberd.ports[e_jid]}\n",
                    f'url = "file://{base}/{tag}-e/repo"\n',
                    root=f.root,
                )
                mft_p = Mft(
                    f"{tag}-prosody",
                    base / f"{tag}-p",
                    f'component_jid = "{p_jid}"\nsecret = "{p_secret}"\n'
                    f"port = {prosody.component_port}\n",
                    f'url = "file://{base}/{tag}-p/repo"\n',
                    root=f.root,
                )
                (sshd.store / tag).mkdir(exist_ok=True)
                mft_s = Mft(
                    f"{tag}-sftp",
                    base / f"{tag}-s",
                    "",
                    f'url = "{sshd.url(sshd.store / tag)}"\nhost_key = "{sshd.host_key_line}"\n'
                    f'client_key = "{sshd.client_key}"\n',
                    root=f.root,
                )
                for mft, only in ((mft_e, None), (mft_p, None), (mft_s, "httpd")):
                    # A baseline checkout may predate the key: it keeps its own default.
                    workers = params.workers if f.column == MFT else None
                    await stack.enter_async_context(running_mft(mft, only, workers, PROFILE))
                await wait_for_service(ce, e_jid, mft_e)
                await wait_for_service(cp, p_jid, mft_p)
                on_e.append(Target(f.column, ce, e_jid, [mft_e.pid, ejabberd.pid]))
                on_p.append(Target(f.column, cp, p_jid, [mft_p.pid, prosody.pid]))
                disk.append(Target(f.column, ce, e_jid, [mft_e.pid]))
                sftp_targets.append((f.column, mft_s))
                dirs += [base / f"{tag}-e" / "repo" / "files", sshd.store / tag / "files"]
                for label, mft in (("ejabberd", mft_e), ("Prosody", mft_p), ("sftp://", mft_s)):
                    bench.rss_pids[f"{f.column} ({label})"] = mft.pid
            bench.rss_pids[PROSODY] = prosody.pid
            bench.rss_pids[EJABBERD] = ejabberd.pid
            body, big_body = os.urandom(100 * 1000), os.urandom(10 * MB)
            for t in on_e + on_p:  # warm-up, not counted
                await slots(t.client, t.jid, 50, 8)
            sources = {size: base / f"src-{size}" for size in {*params.sizes, params.sftp_size}}
            for size, path in sources.items():
                make_source(path, size)
            for r in range(params.rounds):
                bench.loads.append(os.getloadavg()[0])
                print(f"round {r + 1}/{params.rounds} (load {bench.loads[-1]:.2f})", flush=True)
                if "xmpp" in params.groups:
                    await bench.xmpp_rows("ejabberd", _rotate(on_e, r), body)
                    await bench.xmpp_rows("Prosody", _rotate(on_p, r), body)
                if "crowd" in params.groups:
                    # Not against Prosody: its module takes ~3 MB/s per upload here.
                    await bench.crowd("ejabberd", _rotate(on_e, r), big_body)
                    _clear_stores(dirs, ejabberd, prosody)
                for size in params.sizes if "curl" in params.groups else ():
                    await bench.curl_rows(
                        _rotate(disk, r),
                        sources[size],
                        size,
                        r == 0,
                        lambda: _clear_stores(dirs, ejabberd, prosody),
                    )
                if "sftp" in params.groups:
                    await bench.sftp_rows(sftp_targets, sshd, sources[params.sftp_size])
                    _clear_stores(dirs, ejabberd, prosody)
            bench.rss = {label: peak_rss_mib(pid) for label, pid in bench.rss_pids.items()}
            for c in clients:
                c.disconnect()
    finally:
        sshd.stop()
        ejabberd.stop()


def _clear_stores(dirs: list[Path], ejabberd: Ejabberd, prosody: BenchProsody) -> None:
    """Drop the big files behind each server's back (disk space; not timed)."""
    for d in (*dirs, ejabberd.docroot):
        shutil.rmtree(d, ignore_errors=True)
    ejabberd.docroot.mkdir(exist_ok=True)
    for f in prosody.data_path.rglob("*"):
        if f.is_file() and f.stat().st_size > 1024**2:
            f.unlink()


def table(bench: Bench) -> str:
    """The markdown table: medians, xmpp-mft's ratio to the best peer of each row, and
    the lowest and highest of that ratio taken round by round (the spread of the run)."""
    shown = (MFT, BASELINE, *PEERS, CLI_AES_FSYNC)
    columns = [c for c in shown if any(c in r.rates for r in bench.rows.values())]
    out = [
        "| operation (median) | "
        + " | ".join(columns)
        + " | xmpp-mft vs best peer | per round, lowest-highest |",
        "|---" * (len(columns) + 3) + "|",
    ]

    def line(
        label: str, values: dict[str, float], fmt: str, higher_better: bool, spread: str
    ) -> str:
        cells = [fmt.format(values[c]) if c in values else "-" for c in columns]
        others = [v for c, v in values.items() if c in PEERS]
        ratio = "-"
        if MFT in values and others:
            best = max(others) if higher_better else min(others)
            ratio = f"{values[MFT] / best:.2f}x" if best else "-"
        return f"| {label} | " + " | ".join(cells) + f" | {ratio} | {spread} |"

    for row in bench.rows.values():
        rates = {c: statistics.median(v) for c, v in row.rates.items()}
        spread = _round_ratios(row.rates)
        out.append(line(f"{row.label} ({row.unit})", rates, "{:,.0f}", True, spread))
        cpu = {c: statistics.median(v) * 1000 for c, v in row.cpu.items()}
        out.append(line("&nbsp;&nbsp;CPU ms per op", cpu, "{:,.2f}", False, ""))
    rss = bench.rss
    for label, mib in rss.items():
        out.append(f"| peak RSS {label} | {mib:,.0f} MiB |" + " |" * (len(columns) + 1))
    return "\n".join(out)


def _round_ratios(rates: dict[str, list[float]]) -> str:
    """xmpp-mft over the best peer of the same round, lowest and highest: ``0.61-0.74x``.

    A column's list holds one figure per round in round order (a peer measured in the
    first round only, as Prosody for big files, counts in that round only).
    """
    ratios = []
    for i, ours in enumerate(rates.get(MFT, [])):
        peers = [r[i] for c, r in rates.items() if c in PEERS and i < len(r)]
        if peers and max(peers):
            ratios.append(ours / max(peers))
    if len(ratios) < 2:
        return "-"
    return f"{min(ratios):.2f}-{max(ratios):.2f}x"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 round")
    parser.add_argument("--rounds", type=int, help="rounds (median); default 3, quick 1")
    parser.add_argument("--sizes", help="big-file sizes, comma-separated (K/M/G)")
    parser.add_argument("--groups", help=f"row groups to run, of {','.join(GROUPS)}")
    parser.add_argument(
        "--workers", type=int, help="[http] workers of this checkout (default: one per CPU)"
    )
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument("--baseline", type=Path, help="also run xmpp-mft from this checkout")
    args = parser.parse_args(argv)
    params = QUICK if args.quick else FULL
    if args.rounds:
        params = dataclasses.replace(params, rounds=args.rounds)
    if args.sizes:
        sizes = tuple(parse_size(s) for s in args.sizes.split(","))
        params = dataclasses.replace(params, sizes=sizes)
    if args.groups:
        params = dataclasses.replace(params, groups=tuple(args.groups.split(",")))
    if args.workers is not None:
        params = dataclasses.replace(params, workers=args.workers)
    logging.basicConfig(level=logging.WARNING)
    load0 = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        else:
            tmp = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="mft-peers-", dir="/var/tmp")
            )
        baseline = args.baseline.resolve() if args.baseline else None
        bench = Bench(params, Path(tmp))
        try:
            asyncio.run(run(bench, baseline))
        except BaseException:
            if bench.rows:
                print("\n(rows measured so far)\n" + table(bench), flush=True)
            raise
    load1 = os.getloadavg()
    print()
    print(table(bench))
    if bench.errors:
        counts = collections.Counter(bench.errors)
        print("\nslot requests refused: " + ", ".join(f"{k} x{n}" for k, n in counts.items()))
    print(
        f"\n{params.rounds} interleaved round(s), started {started}; load average "
        f"{load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f} before, "
        f"{load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} after, "
        f"{'/'.join(f'{x:.2f}' for x in bench.loads)} at the start of each round; "
        f"{os.cpu_count()} CPUs. Prosody's module: {PROSODY_MAX // 1024**2} MiB PUT/GET "
        "in the first round only (it takes ~3 MB/s per PUT here). "
        "CPU ms per op: utime+stime of the server process trees doing the work "
        "(XMPP rows: the XMPP server plus the upload service; SFTP rows: sshd plus "
        "xmpp-mft or the sftp CLI); lower is better there."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
