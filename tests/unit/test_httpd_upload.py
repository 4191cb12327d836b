"""PUT: the happy path, every refusal status, Expect: 100-continue, and failures mid-body."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from component.errors import InvalidRequest, StorageUnavailable
from httpd.repository import FileRepository
from tests.fixtures.config import ConfigFactory
from tests.unit.httpd_harness import RECIPIENT, UPLOADER, HttpdEnv, httpd_env


@pytest.fixture
async def env(config_factory: ConfigFactory) -> AsyncIterator[HttpdEnv]:
    """The HTTP app on a loopback port, over a real repository and SQLite AFT_LOG."""
    async with httpd_env(config_factory(upload={"max_file_size": 200_000})) as e:
        yield e


async def test_put_stores_file_and_logs_post(env: HttpdEnv) -> None:
    """A valid PUT answers 201, stores the bytes under the resource name, logs one POST row."""
    body = os.urandom(70_000)
    slot = env.slot(len(body), "Holiday Photo é.JPG", chat_type="groupchat")
    assert await env.put(slot, body) == 201
    stored = env.repo.root / slot.path.repo_path
    assert stored.read_bytes() == body
    assert env.repo.files() == [stored]  # no .part left beside it
    (row,) = await env.rows()
    assert (row.method, row.jid, row.to_jid) == ("POST", UPLOADER, RECIPIENT)
    assert (row.filename, row.real_filename) == (slot.path.resource, "Holiday Photo é.JPG")
    assert (row.file_type, row.chat_type, row.file_size) == ("jpg", "groupchat", len(body))
    assert (row.file_server, row.node_id, row.client_ip) == ("localhost", "node_1", "127.0.0.1")
    assert row.file_sha256 == hashlib.sha256(body).hexdigest()
    assert row.scan_result == ""


async def test_put_with_expect_100_continue(env: HttpdEnv) -> None:
    """A client using Expect: 100-continue (aiohttp expect100=True) uploads normally."""
    body = b"x" * 5000
    slot = env.slot(len(body))
    async with env.client.put(slot.put_url, data=body, expect100=True) as resp:
        assert resp.status == 201
    assert (env.repo.root / slot.path.repo_path).read_bytes() == body


async def test_missing_token_is_401(env: HttpdEnv) -> None:
    """A PUT without the signed query is 401 and writes nothing."""
    slot = env.slot(10)
    async with env.client.put(slot.get_url, data=b"0123456789") as resp:
        assert resp.status == 401
        assert "WWW-Authenticate" in resp.headers
    assert env.repo.files() == []


@pytest.mark.parametrize(
    "change",
    [
        {"sig": "A" * 43},  # forged signature
        {"size": "11"},  # size raised after signing
        {"from": "mallory@localhost"},  # uploader changed
        {"to": "eve@localhost"},  # recipient changed
        {"exp": "9999999999"},  # lifetime extended
        {"v": "2"},  # unknown token version
        {"exp": "soon"},  # malformed
    ],
)
async def test_tampered_token_is_403(env: HttpdEnv, change: dict[str, str]) -> None:
    """Any change to a signed query field is 403 and writes nothing."""
    slot = env.slot(10)
    slot.query.update(change)
    assert await env.put(slot, b"0123456789") == 403
    assert env.repo.files() == []
    assert await env.rows() == []


async def test_expired_token_is_403(env: HttpdEnv) -> None:
    """A PUT after the slot's expiry is 403."""
    slot = env.slot(10, lifetime=-1)
    assert await env.put(slot, b"0123456789") == 403
    assert env.repo.files() == []


async def test_token_for_another_path_is_403(env: HttpdEnv) -> None:
    """A token signed for one slot does not open another slot's path."""
    slot, other = env.slot(10), env.slot(10)
    other.query = slot.query
    assert await env.put(other, b"0123456789") == 403
    assert env.repo.files() == []


async def test_content_length_larger_than_slot_is_413(env: HttpdEnv) -> None:
    """A body longer than the slot's size is 413 and writes nothing."""
    slot = env.slot(10)
    assert await env.put(slot, b"x" * 11) == 413
    assert env.repo.files() == []


