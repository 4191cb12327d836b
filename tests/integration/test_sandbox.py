"""``mft sandbox``: Prosody + the service on embedded defaults, usable by a real client.

Every command the banner prints is run as printed, in a fresh shell (no venv, no
PYTHONPATH, a plain PATH) from the checkout, as a newcomer would paste it. The trust
commands of ``--https`` change the system CA store, so they run in a private mount
namespace over copies of it: the machine's own store is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import ssl
import sys
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest

from component.audit import AuditQuery
from component.audit.sqlite import SqliteAuditLog
from component.config import load_config
from component.servers.childproc import die_with_parent
from httpd.ops.sandbox import COMMANDS_HEADER, READY_LINE, SAMPLE_NAME
from tests.fixtures.common import (
    IN_CI,
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
FRESH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
COMMAND_TIMEOUT = 60
# The banner names this interpreter's own mft script by its full path (the venv's, under
# `make test`), so no activated venv or PATH entry is needed.
MFT = str(Path(sys.executable).absolute().parent / "mft")


async def _read_until_ready(stream: asyncio.StreamReader, seen: list[str]) -> None:
    while True:
        line = await stream.readline()
        if not line:
            raise RuntimeError("mft sandbox exited before it was ready:\n" + "".join(seen))
        seen.append(line.decode(errors="replace"))
        if READY_LINE in seen[-1]:
            return


def banner_commands(output: list[str]) -> list[str]:
    """The commands the banner prints: lines indented by exactly four spaces between the
    "Paste into another shell" line and the ready line."""
    text = "".join(output)
    block = text[text.index(COMMANDS_HEADER) : text.index(READY_LINE)]
    return [line[4:] for line in block.splitlines() if line.startswith("    ") and line[4:5] != " "]


def fresh_env(home: Path) -> dict[str, str]:
    """What a new terminal has: no venv, no PYTHONPATH, the distribution's PATH."""
    return {"PATH": FRESH_PATH, "HOME": str(home), "LANG": "C.UTF-8", "TERM": "dumb"}


