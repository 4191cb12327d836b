"""``mft sandbox``: Prosody + the service on embedded defaults, usable by a real client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tomllib
from pathlib import Path

import aiohttp
import pytest

from component.audit import AuditQuery
from component.audit.sqlite import SqliteAuditLog
from component.config import load_config
from component.servers.childproc import die_with_parent
from httpd.ops.sandbox import READY_LINE
from tests.fixtures.common import (
    free_port,
    process_gone,
    reaping,
    require_binary,
    spawn_mft,
    wait_gone,
)
from tests.fixtures.prosody import XmppUser, client_for, connect_client, disconnect_client

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def _read_until_ready(stream: asyncio.StreamReader, seen: list[str]) -> None:
    while True:
        line = await stream.readline()
        if not line:
            raise RuntimeError("mft sandbox exited before it was ready:\n" + "".join(seen))
        seen.append(line.decode(errors="replace"))
        if READY_LINE in seen[-1]:
            return


async def test_sandbox_serves_a_real_client(tmp_path: Path) -> None:
    """Sandbox up; alice uploads with slixmpp; file and both rows exist; Ctrl-C stops all."""
    require_binary("prosody")
    directory = tmp_path / "sbx"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "component", "sandbox", "--dir", str(directory),
        "--c2s-port", str(free_port()), "--http-port", str(free_port()),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
        preexec_fn=die_with_parent(),
    )  # fmt: skip
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            await _read_until_ready(proc.stdout, seen)
        # Keep draining output so the child never blocks on a full pipe.
        drain = asyncio.create_task(proc.stdout.read())
        state = json.loads((directory / "sandbox.json").read_text())
        c2s_port = int(
            next(line for line in seen if "XMPP server" in line).split("port ")[1].split()[0]
        )
        cfg = load_config(directory / "mft.toml")
        assert tomllib.loads((directory / "mft.toml").read_text())["repository"]["url"].startswith(
            "file://"
        )

        client = client_for(XmppUser("alice@localhost", state["passwords"]["alice"]))
        await connect_client(client, c2s_port)
        try:
            payload = os.urandom(70_000)
            source = tmp_path / "hello world.bin"
            source.write_bytes(payload)
            async with asyncio.timeout(20):
                url = await client.plugin["xep_0363"].upload_file(
                    source, domain="localhost", timeout=15
                )
        finally:
            await disconnect_client(client)
        assert url.startswith(cfg.http.public_url + "/node_1/im/")
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.status == 200
            assert await resp.read() == payload
        stored = list((directory / "repository" / "files" / "im").glob("*/*/*"))
        assert [p.read_bytes() == payload for p in stored] == [True]

        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await proc.wait() == 0
        await drain
        audit = SqliteAuditLog(cfg)
        await audit.open()
        try:
            rows = await audit.query(AuditQuery())
        finally:
            await audit.close()
        assert [(r.method, r.jid, r.real_filename) for r in rows] == [
            ("POST", "alice@localhost", "hello world.bin"),
            ("GET", "", "hello world.bin"),
        ]
        pid_file = directory / "prosody" / "prosody.pid"
        if pid_file.exists() and pid_file.read_text().strip():
            with pytest.raises(ProcessLookupError):
                os.kill(int(pid_file.read_text()), 0)
    finally:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()


async def test_sandbox_killed_hard_takes_prosody_along(tmp_path: Path) -> None:
    """SIGKILL to `mft sandbox` (no clean-up runs): its Prosody still exits (PDEATHSIG)."""
    require_binary("prosody")
    directory = tmp_path / "sbx"
    proc = await spawn_mft(
        "sandbox", "--dir", str(directory),
        "--c2s-port", str(free_port()), "--http-port", str(free_port()),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    drain_err = asyncio.create_task(proc.stderr.read())  # never block on a full pipe
    async with reaping(proc) as orphans:
        async with asyncio.timeout(30):
            await _read_until_ready(proc.stdout, [])
        pid = int((directory / "prosody" / "prosody.pid").read_text())
        orphans.append(pid)
        assert not process_gone(pid)
        proc.kill()
        assert await proc.wait() == -signal.SIGKILL
        await wait_gone(pid, within=15)
    await drain_err
