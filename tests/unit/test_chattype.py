"""Chat-type classification with an injected disco fake: rules, caching, timeouts."""

from __future__ import annotations

import asyncio

import pytest

from component.errors import InvalidRequest
from component.xmpp.chattype import (
    ChatTypeResolver,
    Classification,
    DiscoInfo,
    DiscoUnavailable,
    TTLCache,
)

ROOM_SERVICE = DiscoInfo(
    frozenset({("conference", "text")}), frozenset({"http://jabber.org/protocol/muc"})
)
PERSISTENT = DiscoInfo(frozenset({("conference", "text")}), frozenset({"muc_persistent"}))
TEMPORARY = DiscoInfo(frozenset({("conference", "text")}), frozenset({"muc_temporary"}))
UPLOAD = DiscoInfo(frozenset({("store", "file")}), frozenset({"urn:xmpp:http:upload:0"}))


class FakeDisco:
    """Answers from a table; ``hang`` JIDs never answer; counts every query."""

    def __init__(
        self, info: dict[str, DiscoInfo], items: list[str], hang: frozenset[str] = frozenset()
    ):
        self.info_table, self.item_list, self.hang = info, items, hang
        self.calls: list[str] = []

    async def info(self, jid: str) -> DiscoInfo:
        """disco#info from the table."""
        self.calls.append(f"info {jid}")
        if jid in self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(0)
        if jid not in self.info_table:
            raise DiscoUnavailable(jid)
        return self.info_table[jid]

    async def items(self, jid: str) -> list[str]:
        """disco#items of the server."""
        self.calls.append(f"items {jid}")
        if jid in self.hang:
            await asyncio.Event().wait()
        return self.item_list


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(disco: FakeDisco, clock: Clock | None = None, **kw: object) -> ChatTypeResolver:
    return ChatTypeResolver(
        disco,
        "localhost",
        timeout=0.2,
        ttl=60,
        failure_ttl=5,
        clock=clock or Clock(),
        **kw,  # type: ignore[arg-type]
    )


def network() -> FakeDisco:
    return FakeDisco(
        {
            "conference.localhost": ROOM_SERVICE,
            "upload.localhost": UPLOAD,
            "keep@conference.localhost": PERSISTENT,
            "temp@conference.localhost": TEMPORARY,
        },
        ["conference.localhost", "upload.localhost", "pubsub.localhost"],
    )


async def test_rules() -> None:
    """No recipient, users, rooms, occupants and services classify per DESIGN.md."""
    r = make(network())
    cases = {
        None: Classification("im", ""),
        "juliet@localhost": Classification("im", "juliet@localhost"),
        "Juliet@localhost/balcony": Classification("im", "juliet@localhost"),
        "keep@conference.localhost": Classification("persistent", "keep@conference.localhost"),
        "temp@conference.localhost": Classification("groupchat", "temp@conference.localhost"),
        "temp@conference.localhost/nick": Classification("im", "temp@conference.localhost/nick"),
        "gone@conference.localhost": Classification("groupchat", "gone@conference.localhost"),
        "friend@remote.example": Classification("im", "friend@remote.example"),
        "conference.localhost": Classification("im", "conference.localhost"),
    }
    for recipient, expected in cases.items():
        assert await r.classify(recipient) == expected, recipient


@pytest.mark.parametrize("bad", ["", "@", "a@", "a@b@c", "x" * 1100 + "@localhost"])
async def test_invalid_recipient(bad: str) -> None:
    """A recipient that is not a JID is a bad request."""
    with pytest.raises(InvalidRequest):
        await make(network()).classify(bad)


async def test_users_need_no_disco() -> None:
    """A user of the server's own domain is im without any network query."""
    disco = network()
    await make(disco).classify("juliet@localhost")
    assert disco.calls == []


async def test_configured_muc_domains_skip_discovery() -> None:
    """With muc_domains set, no disco#items is sent; other domains are im."""
    disco = network()
    r = make(disco, muc_domains=["conference.localhost"])
    assert (await r.classify("keep@conference.localhost")).chat_type == "persistent"
    assert disco.calls == ["info keep@conference.localhost"]


async def test_room_answers_cached_until_ttl() -> None:
    """A room's answer is cached for ttl, then asked again."""
    disco, clock = network(), Clock()
    r = make(disco, clock)
    for _ in range(3):
        await r.classify("keep@conference.localhost")
    assert disco.calls.count("info keep@conference.localhost") == 1
    assert disco.calls.count("items localhost") == 1
    clock.now = 61
    await r.classify("keep@conference.localhost")
    assert disco.calls.count("info keep@conference.localhost") == 2
    assert disco.calls.count("items localhost") == 2


async def test_silent_room_is_groupchat_within_timeout() -> None:
    """A room that never answers is groupchat after the timeout, cached briefly."""
    disco, clock = network(), Clock()
    disco.info_table["mute@conference.localhost"] = PERSISTENT
    disco.hang = {"mute@conference.localhost"}
    r = make(disco, clock)
    await r.room_services()
    async with asyncio.timeout(1.0):
        assert (await r.classify("mute@conference.localhost")).chat_type == "groupchat"
        assert (await r.classify("mute@conference.localhost")).chat_type == "groupchat"
    assert disco.calls.count("info mute@conference.localhost") == 1
    clock.now = 6  # failure_ttl over: asked again
    disco.hang = set()
    assert (await r.classify("mute@conference.localhost")).chat_type == "persistent"


async def test_silent_server_means_no_room_services() -> None:
    """If disco#items does not answer, recipients are im, promptly, and retried later."""
    disco, clock = network(), Clock()
    disco.hang = {"localhost"}
    r = make(disco, clock)
    async with asyncio.timeout(1.0):
        assert (await r.classify("keep@conference.localhost")).chat_type == "im"
        assert (await r.classify("keep@conference.localhost")).chat_type == "im"
    assert disco.calls.count("items localhost") == 1
    clock.now = 6
    disco.hang = set()
    assert (await r.classify("keep@conference.localhost")).chat_type == "persistent"


async def test_concurrent_lookups_share_one_query() -> None:
    """Many simultaneous slot requests for one room send one disco#info."""
    disco = network()
    r = make(disco)
    results = await asyncio.gather(*(r.classify("temp@conference.localhost") for _ in range(20)))
    assert {c.chat_type for c in results} == {"groupchat"}
    assert disco.calls.count("info temp@conference.localhost") == 1
    assert disco.calls.count("items localhost") == 1


async def test_own_component_not_asked() -> None:
    """The component's own JID (ignore=) is not queried during discovery."""
    disco = network()
    r = make(disco, ignore=["upload.localhost"])
    assert await r.room_services() == frozenset({"conference.localhost"})
    assert "info upload.localhost" not in disco.calls


def test_ttl_cache_bounded_lru() -> None:
    """The cache holds at most max_entries, evicting the least recently used."""
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(2, clock)
    cache.put("a", 1, 10)
    cache.put("b", 2, 10)
    assert cache.get("a") == 1
    cache.put("c", 3, 10)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    clock.now = 11
    assert cache.get("a") is None and len(cache) == 1