async def test_content_length_shorter_than_slot_is_400(env: HttpdEnv) -> None:
    """A body shorter than the slot's size is 400 and writes nothing."""
    slot = env.slot(10)
    assert await env.put(slot, b"x" * 9) == 400
    assert env.repo.files() == []


async def test_slot_over_max_file_size_is_413(env: HttpdEnv) -> None:
    """A slot signed for more than max_file_size is refused with 413 even with a full body."""
    size = 200_001
    slot = env.slot(size)
    assert await env.put(slot, b"y" * size) == 413
    assert env.repo.files() == []


async def test_chunked_body_without_length_is_411(env: HttpdEnv) -> None:
    """A PUT without Content-Length (chunked) is 411: the size must be known up front."""

    async def gen() -> AsyncIterator[bytes]:
        yield b"0123456789"

    slot = env.slot(10)
    async with env.client.put(slot.put_url, data=gen()) as resp:
        assert resp.status == 411
    assert env.repo.files() == []


async def test_second_put_is_409_and_keeps_first_file(env: HttpdEnv) -> None:
    """A second PUT to the same slot is 409; the first file stays as it was."""
    slot = env.slot(4)
    assert await env.put(slot, b"good") == 201
    assert await env.put(slot, b"evil") == 409
    assert (env.repo.root / slot.path.repo_path).read_bytes() == b"good"
    assert [r.method for r in await env.rows()] == ["POST"]


@pytest.mark.parametrize(
    "path",
    [
        "/node_1/im/20240102/10/../photo.jpg",  # dot-dot as the resource
        "/node_1/im/20240102/10/%2E%2E/photo.jpg",  # encoded dot-dot
        "/node_1/im/20240102/10/AAAAAAAAAAAAAAAAAAAAAAAA/..",  # dot-dot as the file name
        "/node_1/im/20240102/10/AAAAAAAAAAAAAAAAAAAAAAAA/a%2F..%2F..%2Fetc",  # encoded slashes
        "/node_1/im/20240102/10/AAAAAAAAAAAAAAAAAAAAAAAA/a%00b",  # NUL in the name
        "/node_1/im/20240102/10/short/photo.jpg",  # bad resource
        "/node_1/chat/20240102/10/AAAAAAAAAAAAAAAAAAAAAAAA/photo.jpg",  # bad chat type
        "/node_1/im/2024-01-02/10/AAAAAAAAAAAAAAAAAAAAAAAA/photo.jpg",  # bad date
        "/node_1/im/20240102/24/AAAAAAAAAAAAAAAAAAAAAAAA/photo.jpg",  # bad hour
        "/node.1/im/20240102/10/AAAAAAAAAAAAAAAAAAAAAAAA/photo.jpg",  # bad node
    ],
)
async def test_path_tricks_are_400(env: HttpdEnv, path: str) -> None:
    """Malformed or hostile paths are 400 for PUT and GET, and nothing is written."""
    put = f"PUT {path}?sig=x HTTP/1.1\nHost: t\nContent-Length: 4\n"
    assert await env.raw_status(put, b"evil") == 400
    assert await env.raw_status(f"GET {path} HTTP/1.1\nHost: t\n") == 400
    assert env.repo.files() == []


async def test_expect_100_refused_before_body_for_bad_token(env: HttpdEnv) -> None:
    """With Expect: 100-continue a forged token is answered 403 at once, never 100 Continue."""
    slot = env.slot(1000)
    slot.query["sig"] = "forged"
    reader, writer = await env.raw(
        f"PUT {slot.put_url} HTTP/1.1\nHost: t\nContent-Length: 1000\nExpect: 100-continue\n"
    )
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 403")


@pytest.mark.parametrize(("declared", "status"), [(2000, b"413"), (999, b"400")])
async def test_expect_100_refused_for_wrong_size(
    env: HttpdEnv, declared: int, status: bytes
) -> None:
    """With Expect: 100-continue a wrong Content-Length is refused before the body."""
    slot = env.slot(1000)
    reader, writer = await env.raw(
        f"PUT {slot.put_url} HTTP/1.1\nHost: t\nContent-Length: {declared}\nExpect: 100-continue\n"
    )
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert status_line.split()[1] == status


