"""The operations benchmarks/peers.py times, each against any XEP-0363 service.

Every function returns how many operations it ran (or bytes moved) and the seconds it
took; the caller reads the servers' CPU around it.
"""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import slixmpp

UPLOAD_NS = "urn:xmpp:http:upload:0"
CURL = ["curl", "-sS", "-f", "--noproxy", "*", "-o", "/dev/null"]


@dataclass(frozen=True)
class Slot:
    """A slot as a client sees it: PUT URL, the headers the PUT must carry, GET URL."""

    put: str
    get: str
    headers: dict[str, str]


def anonymous_client(domain: str) -> slixmpp.ClientXMPP:
    """A slixmpp client that logs in with SASL ANONYMOUS (plain loopback settings)."""
    client = slixmpp.ClientXMPP(domain, "")
    client.enable_starttls = False
    client.enable_direct_tls = False
    client.enable_plaintext = True
    for plugin in ("xep_0030", "xep_0363"):
        client.register_plugin(plugin)
    return client


async def request_slot(
    client: slixmpp.ClientXMPP, service: str, name: str, size: int, ctype: str
) -> Slot:
    """One XEP-0363 slot request; raises on an error reply or a timeout."""
    iq = await client.plugin["xep_0363"].request_slot(
        slixmpp.JID(service), name, size, ctype, timeout=60
    )
    slot = iq.xml.find(f"{{{UPLOAD_NS}}}slot")
    if slot is None:
        raise RuntimeError(f"{service}: no slot in the reply")
    put, get = slot.find(f"{{{UPLOAD_NS}}}put"), slot.find(f"{{{UPLOAD_NS}}}get")
    assert put is not None and get is not None
    headers = {h.get("name", ""): h.text or "" for h in put.findall(f"{{{UPLOAD_NS}}}header")}
    return Slot(put.get("url", ""), get.get("url", ""), headers)


async def slots(
    client: slixmpp.ClientXMPP, service: str, n: int, window: int, errors: list[str] | None = None
) -> tuple[int, float]:
    """``n`` slot requests with at most ``window`` in flight.

    :returns: the slots handed out and the seconds it took; error replies are appended
        to ``errors`` (raised when it is ``None``).
    """
    sem = asyncio.Semaphore(window)
    got = 0

    async def one(i: int) -> None:
        nonlocal got
        async with sem:
            try:
                await request_slot(client, service, f"file-{i}.jpg", 1000 + i, "image/jpeg")
                got += 1
            except slixmpp.exceptions.IqError as exc:
                if errors is None:
                    raise
                errors.append(f"{service}: {exc.iq['error']['condition']}")

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return got, time.perf_counter() - t0


async def uploads(
    client: slixmpp.ClientXMPP,
    http: aiohttp.ClientSession,
    service: str,
    n: int,
    window: int,
    body: bytes,
) -> tuple[list[str], float]:
    """``n`` uploads end to end (slot request, then PUT) with ``window`` in flight.

    :returns: the GET URLs and the seconds it took.
    """
    sem = asyncio.Semaphore(window)
    urls: list[str] = []
    ctype = "application/octet-stream"

    async def one(i: int) -> None:
        async with sem:
            slot = await request_slot(client, service, f"up-{i}.bin", len(body), ctype)
            headers = {"Content-Type": ctype, **slot.headers}
            async with http.put(slot.put, data=body, headers=headers) as resp:
                if resp.status not in (200, 201):
                    raise RuntimeError(f"{service}: PUT answered {resp.status}")
            urls.append(slot.get)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return urls, time.perf_counter() - t0


async def downloads(http: aiohttp.ClientSession, urls: list[str], window: int) -> float:
    """GET every URL (whole body) with ``window`` in flight; seconds."""
    sem = asyncio.Semaphore(window)

    async def one(url: str) -> None:
        async with sem, http.get(url) as resp:
            if resp.status != 200:
                raise RuntimeError(f"GET {url.split('?')[0]} answered {resp.status}")
            await resp.read()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(u) for u in urls))
    return time.perf_counter() - t0


@dataclass(frozen=True)
class Timed:
    """Wall seconds and the CPU seconds of the child processes that did the work."""

    seconds: float
    child_cpu: float


async def run_timed(argv: list[str], stdin: bytes | None = None) -> Timed:
    """Run a client command to its end; fail on a non-zero exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await proc.communicate(stdin)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err.decode()[-500:]}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return Timed(seconds, cpu)


async def curl_put(slot: Slot, src: Path) -> Timed:
    """``curl -T FILE`` to the slot's PUT URL (streams the file; no --data-binary)."""
    headers = {"Content-Type": "application/octet-stream", **slot.headers}
    argv = [*CURL, "-T", str(src)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    # curl sends Expect: 100-continue for large bodies; every server here answers it.
    return await run_timed([*argv, slot.put])


async def curl_get(url: str) -> Timed:
    """``curl -o /dev/null URL``."""
    return await run_timed([*CURL, url])


def sftp_argv(port: int, key: Path, known_hosts: Path, user: str, cipher: str | None) -> list[str]:
    """OpenSSH's ``sftp`` in batch mode from stdin against 127.0.0.1:``port``."""
    argv = ["sftp", "-F", "/dev/null", "-q", "-b", "-", "-i", str(key)]
    argv += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes"]
    argv += ["-o", "BatchMode=yes", "-P", str(port)]
    if cipher:
        argv += ["-c", cipher]
    return [*argv, f"{user}@127.0.0.1"]


def warm_memory(base: Path, mib: int) -> None:
    """Write and delete a ``mib`` MiB scratch file in ``base``, so that the page cache it
    frees is handed out again by whatever writes next.

    On this VM a page fresh from the hypervisor costs ~4 µs of system time at first
    touch (1 GiB ``dd conv=fsync``: 288 MB/s into fresh pages, 1.4 GB/s into freed
    ones), while on a running server new page-cache pages come from reclaiming old ones;
    a write-heavy measurement started after this pays what the server would.
    """
    block = b"\1" * 1024**2
    scratch = base / "warm.bin"
    with scratch.open("wb") as f:
        for _ in range(mib):
            f.write(block)
    scratch.unlink()
