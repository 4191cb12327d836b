"""``mft sandbox``: a throwaway local Prosody with two users, plus the service on the
embedded defaults (local repository directory, SQLite AFT_LOG), for trying xmpp-mft with
any XMPP client. Ctrl-C stops everything.

Everything lives in one directory (``--dir``, default ``./mft-sandbox``); running the
command again reuses its accounts, secrets, files and audit log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

from component.config import Config, load_config
from component.servers.childproc import free_port
from component.servers.prosody import ProsodyError, ProsodyInstance
from httpd.ops.runner import run_command

USERS = ("alice", "bob")
READY_LINE = "mft sandbox is ready"


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


def _prepare(where: str) -> tuple[Path, dict[str, Any]]:
    directory = Path(where).resolve()
    directory.mkdir(parents=True, exist_ok=True)
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
        "passwords": {user: secrets.token_urlsafe(9) for user in USERS},
    }
    path.write_text(json.dumps(state, indent=2))
    path.chmod(0o600)
    return state


def write_config(
    directory: Path, domain: str, state: dict[str, Any], component_port: int, http_port: int
) -> Path:
    """The sandbox's ``mft.toml``: embedded defaults under ``directory``."""
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
public_url = "http://127.0.0.1:{http_port}"
secret = "{state["http_secret"]}"

[repository]
url = "file://{directory / "repository"}"

[database]
url = "sqlite:///{directory / "aft_log.sqlite3"}"
"""
    )
    config.chmod(0o600)
    return config


def _banner(prosody: ProsodyInstance, cfg: Config, state: dict[str, Any], config: Path) -> str:
    users = "\n".join(
        f"    {user}@{prosody.domain}    password: {pw}" for user, pw in state["passwords"].items()
    )
    return f"""
xmpp-mft sandbox (throwaway: everything is in {config.parent})

  XMPP server   127.0.0.1 port {prosody.c2s_port} (plain, or STARTTLS with a self-signed
                certificate: accept it in your client)
  Accounts
{users}
  Upload        {cfg.xmpp.component_jid} (XEP-0363), files up to {cfg.upload.max_file_size} bytes
  Rooms         conference.{prosody.domain}
  HTTP          {cfg.http.public_url}  (plain http: fine for profanity, go-sendxmpp,
                slixmpp; Gajim and Dino want https, see README "TLS reverse proxy")
  Files         {cfg.repository.path}/files/<im|groupchat|persistent>/...
  Audit log     mft log -c {config}

Try:  go-sendxmpp -u alice@{prosody.domain} -p {state["passwords"]["alice"]} \\
        -j 127.0.0.1:{prosody.c2s_port} --no-tls-verify -h somefile bob@{prosody.domain}

{READY_LINE}; Ctrl-C stops Prosody and the service.
"""


async def sandbox_command(cfg: Config | None, args: argparse.Namespace) -> int:
    """Run Prosody and the service until Ctrl-C; 0 on a clean stop."""
    directory, state = await asyncio.to_thread(_prepare, args.dir)
    c2s_port = _port_or_free(args.c2s_port)
    http_port = _port_or_free(args.http_port)
    prosody = ProsodyInstance(
        directory / "prosody",
        domain=args.domain,
        component_jid=f"upload.{args.domain}",
        component_secret=state["component_secret"],
        muc_domain=f"conference.{args.domain}",
        users=state["passwords"],
        tls=True,
        c2s_port=c2s_port,
    )
    config = write_config(directory, args.domain, state, prosody.component_port, http_port)
    cfg = load_config(config)
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(prosody)
            banner = _banner(prosody, cfg, state, config)
            # Printed only once the component is attached, so a client that connects at
            # once finds the upload service in disco#items.
            return await run_command(
                cfg, argparse.Namespace(only=None), on_ready=lambda: print(banner, flush=True)
            )
    except ProsodyError as exc:
        print(f"mft sandbox: Prosody failed: {exc}", file=sys.stderr)
        return 1