async def test_unknown_expectation_is_417(env: HttpdEnv) -> None:
    """An Expect value other than 100-continue is refused with 417."""
    slot = env.slot(3)
    head = f"PUT {slot.put_url} HTTP/1.1\nHost: t\nContent-Length: 3\nExpect: coffee\n"
    assert await env.raw_status(head) == 417
    assert env.repo.files() == []


async def test_expect_100_continue_then_body(env: HttpdEnv) -> None:
    """A good slot gets 100 Continue first, then 201 once the body is sent."""
    slot = env.slot(3)
    reader, writer = await env.raw(
        f"PUT {slot.put_url} HTTP/1.1\nHost: t\nContent-Length: 3\nExpect: 100-continue\n"
    )
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 100")
    await reader.readline()  # blank line closing the interim response
    writer.write(b"abc")
    await writer.drain()
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 201")
    writer.close()
    assert (env.repo.root / slot.path.repo_path).read_bytes() == b"abc"


async def test_client_disconnect_mid_body_leaves_nothing(env: HttpdEnv) -> None:
    """A client that sends half the declared body and closes leaves no file and no row."""
    slot = env.slot(100_000)
    _reader, writer = await env.raw(
        f"PUT {slot.put_url} HTTP/1.1\nHost: t\nContent-Length: 100000\n", b"z" * 50_000
    )
    assert await asyncio.wait_for(env.repo.started.get(), 10) == slot.path.repo_path
    writer.close()
    outcome = await asyncio.wait_for(env.repo.stores.get(), 10)
    assert isinstance(outcome, InvalidRequest)
    assert env.repo.files() == []
    files = env.repo.root / "files"
    assert not files.exists() or list(files.iterdir()) == []  # no directory for the hour
    assert await env.rows() == []


async def test_stalled_body_is_408(config_factory: ConfigFactory) -> None:
    """A body that stops arriving is abandoned after body_timeout with 408; nothing stored."""
    async with httpd_env(config_factory(http={"body_timeout": 0.3})) as env:
        slot = env.slot(100)
        reader, writer = await env.raw(
            f"PUT {slot.put_url} HTTP/1.1\nHost: t\nContent-Length: 100\n", b"z" * 40
        )
        status_line = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
        assert status_line.split()[1] == b"408"
        assert env.repo.files() == []


async def test_repository_failure_mid_body_is_503(config_factory: ConfigFactory) -> None:
    """A repository that fails half-way gives 503, no file, no row, and counts the error."""
    async with httpd_env(config_factory(), fail_at=30_000) as env:
        slot = env.slot(60_000)
        assert await env.put(slot, b"q" * 60_000) == 503
        assert isinstance(await env.repo.stores.get(), StorageUnavailable)
        assert env.repo.files() == []
        files = env.repo.root / "files"
        assert not files.exists() or list(files.iterdir()) == []
        assert await env.rows() == []
        assert env.metrics.value("repository_errors") == 1


async def test_audit_failure_removes_file_and_is_503(env: HttpdEnv) -> None:
    """If the POST row cannot be recorded the stored file is deleted and the PUT is 503."""
    slot = env.slot(10)
    await env.audit.close()  # the database is gone
    assert await env.put(slot, b"0123456789") == 503
    assert env.repo.files() == []
    assert env.metrics.value("database_errors") == 1
    await env.audit.open()
    assert await env.rows() == []


async def test_put_for_other_node_redirects(config_factory: ConfigFactory) -> None:
    """A PUT for another cluster node's slot is a 307 to that node with the query kept."""
    cfg = config_factory(cluster={"nodes": {"node_2": "https://node2.example.test:5443"}})
    async with httpd_env(cfg) as env:
        slot = env.slot(4, node="node_2")
        async with env.client.put(slot.put_url, data=b"abcd", allow_redirects=False) as resp:
            assert resp.status == 307
            location = urlsplit(resp.headers["Location"])
            assert location.netloc == "node2.example.test:5443"
            assert location.path == slot.get_url
            assert dict(parse_qsl(location.query)) == slot.query
        assert env.repo.files() == []


