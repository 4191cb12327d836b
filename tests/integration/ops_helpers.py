"""Helpers shared by the operations and deploy integration tests."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HTTP_SECRET = "http-secret-never-printed-0123456789"


async def mft(*args: str) -> tuple[int, str]:
    """Run ``python -m component ARGS``; return the exit code and stdout+stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "component", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(90):
        out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def write_node_config(
    tmp_path: Path,
    *,
    component_jid: str,
    secret: str,
    xmpp_port: int,
    http_port: int,
    db_url: str = "",
    extra: str = "",
) -> Path:
    """An mft.toml in ``tmp_path`` on loopback: file:// repository, SQLite unless given."""
    path = tmp_path / "mft.toml"
    path.write_text(
        f"""
[xmpp]
component_jid = "{component_jid}"
secret = "{secret}"
host = "127.0.0.1"
port = {xmpp_port}
[http]
bind = "127.0.0.1"
port = {http_port}
public_url = "http://127.0.0.1:{http_port}"
secret = "{HTTP_SECRET}"
[repository]
url = "file://{tmp_path}/repo"
[database]
url = "{db_url or f"sqlite:///{tmp_path}/aft_log.sqlite3"}"
spool_path = "{tmp_path}/spool"
{extra}
"""
    )
    return path


def self_signed(directory: Path) -> Path:
    """Write ``cert.pem`` and ``key.pem`` (CN upload.example.com) into ``directory``."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=upload.example.com",
         "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return directory
