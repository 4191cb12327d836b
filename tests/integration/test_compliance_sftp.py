"""Compliance records over a real sshd (sftp://) and MariaDB: hashes, verify, export, hold."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import time
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from component.audit import AuditLog, AuditQuery, open_audit_log
from component.config import Config
from httpd.ops.export import export_command
from httpd.ops.hold import hold_command
from httpd.ops.purge import purge_command
from httpd.ops.verify import verify_command
from httpd.repository.sftp import SftpRepository
from tests.fixtures.config import ConfigFactory
from tests.fixtures.sshd import SshServer
from tests.unit.httpd_harness import Slot, make_slot, serve_app
from tests.unit.test_ops_compliance import sha256sum_check

pytestmark = pytest.mark.integration

ALICE, BOB = "alice@example.test", "bob@example.test"


@asynccontextmanager
async def uploaded(cfg: Config) -> AsyncIterator[tuple[list[Slot], list[bytes], AuditLog]]:
    """Three uploads through the HTTP app into the sshd and MariaDB (spooled, as served)."""
    repo = SftpRepository(cfg.repository)
    await repo.open()
    audit = open_audit_log(cfg)
    await audit.open()
    try:
        async with serve_app(cfg, repo, audit) as (_port, client):
            slots, bodies = [], []
            for n, (uploader, recipient) in enumerate([(ALICE, BOB), (BOB, ALICE), (ALICE, "")]):
                body = os.urandom(200_000 + n)
                slot = make_slot(
                    cfg, len(body), f"doc {n}.bin", uploader=uploader, recipient=recipient
                )
                async with client.put(slot.put_url, data=body) as resp:
                    assert resp.status == 201, await resp.text()
                slots.append(slot)
                bodies.append(body)
            async with client.get(slots[0].get_url) as resp:
                assert await resp.read() == bodies[0]
            await rows_reach(audit, 4)  # the GET row is written after the last byte
            yield slots, bodies, audit
    finally:
        await audit.close()
        await repo.close()


async def rows_reach(audit: AuditLog, n: int) -> None:
    """Wait (polling, 10 s deadline) until AFT_LOG holds ``n`` rows."""
    async with asyncio.timeout(10):
        while True:
            if len(await audit.query(AuditQuery())) >= n:
                return
            await asyncio.sleep(0.05)  # polling rows another task writes


def ns(**kw: object) -> argparse.Namespace:
    """Command arguments with the defaults the CLI gives."""
    base: dict[str, object] = {"since": None, "until": None, "format": "table", "jid": None}
    return argparse.Namespace(**{**base, "to": None, **kw})


async def test_verify_and_export_over_sftp_and_mariadb(
    sshd: SshServer,
    node_dir: Path,
    mariadb_url: str,
    config_factory: ConfigFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Hashes land on POST and GET rows; verify and both bundle kinds work over SFTP."""
    cfg = config_factory(repository=sshd.repository(node_dir), database={"url": mariadb_url})
    async with uploaded(cfg) as (slots, bodies, audit):
        rows = await audit.query(AuditQuery())
        sums = {
            s.path.resource: hashlib.sha256(b).hexdigest()
            for s, b in zip(slots, bodies, strict=True)
        }
        assert [(r.method, r.file_sha256) for r in rows] == [
            ("POST", sums[slots[0].path.resource]),
            ("POST", sums[slots[1].path.resource]),
            ("POST", sums[slots[2].path.resource]),
            ("GET", sums[slots[0].path.resource]),
        ]
        assert await verify_command(cfg, ns()) == 0
        assert "3 match, 0 problems" in capsys.readouterr().out

        for kind in ("dir", "zip"):
            out = tmp_path / ("alice.zip" if kind == "zip" else "alice")
            assert await export_command(cfg, ns(jid=ALICE, out=str(out))) == 0
            assert "exported 2 uploads (2 files" in capsys.readouterr().out
            if kind == "zip":
                with zipfile.ZipFile(out) as zf:
                    zf.extractall(tmp_path / "unzipped")
                out = tmp_path / "unzipped"
            assert len(sha256sum_check(out).splitlines()) == 2

        victim = node_dir / slots[0].path.repo_path
        data = bytearray(victim.read_bytes())
        data[-1] ^= 0xFF
        victim.write_bytes(data)
        (node_dir / slots[1].path.repo_path).unlink()
        (node_dir / slots[2].path.repo_path).with_name("stray.dat").write_bytes(b"?")
        assert await verify_command(cfg, ns()) == 1
        out = capsys.readouterr().out
        assert "1 ALTERED, 1 MISSING, 1 ORPHAN" in out
        assert "ALTERED  " in out and slots[0].path.repo_path in out


async def test_hold_stops_purge_on_mariadb(
    sshd: SshServer,
    node_dir: Path,
    mariadb_url: str,
    config_factory: ConfigFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A hold on Alice as uploader keeps her two old files; Bob's goes and is marked."""
    cfg = config_factory(repository=sshd.repository(node_dir), database={"url": mariadb_url})
    async with uploaded(cfg) as (slots, _bodies, audit):
        old = time.time() - 40 * 86400
        for s in slots:
            os.utime(node_dir / s.path.repo_path, (old, old))
        assert await hold_command(cfg, ns(hold_command="add", jid=ALICE, reason="case 9")) == 0
        assert capsys.readouterr().out.startswith("hold ")
        assert await purge_command(cfg, argparse.Namespace(older_than="30d", dry_run=False)) == 0
        out = capsys.readouterr().out
        assert "deleted 1 file," in out and "kept 2 files under a legal hold" in out
        assert [(node_dir / s.path.repo_path).exists() for s in slots] == [True, False, True]
        assert await audit.purged([s.path.resource for s in slots]) == {slots[1].path.resource}
        assert await verify_command(cfg, ns()) == 0
        assert "1 purged by retention" in capsys.readouterr().out