async def test_no_token_or_put_url_in_logs(env: HttpdEnv, caplog: pytest.LogCaptureFixture) -> None:
    """Neither a PUT token nor a download ticket appears in any log record."""
    caplog.set_level(logging.DEBUG)
    slot = env.slot(4)
    assert await env.put(slot, b"abcd") == 201
    assert await env.put(slot, b"abcd") == 409
    bad = env.slot(4)
    bad.query["sig"] = bad.query["sig"][::-1]
    assert await env.put(bad, b"abcd") == 403
    ticket_url = env.ticket_url(slot, "carol@localhost")
    async with env.client.get(ticket_url) as resp:
        assert resp.status == 200
    secrets = [slot.query["sig"], bad.query["sig"], ticket_url.rpartition("ticket=")[2]]
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records, "the server logged nothing at all"
    assert "sig=" not in text and "ticket=" not in text
    for secret in secrets:
        assert secret not in text
    assert urlencode(slot.query) not in text


async def test_failed_stores_prune_dirs_without_breaking_others(tmp_path: Path) -> None:
    """Failing stores remove their empty directories; stores beside them still succeed."""
    repo = FileRepository(tmp_path)
    await repo.open()
    hour = "files/im/20240101/10"

    async def body(fail: bool) -> AsyncIterator[bytes]:
        yield b"01234"
        await asyncio.sleep(0)  # let the other stores interleave
        if fail:
            raise StorageUnavailable("injected")
        yield b"56789"

    async def store(i: int, fail: bool) -> bool:
        try:
            await repo.store(f"{hour}/r{i:030d}", body(fail), 10)
        except StorageUnavailable:
            return False
        return True

    outcomes = await asyncio.gather(*(store(i, i % 2 == 1) for i in range(40)))
    assert outcomes == [i % 2 == 0 for i in range(40)]
    assert sorted(p.name for p in (tmp_path / hour).iterdir()) == [
        f"r{i:030d}" for i in range(0, 40, 2)
    ]
    assert not any(await asyncio.gather(*(store(i, True) for i in range(100, 110))))
    for i in range(0, 40, 2):
        await repo.delete(f"{hour}/r{i:030d}")
    assert await repo.remove_empty_dirs() == 3  # 10, 20240101, im
    assert not any(await asyncio.gather(*(store(i, True) for i in range(200, 210))))
    assert list((tmp_path / "files").iterdir()) == []


class LogLines(logging.Handler):
    """Collects log lines; ``access`` is set once aiohttp's access log line is in."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[str, str]] = []
        self.access = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the line; note the access line."""
        self.lines.append((record.name, record.getMessage()))
        if record.name == "aiohttp.access":
            self.access.set()


@pytest.mark.parametrize("expect", [True, False])
@pytest.mark.parametrize(("case", "sent"), [("no token", 401), ("body over the slot", 413)])
async def test_logs_name_the_status_sent(
    env: HttpdEnv, caplog: pytest.LogCaptureFixture, expect: bool, case: str, sent: int
) -> None:
    """The refusal log line and the access log line carry the status the client got."""
    caplog.set_level(logging.INFO)
    lines = LogLines()
    logging.getLogger().addHandler(lines)
    try:
        slot = env.slot(10)
        url = slot.put_url.split("?")[0] if case == "no token" else slot.put_url
        length = 10 if case == "no token" else 20
        head = f"PUT {url} HTTP/1.1\nHost: t\nContent-Length: {length}\n"
        if expect:
            head += "Expect: 100-continue\n"
        assert await env.raw_status(head, b"" if expect else b"z" * length) == sent
        async with asyncio.timeout(10):  # the access line follows the response
            await lines.access.wait()
    finally:
        logging.getLogger().removeHandler(lines)
    refusals = [m for n, m in lines.lines if n in ("httpd.upload", "httpd.middleware")]
    access = [m for n, m in lines.lines if n == "aiohttp.access"]
    assert [f" {sent} " in line for line in refusals] == [True]
    assert [f'" {sent} ' in line for line in access] == [True]
