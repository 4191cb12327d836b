"""PostgreSQL through the whole stack: the HTTP app's POST/GET/GET_GONE rows, a cluster
of two nodes, ``mft run`` / ``mft check`` as an operator runs them, share reports, and
the compliance commands (verify, export, hold, a held purge) on AFT_LOG in PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from component.audit import AuditQuery
from component.config import Config
from httpd.ops.purge import purge_command
from tests.fixtures.common import free_port
from tests.fixtures.config import ConfigFactory
from tests.fixtures.postgresql import PostgreSQL
from tests.fixtures.prosody import ClientFactory
from tests.fixtures.stack import StackFactory
from tests.integration import test_cluster
from tests.integration import test_shares_prosody as shares
from tests.integration.test_audit_http import (
    check_rows,
    check_upload_then_download_after_restart,
    get,
    opened,
    put,
    serving,
)
from tests.unit import test_ops_compliance as compliance
from tests.unit.httpd_harness import HttpdEnv, httpd_env, make_slot

from .ops_helpers import mft, write_node_config

pytestmark = pytest.mark.integration


@pytest.fixture
def cfg(config_factory: ConfigFactory, postgresql_url: str) -> Config:
    """A config whose AFT_LOG is this test's PostgreSQL database."""
    return config_factory(database={"url": postgresql_url, "connect_timeout": 3.0})


async def test_upload_then_download_after_restart(cfg: Config) -> None:
    """PUT, restart the app and its log, GET on PostgreSQL: one POST and one GET row."""
    await check_upload_then_download_after_restart(cfg)


async def test_transfers_during_outage_are_logged_once(cfg: Config, postgresql: PostgreSQL) -> None:
    """Database down during PUT and GET: both succeed, rows arrive once, in order, complete."""
    body = os.urandom(5000)
    slot = make_slot(cfg, len(body), "Quartalsbericht Q3.pdf", chat_type="groupchat")
    audit = await opened(cfg)
    try:
        await asyncio.to_thread(postgresql.stop)
        async with serving(cfg, audit) as client:
            await put(client, slot, body)
            await get(client, slot, body)  # the POST row is found in the spool
        assert audit.spooled == 2
        await asyncio.to_thread(postgresql.start)
        async with asyncio.timeout(60):
            await audit.flush()
        rows = list(await audit.query(AuditQuery(filename=slot.path.resource)))
    finally:
        await asyncio.to_thread(postgresql.start)
        await audit.close()
    check_rows(rows, slot, len(body))


