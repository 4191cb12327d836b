"""GET and HEAD: rows, tickets, 404/410/307, Range, safe headers, CORS, cut-off downloads."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import socket
import struct
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest

from tests.fixtures.config import ConfigFactory
from tests.unit.httpd_harness import RECIPIENT, HttpdEnv, httpd_env


@pytest.fixture
async def env(config_factory: ConfigFactory) -> AsyncIterator[HttpdEnv]:
    """The HTTP app on a loopback port, over a real repository and SQLite AFT_LOG."""
    async with httpd_env(config_factory()) as e:
        yield e


async def test_get_returns_bytes_and_logs_get_row(env: HttpdEnv) -> None:
    """GET returns the uploaded bytes and logs one GET row repeating the POST row's fields."""
    body = os.urandom(300_000)
    slot = await env.upload(body, "Report 2024.PDF", chat_type="persistent")
    async with env.client.get(slot.get_url) as resp:
        assert resp.status == 200
        assert await resp.read() == body
        assert resp.headers["Content-Length"] == str(len(body))
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Content-Type"] == "application/pdf"
    row = await env.audit.next_row()
    assert (row.method, row.jid, row.to_jid) == ("GET", "", RECIPIENT)
    assert (row.filename, row.real_filename, row.file_type) == (
        slot.path.resource,
        "Report 2024.PDF",
        "pdf",
    )
    assert (row.chat_type, row.file_size, row.node_id) == ("persistent", len(body), "node_1")
    assert row.file_sha256 == hashlib.sha256(body).hexdigest()
    assert [r.method for r in await env.rows()] == ["POST", "GET"]


async def test_get_without_post_row_logs_from_url(env: HttpdEnv) -> None:
    """A file whose POST row is unknown is still served; the GET row is built from the URL."""
    slot = env.slot(5, "notes.TXT", chat_type="groupchat")
    stored = env.repo.root / slot.path.repo_path
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"hello")
    async with env.client.get(slot.get_url) as resp:
        assert await resp.read() == b"hello"
    row = await env.audit.next_row()
    assert (row.method, row.to_jid, row.real_filename) == ("GET", "", "notes.TXT")
    assert (row.file_type, row.chat_type, row.file_size) == ("txt", "groupchat", 5)


async def test_ticketed_get_logs_downloader_jid(env: HttpdEnv) -> None:
    """A GET with a valid personal ticket logs the ticket's JID."""
    slot = await env.upload(b"abc")
    async with env.client.get(env.ticket_url(slot, "carol@localhost")) as resp:
        assert resp.status == 200
        assert await resp.read() == b"abc"
    row = await env.audit.next_row()
    assert (row.method, row.jid) == ("GET", "carol@localhost")


@pytest.mark.parametrize("kind", ["forged", "expired", "other-path"])
async def test_bad_ticket_is_403_and_logged_refused(env: HttpdEnv, kind: str) -> None:
    """A forged, expired or foreign ticket is 403 with a GET_REFUSED row and no JID."""
    slot, other = await env.upload(b"abc"), await env.upload(b"xyz")
    url = env.ticket_url(slot, "carol@localhost", lifetime=-1 if kind == "expired" else 300)
    if kind == "forged":
        url = url.replace("carol", "mallory")
    if kind == "other-path":
        url = other.get_url + "?" + url.partition("?")[2]
    async with env.client.get(url) as resp:
        assert resp.status == 403
    row = await env.audit.next_row()
    assert (row.method, row.jid) == ("GET_REFUSED", "")


async def test_require_identity_refuses_anonymous_get(config_factory: ConfigFactory) -> None:
    """With require_identity, a GET without ticket is 401 + GET_REFUSED; with one it works."""
    async with httpd_env(config_factory(download={"require_identity": True})) as env:
        slot = await env.upload(b"secret")
        async with env.client.get(slot.get_url) as resp:
            assert resp.status == 401
            assert await resp.read() != b"secret"
        refused = await env.audit.next_row()
        assert (refused.method, refused.filename, refused.to_jid) == (
            "GET_REFUSED",
            slot.path.resource,
            RECIPIENT,
        )
        async with env.client.head(slot.get_url) as resp:
            assert resp.status == 401
        async with env.client.get(env.ticket_url(slot, "bob@localhost")) as resp:
            assert await resp.read() == b"secret"
        assert (await env.audit.next_row()).jid == "bob@localhost"
        assert [r.method for r in await env.rows()] == ["POST", "GET_REFUSED", "GET"]


async def test_unknown_file_is_404_without_row(env: HttpdEnv) -> None:
    """A GET for a slot that never had an upload is 404 and logs nothing."""
    slot = env.slot(10)
    async with env.client.get(slot.get_url) as resp:
        assert resp.status == 404
    assert await env.rows() == []


