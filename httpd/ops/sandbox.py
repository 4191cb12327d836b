"""``mft sandbox``: a throwaway local Prosody with two users, plus the service on the
embedded defaults (local repository directory, SQLite AFT_LOG), for trying xmpp-mft with
any XMPP client. Ctrl-C stops everything.

Everything lives in one directory (``--dir``, default ``./mft-sandbox``); running the
command again reuses its accounts, secrets, files, audit log and (``--https``) its local
CA, so a CA trusted once stays trusted.

The banner ends with commands to paste into another shell, each on one line indented
by four spaces under a line that says what it does: every one of them works as printed
(tests/integration/test_sandbox.py runs them all).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shlex
import socket
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from component.config import Config, load_config
from component.servers.childproc import free_port
from component.servers.deploykit import prosody_share_snippet
from component.servers.localca import LocalCA, ensure_local_ca
from component.servers.prosody import ProsodyError, ProsodyInstance
from httpd.ops.runner import run_command
from httpd.ops.util import human_bytes

USERS = ("alice", "bob")
READY_LINE = "mft sandbox is ready"
COMMANDS_HEADER = "Paste into another shell (each command is one line):"
SAMPLE_NAME = "sample.txt"
SAMPLE_TEXT = "Hello from the xmpp-mft sandbox: this file went up by XEP-0363.\n"
SYSTEM_CA_DIR = "/usr/local/share/ca-certificates"
# mod_mft_share in this checkout (a pip-installed mft has no deploy/ directory).
SHARE_MODULE_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prosody"


@dataclass(frozen=True, slots=True)
class Ports:
    """The ports the sandbox got, and the client port asked for."""

    c2s: int
    http: int
    c2s_asked: int


def _port_or_free(port: int) -> int:
    """``port`` if nothing listens on it (0 or busy: a free one)."""
    if port:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                pass  # e.g. the system Prosody installed by apt already has 5222
    return free_port()


def _password() -> str:
    # Letters and digits only: pasted after -p it can never look like an option.
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(12))


def _prepare(where: str) -> tuple[Path, dict[str, Any]]:
    directory = Path(where).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    sample = directory / SAMPLE_NAME
    if not sample.exists():
        sample.write_text(SAMPLE_TEXT)
    return directory, _state(directory)


def _state(directory: Path) -> dict[str, Any]:
    """Secrets and passwords kept across runs of the same sandbox directory."""
    path = directory / "sandbox.json"
    if path.exists():
        state: dict[str, Any] = json.loads(path.read_text())
        return state
    state = {
        "component_secret": secrets.token_urlsafe(18),
        "http_secret": secrets.token_urlsafe(32),
        "passwords": {user: _password() for user in USERS},
    }
    path.write_text(json.dumps(state, indent=2))
    path.chmod(0o600)
    return state


def write_config(
    directory: Path,
    domain: str,
    state: dict[str, Any],
    component_port: int,
    http_port: int,
    tls: LocalCA | None = None,
) -> Path:
    """The sandbox's ``mft.toml``: embedded defaults under ``directory``.

    :param tls: serve HTTPS with this CA's server certificate (else plain http).
    """
    scheme = "https" if tls else "http"
    tls_lines = f'tls_cert = "{tls.server_cert}"\ntls_key = "{tls.server_key}"\n' if tls else ""
    config = directory / "mft.toml"
    config.write_text(
        f"""# Written by `mft sandbox`; a trial configuration on loopback only.
[node]
id = "node_1"

[xmpp]
component_jid = "upload.{domain}"
secret = "{state["component_secret"]}"
host = "127.0.0.1"
port = {component_port}
muc_domains = ["conference.{domain}"]

[http]
bind = "127.0.0.1"
port = {http_port}
public_url = "{scheme}://127.0.0.1:{http_port}"
secret = "{state["http_secret"]}"
{tls_lines}
[repository]
url = "file://{directory / "repository"}"

[database]
url = "sqlite:///{directory / "aft_log.sqlite3"}"
"""
    )
    config.chmod(0o600)
    return config


def mft_command() -> str:
    """How a fresh shell calls this very ``mft``: the full path of the script beside
    this interpreter (``/.../.venv/bin/mft``), which needs no activated venv or PATH."""
    script = Path(sys.executable).absolute().parent / "mft"
    if script.is_file():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m component"  # e.g. run as python -m component


def _as_root(command: str) -> str:
    return command if os.geteuid() == 0 else f"sudo {command}"


def _trust_lines(ca: LocalCA) -> tuple[list[str], list[str]]:
    """Banner lines: trust the sandbox CA in Debian's system store, and remove it again."""
    fingerprint = ca.fingerprint()
    stored = f"{SYSTEM_CA_DIR}/xmpp-mft-sandbox-{fingerprint.replace(':', '')[:16]}.crt"
    update = _as_root("update-ca-certificates")
    install = f"{_as_root(f'cp {shlex.quote(str(ca.ca_cert))} {stored}')} && {update}"
    remove = f"{_as_root(f'rm -f {stored}')} && {update} --fresh"
    return [
        "  Trust the sandbox CA, once (Debian's system store, which Gajim, Dino, curl and",
        "  go-sendxmpp read; restart Gajim or Dino afterwards). It can vouch only for",
        "  localhost names and loopback addresses. Its SHA-256 fingerprint is",
        f"  {fingerprint}",
        "  Add it:",
        f"    {install}",
    ], [
        "  When you are done with the sandbox, remove the CA again:",
        f"    {remove}",
    ]


