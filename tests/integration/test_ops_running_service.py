"""`mft run` as a subprocess on real Prosody: the disk alarm reaches an admin by chat,
and `mft check` against the running service reports it connected and healthy."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from slixmpp import JID

from component.servers.childproc import die_with_parent
from component.servers.prosody import ProsodyInstance
from tests.fixtures.common import free_port, wait_for_port_async
from tests.fixtures.prosody import ClientFactory, UserFactory

from .ops_helpers import HTTP_SECRET, ROOT, mft, write_node_config

pytestmark = pytest.mark.integration


def service_config(
    tmp_path: Path, prosody: ProsodyInstance, http_port: int, admin: str, db_url: str
) -> Path:
    """mft.toml for a node on ``prosody`` whose alarm threshold is above any real disk."""
    return write_node_config(
        tmp_path,
        db_url=db_url,
        component_jid=prosody.component_jid,
        secret=prosody.component_secret,
        xmpp_port=prosody.component_port,
        http_port=http_port,
        extra=f'[alarm]\ndisk_free_min_percent = 99.99\nadmins = ["{admin}"]\n'
        "check_interval = 0.5\n",
    )


async def test_alarm_message_and_check_of_running_service(
    tmp_path: Path,
    prosody: ProsodyInstance,
    xmpp_user: UserFactory,
    xmpp_client: ClientFactory,
    mariadb_url: str,
) -> None:
    """The admin gets one 'low on disk space' chat from the component; check is OK.

    The node uses MariaDB, so the running service holds the AFT_LOG spool: the check
    must test the database without taking the spool.
    """
    admin = await xmpp_user("admin")
    client = await xmpp_client(admin)
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    client.add_event_handler("message", inbox.put_nowait)
    client.send_presence()  # available: messages to the bare JID reach this client
    # A round trip on the same stream: the server has processed the presence after it.
    await client.plugin["xep_0030"].get_info(jid=JID(prosody.domain), timeout=10)

    http_port = free_port()
    cfg = service_config(tmp_path, prosody, http_port, admin.jid, mariadb_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "component", "run", "-c", str(cfg),
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        preexec_fn=die_with_parent(),
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            msg = await inbox.get()
        assert str(msg["from"]) == prosody.component_jid
        assert "low on disk space" in msg["body"] and "99.99%" in msg["body"]

        await wait_for_port_async(http_port, within=10)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{http_port}/metrics") as resp,
        ):
            metrics = await resp.text()
        assert "mft_disk_alarm 1" in metrics and "mft_disk_free_bytes" in metrics

        code, out = await mft("check", "-c", str(cfg))
        status = {line[6:24].strip(): line[:4].strip() for line in out.splitlines()}
        assert status == {
            "database": "OK",
            "repository": "OK",
            "repository probe": "OK",
            "repository space": "WARN",  # below the (absurd) alarm threshold
            "xmpp router": "OK",
            "http public url": "OK",
            "share reports": "WARN",  # none yet: the hint says how to enable them
            "scanner": "OK",  # off: no [scan] clamd
        }, out
        assert code == 0
        assert "component already connected (service running)" in out
        assert prosody.component_secret not in out and HTTP_SECRET not in out
        assert ":***@" in out and str(urlsplit(mariadb_url).password) not in out

        # Still below the threshold at every later check: no second message.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                await inbox.get()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