async def test_purged_file_is_410_and_logged_gone(env: HttpdEnv) -> None:
    """After retention deletes the file, GET is 410 with a GET_GONE row; HEAD is 410 too."""
    slot = await env.upload(b"old")
    await env.repo.delete(slot.path.repo_path)
    async with env.client.get(slot.get_url) as resp:
        assert resp.status == 410
    row = await env.audit.next_row()
    assert (row.method, row.file_size, row.to_jid) == ("GET_GONE", 3, RECIPIENT)
    async with env.client.head(slot.get_url) as resp:
        assert resp.status == 410
    assert [r.method for r in await env.rows()] == ["POST", "GET_GONE"]


async def test_other_node_is_redirected(config_factory: ConfigFactory) -> None:
    """A GET for a cluster node's file is 307 to it, query kept; an unknown node is 404."""
    cfg = config_factory(cluster={"nodes": {"node_2": "https://node2.example.test:5443/"}})
    async with httpd_env(cfg) as env:
        slot = env.slot(4, "a b.jpg", node="node_2")
        url = env.ticket_url(slot, "carol@localhost")
        async with env.client.get(url, allow_redirects=False) as resp:
            assert resp.status == 307
            location = urlsplit(resp.headers["Location"])
        assert (location.scheme, location.netloc) == ("https", "node2.example.test:5443")
        assert location.path == "/node_2/im/20240102/10/" + slot.path.resource + "/a%20b.jpg"
        assert dict(parse_qsl(location.query)) == dict(parse_qsl(url.partition("?")[2]))
        stranger = env.slot(4, node="node_9")
        async with env.client.get(stranger.get_url, allow_redirects=False) as resp:
            assert resp.status == 404
        assert await env.rows() == []


@pytest.mark.parametrize(
    ("header", "status", "content_range", "part"),
    [
        ("bytes=2-5", 206, "bytes 2-5/10", b"2345"),
        ("bytes=7-", 206, "bytes 7-9/10", b"789"),
        ("bytes=-3", 206, "bytes 7-9/10", b"789"),
        ("bytes=5-100", 206, "bytes 5-9/10", b"56789"),
        ("bytes=0-1,4-5", 200, None, b"0123456789"),  # several ranges: whole file
        ("items=0-1", 200, None, b"0123456789"),  # other unit: ignored
    ],
)
async def test_range_requests(
    env: HttpdEnv, header: str, status: int, content_range: str | None, part: bytes
) -> None:
    """A single Range gives 206 with Content-Range; others are ignored (200)."""
    slot = await env.upload(b"0123456789", "digits.bin")
    async with env.client.get(slot.get_url, headers={"Range": header}) as resp:
        assert resp.status == status
        assert resp.headers.get("Content-Range") == content_range
        assert await resp.read() == part
    assert (await env.audit.next_row()).method == "GET"


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=99-100", "bytes=-0"])
async def test_unsatisfiable_range_is_416(env: HttpdEnv, header: str) -> None:
    """A range beyond the end is 416 with ``Content-Range: bytes */size``."""
    slot = await env.upload(b"0123456789")
    async with env.client.get(slot.get_url, headers={"Range": header}) as resp:
        assert resp.status == 416
        assert resp.headers["Content-Range"] == "bytes */10"


