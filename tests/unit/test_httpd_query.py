"""PUT URLs whose query repeats a key or carries one the token does not know: 400 before
the body, with or without Expect: 100-continue, and the refusal logged with its reason."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from tests.fixtures.config import ConfigFactory
from tests.unit.httpd_harness import HttpdEnv, Slot, httpd_env

SIZE = 1000


@pytest.fixture
async def env(config_factory: ConfigFactory) -> AsyncIterator[HttpdEnv]:
    """The HTTP app on a loopback port, over a real repository and SQLite AFT_LOG."""
    async with httpd_env(config_factory()) as e:
        yield e


def _tampered(slot: Slot, kind: str) -> tuple[str, str]:
    """The slot's PUT target with ``kind`` of tampering, and the reason to expect."""
    url = slot.put_url
    exp = slot.query["exp"]
    return {
        "sig-forged-second": (f"{url}&sig=forged", "'sig' repeated"),
        "sig-valid-second": (url.replace("sig=", "sig=forged&sig="), "'sig' repeated"),
        "exp-far-future": (f"{url}&exp=9999999999", "'exp' repeated"),
        "exp-same-value": (f"{url}&exp={exp}", "'exp' repeated"),
        "size-repeated": (f"{url}&size={SIZE}", "'size' repeated"),
        "to-repeated": (f"{url}&to=mallory%40localhost", "'to' repeated"),
        "unknown-key": (f"{url}&admin=1", "unknown query key 'admin'"),
        "unknown-bare-key": (f"{url}&debug", "unknown query key 'debug'"),
        "case-variant": (f"{url}&SIG=x", "unknown query key 'SIG'"),
    }[kind]


KINDS = [
    "sig-forged-second",
    "sig-valid-second",
    "exp-far-future",
    "exp-same-value",
    "size-repeated",
    "to-repeated",
    "unknown-key",
    "unknown-bare-key",
    "case-variant",
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("expect", [False, True], ids=["plain", "expect-100"])
async def test_ambiguous_query_refused_before_body(
    env: HttpdEnv, kind: str, expect: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """400 as soon as the headers are in (no body sent, no 100 Continue); logged with why."""
    slot = env.slot(SIZE)
    target, reason = _tampered(slot, kind)
    head = f"PUT {target} HTTP/1.1\nHost: t\nContent-Length: {SIZE}\n"
    if expect:
        head += "Expect: 100-continue\n"
    with caplog.at_level(logging.INFO, logger="httpd"):
        reader, writer = await env.raw(head)  # the body is never sent
        try:
            status_line = await asyncio.wait_for(reader.readline(), 10)
            rest = await asyncio.wait_for(reader.read(4096), 10)
        finally:
            writer.close()
    assert status_line.split()[1] == b"400", status_line
    assert b"100 Continue" not in status_line + rest
    assert reason.encode() in rest
    assert env.repo.files() == []
    logged = [r.getMessage() for r in caplog.records if reason in r.getMessage()]
    assert logged, [r.getMessage() for r in caplog.records]
    assert all(slot.query["sig"] not in line for line in logged)  # never the token


async def test_untampered_slot_still_stores(env: HttpdEnv) -> None:
    """The same slot, untouched, is accepted: the check refuses only what it should."""
    slot = env.slot(SIZE)
    assert await env.put(slot, b"x" * SIZE) == 201


async def test_optional_type_key_is_accepted_once(env: HttpdEnv) -> None:
    """``type`` is an allowed (unsigned) key; given twice it is refused."""
    slot = env.slot(SIZE)
    slot.query["type"] = "image/png"
    assert await env.put(slot, b"y" * SIZE) == 201
    again = env.slot(SIZE)
    head = f"PUT {again.put_url}&type=a&type=b HTTP/1.1\nHost: t\nContent-Length: {SIZE}\n"
    assert await env.raw_status(head) == 400
