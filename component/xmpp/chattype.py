"""Chat type of an upload from its recipient: ``im``, ``groupchat`` or ``persistent``.

DESIGN.md "Chat type and recipient": no recipient -> ``im`` with TO_JID empty. A JID on a
room service (``[xmpp] muc_domains``, else services found by disco#items on the server
domain whose disco#info has identity ``conference/text``) is a room: disco#info on the
room, ``muc_persistent`` -> ``persistent``, anything else (``muc_temporary``, an error,
no answer in time) -> ``groupchat``. Any other recipient -> ``im``. A room occupant's
full JID (``room@service/nick``, a private message through the room) is ``im``.

Answers are cached with a bounded TTL and size; a lookup never waits longer than the
configured timeout, and concurrent lookups of one key share one query.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from slixmpp import JID
from slixmpp.jid import InvalidJID

from component.errors import InvalidRequest
from component.layout import ChatType

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

ROOM_IDENTITY = ("conference", "text")
PERSISTENT_FEATURE = "muc_persistent"


class DiscoUnavailable(Exception):
    """A disco query failed or timed out (the entity or the server did not answer)."""


@dataclass(frozen=True, slots=True)
class DiscoInfo:
    """The parts of a disco#info answer classification needs."""

    identities: frozenset[tuple[str, str]]
    features: frozenset[str]


class Disco(Protocol):
    """How the resolver asks the XMPP network (the component implements it)."""

    async def info(self, jid: str) -> DiscoInfo:
        """disco#info of ``jid``.

        :raises DiscoUnavailable: error reply or no reply in time.
        """

    async def items(self, jid: str) -> list[str]:
        """JIDs of disco#items of ``jid``.

        :raises DiscoUnavailable: error reply or no reply in time.
        """


@dataclass(frozen=True, slots=True)
class Classification:
    """Chat type and TO_JID for one slot."""

    chat_type: ChatType
    to_jid: str


class TTLCache(Generic[K, V]):
    """A small LRU dict whose entries expire; ``clock`` is injectable for tests."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    def get(self, key: K) -> V | None:
        """The live value for ``key``, or ``None``."""
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < self._clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds, evicting the least recently used."""
        self._data[key] = (self._clock() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class ChatTypeResolver:
    """Classifies recipients, caching room-service and room answers.

    :param disco: the disco client (the component, or a fake in tests).
    :param server_domain: the XMPP server's domain, searched for room services.
    :param muc_domains: configured room services; when given, no discovery happens.
    :param timeout: upper bound in seconds for one classification's network waits.
    :param ttl: how long a positive answer is cached.
    :param failure_ttl: how long a failed or unanswered lookup is cached (shorter, so a
        room that was slow once is asked again soon, but not on every upload).
    """

    def __init__(
        self,
        disco: Disco,
        server_domain: str,
        muc_domains: Iterable[str] = (),
        *,
        timeout: float = 5.0,
        ttl: float = 300.0,
        failure_ttl: float = 30.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        ignore: Iterable[str] = (),
    ) -> None:
        self._disco = disco
        self._server_domain = server_domain.lower()
        self._configured = frozenset(d.lower() for d in muc_domains)
        self._ignore = frozenset(d.lower() for d in ignore)
        self._timeout = timeout
        self._ttl = ttl
        self._failure_ttl = min(failure_ttl, ttl)
        self._rooms: TTLCache[str, ChatType] = TTLCache(max_entries, clock)
        self._services: TTLCache[str, frozenset[str]] = TTLCache(1, clock)
        self._inflight: dict[str, asyncio.Future[object]] = {}

    async def classify(self, recipient: str | None) -> Classification:
        """Chat type and TO_JID for a slot whose request named ``recipient``.

        Never raises for network trouble: an unanswered room is ``groupchat``.

        :raises InvalidRequest: ``recipient`` is present but not a valid JID.
        """
        if recipient is None:
            return Classification("im", "")
        try:
            jid = JID(recipient)
        except InvalidJID as exc:
            raise InvalidRequest("Invalid recipient JID") from exc
        if not jid.domain:
            raise InvalidRequest("Invalid recipient JID")
        domain = jid.domain.lower()
        if not jid.user or domain == self._server_domain:
            return Classification("im", jid.bare)  # a user of this server, or a service
        if domain not in await self.room_services():
            return Classification("im", jid.bare)
        if jid.resource:
            return Classification("im", jid.full)  # private message to a room occupant
        return Classification(await self.room_type(jid.bare), jid.bare)

    async def room_services(self) -> frozenset[str]:
        """Domains that host rooms: configured, else discovered (cached)."""
        if self._configured:
            return self._configured
        cached = self._services.get("")
        if cached is not None:
            return cached
        return await self._shared("services", self._discover_services)  # type: ignore[return-value]

    async def room_type(self, room: str) -> ChatType:
        """``persistent`` or ``groupchat`` for the bare room JID (cached)."""
        key = room.lower()
        cached = self._rooms.get(key)
        if cached is not None:
            return cached
        return await self._shared("room:" + key, lambda: self._ask_room(key))  # type: ignore[return-value]

    async def _shared(self, key: str, make: Callable[[], Awaitable[object]]) -> object:
        """Run ``make()`` once for concurrent callers asking the same ``key``."""
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(make())
            self._inflight[key] = fut
            fut.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(fut)

    async def _discover_services(self) -> frozenset[str]:
        found: set[str] = set()
        ok = True
        try:
            async with asyncio.timeout(self._timeout):
                items = await self._disco.items(self._server_domain)
                candidates = [i.lower() for i in items if i.lower() not in self._ignore]
                answers = await asyncio.gather(
                    *(self._disco.info(c) for c in candidates), return_exceptions=True
                )
            for jid, info in zip(candidates, answers, strict=True):
                if isinstance(info, DiscoInfo) and ROOM_IDENTITY in info.identities:
                    found.add(jid)
                elif isinstance(info, BaseException):
                    ok = False
        except (DiscoUnavailable, TimeoutError):
            ok = False
        result = frozenset(found)
        self._services.put("", result, self._ttl if ok else self._failure_ttl)
        log.debug("room services on %s: %s", self._server_domain, sorted(result) or "none")
        return result

    async def _ask_room(self, room: str) -> ChatType:
        try:
            async with asyncio.timeout(self._timeout):
                info = await self._disco.info(room)
        except (DiscoUnavailable, TimeoutError):
            # A room that does not answer must not hold the slot up: groupchat.
            log.info("room %s did not answer disco#info; treating it as groupchat", room)
            self._rooms.put(room, "groupchat", self._failure_ttl)
            return "groupchat"
        chat_type: ChatType = "persistent" if PERSISTENT_FEATURE in info.features else "groupchat"
        self._rooms.put(room, chat_type, self._ttl)
        return chat_type