async def test_purged_file_gives_a_get_gone_row(
    cfg: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    """mft purge deletes an old upload; its GET answers 410 and logs GET_GONE; POST stays."""
    body = b"old bytes" * 100
    slot = make_slot(cfg, len(body), "old.txt")
    audit = await opened(cfg)
    try:
        async with serving(cfg, audit) as client:
            await put(client, slot, body)
        stored = Path(cfg.repository.path) / slot.path.repo_path
        then = time.time() - 40 * 86400
        os.utime(stored, (then, then))
        assert await purge_command(cfg, argparse.Namespace(older_than="30d", dry_run=False)) == 0
        assert "deleted 1 file" in capsys.readouterr().out
        await audit.close()
        audit = await opened(cfg)  # as after a restart: the POST row comes from the database
        async with serving(cfg, audit) as client, client.get(slot.get_url) as resp:
            assert resp.status == 410
        rows = list(await audit.query(AuditQuery(filename=slot.path.resource)))
    finally:
        await audit.close()
    assert [r.method for r in rows] == ["POST", "GET_GONE"]
    assert rows[1].real_filename == "old.txt" and rows[1].file_size == len(body)


def node_config(tmp_path: Path, db_url: str) -> Path:
    """An mft.toml whose database is ``db_url`` (nothing else needs to be reachable)."""
    return write_node_config(
        tmp_path, component_jid="upload.localhost", secret="s" * 16,
        xmpp_port=free_port(), http_port=free_port(), db_url=db_url,
    )  # fmt: skip


def database_line(out: str) -> str:
    """The ``database`` line of ``mft check``'s output."""
    [line] = [ln for ln in out.splitlines() if ln.split()[1:2] == ["database"]]
    return line


async def test_check_names_the_server_version(tmp_path: Path, postgresql_url: str) -> None:
    """mft check: database OK, the PostgreSQL version it reached, the password as ***."""
    password = urlsplit(postgresql_url).password
    assert password
    _code, out = await mft("check", "-c", str(node_config(tmp_path, postgresql_url)))
    line = database_line(out)
    assert line.startswith("OK") and "AFT_LOG present" in line, out
    assert "PostgreSQL 15." in line and "postgresql://mft:***@127.0.0.1" in line
    assert password not in out


async def test_bad_password_is_named_by_run_and_check(tmp_path: Path, postgresql_url: str) -> None:
    """A wrong password: mft run refuses to start and mft check FAILs, both saying so."""
    url = postgresql_url.replace("p%40ss", "wrong-pw", 1)
    config = str(node_config(tmp_path, url))
    code, out = await mft("run", "-c", config)
    assert code == 1, out
    assert "cannot start: database postgresql://mft:***@127.0.0.1" in out
    assert 'password authentication failed for user "mft"' in out
    code, out = await mft("check", "-c", config)
    line = database_line(out)
    assert code == 1 and line.startswith("FAIL") and "password authentication failed" in line
    assert "hint: check host, port, user and password" in line and "database's owner" in line
    assert "wrong-pw" not in out


async def test_unreachable_server_is_named_by_run_and_check(tmp_path: Path) -> None:
    """Nothing listens at the URL's port: both commands name host and port, exit 1."""
    port = free_port()
    config = str(node_config(tmp_path, f"postgresql://mft:pw-never-shown@127.0.0.1:{port}/mft"))
    code, out = await mft("run", "-c", config)
    assert code == 1 and f"connection refused by 127.0.0.1:{port}" in out, out
    code, out = await mft("check", "-c", config)
    line = database_line(out)
    assert code == 1 and line.startswith("FAIL") and f"refused by 127.0.0.1:{port}" in line
    assert "pw-never-shown" not in out


async def test_cluster_on_postgresql(
    mft_stack: StackFactory,
    tmp_path: Path,
    postgresql: PostgreSQL,
    postgresql_url: str,
    xmpp_client: ClientFactory,
) -> None:
    """Two nodes, each its own PostgreSQL database: a GET at the wrong node is sent to the
    owner, which serves it and logs the GET in its own aft_log (the other logs nothing)."""
    second = postgresql.create_database()
    try:
        cluster = await test_cluster.make_cluster(
            mft_stack, tmp_path, (postgresql_url, postgresql.url(second))
        )
        assert cluster.node_2.cfg.database.scheme == "postgresql"
        await test_cluster.test_get_at_the_wrong_node_is_redirected_and_logged_by_the_owner(
            cluster, xmpp_client
        )
    finally:
        postgresql.drop_database(second)


@pytest.fixture
async def pg_env(config_factory: ConfigFactory, postgresql_url: str) -> AsyncIterator[HttpdEnv]:
    """The HTTP app over a file:// repository and AFT_LOG on PostgreSQL."""
    async with httpd_env(config_factory(database={"url": postgresql_url})) as env:
        assert env.cfg.database.scheme == "postgresql"
        yield env


@pytest.mark.parametrize(
    "case",
    [
        compliance.test_verify_finds_tampered_deleted_and_stray_files,
        compliance.test_export_bundle_verifies_with_sha256sum,
        compliance.test_hold_add_list_release,
        compliance.test_purge_keeps_held_files_and_verify_accepts_purged,
    ],
    ids=lambda f: f.__name__.removeprefix("test_"),
)
async def test_compliance_commands_on_postgresql(
    pg_env: HttpdEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: Any
) -> None:
    """mft verify, export (zip), hold and a held purge read and write AFT_LOG on PostgreSQL:
    the SQLite tests of those commands, run against this back-end."""
    given = {"env": pg_env, "tmp_path": tmp_path, "capsys": capsys, "kind": "zip"}
    await case(**{name: given[name] for name in inspect.signature(case).parameters})


@pytest.mark.parametrize(
    "case",
    [
        shares.test_chat_with_body_and_oob_gives_one_share_row,
        shares.test_upload_with_recipient_keeps_it_on_get_rows,
    ],
    ids=lambda f: f.__name__.removeprefix("test_"),
)
async def test_share_reports_on_postgresql(
    mft_stack: StackFactory, xmpp_client: ClientFactory, postgresql_url: str, case: Any
) -> None:
    """SHARE rows from Prosody's reports, and GET rows that follow them, on PostgreSQL:
    the SQLite tests of the share reports, run with this back-end."""

    started = []

    async def on_postgresql(**sections: Any) -> Any:
        stack = await mft_stack(database={"url": postgresql_url}, **sections)
        started.append(stack.cfg.database.scheme)
        return stack

    await case(on_postgresql, xmpp_client)
    assert started == ["postgresql"]