async def run_as_pasted(command: str, home: Path) -> tuple[int, str]:
    """``command`` in a fresh bash in the checkout; (exit code, stdout + stderr)."""
    proc = await asyncio.create_subprocess_exec(
        "bash", "--noprofile", "--norc", "-c", command,
        cwd=ROOT, env=fresh_env(home), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(COMMAND_TIMEOUT):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


@dataclass
class Sandbox:
    """A running ``mft sandbox`` child and what it printed up to the ready line."""

    proc: asyncio.subprocess.Process
    directory: Path
    output: list[str]

    @property
    def c2s_port(self) -> int:
        """The client port the banner names."""
        line = next(line for line in self.output if "XMPP server" in line)
        return int(line.split("port ")[1].split()[0])

    @property
    def password(self) -> str:
        """alice's password."""
        state = json.loads((self.directory / "sandbox.json").read_text())
        return str(state["passwords"]["alice"])

    async def interrupt(self) -> int:
        """Ctrl-C; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            return await self.proc.wait()


@contextlib.asynccontextmanager
async def sandbox(directory: Path, *flags: str) -> AsyncIterator[Sandbox]:
    """``python -m component sandbox`` on free ports until the block ends (then killed)."""
    require_binary("prosody")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "component", "sandbox", "--dir", str(directory),
        "--c2s-port", str(free_port()), "--http-port", str(free_port()), *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
        preexec_fn=die_with_parent(),
    )  # fmt: skip
    seen: list[str] = []
    drain: asyncio.Task[bytes] | None = None
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            await _read_until_ready(proc.stdout, seen)
        # Keep draining output so the child never blocks on a full pipe.
        drain = asyncio.create_task(proc.stdout.read())
        yield Sandbox(proc, directory, seen)
    finally:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()
        if drain is not None:
            await drain


async def audit_rows(directory: Path) -> list[tuple[str, str, str]]:
    """(method, jid, real file name) of every AFT_LOG row of the sandbox."""
    audit = SqliteAuditLog(load_config(directory / "mft.toml"))
    await audit.open()
    try:
        rows = await audit.query(AuditQuery())
    finally:
        await audit.close()
    return [(r.method, r.jid, r.real_filename) for r in rows]


async def wait_for_share(directory: Path) -> None:
    """Until AFT_LOG has a SHARE row: the sandbox Prosody loads mod_mft_share, so
    go-sendxmpp's message to bob is reported."""
    async with asyncio.timeout(20):
        while True:
            if any(m == "SHARE" for m, _, _ in await audit_rows(directory)):
                return
            await asyncio.sleep(0.05)  # polling the AFT_LOG file another process writes


async def test_sandbox_serves_a_real_client_and_every_printed_command_works(
    tmp_path: Path,
) -> None:
    """Sandbox up; slixmpp uploads; each banner command works pasted; Ctrl-C stops all."""
    require_binary("go-sendxmpp")
    directory = tmp_path / "sbx"
    async with sandbox(directory) as sbx:
        cfg = load_config(directory / "mft.toml")
        assert tomllib.loads((directory / "mft.toml").read_text())["repository"]["url"].startswith(
            "file://"
        )
        client = client_for(XmppUser("alice@localhost", sbx.password))
        await connect_client(client, sbx.c2s_port)
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

        commands = banner_commands(sbx.output)
        assert [c.split()[0] for c in commands] == ["go-sendxmpp", MFT]
        assert str(directory / SAMPLE_NAME) in commands[0]
        results = [await run_as_pasted(c, tmp_path) for c in commands]
        assert [rc for rc, _ in results] == [0, 0], results
        log_output = results[1][1]
        assert "hello world.bin" in log_output and SAMPLE_NAME in log_output
        stored = sorted(p.stat().st_size for p in (directory / "repository").rglob("*/im/*/*/*"))
        assert stored == sorted([len(payload), (directory / SAMPLE_NAME).stat().st_size])
        await wait_for_share(directory)

        assert await sbx.interrupt() == 0
    assert await audit_rows(directory) == [
        ("POST", "alice@localhost", "hello world.bin"),
        ("GET", "", "hello world.bin"),
        ("POST", "alice@localhost", SAMPLE_NAME),
        ("SHARE", "alice@localhost", SAMPLE_NAME),
    ]
    pid_file = directory / "prosody" / "prosody.pid"
    if pid_file.exists() and pid_file.read_text().strip():
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)


def _require_private_mounts() -> None:
    """Root with mount namespaces (``unshare``), needed to try the trust commands safely."""
    unshare = shutil.which("unshare")
    ok = (
        os.geteuid() == 0
        and unshare is not None
        and os.system(f"{unshare} --mount --propagation private true 2>/dev/null") == 0
    )
    if not ok:
        message = "trying the CA trust commands needs root and unshare --mount"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


# Mounts copies of the system CA store over the real one, then runs each argument in a
# fresh shell; prints "### rc=N" after each. The update-ca-certificates hooks are hidden
# too: Debian's Java hook records dpkg triggers under /var/lib, outside the copies.
NAMESPACE_SCRIPT = """
set -e
mount --bind "$1/certs" /etc/ssl/certs
mount --bind "$1/local" /usr/local/share/ca-certificates
mount --bind "$1/hooks" /etc/ca-certificates/update.d
shift
for command in "$@"; do
  echo "### $command"
  rc=0
  env -i PATH="$FRESH_PATH" HOME="$HOME" LANG=C.UTF-8 bash --noprofile --norc -c "$command" \
    </dev/null 2>&1 || rc=$?
  echo "### rc=$rc"
done
"""