async def test_head_has_headers_no_body_no_row(env: HttpdEnv) -> None:
    """HEAD answers the GET headers without a body and logs nothing."""
    slot = await env.upload(b"x" * 1234, "page.html")
    async with env.client.head(slot.get_url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1234"
        assert resp.headers["Content-Disposition"].startswith("attachment;")
        assert await resp.read() == b""
    assert [r.method for r in await env.rows()] == ["POST"]


@pytest.mark.parametrize(
    ("filename", "ctype", "disposition"),
    [
        ("page.html", "text/html", "attachment"),
        ("drawing.svg", "image/svg+xml", "attachment"),
        ("app.js", "text/javascript", "attachment"),
        ("feed.xml", "application/xml", "attachment"),
        ("page.xhtml", "application/xhtml+xml", "attachment"),
        ("photo.jpg", "image/jpeg", "inline"),
        ("clip.mp4", "video/mp4", "inline"),
        ("no-extension", "application/octet-stream", "attachment"),
    ],
)
async def test_active_content_is_an_attachment(
    env: HttpdEnv, filename: str, ctype: str, disposition: str
) -> None:
    """Types a browser would run are served as attachments, with nosniff and a sandbox CSP."""
    slot = await env.upload(b"<script>alert(1)</script>", filename)
    async with env.client.get(slot.get_url) as resp:
        assert resp.headers["Content-Type"].split(";")[0] == ctype
        assert resp.headers["Content-Disposition"].split(";")[0] == disposition
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "sandbox" in resp.headers["Content-Security-Policy"]
        await resp.read()


async def test_cors_preflight_and_headers(env: HttpdEnv) -> None:
    """OPTIONS answers the CORS preflight; PUT/GET/HEAD answers carry Allow-Origin."""
    slot = env.slot(3)
    async with env.client.options(
        slot.get_url,
        headers={"Origin": "https://web.example", "Access-Control-Request-Method": "PUT"},
    ) as resp:
        assert resp.status in (200, 204)
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert {"PUT", "GET", "HEAD", "OPTIONS"} <= {
            m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")
        }
        allowed = resp.headers["Access-Control-Allow-Headers"].lower()
        assert all(h in allowed for h in ("content-type", "authorization", "range"))
        assert int(resp.headers["Access-Control-Max-Age"]) > 0
    async with env.client.put(slot.put_url, data=b"abc") as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
    for method in ("GET", "HEAD"):
        async with env.client.request(method, slot.get_url) as resp:
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert "Content-Range" in resp.headers["Access-Control-Expose-Headers"]


async def test_download_cut_off_is_logged_incomplete(env: HttpdEnv) -> None:
    """A client that closes half-way through a download gets a GET_INCOMPLETE row, not GET."""
    size = 32 * 1024 * 1024  # well beyond what loopback socket buffers absorb
    slot = env.slot(size, "big.bin")
    async with env.client.put(slot.put_url, data=io.BytesIO(bytes(size))) as resp:
        assert resp.status == 201
    assert (await env.audit.next_row()).method == "POST"
    reader, writer = await env.raw(f"GET {slot.get_url} HTTP/1.1\nHost: t\n")
    await reader.readexactly(100_000)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    writer.close()
    row = await env.audit.next_row()
    assert (row.method, row.file_size) == ("GET_INCOMPLETE", size)
    assert env.metrics.value("downloads", {"chat_type": "im"}) == 0


async def test_metrics_page_counts_transfers(env: HttpdEnv) -> None:
    """/metrics is Prometheus text with upload and download counters, bytes and durations."""
    slot = await env.upload(b"12345")
    async with env.client.get(slot.get_url) as resp:
        await resp.read()
    await env.audit.next_row()
    async with env.client.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    assert 'mft_uploads_total{chat_type="im"} 1' in text
    assert 'mft_upload_bytes_total{chat_type="im"} 5' in text
    assert 'mft_downloads_total{chat_type="im"} 1' in text
    assert 'mft_download_bytes_total{chat_type="im"} 5' in text
    assert 'mft_upload_seconds_count{chat_type="im"} 1' in text
    assert 'mft_download_seconds_count{chat_type="im"} 1' in text


async def test_healthz_ok_then_database_down(env: HttpdEnv) -> None:
    """/healthz is 200 "ok" while both answer, 503 naming the database once it is gone."""
    async with env.client.get("/healthz") as resp:
        assert (resp.status, await resp.text()) == (200, "ok\n")
    await env.audit.close()
    async with env.client.get("/healthz") as resp:
        assert resp.status == 503
        text = await resp.text()
    assert "database" in text and "repository" not in text


async def test_healthz_repository_down(env: HttpdEnv) -> None:
    """/healthz is 503 naming the repository when its directory is gone."""
    env.repo.root.rmdir()
    async with env.client.get("/healthz") as resp:
        assert resp.status == 503
        text = await resp.text()
    assert "repository" in text and "database" not in text


async def test_repository_failure_mid_download_cuts_connection(
    config_factory: ConfigFactory,
) -> None:
    """A repository failing mid-download cuts the connection short and logs GET_INCOMPLETE."""
    async with httpd_env(config_factory(), read_fail_at=300_000) as env:
        slot = await env.upload(b"a" * 600_000)
        async with env.client.get(slot.get_url) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        row = await env.audit.next_row()
        assert (row.method, row.file_size) == ("GET_INCOMPLETE", 600_000)
        assert env.metrics.value("repository_errors") == 1
        assert env.metrics.value("downloads", {"chat_type": "im"}) == 0


async def test_concurrent_downloads_are_each_logged(env: HttpdEnv) -> None:
    """Several simultaneous GETs each get their bytes and their own GET row."""
    slot = await env.upload(os.urandom(50_000))

    async def fetch() -> int:
        async with env.client.get(slot.get_url) as resp:
            return len(await resp.read())

    assert await asyncio.gather(*(fetch() for _ in range(5))) == [50_000] * 5
    # The row follows the last byte: wait for all five.
    assert [(await env.audit.next_row()).method for _ in range(5)] == ["GET"] * 5
    assert len(await env.rows("GET")) == 5


async def test_failed_lookup_is_one_database_error(env: HttpdEnv) -> None:
    """One AFT_LOG lookup that fails is counted once (by the back-end), not twice."""
    slot = env.slot(10)  # issued, never uploaded: the HEAD asks AFT_LOG whether it was
    await env.audit.close()
    async with env.client.head(slot.get_url) as resp:
        assert resp.status == 404
    assert env.metrics.value("database_errors") == 1
    await env.audit.open()
