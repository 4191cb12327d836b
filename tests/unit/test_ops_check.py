"""mft check pieces that need no network: database, repository, free space, output."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web

from httpd.ops.check import (
    CheckResult,
    check_database,
    check_http,
    check_repository,
    check_xmpp,
)
from httpd.ops.check.repository import _check_space
from httpd.repository import DiskUsage, FileRepository
from tests.fixtures.common import free_port
from tests.fixtures.config import ConfigFactory

from .httpd_harness import httpd_env
from .ops_helpers import blocked_path, unusable_repository


async def test_database_ok(config_factory: ConfigFactory) -> None:
    """A writable SQLite file: OK, the URL shown, the table present."""
    cfg = config_factory()
    [line] = await check_database(cfg)
    assert line.status == "OK" and "AFT_LOG present" in line.detail
    assert cfg.database.url in line.detail


async def test_database_unusable(tmp_path: Path, config_factory: ConfigFactory) -> None:
    """A database that cannot be opened is FAIL with a reason and a hint."""
    blocker = blocked_path(tmp_path)
    cfg = config_factory(database={"url": f"sqlite:///{blocker}/sub/aft.sqlite3"})
    [line] = await check_database(cfg)
    assert line.status == "FAIL" and line.hint
    assert "cannot open SQLite database" in line.detail


async def test_repository_ok(config_factory: ConfigFactory, tmp_path: Path) -> None:
    """A file:// repository: open, probe and space lines, no probe left behind."""
    cfg = config_factory()
    lines = await check_repository(cfg)
    assert [(r.name, r.status) for r in lines][:2] == [
        ("repository", "OK"),
        ("repository probe", "OK"),
    ]
    assert lines[2].name == "repository space" and lines[2].status in ("OK", "WARN")
    assert [p for p in (tmp_path / "repo").rglob("*") if p.is_file()] == []


async def test_repository_unusable(tmp_path: Path, config_factory: ConfigFactory) -> None:
    """A repository that cannot be created is a single FAIL line with a hint."""
    cfg = unusable_repository(tmp_path, config_factory)
    [line] = await check_repository(cfg)
    assert line.status == "FAIL" and "not writable" in line.detail and line.hint


class Disk(FileRepository):
    """A file:// repository reporting a chosen free space."""

    def __init__(self, root: Path, free_percent: float) -> None:
        super().__init__(root)
        self.free_percent = free_percent

    async def disk_usage(self) -> DiskUsage:
        return DiskUsage(total=10**12, free=int(10**10 * self.free_percent))


@pytest.mark.parametrize(
    ("threshold", "free", "status"),
    [(0, 50, "OK"), (0, 9, "WARN"), (20, 15, "WARN"), (5, 11, "OK"), (5, 7, "WARN")],
)
async def test_space_thresholds(
    tmp_path: Path, config_factory: ConfigFactory, threshold: float, free: float, status: str
) -> None:
    """WARN under the alarm threshold, and under 10 % whatever the threshold."""
    cfg = config_factory(alarm={"disk_free_min_percent": threshold})
    line = await _check_space(cfg, Disk(tmp_path, free))
    assert line.status == status
    assert f"{free:.1f}% free" in line.detail


async def test_xmpp_port_closed(config_factory: ConfigFactory) -> None:
    """Nothing on the component port: FAIL, connection refused, with a hint."""
    cfg = config_factory(xmpp={"port": free_port()})
    [line] = await check_xmpp(cfg)
    assert line.status == "FAIL" and "connection refused" in line.detail and line.hint


def test_line_format() -> None:
    """STATUS, name and detail in columns; the hint after 'hint:'."""
    line = CheckResult("WARN", "repository space", "5% free", "purge").line()
    assert line == "WARN  repository space  5% free  hint: purge"


@pytest.mark.parametrize(("served_node", "status"), [("node_1", "OK"), ("node_2", "FAIL")])
async def test_http_public_url_must_reach_this_node(
    config_factory: ConfigFactory, tmp_path: Path, served_node: str, status: str
) -> None:
    """/healthz names its node: a public_url leading to another node is FAIL."""
    served = config_factory(node={"id": served_node}, repository={"url": f"file://{tmp_path}/s"})
    async with httpd_env(served) as env:
        cfg = config_factory(http={"public_url": f"http://127.0.0.1:{env.port}"})
        [line] = await check_http(cfg)
    assert line.status == status
    if status == "FAIL":
        assert "from node 'node_2', not 'node_1'" in line.detail and line.hint


async def test_http_public_url_answered_by_something_else(config_factory: ConfigFactory) -> None:
    """A 200 from a server that is not xmpp-mft is FAIL, not OK."""

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application()
    app.router.add_get("/healthz", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        [line] = await check_http(config_factory(http={"public_url": f"http://127.0.0.1:{port}"}))
    finally:
        await runner.cleanup()
    assert line.status == "FAIL" and "not from xmpp-mft" in line.detail
