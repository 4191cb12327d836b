"""Slot requests/s on ejabberd: xmpp-mft, a component that does nothing, ejabberd's module.

The do-nothing component (``--echo``, a separate process: raw socket, regular
expressions, one fixed slot for every IQ get) is the floor of the XEP-0114 hop: what
any external component attached to ejabberd can reach, whatever it does per slot.
The gap between it and ejabberd's own ``mod_http_upload`` is the hop (two more loopback
sends and ejabberd's routing to and from the component); the gap between xmpp-mft and
it is xmpp-mft's own work. Same slixmpp client, interleaved rounds, medians; CPU µs per
slot of the component and of ejabberd from /proc. ``--baseline DIR`` attaches a second
xmpp-mft, from another checkout, to the same ejabberd (before/after in one run).
``--workers N`` is ``[http] workers`` of each xmpp-mft (default: its own, one per CPU;
above 1 its metrics go through prometheus_client's multiprocess files).

    python benchmarks/slot_floor.py [--rounds 3] [--windows 1,32] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from peers import wait_for_service
from peers_ops import anonymous_client, slots
from peers_servers import (
    EJABBERD_DOMAIN,
    ROOT,
    SHARE_JID,
    Ejabberd,
    Mft,
    cpu_seconds,
    running_mft,
)

from tests.fixtures.prosody import connect_client

_IQ = re.compile(rb"<iq\b[^>]*/>|<iq\b.*?</iq>", re.S)
_ATTR = re.compile(rb"""\b(id|from|to|type)=['"]([^'"]*)['"]""")
_URL = b"http://127.0.0.1:1/node_1/im/20261201/23/" + b"A" * 24 + b"/file.jpg"
_QUERY = b"?v=1&amp;size=1&amp;exp=1&amp;from=a%40b&amp;to=&amp;type=image%2Fjpeg&amp;sig="
_SLOT = (
    b'<slot xmlns="urn:xmpp:http:upload:0"><put url="' + _URL + _QUERY + b"A" * 43 + b'" />'
    b'<get url="' + _URL + b'" /></slot>'
)
_INFO = (
    b"<query xmlns='http://jabber.org/protocol/disco#info'>"
    b"<identity category='store' type='file'/><feature var='urn:xmpp:http:upload:0'/></query>"
)


async def echo_component(host: str, port: int, jid: str, secret: str) -> None:
    """Handshake, then answer every IQ get with one fixed stanza, replies of a read at once."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"<stream:stream xmlns='jabber:component:accept'"
        b" xmlns:stream='http://etherx.jabber.org/streams' to='" + jid.encode() + b"'>"
    )
    head = b""
    while (m := re.search(rb"""\bid=['"]([^'"]+)['"]""", head)) is None:
        head += await reader.read(4096)
    digest = hashlib.sha1(m.group(1) + secret.encode()).hexdigest()  # XEP-0114's handshake
    writer.write(f"<handshake>{digest}</handshake>".encode())
    buf = b""
    while data := await reader.read(65536):
        buf += data
        out, end = [], 0
        for iq in _IQ.finditer(buf):
            end = iq.end()
            a = dict(_ATTR.findall(iq.group(0)[: iq.group(0).index(b">")]))
            if a.get(b"type") == b"get":
                body = _INFO if b"disco#info" in iq.group(0) else _SLOT
                out.append(
                    b'<iq type="result" id="%s" to="%s" from="%s">%s</iq>'
                    % (a.get(b"id", b""), a.get(b"from", b""), a.get(b"to", b""), body)
                )
        buf = buf[end:]
        if out:
            writer.write(b"".join(out))


async def run(rounds: int, windows: list[int], baseline: Path | None, workers: int | None) -> None:
    """Start ejabberd, xmpp-mft (and the baseline's) and the echo component; measure;
    print medians."""
    base = Path(tempfile.mkdtemp(prefix="slot-floor-"))
    echo_jid = f"echo.{EJABBERD_DOMAIN}"
    checkouts = [("xmpp-mft", f"upload.{EJABBERD_DOMAIN}", ROOT)]
    if baseline is not None:
        checkouts.append(("xmpp-mft baseline", f"base.{EJABBERD_DOMAIN}", baseline))
    ejabberd = Ejabberd(base / "ejabberd", components=(*(c[1] for c in checkouts), echo_jid))
    ejabberd.start()
    echo: asyncio.subprocess.Process | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            client = anonymous_client(EJABBERD_DOMAIN)
            await connect_client(client, ejabberd.c2s_port)
            targets: list[tuple[str, str, int | None]] = []
            for name, jid, root in checkouts:
                mft = Mft(
                    name,
                    base / jid,
                    f'component_jid = "{jid}"\nsecret = "{ejabberd.secret}"\n'
                    f"port = {ejabberd.ports[jid]}\n",
                    f'url = "file://{base / jid}/repo"\n',
                    root=root,
                )
                await stack.enter_async_context(running_mft(mft, None, workers, []))
                await wait_for_service(client, jid, mft)
                targets.append((name, jid, mft.pid))
            argv = [__file__, "--echo", str(ejabberd.ports[echo_jid]), echo_jid, ejabberd.secret]
            echo = await asyncio.create_subprocess_exec(sys.executable, *argv)
            await wait_for_service(client, echo_jid, Mft("echo", base, "", ""))
            targets.append(("do-nothing component", echo_jid, echo.pid))
            share = SHARE_JID.format(domain=EJABBERD_DOMAIN)
            targets.append(("ejabberd mod_http_upload", share, None))
            results: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
            for r in range(rounds):
                for window in windows:
                    n = 3000 if window > 1 else 800
                    k = r % len(targets)
                    for name, jid, pid in targets[k:] + targets[:k]:
                        c0, e0 = cpu_seconds(pid) if pid else 0.0, cpu_seconds(ejabberd.pid)
                        got, seconds = await slots(client, jid, n, window, [])
                        c1, e1 = cpu_seconds(pid) if pid else 0.0, cpu_seconds(ejabberd.pid)
                        us = 1e6 / got
                        results.setdefault((window, name), []).append(
                            (got / seconds, (c1 - c0) * us, (e1 - e0) * us)
                        )
            client.disconnect()
    finally:
        if echo is not None and echo.returncode is None:
            echo.kill()
            await echo.wait()
        ejabberd.stop()
    print(
        "| slot requests/s on ejabberd | in flight | slots/s | component CPU µs/slot"
        " | ejabberd CPU µs/slot |"
    )
    print("|---|---|---|---|---|")
    for (window, name), rows in sorted(results.items()):
        rate, comp, ejd = (statistics.median(col) for col in zip(*rows, strict=True))
        print(f"| {name} | {window} | {rate:,.0f} | {comp:.0f} | {ejd:.0f} |")
    load = os.getloadavg()
    print(f"\n{rounds} interleaved rounds, medians; load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")


def main() -> None:
    """Parse the arguments; run the benchmark (or, with --echo, the echo component)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--windows", default="1,32", help="requests in flight, comma-separated")
    parser.add_argument("--baseline", type=Path, help="also run xmpp-mft from this checkout")
    parser.add_argument("--workers", type=int, help="[http] workers of each xmpp-mft")
    parser.add_argument(
        "--echo", nargs=3, metavar=("PORT", "JID", "SECRET"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.echo:
        port, jid, secret = args.echo
        asyncio.run(echo_component("127.0.0.1", int(port), jid, secret))
    else:
        windows = [int(w) for w in args.windows.split(",")]
        baseline = args.baseline.resolve() if args.baseline else None
        asyncio.run(run(args.rounds, windows, baseline, args.workers))


if __name__ == "__main__":
    main()
