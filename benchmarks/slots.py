"""Slot requests per second over one c2s connection: xmpp-mft vs Prosody's mod_http_file_share.

Both services are attached to the same Prosody in the same run (ours as its own process,
``mft run --only component``, as deployed), and the same slixmpp client asks each for
slots, first one request at a time (latency-bound), then with a
window of requests in flight (throughput-bound). Prints a table.

    python benchmarks/slots.py [--requests 2000] [--window 64] [--rounds 3]

``MFT_BENCH_PROFILE="-m cProfile -o slots.prof"`` runs our component under a profiler.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import slixmpp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from component.servers.childproc import die_with_parent  # noqa: E402
from component.servers.prosody import ProsodyInstance  # noqa: E402
from tests.fixtures.prosody import XmppUser, client_for, connect_client  # noqa: E402

DOMAIN = "localhost"
OURS = f"upload.{DOMAIN}"
PROSODY_SHARE = f"share.{DOMAIN}"
PROFILE = os.environ.get("MFT_BENCH_PROFILE", "").split()


def share_config(http_port: int) -> list[str]:
    """Prosody's own upload service, limits raised so that quotas never refuse a slot."""
    return [
        f'Component "{PROSODY_SHARE}" "http_file_share"',
        "    http_file_share_size_limit = 1024*1024*1024",
        "    http_file_share_daily_quota = 1024*1024*1024*1024",
        "    http_file_share_global_quota = 1024*1024*1024*1024*1024",
        f'    http_external_url = "http://127.0.0.1:{http_port}/"',
    ]


async def wait_for_component(
    client: slixmpp.ClientXMPP, service: asyncio.subprocess.Process, log: Path
) -> None:
    """Until the component answers disco#info (it connects to Prosody on its own)."""
    async with asyncio.timeout(20):
        while True:
            if service.returncode is not None:
                raise RuntimeError(log.read_text())  # noqa: ASYNC240 - failure path only
            try:
                await client.plugin["xep_0030"].get_info(jid=OURS, timeout=2)
                return
            except (slixmpp.exceptions.IqError, slixmpp.exceptions.IqTimeout):
                await asyncio.sleep(0.2)  # polling a separate process's start-up


async def run_requests(client: slixmpp.ClientXMPP, service: str, n: int, window: int) -> float:
    """Send ``n`` slot requests with at most ``window`` in flight; requests per second."""
    upload = client.plugin["xep_0363"]
    sem = asyncio.Semaphore(window)
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        async with sem:
            try:
                iq = await upload.request_slot(
                    slixmpp.JID(service), f"file-{i}.jpg", 1000 + i, "image/jpeg", timeout=30
                )
                if not iq["http_upload_slot"]["put"]["url"]:
                    errors += 1
            except (slixmpp.exceptions.IqError, slixmpp.exceptions.IqTimeout):
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{service}: {errors} of {n} slot requests failed")
    return n / elapsed


async def bench(requests: int, window: int, rounds: int) -> list[tuple[str, str, float]]:
    with tempfile.TemporaryDirectory(prefix="mft-bench-slots-") as tmp:
        base = Path(tmp)
        prosody = ProsodyInstance(
            base / "prosody", domain=DOMAIN, component_jid=OURS, users={"bench": "bench-pw"}
        )
        prosody.extra_config = share_config(prosody.http_port)
        async with prosody:
            config = base / "mft.toml"
            config.write_text(
                f"""
[xmpp]
component_jid = "{OURS}"
secret = "{prosody.component_secret}"
port = {prosody.component_port}
[http]
public_url = "http://127.0.0.1:1"
secret = "{"b" * 32}"
[repository]
url = "file://{base}/repo"
[database]
url = "sqlite:///{base}/aft.sqlite3"
"""
            )
            # A file, not a pipe: an undrained pipe fills up and stalls the component.
            log_file = (base / "component.log").open("wb")
            process = await asyncio.create_subprocess_exec(
                sys.executable, *PROFILE, "-m", "component",
                "run", "--only", "component", "-c", str(config),
                cwd=ROOT, stderr=log_file, preexec_fn=die_with_parent(),
            )  # fmt: skip
            client = client_for(XmppUser(f"bench@{DOMAIN}", "bench-pw"), "bench")
            try:
                await connect_client(client, prosody.c2s_port)
                await wait_for_component(client, process, base / "component.log")
                results: list[tuple[str, str, float]] = []
                cases: list[tuple[str, int, int]] = [
                    ("1 in flight", max(requests // 4, 50), 1),
                    (f"{window} in flight", requests, window),
                ]
                for label, n, w in cases:
                    for name, service in (
                        ("Prosody mod_http_file_share", PROSODY_SHARE),
                        ("xmpp-mft", OURS),
                    ):
                        await run_requests(client, service, min(n, 50), w)  # warm-up
                        rates = [await run_requests(client, service, n, w) for _ in range(rounds)]
                        results.append((label, name, statistics.median(rates)))
                return results
            finally:
                client.disconnect()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await client.disconnected
                process.terminate()
                await process.wait()
                log_file.close()


def print_table(results: list[tuple[str, str, float]], requests: int, rounds: int) -> None:
    print(f"\nSlot requests per second over one c2s connection (median of {rounds} rounds)")
    print(f"{'mode':<16} {'service':<30} {'slots/s':>10} {'vs Prosody':>11}")
    print("-" * 70)
    ref: dict[str, float] = {}
    for label, name, rate in results:
        if name.startswith("Prosody"):
            ref[label] = rate
        ratio = rate / ref[label] if label in ref else float("nan")
        print(f"{label:<16} {name:<30} {rate:>10.0f} {ratio:>10.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results = asyncio.run(bench(args.requests, args.window, args.rounds))
    print_table(results, args.requests, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