def share_module_config(domain: str, cfg: Config) -> list[str]:
    """mod_mft_share on the sandbox's VirtualHost, so URLs sent in chats and rooms become
    SHARE rows as on a real server; nothing if the checkout's deploy/ is not there."""
    if not (SHARE_MODULE_DIR / "mod_mft_share.lua").is_file():
        return []
    # plugin_paths is set by ProsodyInstance (see main).
    return [
        prosody_share_snippet(domain, [cfg.xmpp.component_jid], [cfg.http.public_url + "/"], None)
    ]


def banner(
    prosody: ProsodyInstance,
    cfg: Config,
    state: dict[str, Any],
    config: Path,
    ports: Ports,
    ca: LocalCA | None,
) -> str:
    """The text printed once everything is up: accounts, ports, and commands to paste."""
    domain = prosody.domain
    alice = f"alice@{domain}"
    users = [
        f"{user}@{domain}".ljust(24) + f"password: {pw}" for user, pw in state["passwords"].items()
    ]
    accounts = "\n".join(
        f"  {'Accounts' if i == 0 else '':<14}{line}" for i, line in enumerate(users)
    )
    busy = []
    if ports.c2s != ports.c2s_asked and ports.c2s_asked:
        busy.append(
            f"                port {ports.c2s_asked} was taken (a system Prosody? `systemctl stop"
            " prosody`): set this port in your client's connection settings"
        )
    if ca:
        tls_note = "plain, or STARTTLS with a certificate signed by the sandbox CA"
        http_note = "HTTPS with a certificate signed by the sandbox CA: trust it, below"
        verify = ""
    else:
        tls_note = "plain, or STARTTLS with a self-signed certificate: accept it"
        http_note = (
            "plain http: fine for profanity, go-sendxmpp, slixmpp; Gajim and Dino want\n"
            "                https: restart with --https, in the checkout"
            " `make sandbox SANDBOX_FLAGS=--https`"
        )
        verify = " --no-tls-verify"
    sample = shlex.quote(str(config.parent / SAMPLE_NAME))
    upload = (
        f"go-sendxmpp -u {alice} -p {shlex.quote(state['passwords']['alice'])}"
        f" -j 127.0.0.1:{prosody.c2s_port}{verify} -h {sample} bob@{domain}"
    )
    trust, untrust = _trust_lines(ca) if ca else ([], [])
    lines = [
        "",
        f"xmpp-mft sandbox (throwaway: everything is in {config.parent})",
        "",
        f"  XMPP server   127.0.0.1 port {prosody.c2s_port} ({tls_note})",
        *busy,
        accounts,
        f"  Upload        {cfg.xmpp.component_jid} (XEP-0363), files up to"
        f" {cfg.upload.max_file_size} bytes ({human_bytes(cfg.upload.max_file_size)})",
        f"  Rooms         conference.{domain}",
        f"  HTTP          {cfg.http.public_url} ({http_note})",
        f"  Files         {cfg.repository.path}/files/<im|groupchat|persistent>/...",
        "",
        COMMANDS_HEADER,
        "",
        *trust,
        f"  Upload {sample} from alice to bob (bob gets the link):",
        f"    {upload}",
        "  Read the audit log (AFT_LOG):",
        f"    {mft_command()} log -c {shlex.quote(str(config))}",
        *untrust,
        "",
        f"{READY_LINE}; Ctrl-C stops Prosody and the service.",
        "",
    ]
    return "\n".join(lines)


def _server_names(domain: str) -> list[str]:
    return list(dict.fromkeys([domain, f"upload.{domain}", f"conference.{domain}", "localhost"]))


async def sandbox_command(cfg: Config | None, args: argparse.Namespace) -> int:
    """Run Prosody and the service until Ctrl-C; 0 on a clean stop."""
    directory, state = await asyncio.to_thread(_prepare, args.dir)
    ca: LocalCA | None = None
    if getattr(args, "https", False):
        ca = await asyncio.to_thread(
            ensure_local_ca, directory / "tls", _server_names(args.domain), label=str(directory)
        )
    ports = Ports(
        c2s=_port_or_free(args.c2s_port),
        http=_port_or_free(args.http_port),
        c2s_asked=args.c2s_port,
    )
    prosody = ProsodyInstance(
        directory / "prosody",
        domain=args.domain,
        component_jid=f"upload.{args.domain}",
        component_secret=state["component_secret"],
        muc_domain=f"conference.{args.domain}",
        users=state["passwords"],
        tls=True,
        tls_files=(ca.server_key, ca.server_cert) if ca else None,
        c2s_port=ports.c2s,
        plugin_paths=[str(SHARE_MODULE_DIR)] if SHARE_MODULE_DIR.is_dir() else [],
    )
    config = write_config(directory, args.domain, state, prosody.component_port, ports.http, ca)
    cfg = load_config(config)
    prosody.extra_config = share_module_config(args.domain, cfg)
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(prosody)
            text = banner(prosody, cfg, state, config, ports, ca)
            # Printed only once the component is attached, so a client that connects at
            # once finds the upload service in disco#items.
            return await run_command(
                cfg, argparse.Namespace(only=None), on_ready=lambda: print(text, flush=True)
            )
    except ProsodyError as exc:
        print(f"mft sandbox: Prosody failed: {exc}", file=sys.stderr)
        return 1
