"""Prosody message throughput with and without mod_mft_share, side by side in one run.

One Prosody 0.12 with two VirtualHosts: ``plain.bench`` (no share module) and
``share.bench`` (mod_mft_share loaded from deploy/prosody, as deploy/prosody/
mft_share.cfg.lua sets it up, reporting to a connected component). On each host a
sender streams chat messages to a receiver's full JID over raw c2s sockets (so the
client is not the bottleneck), first plain text, then messages carrying an upload URL in
body and OOB (which the module reports). Variants alternate over the rounds; the table
gives the median messages/s and Prosody's CPU time per message (from /proc).

    python benchmarks/share_module.py [--messages 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from component.servers.deploykit import prosody_share_snippet  # noqa: E402
from component.servers.prosody import ProsodyInstance, _run  # noqa: E402
from tests.integration.xmpp_helpers import bare_component  # noqa: E402

PLAIN, SHARE = "plain.bench", "share.bench"
COMPONENT = f"upload.{PLAIN}"
PREFIX = "https://upload.example.com:5443/"
URL = PREFIX + "node_1/im/20261201/21/JpGpM0nT1pYQdmB0yqWm9sJb/holiday%20photo.jpg"
TEXT = "Hello, see you at the meeting at ten tomorrow, bring the printed slides please."
CHUNK = 200  # stanzas per write
TICKS = os.sysconf("SC_CLK_TCK")


def message(to: str, n: int, with_url: bool) -> bytes:
    """One chat stanza, the URL in body and OOB (as Conversations sends it) or plain."""
    if with_url:
        body = f"<body>{URL}</body><x xmlns='jabber:x:oob'><url>{URL}</url></x>"
    else:
        body = f"<body>{TEXT} #{n}</body>"
    return f"<message to='{to}' type='chat' id='m{n}'>{body}</message>".encode()


class RawClient:
    """A minimal c2s client: plain stream, SASL PLAIN, bind; then raw stanzas."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, jid: str):
        self.reader, self.writer, self.jid = reader, writer, jid

    @classmethod
    async def login(cls, port: int, host: str, user: str, password: str) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        buf = bytearray()

        async def until(marker: bytes) -> None:
            while marker not in buf:
                data = await reader.read(65536)
                if not data:
                    raise RuntimeError(f"stream closed waiting for {marker!r}: {bytes(buf)!r}")
                buf.extend(data)
            del buf[: buf.index(marker) + len(marker)]

        def stream() -> None:
            writer.write(
                f"<?xml version='1.0'?><stream:stream to='{host}' xmlns='jabber:client'"
                " xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>".encode()
            )

        stream()
        await until(b"</stream:features>")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        sasl = "urn:ietf:params:xml:ns:xmpp-sasl"
        writer.write(f"<auth xmlns='{sasl}' mechanism='PLAIN'>{token}</auth>".encode())
        await until(b"<success")
        stream()
        await until(b"</stream:features>")
        writer.write(
            b"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            b"<resource>bench</resource></bind></iq>"
        )
        await until(b"</iq>")
        return cls(reader, writer, f"{user}@{host}/bench")

    async def count_messages(self, n: int) -> None:
        """Read until ``n`` messages have arrived."""
        seen, tail, marker = 0, b"", b"</message>"
        while seen < n:
            data = await self.reader.read(262144)
            if not data:
                raise RuntimeError("receiver stream closed")
            chunk = tail + data
            seen += chunk.count(marker)
            tail = chunk[-(len(marker) - 1) :]

    async def send_all(self, stanzas: list[bytes]) -> None:
        """Write the stanzas in chunks, draining between them."""
        for i in range(0, len(stanzas), CHUNK):
            self.writer.write(b"".join(stanzas[i : i + CHUNK]))
            await self.writer.drain()

    def close(self) -> None:
        self.writer.write(b"</stream:stream>")
        self.writer.close()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Result:
    rate: list[float]
    cpu_us: list[float]


async def run_once(
    pid: int, sender: RawClient, receiver: RawClient, n: int, with_url: bool
) -> tuple[float, float]:
    """(messages/s, Prosody CPU µs per message) for one batch."""
    stanzas = [message(receiver.jid, i, with_url) for i in range(n)]
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    counting = asyncio.create_task(receiver.count_messages(n))
    await sender.send_all(stanzas)
    await counting
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    return n / elapsed, cpu / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mft-bench-share-") as tmp:
        prosody = ProsodyInstance(
            Path(tmp) / "prosody",
            domain=PLAIN,
            component_jid=COMPONENT,
            plugin_paths=[str(ROOT / "deploy" / "prosody")],
            extra_config=prosody_share_snippet(SHARE, [COMPONENT], [PREFIX], None),
        )
        async with prosody:
            for host in (PLAIN, SHARE):
                for user in ("sender", "receiver"):
                    await _run(
                        "prosodyctl register",
                        "prosodyctl", "--config", str(prosody.config_path),
                        "register", user, host, "pw",
                    )  # fmt: skip
            pid = prosody.pid
            assert pid is not None
            async with bare_component(COMPONENT, prosody.component_secret, prosody.component_port):
                clients = {
                    host: (
                        await RawClient.login(prosody.c2s_port, host, "sender", "pw"),
                        await RawClient.login(prosody.c2s_port, host, "receiver", "pw"),
                    )
                    for host in (PLAIN, SHARE)
                }
                variants = [(host, url) for url in (False, True) for host in (PLAIN, SHARE)]
                results = {v: Result([], []) for v in variants}
                for host, url in variants:  # warm-up
                    await run_once(pid, *clients[host], min(1000, args.messages), url)
                for _ in range(args.rounds):
                    for v in variants:
                        rate, cpu = await run_once(pid, *clients[v[0]], args.messages, v[1])
                        results[v].rate.append(rate)
                        results[v].cpu_us.append(cpu)
                for sender, receiver in clients.values():
                    sender.close()
                    receiver.close()
    print(
        f"Prosody {PLAIN} vs {SHARE} (mod_mft_share), {args.messages} chat messages x"
        f" {args.rounds} rounds, medians"
    )
    print(f"{'message':<28}{'module':<10}{'msgs/s':>10}{'Prosody CPU µs/msg':>22}")
    for host, url in variants:
        r = results[(host, url)]
        kind = "URL in body + OOB" if url else "plain text"
        module = "loaded" if host == SHARE else "none"
        print(
            f"{kind:<28}{module:<10}{statistics.median(r.rate):>10.0f}"
            f"{statistics.median(r.cpu_us):>22.1f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
