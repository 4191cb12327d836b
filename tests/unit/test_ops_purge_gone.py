"""After mft purge, a GET of the purged file is 410 Gone and logged; the POST row stays."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pytest

from httpd.ops.purge import purge_command
from tests.fixtures.config import ConfigFactory
from tests.unit.httpd_harness import httpd_env


async def test_purged_file_answers_410(
    config_factory: ConfigFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """Upload, age the file, purge: GET answers 410, AFT_LOG gains GET_GONE, keeps POST."""
    cfg = config_factory()
    async with httpd_env(cfg) as env:
        old = await env.upload(b"old bytes" * 100, "old.txt")
        new = await env.upload(b"new bytes", "new.txt")
        stored = Path(cfg.repository.path) / old.path.repo_path
        then = time.time() - 40 * 86400
        os.utime(stored, (then, then))

        args = argparse.Namespace(older_than="30d", dry_run=False)
        assert await purge_command(cfg, args) == 0
        assert "deleted 1 file, 900 bytes" in capsys.readouterr().out
        assert not stored.exists()

        async with env.client.get(old.get_url) as resp:
            assert resp.status == 410
        assert (await env.audit.next_row()).method == "GET_GONE"
        async with env.client.get(new.get_url) as resp:
            assert resp.status == 200 and await resp.read() == b"new bytes"
        posts = await env.rows("POST")
    assert {r.filename for r in posts} == {old.path.resource, new.path.resource}
