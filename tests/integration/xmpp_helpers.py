"""A bare slixmpp component for deploy and check tests (not the service itself)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import slixmpp


@contextlib.asynccontextmanager
async def bare_component(
    jid: str, secret: str, port: int, within: float = 10.0
) -> AsyncIterator[slixmpp.ComponentXMPP]:
    """A connected ComponentXMPP with disco; disconnected and waited for on exit.

    :raises TimeoutError: the handshake did not complete within ``within`` seconds.
    """
    comp = slixmpp.ComponentXMPP(jid, secret, "127.0.0.1", port)  # type: ignore[no-untyped-call]
    comp.register_plugin("xep_0030")
    started = asyncio.Event()
    comp.add_event_handler("session_start", lambda _event: started.set())
    comp.connect()
    try:
        async with asyncio.timeout(within):
            await started.wait()
        yield comp
    finally:
        ended = asyncio.Event()
        comp.add_event_handler("disconnected", lambda _event: ended.set())
        comp.disconnect(wait=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await ended.wait()


async def disco_items(comp: slixmpp.ComponentXMPP, server: str) -> list[str]:
    """The JIDs in ``server``'s disco#items, asked from the component's JID."""
    items = await comp.plugin["xep_0030"].get_items(
        jid=slixmpp.JID(server), ifrom=comp.boundjid, timeout=10
    )
    return [item[0] for item in items["disco_items"]["items"]]