async def run_in_private_ca_store(commands: list[str], scratch: Path) -> list[tuple[int, str]]:
    """Run ``commands`` one after the other in a mount namespace whose system CA store
    (/etc/ssl/certs, /usr/local/share/ca-certificates) is a throwaway copy and whose
    update-ca-certificates hooks directory is empty."""
    shutil.copytree("/etc/ssl/certs", scratch / "certs", symlinks=True)
    shutil.copytree("/usr/local/share/ca-certificates", scratch / "local", symlinks=True)
    (scratch / "hooks").mkdir()
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--mount", "--propagation", "private",
        "bash", "-c", NAMESPACE_SCRIPT, "namespace", str(scratch), *commands,
        cwd=ROOT, env={**fresh_env(scratch), "FRESH_PATH": FRESH_PATH},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(COMMAND_TIMEOUT * len(commands)):
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    results = []
    for chunk in text.split("### ")[1:]:
        if chunk.startswith("rc="):
            results[-1] = (int(chunk[3:].split()[0]), results[-1][1])
        else:
            results.append((-1, chunk))
    assert len(results) == len(commands), text
    return results


async def test_sandbox_https_upload_with_a_client_that_trusts_its_ca(tmp_path: Path) -> None:
    """--https: slot + PUT verified against the sandbox CA; the printed trust, upload and
    log commands work pasted; the CA is reused by a second run."""
    require_binary("go-sendxmpp")
    _require_private_mounts()
    directory = tmp_path / "sbx"
    async with sandbox(directory, "--https") as sbx:
        cfg = load_config(directory / "mft.toml")
        assert cfg.http.public_url.startswith("https://127.0.0.1:")
        ca_file = directory / "tls" / "ca.crt"
        trusting = ssl.create_default_context(cafile=str(ca_file))
        # The certificate is really checked: a client without the CA is refused.
        async with httpx.AsyncClient() as plain:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await plain.get(cfg.http.public_url + "/healthz")

        client = client_for(XmppUser("alice@localhost", sbx.password))
        await connect_client(client, sbx.c2s_port)
        try:
            body = os.urandom(50_000)
            slot = await client.plugin["xep_0363"].request_slot(
                "upload.localhost", "over https.bin", len(body), timeout=15
            )
        finally:
            await disconnect_client(client)
        put_url = slot["http_upload_slot"]["put"]["url"]
        get_url = slot["http_upload_slot"]["get"]["url"]
        assert put_url.startswith("https://127.0.0.1:")
        async with httpx.AsyncClient(verify=trusting) as http:
            put = await http.put(put_url, content=body)
            assert put.status_code == 201, put.text
            got = await http.get(get_url)
            assert (got.status_code, got.content == body) == (200, True)

        commands = banner_commands(sbx.output)
        assert [c.split()[0] for c in commands] == [
            "cp",
            "go-sendxmpp",
            MFT,
            "rm",
        ]
        assert "--no-tls-verify" not in commands[1]  # TLS to Prosody verified too
        healthz = f"curl -sS -o /dev/null {cfg.http.public_url}/healthz"  # system store only
        results = await run_in_private_ca_store(
            [commands[0], healthz, commands[1], commands[2], commands[3], healthz],
            tmp_path / "castore",
        )
        codes = [rc for rc, _ in results]
        # curl: 0 while the CA is trusted, 60 (certificate problem) once it is removed.
        assert codes == [0, 0, 0, 0, 0, 60], results
        assert SAMPLE_NAME in results[3][1]
        await wait_for_share(directory)
        assert await sbx.interrupt() == 0
        first_ca = ca_file.read_bytes()
        trust_command = commands[0]

    async with sandbox(directory, "--https") as again:
        assert ca_file.read_bytes() == first_ca  # trusted once, trusted for good
        assert banner_commands(again.output)[0] == trust_command
        assert await again.interrupt() == 0
    assert await audit_rows(directory) == [
        ("POST", "alice@localhost", "over https.bin"),
        ("GET", "", "over https.bin"),
        ("POST", "alice@localhost", SAMPLE_NAME),
        ("SHARE", "alice@localhost", SAMPLE_NAME),
    ]


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
